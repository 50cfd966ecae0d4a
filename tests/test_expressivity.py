"""The geometric WL suite: pair geometry as published, results agree with the theory."""
from __future__ import annotations

import math

import pytest
import torch

from farfield.errors import ConfigError
from farfield.expressivity import (k_chain_pair, make_pair, readout_distance, run_expressivity, star_pair, theory,
                                   train_pair)


def test_k_chain_geometry():
    for k in (2, 4, 7):
        g0, g1 = k_chain_pair(k)
        assert g0.num_nodes == k + 2 and g0.edge_index.shape[1] == 2 * (k + 1)
        d0 = (g0.pos[g0.edge_index[0]] - g0.pos[g0.edge_index[1]]).norm(dim=-1)
        d1 = (g1.pos[g1.edge_index[0]] - g1.pos[g1.edge_index[1]]).norm(dim=-1)
        assert torch.allclose(d0, d1) and torch.allclose(d0, torch.full_like(d0, 5.0))
        assert torch.allclose(g0.pos.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ConfigError):
        k_chain_pair(1)


def test_star_geometry():
    for fold in (2, 3, 5, 10):
        g0, g1 = star_pair(fold)
        assert torch.allclose(g0.pos[1:].norm(dim=-1), torch.ones(fold, dtype=torch.float64))
        a0 = math.atan2(float(g0.pos[1, 1]), float(g0.pos[1, 0]))
        a1 = math.atan2(float(g1.pos[1, 1]), float(g1.pos[1, 0]))
        assert 0 < (a1 - a0) % (2 * math.pi) < 2 * math.pi / fold
    with pytest.raises(ConfigError):
        star_pair(3, angle=3.0)


def test_counterexamples_share_distances_and_the_published_chiral_pair_is_a_rotation():
    for t in ("2body", "3body", "chiral", "handed"):
        g0, g1 = make_pair(t)
        assert sorted(g0.pos.norm(dim=-1).tolist()) == sorted(g1.pos.norm(dim=-1).tolist())
    # 3-body: the pairwise angles around the centre are the same multiset too
    g0, g1 = make_pair("3body")
    ang = [sorted((g.pos[1:] @ g.pos[1:].T).flatten().tolist()) for g in (g0, g1)]
    assert ang[0] == ang[1]
    # the published chiral pair is mapped onto itself by R_z(pi): a proper rotation, not only a mirror
    g0, g1 = make_pair("chiral")
    rz = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))
    assert sorted(map(tuple, (g0.pos @ rz.T).tolist())) == sorted(map(tuple, g1.pos.tolist()))
    # the handed pair is genuinely chiral: triple products of neighbours ordered by distance differ in sign
    h0, h1 = make_pair("handed")
    assert torch.det(h0.pos[1:]) * torch.det(h1.pos[1:]) < 0


def test_unknown_tests_are_refused():
    for bad in ("chain", "chain:x", "star:1", "4body", "2body:3"):
        with pytest.raises(ConfigError):
            make_pair(bad)


# (model, test, layers) cells covering every row of the theory: invariant vs equivariant, depth, degree,
# body order and chirality
CELLS = [
    ("schnet", "chain:4", 3), ("schnet", "2body", 1),
    ("gvp", "chain:4", 2), ("gvp", "chain:4", 3), ("gvp", "2body", 1), ("gvp", "3body", 1), ("gvp", "star:2", 2),
    ("painn", "2body", 1), ("tfn", "2body", 1), ("tfn", "2body", 2), ("tfn", "star:2", 1), ("tfn", "star:3", 1),
    ("tfn", "chain:4", 3), ("mace", "3body", 1), ("segnn", "3body", 1), ("gvp", "chiral", 2),
    ("fa_mpnn_so3", "chiral", 1), ("fa_mpnn_so3", "handed", 1), ("fa_mpnn", "handed", 1), ("segnn", "handed", 1),
    ("fa_mpnn", "star:3", 2),
]


def test_training_free_distances_agree_with_theory():
    models = sorted({m for m, _, _ in CELLS})
    results = []
    for m, t, L in CELLS:
        results += run_expressivity([m], [t], [L], seeds=1, mode="distance")
    for r in results:
        assert r.theory is not None
        assert r.agrees, (r.model, r.test, r.layers, r.values, r.floors, r.theory)
    assert len(models) >= 7


def test_noise_floor_guards_symmetric_stars():
    # GVP's vector norm amplifies round-off on the cancelling vectors of a star: the raw distance is large,
    # but so is the floor, so the pair is (correctly) not counted as distinguished
    d, floor = readout_distance("gvp", "star:3", 2)
    assert floor > 0 and d < 1e3 * floor


def test_published_protocol_reproduces_gvp_on_4_chains():
    # methods reference s.7: GVP-GNN on k = 4 chains: 2 layers 50%, 3 layers 100%
    assert train_pair("gvp", "chain:4", 2, seed=0) == 0.5
    assert train_pair("gvp", "chain:4", 3, seed=0) == 1.0


def test_theory_table():
    assert theory("gvp", "chain:6", 3) is False and theory("gvp", "chain:6", 4) is True
    assert theory("tfn", "star:5", 1) is False
    assert theory("mpnn", "2body", 1) is None
    assert theory("tfn_se3", "handed", 4) is True and theory("segnn", "handed", 4) is False


def test_training_is_reproducible_and_reinitialised_per_seed():
    from farfield.expressivity.protocol import _classifier
    a = _classifier("schnet", "2body", 1, seed=3)
    b = _classifier("schnet", "2body", 1, seed=3)
    c = _classifier("schnet", "2body", 1, seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)

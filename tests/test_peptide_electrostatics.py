"""The built-in peptide_electrostatics benchmark: shipped card, exact targets, reproducibility, loader."""
from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from farfield.data.splits import split_indices
from farfield.datasets import DATASETS
from farfield.errors import ConfigError, InputError

# the module itself: the package exports a loader function of the same name
pe = importlib.import_module("farfield.datasets.peptide_electrostatics")
PATH = Path(os.environ.get("FARFIELD_PE_PATH", pe.DEFAULT_PATH))   # override: check a regenerated file


@pytest.fixture(scope="module")
def data():
    return pe.load(PATH)


@pytest.fixture(scope="module")
def stats(data):
    return pe.card(data)


def test_registered():
    assert DATASETS["peptide_electrostatics"] is pe.peptide_electrostatics
    assert "peptide_coulomb" not in DATASETS      # the earlier benchmark is retired


def test_card_statistics_match_shipped_card(data, stats):
    md = PATH.with_suffix(".md")
    shipped = pe.read_card_json(md)
    assert set(shipped) == set(stats)
    for k, v in shipped.items():
        if isinstance(v, float):
            assert math.isclose(stats[k], v, rel_tol=1e-6, abs_tol=1e-9), k
        else:
            assert stats[k] == v, k
    text = md.read_text()
    assert pe.checksum(PATH) in text
    assert f"{shipped['energy_composition_r2_test']:.3f}" in text


def test_design_targets_on_statistics(stats):
    assert stats["energy_composition_r2_test"] <= 0.2
    assert stats["energy_cutoff_oracle_r2_test"] <= 0.7
    assert stats["potential_far_composition_r2_test"] <= 0.2
    assert 70 <= stats["heavy_atoms_mean"] <= 100
    assert PATH.stat().st_size <= 2.2 * 2 ** 20


def test_charge_composition(data):
    for s in data["sequence"]:
        assert sum(s.count(a) for a in "KR") == 2 and sum(s.count(a) for a in "DE") == 2
        assert set(s) <= set(pe.NEUTRAL + "KRDE")
    ao = data["atom_offsets"]
    net = np.add.reduceat(data["charge"].astype(np.float64), ao[:-1])
    assert np.abs(net).max() < 1e-4            # Gasteiger conserves the total (zero) charge


def test_targets_are_exact_functions_of_the_input(data):
    ao, bo, no = data["atom_offsets"], data["bond_offsets"], data["node_offsets"]
    cutoff = data["meta"]["cutoff"]
    masks = {}
    for i, s in enumerate(data["group"]):
        if s not in masks:
            masks[s] = pe.beyond_three_bonds(data["bonds"][bo[s]:bo[s + 1]], int(ao[s + 1] - ao[s]))
        q = data["charge"][ao[s]:ao[s + 1]]
        out = pe.electrostatics(data["pos"][no[i]:no[i + 1]], q, masks[s], cutoff)
        assert math.isclose(out["energy_near"], data["energy_near"][i], rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(out["energy_far"], data["energy_far"][i], rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(data["energy"][i], data["energy_near"][i] + data["energy_far"][i], abs_tol=1e-9)
        np.testing.assert_allclose(out["potential"], data["potential"][no[i]:no[i + 1]], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(out["potential_far"], data["potential_far"][no[i]:no[i + 1]], rtol=1e-5, atol=1e-4)
        # energy = 1/2 sum_i Q_i phi_i
        assert math.isclose(0.5 * float(q.astype(np.float64) @ out["potential"]), data["energy"][i], abs_tol=1e-6)


def test_regenerate_one_sequence(data):
    meta = data["meta"]
    lengths = np.array([len(s) for s in data["sequence"]])
    s = int(np.argmin(lengths))                # the quickest to embed
    k = int((data["group"] == s).sum())
    rec = pe.generate(1, seed=meta["seed"], start=s, conformers=k, min_len=meta["min_len"],
                      max_len=meta["max_len"], cutoff=meta["cutoff"])[0]
    assert rec.sequence == data["sequence"][s]
    ao, no = data["atom_offsets"], data["node_offsets"]
    np.testing.assert_array_equal(rec.numbers, data["numbers"][ao[s]:ao[s + 1]])
    np.testing.assert_allclose(rec.charge, data["charge"][ao[s]:ao[s + 1]], atol=1e-6)
    graphs = np.flatnonzero(data["group"] == s)
    for c, i in enumerate(graphs):
        np.testing.assert_allclose(rec.pos[c], data["pos"][no[i]:no[i + 1]], atol=1e-3)
        assert math.isclose(rec.energy_near[c] + rec.energy_far[c], data["energy"][i], rel_tol=1e-4, abs_tol=1e-3)
        assert math.isclose(rec.energy_far[c], data["energy_far"][i], rel_tol=1e-4, abs_tol=1e-3)
        np.testing.assert_allclose(rec.potential_far[c], data["potential_far"][no[i]:no[i + 1]], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("target,kind,width", [("energy", "graph", 22), ("energy_near", "graph", 22),
                                                ("energy_far", "graph", 21), ("potential", "node", 28),
                                                ("potential_far", "node", 27)])
def test_loader_shapes_and_baselines(data, target, kind, width):
    graphs = pe.peptide_electrostatics(PATH, target=target)
    assert len(graphs) == len(data["group"])
    feats = pe.reference_features(data, target)
    assert feats["cutoff_oracle"].shape[1] == width
    assert feats["composition"].shape[1] == (21 if kind == "graph" else 27)
    for i in (0, len(graphs) - 1):
        g = graphs[i]
        n = g.num_nodes
        assert g.pos.shape == (n, 3) and g.x_s.shape == (n, 6) and g.pos.dtype == torch.float32
        assert g.x_s[:, 0].sum() == 0                              # no hydrogens
        rows = 1 if kind == "graph" else n
        assert g.y.shape == (rows, 1)
        assert g.baseline_composition.shape == (rows, width - (target in ("energy", "energy_near", "potential")))
        assert g.baseline_cutoff_oracle.shape == (rows, width)
        assert int(g.group) == int(data["group"][i]) and int(g.graph_key) == i
        no = data["node_offsets"]
        ref = data[target][i:i + 1] if kind == "graph" else data[target][no[i]:no[i + 1]]
        np.testing.assert_allclose(g.y[:, 0].numpy(), ref, rtol=1e-6)
        if target == "energy":
            assert math.isclose(float(g.baseline_cutoff_oracle[0, 0]), data["energy_near"][i], rel_tol=1e-6)
        if target == "potential":
            near = data["potential"][no[i]:no[i + 1]] - data["potential_far"][no[i]:no[i + 1]]
            np.testing.assert_allclose(g.baseline_cutoff_oracle[:, 0].numpy(), near, rtol=1e-5, atol=1e-4)
    from torch_geometric.data import Batch
    b = Batch.from_data_list(graphs[:3])
    assert b.baseline_cutoff_oracle.shape[0] == b.y.shape[0]


def test_groups_whole_within_splits(data):
    graphs = pe.peptide_electrostatics(PATH)
    groups = np.array([int(g.group) for g in graphs])
    assert np.array_equal(np.bincount(groups), np.bincount(data["group"]))
    tr, va, te = split_indices(len(graphs), (0.6, 0.2, 0.2), 0, groups=groups)
    sets = [set(groups[s]) for s in (tr, va, te)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(tr) + len(va) + len(te) == len(graphs)


def test_bad_inputs_and_options(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(InputError, match="nope.npz"):
        pe.peptide_electrostatics(missing)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(InputError, match="bad.npz"):
        pe.load(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, pos=np.zeros((2, 3)))
    with pytest.raises(InputError, match="partial.npz.*missing arrays"):
        pe.peptide_electrostatics(partial)
    with pytest.raises(ConfigError, match="target.*'dipole'"):
        pe.peptide_electrostatics(PATH, target="dipole")
    with pytest.raises(ConfigError, match="hydrogens"):
        pe.peptide_electrostatics(PATH, hydrogens=True)
    with pytest.raises(ConfigError, match="reference_features"):
        pe.reference_features({}, "dipole")


def test_every_sequences_conformers_differ(data):
    # generator version 1 seeded sequence 0 with RDKit randomSeed=0 and shipped four identical conformers
    no, g = data["node_offsets"], data["group"]
    assert data["meta"]["generator_version"] >= 2
    for s in range(len(data["sequence"])):
        pos = np.stack([data["pos"][no[i]:no[i + 1]] for i in np.flatnonzero(g == s)])
        assert pe.min_pairwise_rmsd(pos) > pe.MIN_CONFORMER_RMSD, s
        e = data["energy"][g == s]
        assert len(np.unique(np.round(e, 6))) == len(e), s


def test_embedding_seeds_are_never_special_to_rdkit():
    seeds = [pe.embedding_seed(s, i) for s in (0, 1, 7) for i in range(500)]
    assert min(seeds) >= 1 and max(seeds) < 2 ** 31 - 1
    assert len(set(seeds)) == len(seeds)
    with pytest.raises(ValueError, match="positive"):
        pe.make_sequence("KDAGKE", seed=0)


def test_kabsch_rmsd_hand_values():
    a = np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]])
    rot = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    assert pe.kabsch_rmsd(a, a @ rot.T + 5.0) < 1e-6          # a rigid motion is 0 A apart (sqrt of round-off)
    b = a.copy()
    b[0, 0] += 0.4                                              # one atom moved: RMSD below the raw 0.4/2
    assert 0 < pe.kabsch_rmsd(a, b) <= 0.2 + 1e-12
    assert pe.min_pairwise_rmsd(np.stack([a])) == float("inf")


def test_module_is_not_shadowed_by_its_loader():
    import farfield.datasets.peptide_electrostatics as P
    assert P is pe and callable(P.peptide_electrostatics)
    assert DATASETS["peptide_electrostatics"] is pe.peptide_electrostatics


def test_card_and_study_use_the_same_ridge_fit(data, stats):
    """The card's composition R^2 is the study's composition baseline R^2 (one ridge implementation)."""
    from farfield.cli.study import DEFAULT_STUDY
    from farfield.train.config import TrainConfig, apply_overrides
    from farfield.train.data import GraphDataModule
    from farfield.study import reference_baselines
    if PATH != pe.DEFAULT_PATH:
        pytest.skip("checks the shipped file through the registered loader")
    cfg = apply_overrides(TrainConfig(), DEFAULT_STUDY)            # the default study's split (0.6/0.2/0.2, seed 0)
    assert cfg.data.target == "potential" and cfg.data.split_seed == pe.SPLIT["seed"]
    dm = GraphDataModule(cfg.data, cfg.data.edges, seed=0, standardize=True)
    dm.setup()
    ref = reference_baselines(dm, "node_regression")
    assert math.isclose(ref["composition"]["r2"], stats["potential_composition_r2_test"], rel_tol=1e-9)
    assert math.isclose(ref["cutoff_oracle"]["r2"], stats["potential_cutoff_oracle_r2_test"], rel_tol=1e-9)

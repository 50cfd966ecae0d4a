"""Distance-based backbones are continuous when an atom crosses the cutoff of a radius graph.

Every distance-based backbone multiplies its whole edge messages by the (C^1) envelope of its radial basis
(:mod:`farfield.models.base`), so moving one atom across the cutoff by a step h (rebuilding the graph)
changes the outputs by O(h): the change must shrink with the step and be negligible at h = 1e-7.
The published, unweighted variants (``envelope=None``) jump by an amount that does not shrink.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch_geometric.data import Batch, Data

from farfield.models import BACKBONES, InputSpec, build_backbone
from farfield.symmetry import FrameDegeneracyWarning

CUT = 5.0
DISTANCE_BASED = [n for n in BACKBONES if n not in ("gcn", "gine", "gatedgcn")]


def _molecule(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * 6.0
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (n,), generator=g), 4).to(torch.float64)
    return pos, x


def _batch(pos, x):
    d = torch.cdist(pos, pos)
    src, tgt = torch.nonzero((d <= CUT) & ~torch.eye(len(pos), dtype=torch.bool), as_tuple=True)
    return Batch.from_data_list([Data(x_s=x, pos=pos, edge_index=torch.stack([src, tgt]), num_nodes=len(pos))])


def crossing(pos, i: int, j: int, step: float):
    """Positions with atom j at distance CUT - step and CUT + step from atom i (along their axis)."""
    u = (pos[j] - pos[i]) / (pos[j] - pos[i]).norm()
    inside, outside = pos.clone(), pos.clone()
    inside[j] = pos[i] + (CUT - step) * u
    outside[j] = pos[i] + (CUT + step) * u
    return inside, outside


def _pair(pos):
    """An atom pair whose crossing moves no other distance across the cutoff for small steps."""
    d = torch.cdist(pos, pos)
    for i in range(len(pos)):
        for j in range(len(pos)):
            if i != j and 2.0 < d[i, j] < 8.0:
                a, b = crossing(pos, i, j, 1e-3)
                da, db = torch.cdist(a, a), torch.cdist(b, b)
                others = torch.ones_like(d, dtype=torch.bool)
                others[i, j] = others[j, i] = False
                if ((da[others] - CUT).abs().min() > 1e-2) and ((db[others] - CUT).abs().min() > 1e-2):
                    return i, j
    raise AssertionError("no suitable pair")


def cutoff_jump(model, step: float, seed: int = 0) -> float:
    """max |output change| when one atom moves from CUT - step to CUT + step of another (graph rebuilt)."""
    pos, x = _molecule(seed=seed)
    i, j = _pair(pos)
    inside, outside = crossing(pos, i, j, step)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameDegeneracyWarning)
        a, b = model(_batch(inside, x)), model(_batch(outside, x))
    diff = 0.0
    for key in ("s", "v", "t"):
        ya, yb = getattr(a, key), getattr(b, key)
        if ya is not None:
            diff = max(diff, float((ya - yb).abs().max()))
    return diff


def _model(name, **kw):
    torch.manual_seed(0)
    m = build_backbone(name, InputSpec(4), hidden=16, num_layers=2, cutoff=CUT, **kw).double()
    return m.eval()


@pytest.mark.parametrize("name", DISTANCE_BASED)
def test_outputs_are_continuous_across_the_cutoff(name):
    m = _model(name)
    small, large = cutoff_jump(m, 1e-7), cutoff_jump(m, 1e-4)
    assert small < 1e-6, (name, small, large)
    # the change vanishes with the step (O(h); a jump would stay put)
    assert small < 1e-2 * large or small < 1e-10, (name, small, large)


@pytest.mark.parametrize("name", ["egnn", "gvp", "tfn", "segnn", "mpnn"])
def test_published_unweighted_variants_jump(name):
    m = _model(name, envelope=None)
    small, large = cutoff_jump(m, 1e-7), cutoff_jump(m, 1e-4)
    assert small > 1e-5 and small > 0.1 * large, (name, small, large)


def test_egnn_with_coordinate_updates_is_continuous():
    m = _model("egnn", update_coords=True)
    assert cutoff_jump(m, 1e-7) < 1e-6


@pytest.mark.parametrize("mechanism", ["ewald", "latent_charges", "neural_atoms"])
def test_long_range_mechanisms_keep_outputs_continuous_across_the_cutoff(mechanism):
    from farfield.models.long_range import build_strategy
    torch.manual_seed(0)
    m = build_strategy(mechanism).wrap(build_backbone("schnet", InputSpec(4), hidden=16, num_layers=2,
                                                      cutoff=CUT)).double().eval()
    small, large = cutoff_jump(m, 1e-7), cutoff_jump(m, 1e-4)
    assert small < 1e-6 and (small < 1e-2 * large or small < 1e-10), (mechanism, small, large)


def test_periodic_outputs_are_continuous_when_an_atom_leaves_the_cell():
    """An atom crossing a face of the cell (positions need not be wrapped) or wrapped back in by a lattice vector:
    the periodic graph and the Ewald sum of latent charges see the same system, so outputs do not jump."""
    import numpy as np

    from farfield.data import Featuriser, FeaturiserConfig
    from farfield.io.example import periodic_structure
    from farfield.models.long_range import build_strategy
    s = periodic_structure("triclinic")
    feat = Featuriser(FeaturiserConfig(level="atom", edges="radius:4", dtype="float64", elements=("Na", "Cl")))
    torch.manual_seed(0)
    data = feat(s)
    m = build_strategy("latent_charges").wrap(build_backbone("schnet", InputSpec.from_data(data), hidden=16,
                                                             num_layers=2, cutoff=4.0)).double().eval()
    frac = s.coords @ np.linalg.inv(s.cell)
    k = int(np.argmax(frac[:, 0]))
    outs = []
    for target in (1.0 - 1e-7, 1.0 + 1e-7, 1e-7):           # just inside, just outside, wrapped back in
        c = s.coords.copy()
        f = frac[k].copy()
        f[0] = target
        c[k] = f @ s.cell
        from dataclasses import replace
        with torch.no_grad():
            outs.append(m(Batch.from_data_list([feat(replace(s, coords=c))])).s)
    assert float((outs[0] - outs[1]).abs().max()) < 1e-5
    assert float((outs[1] - outs[2]).abs().max()) < 1e-5

"""Long-range strategies: symmetry on every backbone, batch independence, gradients, information transport
beyond the cutoff, and the pieces (k-grid, frames, Neural Atoms' softmax axis, OGB schedule)."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch_geometric.data import Batch, Data

from _graphs import example_batch
from farfield.data import Featuriser, FeaturiserConfig
from farfield.errors import ConfigError, InputError
from farfield.graphs import parse_edge_spec
from farfield.io import example_path, read_structure
from farfield.models import BACKBONES, InputSpec, build_backbone
from farfield.models.long_range import (GRAPH_STRATEGIES, MECHANISMS, STRATEGIES, EwaldMP, NeuralAtoms, VirtualNode,
                                        WithLongRange, build_strategy, k_grid, k_shells, svd_frame_coordinates)
from farfield.models.long_range.base import Context
from farfield.symmetry import FrameAveraging, FrameDegeneracyWarning, check_symmetry

SPHERICAL = tuple(n for n in BACKBONES if n.startswith("tfn") or n == "segnn")   # e3nn models (channels, not hidden)
GRAPH2D = ("gcn", "gine", "gatedgcn")


def _backbone(name, spec, cutoff, **kw):
    opts = {} if name in GRAPH2D else {"cutoff": cutoff}
    size = {"num_layers": 2} if name in SPHERICAL else {"hidden": 32, "num_layers": 2}
    return build_backbone(name, spec, **size, **opts, **kw)


def _max_edge(batch) -> float:
    src, tgt = batch.edge_index
    return float((batch.pos[src] - batch.pos[tgt]).norm(dim=-1).max())


# -- symmetry: every backbone x every strategy -----------------------------------------------------------
@pytest.mark.parametrize("mechanism", list(MECHANISMS))
@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_with_every_mechanism_keeps_its_symmetry(name, mechanism):
    batch = example_batch("residue", "float64")
    torch.manual_seed(0)
    model = build_strategy(mechanism).wrap(_backbone(name, InputSpec.from_data(batch), _max_edge(batch) + 1))
    assert isinstance(model, WithLongRange)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = check_symmetry(model, batch, dtype=torch.float64, seed=1)
    assert report.ok, report.failures()
    assert report.group == model.backbone.symmetry


@pytest.mark.parametrize("strategy", list(GRAPH_STRATEGIES))
@pytest.mark.parametrize("name", ["schnet", "gvp", "painn", "tfn", "fa_mpnn"])
def test_graph_strategies_keep_symmetry(name, strategy):
    s = read_structure(example_path())
    st = build_strategy(strategy)
    feat = Featuriser(FeaturiserConfig(level="residue", edges=st.edge_spec("knn:6"), dtype="float64"))
    batch = Batch.from_data_list([feat(s.select(s.res_seq <= 12)), feat(s.select(s.res_seq > 12))])
    spec = InputSpec.from_data(batch)
    torch.manual_seed(0)
    model = st.wrap(build_backbone(name, spec, **({"num_layers": 2} if name in SPHERICAL else {"hidden": 32, "num_layers": 2}),
                                   **st.backbone_options(_max_edge(batch))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert check_symmetry(model, batch, dtype=torch.float64, seed=2).ok


# -- symmetric molecules: degenerate covariances (no unique principal-axis frame) --------------------------
def _ring(n, r, z=0.0):
    return [[r * math.cos(2 * math.pi * i / n), r * math.sin(2 * math.pi * i / n), z] for i in range(n)]


#: benzene (C6H6, planar D6h: two equal covariance eigenvalues), a regular octahedron with its centre (all three
#: equal), a planar 5-fold star (two equal), a linear molecule (two equal, both zero)
DEGENERATE = {
    "benzene": _ring(6, 1.39) + _ring(6, 2.47),
    "octahedron": [[0.0, 0.0, 0.0], [1.6, 0, 0], [-1.6, 0, 0], [0, 1.6, 0], [0, -1.6, 0], [0, 0, 1.6], [0, 0, -1.6]],
    "star": [[0.0, 0.0, 0.0]] + _ring(5, 1.3),
    "linear": [[0.0, 0.0, 1.2 * i] for i in range(5)],
}


def _degenerate(name: str, dtype=torch.float64) -> Data:
    pos = torch.tensor(DEGENERATE[name], dtype=dtype)
    n = pos.shape[0]
    x = torch.zeros(n, 8, dtype=dtype)
    x[:, 0] = 1.0
    x[:, 1] = (pos.norm(dim=-1) > 2.0).to(dtype)        # two atom types (benzene's C and H; centre vs rest)
    d = Data(pos=pos, x_s=x)
    parse_edge_spec("radius:4.5").apply(d)
    return d


@pytest.mark.parametrize("geometry", list(DEGENERATE))
@pytest.mark.parametrize("mechanism", list(MECHANISMS))
@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_every_mechanism_keeps_its_symmetry_on_symmetric_molecules(name, mechanism, geometry):
    """Covariance eigenvalues coincide on these inputs, so any principal-axis frame is arbitrary; every mechanism
    must still be invariant to float64 round-off (tolerance 1e-9)."""
    batch = Batch.from_data_list([_degenerate(geometry), _degenerate("octahedron")])
    torch.manual_seed(0)
    model = build_strategy(mechanism).wrap(_backbone(name, InputSpec(8), 5.0))
    report = check_symmetry(model, batch, dtype=torch.float64, seed=1)
    assert report.ok, report.failures()


@pytest.mark.parametrize("geometry", list(DEGENERATE))
def test_ewald_is_continuous_on_symmetric_molecules(geometry):
    """A 2.5e-9 A perturbation must move the output by O(2.5e-9), not by the jump of an arbitrary frame (the
    SVD-frame construction moved SchNet + Ewald by ~1e-5 on benzene)."""
    d = _degenerate(geometry)
    e = d.clone()
    e.pos = d.pos + 2.5e-9 * torch.randn(d.pos.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.manual_seed(0)
    model = build_strategy("ewald").wrap(_backbone("schnet", InputSpec(8), 5.0)).double().eval()
    with torch.no_grad():
        jump = (model(d).s - model(e).s).abs().max().item()
    assert jump < 1e-7, jump


def test_svd_frame_ewald_is_kept_and_warns_on_degenerate_frames():
    """The published construction stays available; on a degenerate covariance it warns instead of silently
    breaking invariance; on a generic cloud it is silent and still sign-flip symmetric."""
    torch.manual_seed(0)
    m = EwaldMP(8, 1, frame="svd").double()
    h = torch.randn(12, 8, dtype=torch.float64)
    pos = _degenerate("benzene").pos
    with pytest.warns(FrameDegeneracyWarning, match="frame='isotropic'"):
        m.update(0, h, pos, Context(torch.zeros(12, dtype=torch.long), 1, torch.tensor([12])))
    generic = torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * torch.tensor(
        [4.0, 2.0, 1.0], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.update(0, h, generic, Context(torch.zeros(12, dtype=torch.long), 1, torch.tensor([12])))
    with pytest.raises(ConfigError, match="frame"):
        EwaldMP(8, 1, frame="pca")


def test_isotropic_ewald_is_the_orientation_averaged_k_sum():
    """Brute force over every k-vector: m_i = 0.01 s_i sum_j s_j h~_j sum_k F(|k|) sin(|k| r_ij) / (|k| r_ij), the
    orientation average of sum_k F_k cos(k . r_ij), with the radial damping s_j = sinc(dk |x_j - c| / 2)."""
    torch.manual_seed(0)
    m = EwaldMP(8, 1, dk=0.2, k_cutoff=0.6).double()
    blk = m.blocks[0]
    g = torch.Generator().manual_seed(2)
    pos = torch.randn(6, 3, dtype=torch.float64, generator=g) * 3.0
    h = torch.randn(6, 8, dtype=torch.float64, generator=g)
    got = m.update(0, h, pos, Context(torch.zeros(6, dtype=torch.long), 1, torch.tensor([6])))
    kv = k_grid(0.2, 0.6)
    kn = kv.norm(dim=-1)
    F = blk.up(m.down(m.rbf(kn)))                                             # [K, d]
    x = pos - pos.mean(0)
    s = torch.sinc(0.5 * 0.2 * x.norm(dim=-1))                              # normalised sinc (the reference's)
    ht = blk.pre(h) * s[:, None]
    r = torch.cdist(pos, pos)
    kern = torch.sinc(kn[None, None, :] * r[..., None] / math.pi)           # sin(|k| r) / (|k| r), [n, n, K]
    msg = 0.01 * s[:, None] * torch.einsum("ijk,kd,jd->id", kern, F, ht)
    torch.testing.assert_close(got, blk.update(msg), atol=1e-12, rtol=0)
    radii, counts = k_shells(kv, 0.2)
    assert counts.sum() == 61 and radii.numel() == 8            # |n|^2 in {1..9} \ {7}


def test_ewald_damping_matches_the_reference_by_default():
    """The reference's torch.sinc(0.5 dk x) has its first zero at 2 / dk = 10 A (dk 0.2); the unnormalised
    sin(dk x / 2) / (dk x / 2) at 2 pi / dk = 31.4 A."""
    ref, unnorm = EwaldMP(8, 1), EwaldMP(8, 1, damping="unnormalised")
    assert ref.damping == "normalised" and ref.k_cutoff == 0.6 and ref.dk == 0.2
    x = torch.tensor([0.0, 10.0, 2 * math.pi / 0.2], dtype=torch.float64)
    torch.testing.assert_close(ref._damp(x)[:2], torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-15, rtol=0)
    torch.testing.assert_close(unnorm._damp(x)[[0, 2]], torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-15,
                               rtol=0)
    assert unnorm._damp(x)[1] > 0.6
    with pytest.raises(ConfigError, match="damping"):
        EwaldMP(8, 1, damping="gaussian")


# -- Neural Atoms: the 2D reference's placement and head reduction ----------------------------------------
@pytest.mark.parametrize("name", list(BACKBONES))
def test_neural_atoms_follow_the_reference_per_backbone_kind(name):
    """2D backbones (no coordinates): after each layer, heads summed (the reference's 2D code); 3D backbones: in
    parallel, heads averaged. Explicit options win."""
    torch.manual_seed(0)
    bb = _backbone(name, InputSpec(8), 5.0)
    m = build_strategy("neural_atoms").wrap(bb).long_range
    expect = ("parallel", "mean") if bb.uses_positions else ("after", "sum")
    assert (m.placement, m.head_reduce) == expect
    assert all(b.head_reduce == expect[1] for b in m.blocks)
    m = build_strategy("neural_atoms", placement="parallel", head_reduce="mean").wrap(bb).long_range
    assert (m.placement, m.head_reduce) == ("parallel", "mean")


def test_neural_atoms_head_sum_is_heads_times_head_mean():
    torch.manual_seed(0)
    mean = NeuralAtoms(8, 1, num_atoms=3, heads=2).blocks[0].double()
    summ = NeuralAtoms(8, 1, num_atoms=3, heads=2, head_reduce="sum").blocks[0].double()
    summ.load_state_dict(mean.state_dict())
    h = torch.randn(5, 8, dtype=torch.float64)
    args = (torch.zeros(5, dtype=torch.long), 1, torch.tensor([3]))
    torch.testing.assert_close(summ(h, *args), 2 * mean(h, *args), atol=1e-12, rtol=0)
    with pytest.raises(ConfigError, match="head_reduce"):
        NeuralAtoms(8, 1, head_reduce="max")


# -- wrappers: each tensor once in the state dict ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["long_range", "frames", "both"])
def test_wrappers_register_each_tensor_once_and_checkpoints_load(kind):
    batch = example_batch("atom", "float64")
    spec = InputSpec.from_data(batch)

    def build():
        torch.manual_seed(0)
        bb = build_backbone("schnet", spec, hidden=16, num_layers=3)
        if kind in ("frames", "both"):
            bb = FrameAveraging(bb)
        return (bb if kind == "frames" else build_strategy("ewald").wrap(bb)).double().eval()
    model = build()
    sd = model.state_dict()
    assert len(sd) == len({t.data_ptr() for t in sd.values()})           # no aliases
    assert not any(k.startswith("layers.") for k in sd)
    assert model.num_layers == 3
    torch.manual_seed(1)
    fresh = build()
    for p in fresh.parameters():
        p.data.normal_()
    fresh.load_state_dict(sd)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(fresh(batch).s, model(batch).s, atol=0, rtol=0)
    # checkpoints written while the wrappers aliased ``layers = backbone.layers`` still load
    old = dict(sd)
    for k, v in sd.items():
        parts = k.split(".")
        for i in range(len(parts)):
            if parts[i] == "backbone" and i + 1 < len(parts) and parts[i + 1] == "layers":
                old[".".join(parts[:i] + parts[i + 1:])] = v
    assert len(old) > len(sd)
    fresh.load_state_dict(old)


# -- batch independence ----------------------------------------------------------------------------------
def _mixed_graphs(dtype: str):
    """Graphs of very different sizes: 3 residues, the whole peptide (379 atoms), 1 residue."""
    s = read_structure(example_path())
    feat = Featuriser(FeaturiserConfig(level="atom", edges="radius:4.5", dtype=dtype))
    return [feat(s.select(s.res_seq <= 3)), feat(s), feat(s.select(s.res_seq == 7))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("strategy", [("virtual_node", {}), ("virtual_nodes", {}), ("virtual_node", {"norm": "batch"}),
                                      ("neural_atoms", {"heads": 1}), ("neural_atoms", {"heads": 4}),
                                      ("neural_atoms", {"ratio": 0.1, "heads": 2}), ("ewald", {}),
                                      ("attention", {}), ("latent_charges", {}),
                                      ("latent_charges", {"energy": True, "channels": 2})], ids=str)
def test_graph_output_independent_of_batch(strategy, dtype):
    """Mechanisms work per graph, so batching changes only the order / blocking of floating-point sums (dense
    padding, BLAS kernels chosen by shape). Such a reordering of a sum of n terms moves it by at most
    ~n eps max|term|: the tolerance is eps(dtype) * n_max * max|output| with n_max the largest graph (the
    longest per-graph reduction). Float64 (eps 2.2e-16) makes this an exactness claim (~4e-13 here); in
    float32 (eps 1.2e-7) the bound is ~2e-4, and differences of a few 1e-6 have been seen across machines."""
    graphs = _mixed_graphs(dtype)
    spec = InputSpec.from_data(graphs[0])
    torch.manual_seed(0)
    model = build_strategy(strategy[0], **strategy[1]).wrap(build_backbone("schnet", spec, hidden=32, num_layers=3))
    model = model.to(torch.float64 if dtype == "float64" else torch.float32).eval()
    with torch.no_grad():
        together = model(Batch.from_data_list(graphs)).s
        alone = torch.cat([model(Batch.from_data_list([g])).s for g in graphs])
        # and the first graph next to a different partner
        pair = model(Batch.from_data_list([graphs[0], graphs[2]])).s[: graphs[0].num_nodes]
    assert together.abs().max() > 1e-3
    eps = torch.finfo(together.dtype).eps
    atol = eps * max(g.num_nodes for g in graphs) * float(together.abs().max())
    torch.testing.assert_close(together, alone, atol=atol, rtol=0)
    torch.testing.assert_close(pair, alone[: graphs[0].num_nodes], atol=atol, rtol=0)


# -- gradients -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [("virtual_node", {}), ("virtual_nodes", {}), ("neural_atoms", {"heads": 2}),
                                      ("neural_atoms", {"shared": True}), ("ewald", {}), ("attention", {}),
                                      ("latent_charges", {"energy": True})], ids=str)
def test_every_mechanism_parameter_gets_gradient(strategy):
    batch = example_batch("atom", "float64")
    torch.manual_seed(0)
    model = build_strategy(strategy[0], **strategy[1]).wrap(
        build_backbone("schnet", InputSpec.from_data(batch), hidden=16, num_layers=3)).double().train()
    out = model(batch)
    loss = out.s.pow(2).sum() + (out.node_energy.sum() if out.node_energy is not None else 0)
    loss.backward()
    dead = [n for n, p in model.long_range.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


def test_ewald_forces_are_finite_for_tiny_graphs():
    """Graphs with < 3 atoms have no unique frame; they get no update and finite gradients."""
    pos = torch.tensor([[0.0, 0, 0], [1.2, 0, 0], [5.0, 1, 0], [6, 1, 1], [7, 3, 1]], dtype=torch.float64,
                       requires_grad=True)
    batch = torch.tensor([0, 0, 1, 1, 1])
    x, ok = svd_frame_coordinates(pos, batch, 2)
    assert ok.tolist() == [False, False, True, True, True]
    x.sum().backward()
    assert torch.isfinite(pos.grad).all()


# -- information beyond the cutoff -----------------------------------------------------------------------
def _two_clusters(dtype=torch.float64) -> Data:
    """Two 6-atom clusters 25 A apart: no edge (and no path) between them within the 4.5 A cutoff."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=g, dtype=dtype) * 1.2
    b = torch.randn(6, 3, generator=g, dtype=dtype) * 1.2 + torch.tensor([25.0, 3.0, -2.0], dtype=dtype)
    d = Data(pos=torch.cat([a, b]), x_s=torch.randn(12, 8, generator=g, dtype=dtype))
    d.cluster = torch.tensor([0] * 6 + [1] * 6)
    return d


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mechanisms_carry_information_beyond_the_cutoff(strategy):
    st = build_strategy(strategy)
    d = _two_clusters()
    parse_edge_spec(st.edge_spec("radius:4.5")).apply(d)
    cross = (d.cluster[d.edge_index[0]] != d.cluster[d.edge_index[1]]).any().item()
    assert cross == st.is_graph                       # only graph strategies add edges between the clusters
    opts = st.backbone_options(_max_edge(d)) if st.is_graph else {"cutoff": 5.0}
    torch.manual_seed(0)
    model = st.wrap(build_backbone("schnet", InputSpec(8), hidden=16, num_layers=3, **opts)).double().eval()
    e = d.clone()
    e.x_s = d.x_s.clone()
    e.x_s[6:] += 1.0                                   # change cluster B's features only
    with torch.no_grad():
        delta = (model(d).s[:6] - model(e).s[:6]).abs().max().item()
    if strategy == "none":
        assert delta == 0.0
    else:
        assert delta > 1e-6, f"{strategy} did not carry cluster B's features to cluster A ({delta:.2e})"


# -- the pieces ------------------------------------------------------------------------------------------
def test_k_grid_counts_and_half_space():
    k = k_grid(0.2, 0.6)
    n = torch.round(k / 0.2).long()
    # integer points with 0 < |n| <= 3: 122, half of them
    assert k.shape == (61, 3)
    assert (k.norm(dim=-1) <= 0.6 + 1e-9).all()
    as_set = {tuple(v) for v in n.tolist()}
    assert not any(tuple(-x for x in v) in as_set for v in as_set)
    assert k_grid(0.2, 0.4).shape == (int(sum(1 for a in range(-2, 3) for b in range(-2, 3) for c in range(-2, 3)
                                              if 0 < a * a + b * b + c * c <= 4) / 2), 3)


def test_ewald_is_invariant_to_frame_sign_flips():
    """The Ewald update computed in a frame with flipped axes equals the original (the k-set, filter and damping
    are symmetric), which is why an arbitrary SVD sign choice is harmless."""
    torch.manual_seed(0)
    m = EwaldMP(8, 1).double()
    h = torch.randn(7, 8, dtype=torch.float64)
    pos = torch.randn(7, 3, dtype=torch.float64) * torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
    from farfield.models.long_range.base import Context
    batch = torch.zeros(7, dtype=torch.long)
    ctx = Context(batch, 1, torch.tensor([7]))
    ref = m.update(0, h, pos, ctx)
    for flip in ([-1, 1, 1], [1, -1, -1], [-1, -1, -1]):
        ctx = Context(batch, 1, torch.tensor([7]))
        got = m.update(0, h, pos * torch.tensor(flip, dtype=torch.float64), ctx)
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)


def test_neural_atoms_softmax_runs_over_neural_atoms():
    torch.manual_seed(0)
    blk = NeuralAtoms(8, 1, num_atoms=3, heads=2).blocks[0].double()
    h = torch.randn(5, 8, dtype=torch.float64)
    captured = {}
    orig = torch.Tensor.softmax

    def spy(t, dim):
        out = orig(t, dim)
        captured.setdefault("A", out)
        return out
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "softmax", spy)
        blk(h, torch.zeros(5, dtype=torch.long), 1, torch.tensor([3]))
    A = captured["A"]                                   # [N, H, K]
    assert A.shape == (5, 2, 3)
    torch.testing.assert_close(A.sum(-1), torch.ones(5, 2, dtype=torch.float64))


def test_neural_atoms_ratio_uses_per_graph_counts():
    m = NeuralAtoms(8, 2, ratio=0.5, max_atoms=4)
    from farfield.models.long_range.base import Context
    from farfield.models.base import NodeState
    ctx = Context(torch.tensor([0, 0, 0, 1] + [2] * 20), 3, torch.tensor([3, 1, 20]))
    m.start(ctx, NodeState(torch.zeros(24, 8), None, torch.zeros(24, 3)))
    assert [k.tolist() for k in ctx.memory["atoms"]] == [[2, 1, 4]] * 2


def test_virtual_node_follows_the_ogb_schedule():
    """With the OGB settings, the wrapped model equals a hand-written OGB loop: h_in = h + v;
    h = layer(h_in); v = MLP(sum h_in + v), no update after the last layer."""
    batch = example_batch("atom", "float64")
    torch.manual_seed(0)
    bb = build_backbone("schnet", InputSpec.from_data(batch), hidden=16, num_layers=3).double().eval()
    vn = VirtualNode(16, 3, norm="batch").double().eval()
    model = WithLongRange(bb, vn).eval()
    with torch.no_grad():
        got = model(batch).s
        state = bb.embed(batch)
        geom = bb.geometry(state, batch)
        v = torch.zeros(batch.num_graphs, 16, dtype=torch.float64)
        from torch_geometric.utils import scatter
        for i in range(3):
            state = state.replace(s=state.s + v[batch.batch])
            h_in = state.s
            state = bb.layer(i, state, geom)
            if i < 2:
                v = vn.mlps[i](scatter(h_in, batch.batch, 0, reduce="sum") + v)
    torch.testing.assert_close(got, state.s, atol=1e-12, rtol=0)


def test_strategy_configuration_errors():
    with pytest.raises(ConfigError, match="unknown long-range strategy 'ewlad'"):
        build_strategy("ewlad")
    with pytest.raises(ConfigError, match="no option"):
        build_strategy("neural_atoms", atoms=3)
    with pytest.raises(ConfigError, match="ratio"):
        build_strategy("neural_atoms", ratio=2.0).mechanism(16, 2)
    with pytest.raises(ConfigError, match="placement"):
        build_strategy("ewald", placement="before").mechanism(16, 2)
    with pytest.raises(ConfigError, match="max_edge_length"):
        build_strategy("random").backbone_options()
    with pytest.raises(ConfigError, match="width"):
        WithLongRange(build_backbone("schnet", InputSpec(4), hidden=16, num_layers=2), NeuralAtoms(8, 2))
    assert build_strategy("random", n=4).edge_spec("radius:4.5") == "radius:4.5+random:4,law=inverse_cubic"
    assert build_strategy("full").edge_spec("radius:4.5") == "full"


def test_ewald_needs_positions():
    model = build_strategy("ewald").wrap(build_backbone("gcn", InputSpec(4), hidden=8, num_layers=1))
    d = Data(x_s=torch.randn(3, 4), edge_index=torch.tensor([[0, 1], [1, 2]]))
    with pytest.raises(InputError, match="needs coordinates"):
        model(d)
    with torch.no_grad():
        out = model(Data(x_s=torch.randn(3, 4), pos=torch.randn(3, 3), edge_index=torch.tensor([[0, 1], [1, 2]])))
    assert math.isfinite(float(out.s.sum()))


def test_model_config_builds_and_counts_parameters():
    from farfield.models.config import ModelConfig, parameter_counts
    cfg = ModelConfig.from_dict({"backbone": "painn", "backbone_options": {"hidden": 16, "num_layers": 2},
                                 "long_range": "neural_atoms", "long_range_options": {"num_atoms": 4, "heads": 2}})
    model = cfg.build(InputSpec(8))
    counts = parameter_counts(model)
    assert counts["total"] == counts["backbone"] + counts["long_range"] > counts["backbone"] > 0
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    plain = ModelConfig("painn", {"hidden": 16, "num_layers": 2}).build(InputSpec(8))
    assert parameter_counts(plain)["total"] == counts["backbone"]
    with pytest.raises(ConfigError, match="unknown model key"):
        ModelConfig.from_dict({"backbone": "painn", "longrange": "ewald"})
    with pytest.raises(ConfigError, match="unknown long-range strategy"):
        ModelConfig(long_range="vn")
    rnd = ModelConfig("schnet", {"hidden": 8, "num_layers": 1}, "random", {"n": 4})
    assert rnd.edge_spec("radius:4.5").endswith("random:4,law=inverse_cubic")
    assert rnd.build(InputSpec(8), max_edge_length=30.2).cutoff == 32.0


def test_neural_atoms_desc_schedule_matches_the_reference_peptides_config():
    """Li et al. 2024, Peptides-func: avg_nodes 150, ratio 0.9, 'desc' -> K_l = ceil(0.9 K_{l-1}), K_1 = 135."""
    from farfield.models.long_range import NeuralAtoms
    m = NeuralAtoms(16, 5, ratio=0.9, avg_nodes=150, schedule="desc")
    counts = torch.tensor([7, 300])
    ks = [k.tolist() for k in m.atoms_per_layer(counts)]
    assert ks == [[135, 135], [122, 122], [110, 110], [99, 99], [90, 90]]
    assert m.max_atoms == 135
    fixed = NeuralAtoms(16, 3, ratio=0.9, avg_nodes=150)
    assert [k.tolist() for k in fixed.atoms_per_layer(counts)] == [[135, 135]] * 3
    per_graph = NeuralAtoms(16, 2, ratio=0.5, max_atoms=200, schedule="desc")
    assert [k.tolist() for k in per_graph.atoms_per_layer(counts)] == [[4, 150], [2, 75]]
    for bad in ({"schedule": "asc", "ratio": 0.9}, {"schedule": "desc"}, {"avg_nodes": 150}):
        with pytest.raises(ConfigError):
            NeuralAtoms(16, 2, **bad)
    # the layer's block really uses its own K: the output changes when only a later layer's K changes
    torch.manual_seed(0)
    h, batch = torch.randn(12, 16, dtype=torch.float64), torch.zeros(12, dtype=torch.long)
    blk = m.blocks[4].double()
    a = blk(h, batch, 1, torch.tensor([90]))
    b = blk(h, batch, 1, torch.tensor([135]))
    assert not torch.allclose(a, b)


def test_isotropic_ewald_damping_is_radial_not_the_orientation_average():
    """What the isotropic Ewald docstring says of its damping: sinc(dk |x - c| / 2) is zero at 2 / dk = 10 A and
    negative beyond, and it is not the orientation average of the published per-axis damping (0.030 vs -0.089 at
    11 A)."""
    from farfield.models.long_range.ewald import EwaldMP
    m = EwaldMP(8, 1).double()
    r = torch.tensor([5.0, 10.0, 11.0, 15.0], dtype=torch.float64)
    radial = m._damp(r)
    assert abs(float(radial[1])) < 1e-12 and float(radial[2]) < 0 and float(radial[3]) < 0
    # orientation average of prod_a sinc(dk x_a / 2) over a Fibonacci sphere of 20,000 directions
    n = 20000
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / n
    phi = math.pi * (1 + 5 ** 0.5) * k
    u = torch.stack([(1 - z ** 2).sqrt() * phi.cos(), (1 - z ** 2).sqrt() * phi.sin(), z], -1)   # [n, 3]
    avg = torch.stack([m._damp(ri * u).prod(-1).mean() for ri in r])
    assert float(avg[2]) == pytest.approx(0.030, abs=2e-3) and float(radial[2]) == pytest.approx(-0.089, abs=2e-3)
    assert float(avg[1]) == pytest.approx(0.098, abs=2e-3)           # the average is not zero at 10 A
    assert float(avg[0]) == pytest.approx(0.648, abs=2e-3) and float(radial[0]) == pytest.approx(0.637, abs=2e-3)

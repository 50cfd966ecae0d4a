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
                                        WithLongRange, build_strategy, k_grid, svd_frame_coordinates)
from farfield.symmetry import check_symmetry

SPHERICAL = ("tfn", "mace", "tfn_se3", "segnn")
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


# -- batch independence ----------------------------------------------------------------------------------
def _mixed_graphs(dtype: str):
    """Graphs of very different sizes: 3 residues, the whole peptide (379 atoms), 1 residue."""
    s = read_structure(example_path())
    feat = Featuriser(FeaturiserConfig(level="atom", edges="radius:4.5", dtype=dtype))
    return [feat(s.select(s.res_seq <= 3)), feat(s), feat(s.select(s.res_seq == 7))]


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-6), ("float64", 1e-10)])
@pytest.mark.parametrize("strategy", [("virtual_node", {}), ("virtual_nodes", {}), ("virtual_node", {"norm": "batch"}),
                                      ("neural_atoms", {"heads": 1}), ("neural_atoms", {"heads": 4}),
                                      ("neural_atoms", {"ratio": 0.1, "heads": 2}), ("ewald", {}),
                                      ("attention", {})], ids=str)
def test_graph_output_independent_of_batch(strategy, dtype, atol):
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
    torch.testing.assert_close(together, alone, atol=atol, rtol=0)
    torch.testing.assert_close(pair, alone[: graphs[0].num_nodes], atol=atol, rtol=0)


# -- gradients -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [("virtual_node", {}), ("virtual_nodes", {}), ("neural_atoms", {"heads": 2}),
                                      ("neural_atoms", {"shared": True}), ("ewald", {}), ("attention", {})], ids=str)
def test_every_mechanism_parameter_gets_gradient(strategy):
    batch = example_batch("atom", "float64")
    torch.manual_seed(0)
    model = build_strategy(strategy[0], **strategy[1]).wrap(
        build_backbone("schnet", InputSpec.from_data(batch), hidden=16, num_layers=3)).double().train()
    model(batch).s.pow(2).sum().backward()
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
    assert ctx.memory["atoms"].tolist() == [2, 1, 4]


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

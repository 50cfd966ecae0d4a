"""Model diagnostics: Jacobian influence (exact locality of message passing, reach of every long-range strategy,
batch independence, vectorised == naive), the range measure and influence profile against hand values, MAD
against hand values, per-layer embeddings, and rebuilding a trained module from a run directory."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from farfield.diagnostics import (euclidean_distances, hop_distances, hop_mask, influence, influence_profile,
                                  layer_embeddings, load_trained, mad, mad_per_layer, model_fn, pairwise_influence,
                                  range_measure)
from farfield.errors import ConfigError, InputError
from farfield.graphs import parse_edge_spec
from farfield.models import InputSpec, build_backbone
from farfield.models.long_range import STRATEGIES, build_strategy

CUTOFF = 2.0          # Angstrom: on the chains below (1.5 A spacing) only consecutive atoms are neighbours
LAYERS = 2
WIDTH = 5             # x_s features


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small graphs: thread start-up dominates, and the machine is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _chain(n: int = 12, seed: int = 0) -> Data:
    """A zigzag chain: atom i at x = 1.5 i, y alternating 0 / 0.3, jittered by 0.05 A; random features."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.zeros(n, 3, dtype=torch.float64)
    pos[:, 0] = 1.5 * torch.arange(n, dtype=torch.float64)
    pos[:, 1] = 0.3 * (torch.arange(n) % 2)
    pos += 0.05 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return Data(pos=pos, x_s=torch.randn(n, WIDTH, generator=g, dtype=torch.float64))


def _batch(*graphs: Data, edges: str = f"radius:{CUTOFF}") -> Batch:
    b = Batch.from_data_list([g.clone() for g in graphs])
    parse_edge_spec(edges).apply(b)
    return b


def _model(name: str = "schnet", strategy: str = "none", batch=None, **kw):
    st = build_strategy(strategy)
    opts = {"hidden": 16, "num_layers": LAYERS, "cutoff": CUTOFF, **kw}
    if st.is_graph:
        src, tgt = batch.edge_index
        longest = float((batch.pos[src] - batch.pos[tgt]).norm(dim=-1).max())
        opts = st.backbone_options(longest, name, opts)
    torch.manual_seed(0)
    return st.wrap(build_backbone(name, InputSpec(WIDTH), **opts)).double().eval()


def _scalars(model):
    return lambda b: model(b).s


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # radial basis: float() of a tensor that requires grad
        return fn(*args, **kw)


# -- locality: exact zeros beyond L hops and beyond L cutoffs --------------------------------------------
@pytest.mark.parametrize("name,kw", [("schnet", {}), ("painn", {}), ("egnn", {"update_coords": True})])
def test_local_models_have_exactly_zero_influence_beyond_their_receptive_field(name, kw):
    b = _batch(_chain(12))
    I = _quiet(influence, _scalars(_model(name, **kw)), b, method="vmap")
    hops, eu = hop_distances(b)[0], euclidean_distances(b)[0]
    assert hops[0, -1] == 11                                        # a chain: hop structure as intended
    for w in ("x_s", "pos"):
        A = I[w][0]
        assert A.shape == (12, 12)
        assert (A[hops > LAYERS] == 0).all(), w                    # exactly zero, not small
        assert (A[eu > LAYERS * CUTOFF] == 0).all(), w
        assert (A[hops == LAYERS] > 0).all(), w                    # the receptive field is not smaller either
    assert I.cross_graph == {"x_s": 0.0, "pos": 0.0}


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "none"])
def test_every_long_range_strategy_reaches_beyond_the_local_receptive_field(strategy):
    st = build_strategy(strategy)
    local = _batch(_chain(12))
    b = _batch(_chain(12), edges=st.edge_spec(f"radius:{CUTOFF}"))
    model = _model("schnet", strategy, b)
    I = _quiet(influence, _scalars(model), b, wrt="x_s", method="vmap")
    far = hop_distances(local)[0] > LAYERS                         # hops on the local radius graph
    assert far.sum() > 0
    assert (I["x_s"][0][far] > 0).any(), f"{strategy}: no influence beyond {LAYERS} local hops"


# -- batch independence, and vectorised == naive -----------------------------------------------------------
@pytest.mark.parametrize("strategy", ["none", "virtual_node", "neural_atoms", "ewald", "attention"])
def test_batched_influence_equals_per_graph_influence(strategy):
    graphs = [_chain(12, 0), _chain(9, 1), _chain(7, 2)]
    model = _model("schnet", strategy)
    fn = lambda b: model(b).s[:, :4]                                # noqa: E731
    I = _quiet(influence, fn, _batch(*graphs), method="vmap")
    assert I.cross_graph == {"x_s": 0.0, "pos": 0.0}                # no entry across graphs, exactly
    packed = _quiet(influence, fn, _batch(*graphs), packed=True, method="vmap")
    for g, data in enumerate(graphs):
        alone = _quiet(influence, fn, _batch(data), method="vmap")
        for w in ("x_s", "pos"):
            torch.testing.assert_close(I[w][g], alone[w][0], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(packed[w][g], alone[w][0], rtol=1e-10, atol=1e-12)
    assert packed.backward_passes < I.backward_passes


def test_a_model_that_mixes_graphs_is_caught():
    model = _model("schnet")
    fn = lambda b: model(b).s + 0.1 * b.x_s.sum()          # noqa: E731 - a batch-wide sum leaks across graphs
    b = _batch(_chain(6, 0), _chain(5, 1))
    I = _quiet(influence, fn, b, wrt="x_s", method="vmap")
    assert I.cross_graph["x_s"] > 0
    packed = _quiet(influence, fn, b, wrt="x_s", packed=True, method="vmap")   # assumes independence: wrong here
    assert not torch.allclose(packed["x_s"][0], I["x_s"][0])


def _naive(fn, b, level):
    """One row at a time through torch.autograd.functional.jacobian: |J| summed over channels and components."""
    def f(xs, pos):
        view = b.clone()
        view.x_s, view.pos = xs, pos
        return fn(view)
    Jx, Jp = torch.autograd.functional.jacobian(f, (b.x_s.clone(), b.pos.clone()))    # [R, k, N, F], [R, k, N, 3]
    return {"x_s": Jx.abs().sum((1, 3)), "pos": Jp.abs().sum((1, 3))}


@pytest.mark.parametrize("level", ["node", "graph"])
def test_vectorised_influence_equals_the_naive_per_row_jacobian(level):
    model = _model("schnet", "neural_atoms")
    if level == "node":
        fn = lambda b: model(b).s[:, :3]                                          # noqa: E731
    else:
        fn = lambda b: scatter(model(b).s[:, :2], b.batch, dim=0, reduce="sum")  # noqa: E731
    b = _batch(_chain(8, 0), _chain(6, 1))
    ref = _quiet(_naive, fn, b, level)
    ptr = b.ptr.tolist()
    for method in ("vmap", "loop", "auto"):
        for packed in (False, True):
            I = _quiet(influence, fn, b, method=method, packed=packed, chunk_size=5)
            assert I.level == level and I.method.split()[0] in ((method,) if method != "auto" else ("vmap", "loop"))
            assert ("auto" in I.method) == (method == "auto")
            for w in ("x_s", "pos"):
                full = ref[w]
                for g in range(2):
                    rows = slice(ptr[g], ptr[g + 1]) if level == "node" else slice(g, g + 1)
                    torch.testing.assert_close(I[w][g], full[rows, ptr[g]:ptr[g + 1]], rtol=1e-12, atol=1e-14)
                off = full.clone()
                for g in range(2):
                    rows = slice(ptr[g], ptr[g + 1]) if level == "node" else slice(g, g + 1)
                    off[rows, ptr[g]:ptr[g + 1]] = 0
                assert (off == 0).all()
    exact = _quiet(influence, fn, b, method="loop")
    assert exact.backward_passes == exact.vjps == (14 * 3 if level == "node" else 2 * 2)


class _NoVmap(torch.autograd.Function):
    """Doubles its input; its backward reads a value on the host, which vmap cannot batch."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        if float(g.abs().sum()) >= 0:
            return 2 * g
        return g


def test_vmap_failure_falls_back_to_the_loop_with_a_warning():
    model = _model("schnet")
    fn = lambda b: _NoVmap.apply(model(b).s[:, :2])            # noqa: E731
    b = _batch(_chain(6))
    with pytest.warns(RuntimeWarning, match="falling back"):
        I = influence(fn, b, method="vmap")
    assert I.method.startswith("loop (vmap failed")
    ref = _quiet(influence, fn, b, method="loop")
    torch.testing.assert_close(I["x_s"][0], ref["x_s"][0], rtol=0, atol=0)


# -- the range measure by hand ---------------------------------------------------------------------------
W = 0.5


def _path(n: int = 4, isolated: int = 0) -> Data:
    """A path 0 - 1 - ... - (n-1) with atoms 1.5 A apart on a line, one scalar feature, plus isolated atoms."""
    m = n + isolated
    pos = torch.zeros(m, 3, dtype=torch.float64)
    pos[:, 0] = 1.5 * torch.arange(m, dtype=torch.float64)
    src = torch.arange(n - 1)
    ei = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], dim=1)
    return Data(pos=pos, x_s=torch.linspace(0.5, 1.5, m, dtype=torch.float64).unsqueeze(-1), edge_index=ei)


def _linear_layer(b, eps: float = 0.0):
    """y_i = x_i + w sum_{j ~ i} x_j (+ eps sum_j x_j): one linear message-passing layer."""
    x = b.x_s
    src, tgt = b.edge_index
    y = x + W * scatter(x[src], tgt, dim=0, dim_size=x.shape[0], reduce="sum")
    return y + eps * x.sum() if eps else y


def test_range_measure_of_a_linear_layer_on_a_path_equals_its_hand_value():
    # dy_i/dx_j = 1 (i = j), w (j a neighbour of i), 0 otherwise, so on the path 0-1-2-3 the influence rows
    # are [1, w, 0, 0], [w, 1, w, 0], ...; normalised, an end node puts w/(1+w) on its one neighbour (hop 1)
    # and a middle node 2w/(1+2w) on its two: rho = [w/(1+w), 2w/(1+2w), 2w/(1+2w), w/(1+w)] = [1/3, 1/2,
    # 1/2, 1/3] for w = 1/2; the graph's range is their mean, 5/12. Neighbours are 1.5 A apart, so the
    # Euclidean range is 1.5 times that.
    d = _path()
    I = influence(_linear_layer, d, wrt="x_s")
    A = I["x_s"][0]
    torch.testing.assert_close(A, torch.tensor([[1, W, 0, 0], [W, 1, W, 0], [0, W, 1, W], [0, 0, W, 1]],
                                               dtype=torch.float64))
    end, mid = W / (1 + W), 2 * W / (1 + 2 * W)
    r = range_measure(A, hop_distances(d)[0])
    torch.testing.assert_close(r.per_node, torch.tensor([end, mid, mid, end], dtype=torch.float64))
    assert r.mean == pytest.approx(5 / 12, abs=1e-15)
    assert range_measure(I["x_s"], euclidean_distances(d)).mean == pytest.approx(1.5 * 5 / 12, abs=1e-14)
    assert (r.unreachable == 0).all()
    # the profile: hop 0 holds 1/(1+w) (ends) and 1/(1+2w) (middle) of a row, hop 1 the rest; the pairs at
    # hop 1 are 2 end->neighbour pairs of w/(1+w) and 4 middle->neighbour pairs of w/(1+2w)
    p = influence_profile(I["x_s"], hop_distances(d))
    torch.testing.assert_close(p.mass, torch.tensor([7 / 12, 5 / 12, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(p.mean[1], torch.tensor((2 * end + 4 * W / (1 + 2 * W)) / 6, dtype=torch.float64))
    assert p.pairs.tolist() == [4, 6, 4, 2]
    assert float((p.distance * p.mass).sum()) == pytest.approx(r.mean, abs=1e-15)
    e = influence_profile(I["x_s"], euclidean_distances(d), bins=[0.0, 1.0, 2.0, 5.0])
    torch.testing.assert_close(e.mass, torch.tensor([7 / 12, 5 / 12, 0], dtype=torch.float64))


def test_unreachable_nodes_count_as_infinitely_far_unless_told_otherwise():
    # a path of 4 plus one isolated atom, and a global term eps * sum_j x_j: every row puts eps on the
    # isolated atom. Row 0: [1+eps, w+eps, eps, eps | eps], total 1 + w + 5 eps = 2 for w = 1/2, eps = 1/10.
    eps = 0.1
    d = _path(4, isolated=1)
    I = influence(lambda b: _linear_layer(b, eps), d, wrt="x_s")["x_s"]
    hops = hop_distances(d)
    assert math.isinf(hops[0][0, 4])
    r = range_measure(I, hops)
    assert torch.isinf(r.per_node).all() and math.isinf(r.mean)
    assert float(r.unreachable[0]) == pytest.approx(eps / 2.0)
    ex = range_measure(I, hops, unreachable="exclude")                 # row 0 over reachable nodes only
    assert float(ex.per_node[0]) == pytest.approx(((W + eps) * 1 + eps * 2 + eps * 3) / (1 + W + 4 * eps))
    ten = range_measure(I, hops, unreachable=10.0)                     # the isolated atom at distance 10
    assert float(ten.per_node[0]) == pytest.approx(((W + eps) * 1 + eps * 2 + eps * 3 + eps * 10) / 2.0)
    assert influence_profile(I, hops).unreachable_mass > 0
    with pytest.raises(ConfigError, match="unreachable"):
        range_measure(I, hops, unreachable="ignore")


def test_graph_level_range_uses_pairwise_influence():
    # y_G = sum_i x_i^2 + sum_{i ~ j, i < j} x_i x_j: its Hessian is 2 on the diagonal and 1 between neighbours,
    # so the pair-influence rows are [2, 1, 0, 0], [1, 2, 1, 0], ...: rho = [1/3, 1/2, 1/2, 1/3], range 5/12.
    # A sum of atomic terms (sum_i x_i^2) has a diagonal Hessian: range 0, however large the molecule.
    d = _path()

    def energy(b, pairs: bool = True):
        x = b.x_s[:, 0]
        src, tgt = b.edge_index
        e = (x * x).sum() + (0.5 * (x[src] * x[tgt]).sum() if pairs else 0)
        return e.reshape(1, 1)

    P = pairwise_influence(energy, d, wrt="x_s")
    assert P.level == "pair"
    torch.testing.assert_close(P["x_s"][0], torch.tensor([[2, 1, 0, 0], [1, 2, 1, 0], [0, 1, 2, 1], [0, 0, 1, 2]],
                                                         dtype=torch.float64))
    assert range_measure(P["x_s"], hop_distances(d)).mean == pytest.approx(5 / 12, abs=1e-15)
    atomic = pairwise_influence(lambda b: energy(b, pairs=False), d, wrt="x_s")
    assert range_measure(atomic["x_s"], hop_distances(d)).mean == 0.0
    # first-order graph influence has one row per graph: no node to measure distances from
    with pytest.raises(ConfigError, match="pairwise_influence"):
        range_measure(influence(energy, d, wrt="x_s")["x_s"], hop_distances(d))


def test_pairwise_influence_is_symmetric_and_local_for_a_local_model():
    model = _model("schnet")
    fn = lambda b: scatter(model(b).s[:, :1], b.batch, dim=0, reduce="sum")     # noqa: E731
    b = _batch(_chain(7, 0), _chain(5, 1))
    P = _quiet(pairwise_influence, fn, b, method="vmap")
    loop = _quiet(pairwise_influence, fn, b, method="loop")
    for g, hops in enumerate(hop_distances(b)):
        H = P["x_s"][g]
        torch.testing.assert_close(H, H.T, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(H, loop["x_s"][g], rtol=1e-12, atol=1e-14)
        # nodes u, v interact only if some output node sees both: hop(u, v) <= 2 L
        assert (H[hops > 2 * LAYERS] == 0).all() and (P["pos"][g][hops > 2 * LAYERS] == 0).all()


# -- MAD ---------------------------------------------------------------------------------------------------
def test_mad_hand_values():
    a, b_, c = [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]
    T = lambda *rows: torch.tensor(rows, dtype=torch.float64)   # noqa: E731
    assert mad(T(a, b_)) == pytest.approx(1.0)                              # orthogonal
    assert mad(T([1.0, 2.0], [1.0, 2.0], [1.0, 2.0])) == 0.0                # identical: over-smoothed
    # a, b, c: D_ab = 1, D_ac = D_bc = s = 1 - 1/sqrt(2); node means (1+s)/2, (1+s)/2, s; MAD = (1 + 2 s)/3
    s = 1 - 1 / math.sqrt(2)
    assert mad(T(a, b_, c)) == pytest.approx((1 + 2 * s) / 3)
    # Chen et al. average over non-zero distances only: a, a, b -> every node's mean is 1 (not 2/3)
    assert mad(T(a, a, b_)) == pytest.approx(1.0)
    # pairs within graphs only: graphs {a, c} and {b}: node means s, s and none (b has no pair) -> s
    assert mad(T(a, c, b_), torch.tensor([0, 0, 1])) == pytest.approx(s)
    assert mad(T(a, c, b_)) != pytest.approx(s)
    # a mask keeping only the pair (a, b)
    M = torch.zeros(3, 3, dtype=torch.bool)
    M[0, 1] = M[1, 0] = True
    assert mad(T(a, b_, c), mask=M) == pytest.approx(1.0)
    assert mad(T(a, b_, c), mask=[M]) == pytest.approx(1.0)
    assert mad(T(a, b_, c), mask=torch.zeros(3, 3, dtype=torch.bool)) == 0.0
    # a zero embedding has cosine similarity 0 with everything
    assert mad(T([0.0, 0.0], a)) == pytest.approx(1.0)


def test_hop_mask_restricts_mad_to_near_or_far_pairs():
    d = _path()
    h = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    near, far = hop_mask(d, 1), hop_mask(d, 1, beyond=True)
    # within 1 hop the only non-zero pair is (1, 2): nodes 1 and 2 have mean 1, nodes 0 and 3 none -> 1
    assert mad(h, mask=near) == pytest.approx(1.0)
    # beyond 1 hop: 0-2 (1), 0-3 (1), 1-3 (1) -> every node's mean is 1
    assert mad(h, mask=far) == pytest.approx(1.0)
    assert mad(torch.ones(4, 2, dtype=torch.float64), mask=far) == 0.0


@pytest.mark.parametrize("strategy", ["none", "virtual_node", "ewald"])
def test_mad_per_layer_has_one_value_per_layer_and_the_embedding(strategy):
    b = _batch(_chain(12, 0), _chain(9, 1))
    model = _model("schnet", strategy, num_layers=3)
    hs = layer_embeddings(model, b)
    assert len(hs) == 4 and all(h.shape == (21, 16) for h in hs)
    with torch.no_grad():
        torch.testing.assert_close(hs[-1], model(b).s)          # after the last layer, long-range update included
    values = mad_per_layer(model, b)
    assert len(values) == model.num_layers + 1
    assert all(0.0 <= v <= 2.0 for v in values)


def test_layer_embeddings_average_over_frames():
    from farfield.symmetry import FrameAveraging
    b = _batch(_chain(6))
    torch.manual_seed(0)
    model = FrameAveraging(build_backbone("mpnn", InputSpec(WIDTH), hidden=8, num_layers=2, cutoff=CUTOFF)).double()
    hs = _quiet(layer_embeddings, model.eval(), b)
    assert len(hs) == 3
    with torch.no_grad():
        torch.testing.assert_close(hs[-1], _quiet(model, b).s)


# -- trained modules ---------------------------------------------------------------------------------------
def _run_dir(tmp_path):
    """A run directory as ``farfield train`` writes it (config.yaml, checkpoints/best.ckpt with the state dict
    and the config as plain data), with weights moved away from their seeded initialisation."""
    import yaml

    from farfield.train.config import TrainConfig
    from farfield.train.data import GraphDataModule
    from farfield.train.run import build_module
    cfg = TrainConfig.from_dict({"data": {"limit": 24, "batch_size": 4},
                                 "model": {"backbone": "schnet", "backbone_options": {"hidden": 8, "num_layers": 2}},
                                 "run": {"out": str(tmp_path / "run")}})
    dm = GraphDataModule(cfg.data, cfg.model.edge_spec(cfg.data.edges), seed=0, standardize=cfg.task.standardize)
    dm.setup("fit")
    module, _ = build_module(cfg, dm)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"config": cfg.to_dict()}},
               run / "checkpoints" / "best.ckpt")
    return run, module.eval(), dm


class _Payload:
    """Anything that is not a tensor or plain data: unpickling it could run code."""


def test_load_trained_rebuilds_the_module_and_gives_float64_outputs(tmp_path):
    run, module, dm = _run_dir(tmp_path)
    loaded, cfg, dm2 = load_trained(run, with_data=True)
    assert not loaded.training and cfg.model.backbone == "schnet"
    for (k, a), (_, b) in zip(module.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    batch = next(iter(dm2.train_dataloader()))
    with torch.no_grad():
        ref = module(batch)
    graph = model_fn(loaded, "graph")
    out = graph(batch)
    assert out.dtype == torch.float64 and out.shape == ref.shape
    torch.testing.assert_close(out.float(), ref, rtol=1e-4, atol=1e-5)
    assert model_fn(loaded, "node")(batch).shape == (batch.num_nodes, 1)
    assert model_fn(loaded, "embedding")(batch).shape == (batch.num_nodes, 8)
    assert next(loaded.parameters()).dtype == torch.float32          # model_fn works on a copy
    small = Batch.from_data_list(batch.to_data_list()[:2])
    I = _quiet(influence, graph, small, packed=True)                  # float32 batch, float64 leaves
    assert I.level == "graph" and I["pos"][0].dtype == torch.float64 and I["pos"][0].shape[0] == 1
    assert len(mad_per_layer(loaded, small)) == 3
    with pytest.raises(ConfigError, match="kind"):
        model_fn(loaded, "atoms")


def test_load_trained_refuses_checkpoints_that_need_unpickling(tmp_path):
    run, module, _ = _run_dir(tmp_path)
    ck = run / "checkpoints" / "best.ckpt"
    torch.save({"state_dict": module.state_dict(), "extra": _Payload()}, ck)
    with pytest.raises(InputError, match="refused"):
        load_trained(run)
    with pytest.raises(InputError, match="config.yaml"):
        load_trained(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_trained(run, checkpoint="last")

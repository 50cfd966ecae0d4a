"""Receiver-sorted (CSR) aggregation (farfield.nn.aggregate) and the SchNet / GCN backbones built on it: equal to
the plain gather / scatter formulation in float64 (forward and gradients), independent of the input edge
order, batch independent, correct on empty graphs and isolated nodes, and bitwise reproducible."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.nn import GCNConv
from torch_geometric.utils import scatter

from farfield.models import InputSpec, SchNet, build_backbone
from farfield.models.base import edge_geometry
from farfield.nn import (ReceiverIndex, SparseAdjacency, csr_layout, edge_pairs, gather_src, segment_sum, spmm)
from farfield.nn.mlp import aggregate, gather
from tests._graphs import example_batch

RTOL = 1e-10


def close(a, b, rtol=RTOL):
    a, b = a.detach(), b.detach()
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    return a.shape == b.shape and float((a - b).abs().max()) <= rtol * scale if a.numel() else a.shape == b.shape


def random_graph(n=12, e=40, seed=0, isolated=(3, 7)):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    keep = ~(torch.isin(ei[0], torch.tensor(isolated)) | torch.isin(ei[1], torch.tensor(isolated)))
    return ei[:, keep]


# -- primitives ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("deterministic", [None, True])
def test_segment_sum_equals_scatter_with_isolated_nodes(deterministic):
    ei, n = random_graph(), 12
    lay = csr_layout(ei, n)
    assert isinstance(lay, ReceiverIndex)
    assert bool((lay.tgt[1:] >= lay.tgt[:-1]).all()) and int(lay.ptr[-1]) == ei.shape[1]
    assert lay.ptr[4] == lay.ptr[3]                                  # node 3 isolated: empty segment
    msg = torch.randn(ei.shape[1], 5, 2, dtype=torch.float64, requires_grad=True)
    out = segment_sum(lay.sort(msg), lay, deterministic)
    ref = scatter(msg, ei[1], 0, dim_size=n, reduce="sum")
    assert close(out, ref)
    assert float(out[3].abs().max()) == 0.0
    g = torch.randn_like(ref)
    (ga,) = torch.autograd.grad(out, msg, g)
    (gr,) = torch.autograd.grad(ref, msg, g)
    assert close(ga, gr)


@pytest.mark.parametrize("deterministic", [None, True])
def test_zero_edges(deterministic):
    ei = torch.zeros(2, 0, dtype=torch.long)
    lay = csr_layout(ei, 4)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    out = segment_sum(gather_src(x, lay, deterministic), lay, deterministic)
    assert out.shape == (4, 3) and float(out.abs().max()) == 0.0
    out.sum().backward()
    assert float(x.grad.abs().max()) == 0.0
    adj = SparseAdjacency.from_edges(ei, torch.zeros(0, dtype=torch.float64), 4)
    assert float(spmm(adj, x, deterministic=deterministic).abs().max()) == 0.0
    assert edge_pairs(lay) is None


def test_deterministic_gather_backward_equals_index_select_backward():
    ei, n = random_graph(seed=1), 12
    lay = csr_layout(ei, n)
    x = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(ei.shape[1], 6, dtype=torch.float64)
    (a,) = torch.autograd.grad(gather_src(x, lay, True), x, g)
    (b,) = torch.autograd.grad(gather_src(x, lay, False), x, g)
    (c,) = torch.autograd.grad(x[ei[0]], x, lay.sort(torch.eye(ei.shape[1], dtype=torch.float64)).t() @ g)
    assert close(a, b) and close(a, c)


def test_edge_pairs_on_undirected_graph_and_refusals():
    ei = random_graph(seed=2)
    ei = torch.cat([ei, ei.flip(0)], 1)
    ei = torch.unique(ei, dim=1)                                      # undirected, no repeats (self-loops kept)
    ei = ei[:, torch.randperm(ei.shape[1], generator=torch.Generator().manual_seed(0))]
    lay = csr_layout(ei, 12)
    val = torch.rand(12, 12, dtype=torch.float64)
    val = val + val.t()                                               # symmetric per-edge key
    key = val[lay.src, lay.tgt]
    pairs = edge_pairs(lay, key)
    assert pairs is not None
    assert pairs.half.numel() == int((lay.src <= lay.tgt).sum())
    assert torch.equal(pairs.expand(key.index_select(0, pairs.half)), key)
    # an asymmetric key, a missing reverse and a repeated edge all refuse
    assert edge_pairs(lay, key + torch.rand_like(key)) is None
    k = int((ei[0] != ei[1]).nonzero()[0])
    assert edge_pairs(csr_layout(torch.cat([ei[:, :k], ei[:, k + 1:]], 1), 12)) is None
    assert edge_pairs(csr_layout(torch.cat([ei, ei[:, :1]], 1), 12)) is None


@pytest.mark.parametrize("deterministic", [None, True])
def test_spmm_equals_gcn_propagation(deterministic):
    ei, n = random_graph(seed=3), 12
    w = torch.rand(ei.shape[1], dtype=torch.float64)
    adj = SparseAdjacency.from_edges(ei, w, n)
    x = torch.randn(n, 7, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    for b in (None, bias):
        out = spmm(adj, x, b, deterministic=deterministic)
        ref = scatter(x[ei[0]] * w[:, None], ei[1], 0, dim_size=n, reduce="sum") + (0 if b is None else b)
        assert close(out, ref)
        g = torch.randn_like(ref)
        wrt = (x,) if b is None else (x, b)
        for ga, gr in zip(torch.autograd.grad(out, wrt, g), torch.autograd.grad(ref, wrt, g)):
            assert close(ga, gr)


# -- SchNet -----------------------------------------------------------------------------------------------------

def schnet_reference(model: SchNet, batch):
    """The plain formulation SchNet had before the CSR layout: per-edge filter, ssp module, messages times the
    envelope, PyG scatter in input edge order."""
    state = model.embed(batch)
    g = edge_geometry(state.pos, batch, model.radial)
    src, tgt = g.edge_index
    for layer in model.layers:
        w = layer.filter(g.rbf)
        m = aggregate(gather(layer.lin1(state.s), src) * w, tgt, g.num_nodes, weight=g.weight)
        state = state.replace(s=state.s + layer.lin3(layer.act(layer.lin2(m))))
    return state.s


def _schnet(batch, **kw):
    torch.manual_seed(0)
    return SchNet(InputSpec.from_data(batch), hidden=16, num_layers=3, num_basis=12,
                  **{"cutoff": 30.0, **kw}).double()


def _grads(model, batch, fn):
    batch = batch.clone()
    batch.pos = batch.pos.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    out = fn(batch)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    return out.detach(), [None if p.grad is None else p.grad.clone() for p in model.parameters()] + [batch.pos.grad]


@pytest.mark.parametrize("level,cutoff", [("atom", 4.5), ("residue", 30.0)])
def test_schnet_equals_plain_formulation_forward_and_gradients(level, cutoff):
    batch = example_batch(level)
    model = _schnet(batch, cutoff=cutoff)
    g = model.geometry(model.embed(batch), batch)
    assert (g.pairs is not None) == (level == "atom")                # radius graph undirected; knn:8 is not
    out, grads = _grads(model, batch, lambda b: model(b).s)
    ref, rgrads = _grads(model, batch, lambda b: schnet_reference(model, b))
    assert close(out, ref)
    for a, b in zip(grads, rgrads):
        assert a is not None and close(a, b)


def test_schnet_layer_on_foreign_geometry_sorts_itself():
    batch = example_batch("atom")
    model = _schnet(batch, cutoff=4.5)
    state = model.embed(batch)
    g = edge_geometry(state.pos, batch, model.radial)                 # no csr / pairs attached
    out = model.layers[0](state, g).s
    src, tgt = g.edge_index
    layer = model.layers[0]
    m = aggregate(gather(layer.lin1(state.s), src) * layer.filter(g.rbf), tgt, g.num_nodes, weight=g.weight)
    assert close(out, state.s + layer.lin3(layer.act(layer.lin2(m))))


def test_schnet_edge_order_batching_and_determinism():
    batch = example_batch("atom")
    model = _schnet(batch, cutoff=4.5)
    out = model(batch).s
    shuffled = batch.clone()
    p = torch.randperm(batch.edge_index.shape[1], generator=torch.Generator().manual_seed(1))
    shuffled.edge_index = batch.edge_index[:, p]
    assert close(model(shuffled).s, out)
    parts = [model(Batch.from_data_list([d])).s for d in batch.to_data_list()]
    assert close(torch.cat(parts), out)
    a, ga = _grads(model, batch, lambda b: model(b).s)
    b, gb = _grads(model, batch, lambda b: model(b).s)
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(ga, gb))


def without_edges(d, pos=None):
    """A copy of graph ``d`` with no edges (every edge field emptied), optionally moved to ``pos``."""
    out = d.clone()
    for key in list(out.keys()):
        if key == "edge_index":
            out.edge_index = d.edge_index[:, :0]
        elif d.is_edge_attr(key):
            out[key] = d[key][:0]
    if pos is not None:
        out.pos = pos
    return out


def test_schnet_empty_graph_and_isolated_nodes():
    batch = example_batch("atom")
    model = _schnet(batch, cutoff=4.5)
    d = batch.to_data_list()[1]
    far = d.pos + 100.0 * torch.arange(d.num_nodes, dtype=d.pos.dtype)[:, None]
    lonely = Batch.from_data_list([without_edges(d, far)])
    out = model(lonely).s
    assert close(out, schnet_reference(model, lonely))
    h = model.embed(lonely).s                                          # no edges: m = 0 in every layer
    for layer in model.layers:
        h = h + layer.lin3(layer.act(layer.lin2(torch.zeros_like(h))))
    assert torch.equal(out, h)
    both = Batch.from_data_list([batch.to_data_list()[0], without_edges(d, far)])
    assert close(model(both).s, schnet_reference(model, both))


# -- GCN ----------------------------------------------------------------------------------------------------------

def gcn_reference(model, batch):
    """The LRGB GCN block with PyG's own GCNConv forward (gather / scatter, normalisation per layer)."""
    h = model.embedding(batch.x_s)
    for conv, norm in zip(model.layers, model.norms):
        h = h + model.act(norm(GCNConv.forward(conv, h, batch.edge_index)))
    return h


def _gcn(batch, **kw):
    torch.manual_seed(0)
    return build_backbone("gcn", InputSpec.from_data(batch), hidden=16, num_layers=3, **kw).double()


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_gcn_equals_pyg_gcnconv_forward_and_gradients(norm):
    batch = example_batch("residue")
    model = _gcn(batch, norm=norm)
    model.train()
    out, grads = _grads(model, batch, lambda b: model(b).s)
    ref, rgrads = _grads(model, batch, lambda b: gcn_reference(model, b))
    assert close(out, ref)
    for a, b in zip(grads[:-1], rgrads[:-1]):                         # (pos is not read: no gradient)
        assert (a is None and b is None) or close(a, b)


def test_gcn_edge_order_batching_determinism_and_empty_graphs():
    batch = example_batch("residue")
    model = _gcn(batch, norm="none").eval()
    out = model(batch).s
    shuffled = batch.clone()
    shuffled.edge_index = batch.edge_index[:, torch.randperm(batch.edge_index.shape[1])]
    assert close(model(shuffled).s, out)
    assert close(torch.cat([model(Batch.from_data_list([d])).s for d in batch.to_data_list()]), out)
    a, ga = _grads(model, batch, lambda b: model(b).s)
    b, gb = _grads(model, batch, lambda b: model(b).s)
    assert torch.equal(a, b) and all((x is None and y is None) or torch.equal(x, y) for x, y in zip(ga, gb))
    lb = Batch.from_data_list([without_edges(batch.to_data_list()[0])])
    assert close(model(lb).s, gcn_reference(model, lb))


def test_module_name_does_not_shadow_the_aggregate_function():
    import sys

    import farfield.nn
    from farfield.nn import mlp
    assert farfield.nn.aggregate is mlp.aggregate                     # the function stays the package attribute
    assert sys.modules["farfield.nn.aggregate"].segment_sum is segment_sum


def test_schnet_without_pairing_when_an_edge_key_differs_from_its_reverse():
    batch = example_batch("atom").clone()
    model = _schnet(batch, cutoff=4.5)
    batch.edge_type = torch.zeros(batch.edge_index.shape[1], dtype=torch.long)
    assert model.geometry(model.embed(batch), batch).pairs is not None
    batch.edge_type[0] = 1                                            # edge 0 and its reverse now differ
    assert model.geometry(model.embed(batch), batch).pairs is None
    out, grads = _grads(model, batch, lambda b: model(b).s)
    ref, rgrads = _grads(model, batch, lambda b: schnet_reference(model, b))
    assert close(out, ref) and all(close(a, b) for a, b in zip(grads, rgrads))


def test_gcn_under_bfloat16_autocast_runs_its_sparse_product_in_float32():
    batch = example_batch("residue", "float32")
    torch.manual_seed(0)
    model = build_backbone("gcn", InputSpec.from_data(batch), hidden=16, num_layers=2)
    ref = model(batch).s
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch).s
        out.float().square().mean().backward()
    assert torch.isfinite(out.float()).all()
    assert float((out.float() - ref).abs().max()) <= 0.1 * float(ref.abs().max())

"""GVP layers match the specification of methods reference s.1 equation by equation."""
from __future__ import annotations

import torch

from farfield.nn import GVP, GVPConv, GVPConvLayer, GVPDropout, GVPLayerNorm, vector_norm


def _manual_gvp(g: GVP, s, v, act_s=torch.relu, act_v=None):
    vh = torch.einsum("hc,nci->nhi", g.wh.weight, v)
    vn = torch.sqrt(torch.clamp((vh ** 2).sum(-1), min=1e-8))
    s1 = torch.cat([s, vn], -1) @ g.ws.weight.T + g.ws.bias
    vo = torch.einsum("oh,nhi->noi", g.wv.weight, vh)
    gate_in = act_v(s1) if act_v is not None else s1
    vo = vo * torch.sigmoid(gate_in @ g.wsv.weight.T + g.wsv.bias).unsqueeze(-1)
    return act_s(s1), vo


def test_gvp_equations_with_vector_gate_on_pre_activation_scalars():
    torch.manual_seed(0)
    g = GVP((5, 3), (4, 2), activations=("relu", None)).double()
    s, v = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, 3, dtype=torch.float64)
    so, vo = g((s, v))
    ms, mv = _manual_gvp(g, s, v)
    assert torch.allclose(so, ms) and torch.allclose(vo, mv)
    assert g.h == 3                                   # hidden width max(vi, vo)
    g2 = GVP((5, 3), (4, 2), activations=("relu", "sigmoid")).double()
    ms, mv = _manual_gvp(g2, s, v, act_v=torch.sigmoid)
    assert torch.allclose(g2((s, v))[1], mv)


def test_epsilon_is_on_the_squared_norm():
    v = torch.zeros(2, 1, 3)
    assert torch.allclose(vector_norm(v), torch.full((2, 1), 1e-4))
    g = GVP((1, 1), (1, 1))
    s, _ = g((torch.zeros(1, 1), torch.zeros(1, 1, 3)))
    assert torch.isfinite(s).all()


def test_no_input_vectors_gives_zero_vectors():
    g = GVP((4, 0), (3, 2))
    x = torch.randn(5, 4)
    s, v = g((x, None))
    assert v.shape == (5, 2, 3) and (v == 0).all()
    assert torch.allclose(s, torch.relu(g.ws(x)))


def test_vector_layer_norm_and_dropout():
    s, v = torch.randn(4, 6), torch.randn(4, 3, 3)
    ns, nv = GVPLayerNorm((6, 3))((s, v))
    denom = torch.sqrt(torch.clamp((v ** 2).sum(-1, keepdim=True), min=1e-8).mean(-2, keepdim=True))
    assert torch.allclose(nv, v / denom)
    assert torch.allclose(ns, torch.nn.functional.layer_norm(s, (6,)), atol=1e-6)
    d = GVPDropout(0.5).train()
    torch.manual_seed(0)
    _, dv = d((s, torch.ones(200, 4, 3)))
    # whole channels are dropped: all three components are zero together, the rest scaled by 2
    zero = (dv == 0).all(-1)
    assert zero.any() and ((dv == 0).any(-1) == zero).all()
    assert torch.allclose(dv[~zero], torch.full_like(dv[~zero], 2.0))


def test_gvpconv_messages_and_mean_aggregation():
    torch.manual_seed(0)
    conv = GVPConv((3, 2), (3, 2), (4, 1), n_message=3).double()
    assert conv.message[0].si == 2 * 3 + 4 and conv.message[0].vi == 2 * 2 + 1
    assert conv.message[-1].act_s is None and conv.message[-1].act_v is None
    s, v = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 2, 3, dtype=torch.float64)
    ei = torch.tensor([[1, 2], [0, 0]])                     # 1 -> 0, 2 -> 0
    es, ev = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 1, 3, dtype=torch.float64)
    out_s, out_v = conv((s, v), ei, (es, ev))
    msgs = [conv.message((torch.cat([s[j], es[k], s[0]])[None], torch.cat([v[j], ev[k], v[0]])[None]))
            for k, j in enumerate([1, 2])]
    assert torch.allclose(out_s[0], (msgs[0][0] + msgs[1][0])[0] / 2)
    assert torch.allclose(out_v[0], (msgs[0][1] + msgs[1][1])[0] / 2)
    assert (out_s[1:] == 0).all()                           # no incoming edges


def test_gvp_conv_layer_is_post_norm_with_4x_2x_feedforward():
    layer = GVPConvLayer((8, 4), (3, 1))
    assert layer.ff[0].so == 32 and layer.ff[0].vo == 8
    assert layer.ff[-1].act_s is None and layer.ff[-1].act_v is None
    assert layer.dropout[0].p == 0.1


def test_weighted_aggregation_is_a_smooth_mean():
    from farfield.nn import aggregate, smooth_count
    msg = torch.randn(5, 2, 3, dtype=torch.float64)
    idx = torch.tensor([0, 0, 0, 1, 1])
    w = torch.tensor([1.0, 1.0, 1.0, 1e-9, 0.0], dtype=torch.float64)
    s = aggregate(msg, idx, 3, "sum", weight=w)
    assert torch.allclose(s[0], msg[:3].sum(0)) and s[1].abs().max() < 1e-8 and (s[2] == 0).all()
    m = aggregate(msg, idx, 3, "mean", weight=w)
    assert torch.allclose(m[0], msg[:3].sum(0) / smooth_count(torch.tensor(3.0, dtype=torch.float64)))
    assert m[1].abs().max() < 1e-8                       # an edge at the cutoff does not count fully
    assert torch.equal(aggregate(msg, idx, 3, "mean"), aggregate(msg, idx, 3, "mean", weight=None))


import pytest  # noqa: E402


@pytest.mark.parametrize("dims", [((6, 3), (4, 2)), ((6, 0), (4, 1)), ((6, 3), (0, 0)), ((6, 0), (0, 0))])
def test_split_first_message_equals_the_concatenated_form(dims):
    # the first message GVP computed per node and gathered (split_first) is the same function as on the edge-wise
    # concatenation [h_j, e_ji, h_i], forward and backward, with and without node / edge vectors
    (si, vi), (se, ve) = dims
    g = torch.Generator().manual_seed(0)
    N, E = 7, 25
    s = torch.randn(N, si, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(N, vi, 3, generator=g, dtype=torch.float64, requires_grad=True) if vi else None
    es = torch.randn(E, se, generator=g, dtype=torch.float64)
    ev = torch.randn(E, ve, 3, generator=g, dtype=torch.float64) if ve else None
    ei = torch.randint(0, N, (2, E), generator=g)
    torch.manual_seed(1)
    split = GVPConv((si, vi), (5, 3), (se, ve), n_message=3).double()
    plain = GVPConv((si, vi), (5, 3), (se, ve), n_message=3, split_first=False).double()
    plain.load_state_dict(split.state_dict())
    outs = []
    for m in (split, plain):
        os_, ov = m((s, v), ei, (es, ev))
        grads = torch.autograd.grad((os_ ** 2).sum() + (ov ** 2).sum(), [t for t in (s, v) if t is not None])
        outs.append((os_, ov, grads, m.message[0].ws.weight))
    (a_s, a_v, a_g, _), (b_s, b_v, b_g, _) = outs
    assert torch.allclose(a_s, b_s, atol=1e-12) and torch.allclose(a_v, b_v, atol=1e-12)
    assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(a_g, b_g))
    assert (a_s - b_s).abs().max() < 1e-12 and a_s.abs().max() > 1e-3                  # not trivially zero


def _graph(kind: str, N: int, g: torch.Generator):
    """edge_index [2, E] of a graph whose targets are: 'knn' sorted with constant in-degree 4, 'sorted' sorted
    with ragged in-degrees (node 2 without incoming edges), 'unsorted' random."""
    if kind == "knn":
        tgt = torch.arange(N).repeat_interleave(4)
        src = (tgt + torch.randint(1, N, (tgt.shape[0],), generator=g)) % N
    elif kind == "sorted":
        deg = torch.randint(1, 7, (N,), generator=g)
        deg[2] = 0
        tgt = torch.arange(N).repeat_interleave(deg)
        src = torch.randint(0, N, (tgt.shape[0],), generator=g)
    else:
        src, tgt = torch.randint(0, N, (2, 5 * N), generator=g)
    return torch.stack([src, tgt])


@pytest.mark.parametrize("kind", ["knn", "sorted", "unsorted"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("aggr", ["mean", "sum"])
@pytest.mark.parametrize("n_message", [1, 2, 3])
@pytest.mark.parametrize("chunk", [3, 8192])
def test_split_form_equals_the_concatenated_form_forward_and_gradients(kind, weighted, aggr, n_message, chunk):
    # the split form (node parts gathered, last scalar map behind the mean, xyz-major vectors, blocks of target
    # nodes) is the same function as the plain concatenated form: outputs and gradients to round-off in float64
    g = torch.Generator().manual_seed(0)
    N, (si, vi), (se, ve) = 9, (6, 3), (4, 1)
    ei = _graph(kind, N, g)
    E = ei.shape[1]
    f64 = dict(generator=g, dtype=torch.float64, requires_grad=True)
    s, v = torch.randn(N, si, **f64), torch.randn(N, vi, 3, **f64)
    es, ev = torch.randn(E, se, **f64), torch.randn(E, ve, 3, **f64)
    w = torch.rand(E, **f64) if weighted else None
    torch.manual_seed(1)
    split = GVPConv((si, vi), (5, 3), (se, ve), n_message=n_message, aggr=aggr).double()
    plain = GVPConv((si, vi), (5, 3), (se, ve), n_message=n_message, aggr=aggr, split_first=False).double()
    plain.load_state_dict(split.state_dict())
    split.chunk_edges = chunk
    leaves = [s, v, es, ev] + ([w] if weighted else [])
    res = []
    for m in (split, plain):
        os_, ov = m((s, v), ei, (es, ev), w)
        loss = (os_ ** 2).sum() + (ov ** 3).sum()
        res.append([os_, ov, *torch.autograd.grad(loss, leaves + list(m.parameters()))])
    for a, b in zip(*res):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-10 * max(1.0, float(b.detach().abs().max()))
    assert res[0][0].abs().max() > 1e-3


def test_edge_segments_blocks_cover_every_edge_once_and_are_reused():
    from farfield.nn.gvp import EdgeSegments
    g = torch.Generator().manual_seed(0)
    for kind in ("knn", "sorted", "unsorted"):
        ei = _graph(kind, 11, g)
        seg = EdgeSegments(ei[1], 11, None, torch.zeros(1, dtype=torch.float64))
        blocks = seg.chunks(7)
        assert blocks[0][:3:2] == (0, 0) and blocks[-1][1] == 11 and blocks[-1][3] == ei.shape[1]
        assert all(p[1] == q[0] and p[3] == q[2] for p, q in zip(blocks, blocks[1:]))
        assert (len(blocks) > 1) == (kind != "unsorted")
        assert seg.k == (4 if kind == "knn" else None)
        assert seg.total.dtype == torch.float64 and torch.equal(seg.total, torch.bincount(ei[1], minlength=11).double())
        assert seg.matches(ei[1], 11, None) and not seg.matches(ei[1], 12, None)
        assert not seg.matches(ei[1].clone(), 11, None)


def test_xyz_norm_gradients_first_and_second_order():
    from farfield.nn.gvp import _vnorm_t
    v = torch.randn(5, 3, 4, dtype=torch.float64)
    v[0, :, 1] = 0.0                                       # clamped entry: zero gradient, as sqrt(clamp(.)) has
    v.requires_grad_(True)
    vt = v.detach().transpose(1, 2).clone().requires_grad_(True)
    assert torch.allclose(_vnorm_t(v), vector_norm(vt).detach(), rtol=1e-14, atol=0)
    gw = torch.randn(5, 4, dtype=torch.float64)
    (ga,) = torch.autograd.grad((_vnorm_t(v) * gw).sum(), v)
    (gb,) = torch.autograd.grad((vector_norm(vt) * gw).sum(), vt)
    assert torch.allclose(ga, gb.transpose(1, 2), rtol=1e-12, atol=0) and (ga[0, :, 1] == 0).all()
    vv = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_vnorm_t, (vv,)) and torch.autograd.gradgradcheck(_vnorm_t, (vv,))


@pytest.mark.parametrize("envelope", [None, "cosine"])
def test_gvp_gnn_split_form_equals_concatenated_form_and_per_graph(envelope):
    # whole model in float64: the default (split) form against the concatenated form, forward and parameter
    # gradients, with edges in blocks; and the batch against each graph on its own
    from torch_geometric.data import Batch

    from farfield.models import GVPGNN, InputSpec
    from tests._graphs import example_batch
    batch = example_batch("residue")
    spec = InputSpec.from_data(batch)
    torch.manual_seed(0)
    m = GVPGNN(spec, node_dims=(8, 4), edge_dims=(5, 2), num_layers=2, cutoff=30.0, dropout=0.0,
               envelope=envelope).double().eval()
    b64 = batch.clone()
    for key in ("x_s", "x_v", "pos", "edge_s"):
        if getattr(b64, key, None) is not None:
            b64[key] = b64[key].double()
    convs = [c for c in m.modules() if isinstance(c, GVPConv)]
    outs = []
    for split, chunk in ((True, 5), (True, 8192), (False, 0)):
        for c in convs:
            c.split_first, c.chunk_edges = split, chunk
        m.zero_grad()
        o = m(b64)
        ((o.s ** 2).sum() + (o.v ** 2).sum()).backward()
        outs.append([o.s.detach(), o.v.detach()] + [p.grad.clone() for p in m.parameters() if p.grad is not None])
    for res in outs[:2]:
        assert len(res) == len(outs[2])
        for a, b in zip(res, outs[2]):
            assert (a - b).abs().max() <= 1e-10 * max(1.0, float(b.detach().abs().max()))
    for c in convs:
        c.split_first, c.chunk_edges = True, 5
    with torch.no_grad():
        whole = m(b64).s
        parts = torch.cat([m(Batch.from_data_list([d])).s for d in b64.to_data_list()])
    assert (whole - parts).abs().max() <= 1e-10 * max(1.0, float(parts.abs().max()))


def test_split_form_works_under_torch_func_transforms():
    # influence diagnostics take Jacobians with torch.func (vmap over vjp): the split form must support them
    g = torch.Generator().manual_seed(0)
    N = 7
    ei = _graph("knn", N, g)
    s, v = torch.randn(N, 4, generator=g, dtype=torch.float64), torch.randn(N, 2, 3, generator=g, dtype=torch.float64)
    es, ev = torch.randn(ei.shape[1], 3, generator=g, dtype=torch.float64), torch.randn(ei.shape[1], 1, 3, generator=g,
                                                                                          dtype=torch.float64)
    torch.manual_seed(1)
    split = GVPConv((4, 2), (5, 3), (3, 1)).double()
    plain = GVPConv((4, 2), (5, 3), (3, 1), split_first=False).double()
    plain.load_state_dict(split.state_dict())
    split.chunk_edges = 8
    jac = [torch.func.jacrev(lambda x, m=m: m((x, v), ei, (es, ev))[0])(s) for m in (split, plain)]
    assert torch.allclose(jac[0], jac[1], rtol=1e-10, atol=1e-12) and jac[1].abs().max() > 1e-2

"""Vector Neuron layers and networks: O(3)/SO(3) equivariance, ragged-batch independence, kNN within graphs."""
from __future__ import annotations

import pytest
import torch

from farfield.nn.vn import (VNDGCNN, VNBatchNorm, VNInvariant, VNLeakyReLU, VNLinear, VNLinearLeakyReLU,
                            VNMaxPool, VNPointNet, knn_edges, vn_leaky_relu, vn_mean_pool)

DT = torch.float64
SIZES = (5, 9, 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def orthogonal(seed: int, det: int = 1) -> torch.Tensor:
    """A random rotation (det +1) or rotoreflection (det -1) from the QR of a Gaussian matrix."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=_gen(seed), dtype=DT))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    assert torch.allclose(q @ q.T, torch.eye(3, dtype=DT)) and abs(torch.det(q) - det) < 1e-12
    return q


def ragged(seed: int = 0, sizes=SIZES, types: int = 4):
    """x [N, 3] centred per graph, one-hot atom types h [N, types], batch [N], B."""
    g = _gen(seed)
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    x = torch.randn(len(batch), 3, generator=g, dtype=DT)
    x = x - vn_mean_pool(x.unsqueeze(1), batch, len(sizes)).squeeze(1)[batch]
    h = torch.nn.functional.one_hot(torch.randint(types, (len(batch),), generator=g), types).to(DT)
    return x, h, batch, len(sizes)


def feats(n: int = 11, c: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, c, 3, generator=_gen(seed), dtype=DT)


def check_equivariant(f, v, dets=(1, -1), tol=1e-10, seeds=(3, 4)):
    for det in dets:
        for s in seeds:
            q = orthogonal(s, det)
            out, out_q = f(v), f(v @ q.T)
            assert out.abs().max() > 1e-3                                   # not trivially zero
            assert (out_q - out @ q.T).abs().max() < tol, (det, s)


# --------------------------------------------------------------------------------------------- layers

def test_vn_linear_mixes_channels_and_is_o3_equivariant():
    torch.manual_seed(0)
    lin = VNLinear(4, 6).double()
    v = feats()
    assert torch.allclose(lin(v), torch.einsum("oc,nci->noi", lin.weight, v))
    assert not torch.allclose(lin.weight, lin.weight[:1].expand_as(lin.weight))    # a non-trivial W
    check_equivariant(lin, v)


@pytest.mark.parametrize("share", [False, True])
def test_vn_leaky_relu_formula_and_equivariance(share):
    torch.manual_seed(0)
    act = VNLeakyReLU(4, negative_slope=0.2, share_direction=share).double()
    assert act.u.shape == ((1, 4) if share else (4, 4))
    v = feats()
    d = torch.einsum("oc,nci->noi", act.u, v).expand_as(v)
    out = act(v)
    neg = 0
    for n in range(v.shape[0]):                                   # the paper's case analysis, vector by vector
        for c in range(v.shape[1]):
            q, dd = v[n, c], d[n, c]
            dot = q @ dd
            relu = q if dot >= 0 else q - dot / (dd @ dd + 1e-6) * dd
            neg += int(dot < 0)
            assert torch.allclose(out[n, c], 0.2 * q + 0.8 * relu)
    assert 0 < neg < v.shape[0] * v.shape[1]                      # both branches exercised
    check_equivariant(act, v)


def test_vn_leaky_relu_of_zero_is_zero_and_finite():
    q = torch.zeros(2, 3, 3, dtype=DT)
    assert torch.equal(vn_leaky_relu(q, q), q)


@pytest.mark.parametrize("bn", [False, True])
def test_vn_linear_leaky_relu_equivariance(bn):
    torch.manual_seed(0)
    layer = VNLinearLeakyReLU(4, 5, batch_norm=bn).double().eval()
    check_equivariant(layer, feats())
    layer.train()
    check_equivariant(layer, feats())


def _random_bn(c: int = 4) -> VNBatchNorm:
    torch.manual_seed(0)
    bn = VNBatchNorm(c).double()
    with torch.no_grad():                                         # non-trivial statistics and affine map
        bn.bn.running_mean.uniform_(0.5, 1.5)
        bn.bn.running_var.uniform_(0.5, 2.0)
        bn.bn.weight.uniform_(0.5, 2.0)
        bn.bn.bias.uniform_(-0.3, 0.3)
    return bn


def test_vn_batch_norm_eval_scales_norms_and_is_o3_equivariant():
    bn = _random_bn().eval()
    v = feats()
    n = v.norm(dim=-1)
    expect = v * (bn.bn(n) / (n + 1e-6)).unsqueeze(-1)
    assert torch.allclose(bn(v), expect)
    assert not torch.allclose(bn(v), v)
    check_equivariant(bn, v)
    # eval: a row's output does not depend on the other rows
    assert torch.allclose(bn(v[:3]), bn(v)[:3], atol=1e-14)


def test_vn_batch_norm_train_uses_batch_statistics_and_is_o3_equivariant():
    bn = _random_bn().train()
    v = feats()
    out = bn(v)
    n = v.norm(dim=-1)
    nb = (n - n.mean(0)) / torch.sqrt(n.var(0, unbiased=False) + bn.bn.eps) * bn.bn.weight + bn.bn.bias
    assert torch.allclose(out, v * (nb / (n + 1e-6)).unsqueeze(-1))
    check_equivariant(bn, v)


def test_vn_max_pool_selects_argmax_per_graph_and_is_o3_equivariant():
    torch.manual_seed(0)
    pool = VNMaxPool(4).double()
    v = feats(n=10)
    batch = torch.tensor([0, 2, 0, 2, 2, 0, 3, 2, 0, 3])                # unsorted, graph 1 empty
    out = pool(v, batch, 4)
    k = torch.einsum("oc,nci->noi", pool.w, v)
    score = (v * k).sum(-1)
    for g in range(4):
        rows = (batch == g).nonzero().flatten()
        for c in range(4):
            want = v[rows[score[rows, c].argmax()], c] if len(rows) else torch.zeros(3, dtype=DT)
            assert torch.equal(out[g, c], want)
    # selection differs from a plain norm argmax, so W matters
    assert any(score[batch == g, c].argmax() != v[batch == g, c].norm(dim=-1).argmax()
               for g in (0, 2) for c in range(4))
    check_equivariant(lambda x: pool(x, batch, 4), v)


def test_vn_mean_pool_is_per_graph_mean_and_equivariant():
    v = feats(n=7)
    batch = torch.tensor([1, 0, 1, 1, 0, 2, 1])
    out = vn_mean_pool(v, batch, 3)
    for g in range(3):
        assert torch.allclose(out[g], v[batch == g].mean(0))
    check_equivariant(lambda x: vn_mean_pool(x, batch, 3), v)


def test_vn_invariant_is_o3_invariant_and_informative():
    torch.manual_seed(0)
    inv = VNInvariant(4).double().eval()
    v = feats()
    s = inv(v)
    assert s.shape == (11, 4, 3)
    for det in (1, -1):
        for seed in (3, 4):
            q = orthogonal(seed, det)
            assert (inv(v @ q.T) - s).abs().max() < 1e-10
    assert (inv(feats(seed=2)) - s).abs().max() > 1e-2           # not a constant


# ------------------------------------------------------------------------------------------------ kNN

def test_knn_edges_stay_within_graphs_and_are_nearest():
    x, _, batch, _ = ragged()
    x[batch == 1] += x[batch == 0][0] - x[batch == 1][0] + 1e-3     # graphs overlap in space
    for k in (1, 3, 8, 20):
        src, dst = knn_edges(x, batch, k)
        assert torch.equal(batch[src], batch[dst]) and not (src == dst).any()
        for i in range(len(batch)):
            same = ((batch == batch[i]) & (torch.arange(len(batch)) != i)).nonzero().flatten()
            nb = src[dst == i]
            assert len(nb) == min(k, len(same))
            d = (x[same] - x[i]).norm(dim=-1)
            assert torch.equal(nb.sort().values, same[d.argsort()[:len(nb)]].sort().values)
    src, dst = knn_edges(x[:1], batch[:1], 8)
    assert src.numel() == 0 and dst.numel() == 0


# ------------------------------------------------------------------------------------------- networks

NETS = [
    pytest.param(lambda: VNPointNet(node_s=4, channels=8, num_layers=3, pooling="mean"), id="pointnet-mean"),
    pytest.param(lambda: VNPointNet(node_s=4, channels=8, num_layers=2, pooling="max"), id="pointnet-max"),
    pytest.param(lambda: VNPointNet(node_s=0, channels=8), id="pointnet-no-types"),
    pytest.param(lambda: VNDGCNN(node_s=4, channels=8, num_layers=2, k=3, pooling="mean"), id="dgcnn-mean"),
    pytest.param(lambda: VNDGCNN(node_s=4, channels=8, num_layers=2, k=8, pooling="max"), id="dgcnn-max"),
]


def _net(make):
    torch.manual_seed(0)
    return make().double().eval()


@pytest.mark.parametrize("make", NETS)
def test_network_rotation_equivariance_on_a_ragged_batch(make):
    net = _net(make)
    x, h, batch, b = ragged()
    out = net(x, h, batch, b)
    assert out.shape == (3, 3, 3)
    assert out[:2].abs().max() > 1e-3
    assert torch.equal(out[2], torch.zeros(3, 3, dtype=DT))        # a 1-node graph: zero vectors
    for seed in (3, 4, 5):
        q = orthogonal(seed, 1)
        assert (net(x @ q.T, h, batch, b) - out @ q.T).abs().max() < 1e-9


@pytest.mark.parametrize("make", NETS)
def test_network_reflection_behaviour_matches_its_claim(make):
    net = _net(make)
    x, h, batch, b = ragged()
    out = net(x, h, batch, b)
    err = max((net(x @ q.T, h, batch, b) - out @ q.T).abs().max().item()
              for q in (orthogonal(3, -1), orthogonal(4, -1)))
    if net.reflection_equivariant:
        assert isinstance(net, VNPointNet) and err < 1e-9
    else:
        assert isinstance(net, VNDGCNN) and err > 1e-3              # cross products are pseudovectors


@pytest.mark.parametrize("make", NETS)
def test_batched_output_equals_per_graph_output(make):
    net = _net(make)
    x, h, batch, b = ragged()
    out = net(x, h, batch, b)
    for g in range(b):
        m = batch == g
        alone = net(x[m], h[m], torch.zeros(int(m.sum()), dtype=torch.long), 1)
        assert (alone[0] - out[g]).abs().max() < 1e-12


@pytest.mark.parametrize("make", NETS)
def test_node_permutation_leaves_outputs_unchanged(make):
    net = _net(make)
    x, h, batch, b = ragged()
    perm = torch.randperm(len(batch), generator=_gen(7))         # also interleaves the graphs' rows
    out, out_p = net(x, h, batch, b), net(x[perm], h[perm], batch[perm], b)
    assert (out_p - out).abs().max() < 1e-12


@pytest.mark.parametrize("make", NETS[:2] + NETS[3:])
def test_atom_types_break_symmetric_geometry(make):
    net = _net(make)
    x, h, batch, b = ragged()
    out, out_h = net(x, h, batch, b), net(x, h.roll(1, dims=1), batch, b)
    assert (out_h[:2] - out[:2]).abs().max() > 1e-3


def test_dgcnn_never_uses_a_neighbour_from_another_graph():
    net = _net(lambda: VNDGCNN(node_s=4, channels=8, num_layers=2, k=3))
    x, h, batch, b = ragged()
    far, near = x.clone(), x.clone()
    far[batch == 1] += 100.0
    g1, g2 = (batch == 0).nonzero().flatten(), (batch == 1).nonzero().flatten()
    near[g2[:5]] = x[g1] + 1e-3 * torch.randn(5, 3, generator=_gen(9), dtype=DT)  # on top of graph 0
    # sanity: ignoring the batch vector, graph 0's nearest neighbours would now come from graph 1
    src, dst = knn_edges(near, torch.zeros_like(batch), 3)
    assert (batch[src[batch[dst] == 0]] == 1).any()
    out_far, out_near = net(far, h, batch, b), net(near, h, batch, b)
    assert (out_far[0] - out_near[0]).abs().max() < 1e-12
    assert (out_far[1] - out_near[1]).abs().max() > 1e-3           # graph 1 itself did change


@pytest.mark.parametrize("make", NETS)
def test_gradients_flow_to_parameters(make):
    net = _net(make).train()
    x, h, batch, b = ragged()
    x.requires_grad_(True)
    net(x, h, batch, b).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    for name, p in net.named_parameters():
        if ".w" in name and "pool" in name:                       # argmax selection: no gradient to W
            assert p.grad is None or not p.grad.any()
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name


def test_flags_and_bad_pooling():
    assert VNPointNet.reflection_equivariant and not VNDGCNN.reflection_equivariant
    with pytest.raises(ValueError):
        VNPointNet(pooling="sum")
    with pytest.raises(ValueError):
        VNDGCNN(node_s=2)(torch.zeros(2, 3), None, torch.zeros(2, dtype=torch.long), 1)

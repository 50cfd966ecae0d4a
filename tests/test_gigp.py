"""Group invariant global pooling (:class:`farfield.models.readout.GIGP`, ``task.pooling=gigp``): E(3) and
permutation invariance, exact batching, reduction to sum pooling, continuity, and the training module's wiring."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from farfield.errors import ConfigError, InputError
from farfield.models.readout import GIGP, TASK_POOLINGS, pool
from farfield.train.config import OptimConfig, TaskConfig, TrainConfig, apply_overrides

TOL = 1e-10


def _ragged(sizes=(4, 7, 1), d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(sum(sizes), d, generator=g, dtype=torch.float64)
    pos = torch.randn(sum(sizes), 3, generator=g, dtype=torch.float64) * 2.5
    batch = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    return z, pos, batch


def _perturbed(gigp: GIGP, seed=1, scale=0.5) -> GIGP:
    """``gigp`` with a non-zero last layer of phi, so that it is not sum pooling."""
    g = torch.Generator().manual_seed(seed)
    last = gigp.phi[-1]
    with torch.no_grad():
        last.weight.copy_(torch.randn(last.weight.shape, generator=g, dtype=last.weight.dtype) * scale)
        last.bias.copy_(torch.randn(last.bias.shape, generator=g, dtype=last.bias.dtype) * scale)
    return gigp


def _model(d=5, **kw) -> GIGP:
    torch.manual_seed(0)
    return _perturbed(GIGP(d, **kw).double())


def _rotation(seed, reflect=False):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    return q


# -- invariance and batching ------------------------------------------------------------------------------
@pytest.mark.parametrize("reflect", [False, True])
def test_invariant_to_rotation_reflection_and_translation(reflect):
    m = _model()
    z, pos, batch = _ragged()
    y = m(z, pos, batch, 3)
    assert not torch.allclose(y, pool(z, batch, "sum", 3))                 # phi is not zero: not sum pooling
    q = _rotation(3, reflect)
    assert torch.det(q).item() == pytest.approx(-1.0 if reflect else 1.0)
    shift = torch.tensor([10.0, -3.0, 7.5], dtype=torch.float64)
    y2 = m(z, pos @ q.T + shift, batch, 3)
    assert torch.allclose(y, y2, atol=TOL, rtol=0)
    # a different translation per graph too (each graph about its own centroid)
    per_graph = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 20
    assert torch.allclose(y, m(z, pos + per_graph[batch], batch, 3), atol=TOL, rtol=0)


def test_invariant_to_node_permutation_within_graphs():
    m = _model()
    z, pos, batch = _ragged()
    y = m(z, pos, batch, 3)
    perm = torch.randperm(len(batch), generator=torch.Generator().manual_seed(5))    # mixes graphs' rows too
    assert torch.allclose(y, m(z[perm], pos[perm], batch[perm], 3), atol=TOL, rtol=0)


def test_batched_equals_per_graph_on_a_ragged_batch():
    m = _model()
    sizes = (4, 7, 1)
    z, pos, batch = _ragged(sizes)
    y = m(z, pos, batch, 3)
    assert y.shape == (3, 5)
    rows = torch.split(torch.arange(len(batch)), list(sizes))
    alone = torch.cat([m(z[r], pos[r], None, None) for r in rows])
    assert torch.allclose(y, alone, atol=TOL, rtol=0)
    # an empty graph at the end of the batch gets a row too (dim_size)
    assert m(z, pos, batch, 4).shape == (4, 5)


# -- reduction to sum pooling ---------------------------------------------------------------------------
def test_equals_sum_pooling_at_initialisation_and_with_one_orbit():
    z, pos, batch = _ragged()
    ref = pool(z, batch, "sum", 3)
    fresh = GIGP(5).double()
    assert torch.allclose(fresh(z, pos, batch, 3), ref, atol=TOL, rtol=0)
    one = GIGP(5, num_orbits=1).double()
    assert torch.allclose(one(z, pos, batch, 3), ref, atol=TOL, rtol=0)
    assert torch.allclose(one.memberships(pos, batch, 3), torch.ones(len(batch), 1, dtype=torch.float64))
    # with phi perturbed it is no longer sum pooling (so the checks above can fail)
    for m in (_perturbed(fresh), _perturbed(one)):
        assert (m(z, pos, batch, 3) - ref).abs().max() > 1e-3


def test_phi_last_layer_is_zero_initialised_and_defaults():
    m = GIGP(3)
    assert m.num_orbits == 16 and m.width == 1.0 and m.sigma == 0.5
    assert torch.equal(m.centres, torch.arange(16.0))
    assert not m.phi[-1].weight.any() and not m.phi[-1].bias.any()
    assert m.phi[0].in_features == 3 + 16 and m.phi[-1].out_features == 3
    assert GIGP(3, hidden=7).phi[0].out_features == 7
    for bad in (dict(dim=0), dict(dim=3, num_orbits=0), dict(dim=3, width=0.0)):
        with pytest.raises(ConfigError, match="GIGP"):
            GIGP(**bad)


# -- soft orbits and continuity -------------------------------------------------------------------------
def test_memberships_sum_to_one_and_follow_the_radius():
    m = _model(num_orbits=8, width=0.75)
    z, pos, batch = _ragged()
    w = m.memberships(pos, batch, 3)
    assert w.shape == (len(batch), 8) and bool((w >= 0).all())
    assert torch.allclose(w.sum(-1), torch.ones(len(batch), dtype=torch.float64), atol=1e-12)
    # a node at distance r belongs mostly to the shell whose centre is nearest r
    c = torch.stack([pos[batch == b].mean(0) for b in range(3)])
    r = (pos - c[batch]).norm(dim=-1)
    nearest = torch.clamp(torch.round(r / 0.75), max=7).long()
    assert torch.equal(w.argmax(-1), nearest)
    # the one-node graph sits at its centroid: shell 0
    assert w[-1].argmax() == 0


def test_output_is_continuous_in_the_coordinates():
    m = _model()
    z, pos, batch = _ragged()
    y = m(z, pos, batch, 3)
    g = torch.Generator().manual_seed(6)
    for i in range(len(batch)):
        moved = pos.clone()
        step = torch.randn(3, generator=g, dtype=torch.float64)
        moved[i] += 1e-6 * step / step.norm()
        assert (m(z, moved, batch, 3) - y).abs().max() < 1e-4


def test_gradients_are_finite_with_a_node_at_the_centroid():
    m = _model()
    z, pos, batch = _ragged()
    pos = pos.clone().requires_grad_(True)
    m(z, pos, batch, 3).sum().backward()                                    # graph 2 has one node: r = 0
    assert torch.isfinite(pos.grad).all()


def test_input_errors():
    m = _model()
    z, pos, batch = _ragged()
    with pytest.raises(ConfigError, match="pos"):
        m(z, None, batch, 3)
    with pytest.raises(ConfigError, match=r"\[N, 5\], got \(12, 4\)"):
        m(z[:, :4], pos, batch, 3)
    with pytest.raises(ConfigError, match="pos"):
        m(z, pos[:, :2], batch, 3)


# -- configuration and the training module ----------------------------------------------------------------
def test_config_accepts_gigp_and_lists_it_for_bogus_values():
    assert "gigp" in TASK_POOLINGS
    cfg = apply_overrides(TrainConfig(), ["task.pooling=gigp"])
    assert cfg.task.pooling == "gigp" and cfg.to_dict()["task"]["pooling"] == "gigp"
    assert apply_overrides(cfg, ["data.dataset=qm9"]).task.pooling == "gigp"      # not re-resolved
    assert TaskConfig(pooling="gigp").resolve().pooling == "gigp"
    assert TaskConfig().resolve().pooling == "mean"                              # auto unchanged
    with pytest.raises(ConfigError, match=r"task\.pooling must be one of .*'gigp'.*got 'bogus'"):
        apply_overrides(TrainConfig(), ["task.pooling=bogus"])
    with pytest.raises(ConfigError, match="gigp"):
        TaskConfig(pooling="bogus")


def _graphs(sizes=(4, 7, 3), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k, n in enumerate(sizes):
        src = torch.arange(n - 1)
        ei = torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])]) if n > 1 else \
            torch.zeros(2, 0, dtype=torch.long)
        out.append(Data(x_s=torch.randn(n, 4, generator=g, dtype=dtype),
                        pos=torch.randn(n, 3, generator=g, dtype=dtype) * 2, edge_index=ei,
                        y=torch.randn(1, 1, generator=g, dtype=dtype), name=f"g{k}"))
    return out


def _schnet(hidden=8):
    from farfield.models import InputSpec, build_backbone
    torch.manual_seed(0)
    return build_backbone("schnet", InputSpec(4), hidden=hidden, num_layers=1, cutoff=50.0)


def test_task_module_with_gigp_trains_one_step():
    from farfield.train.module import TaskModule
    m = TaskModule(_schnet(), TaskConfig(kind="graph_regression", num_outputs=1, pooling="gigp"), OptimConfig())
    assert isinstance(m.gigp, GIGP) and m.gigp.dim == 1
    b = Batch.from_data_list(_graphs())
    # at initialisation the readout is the sum of the node head's outputs
    view, n, s, _ = m._encode(b)
    with torch.no_grad():
        assert torch.allclose(m._head(view, n, s), pool(m.head(s), b.batch, "sum", n), atol=1e-6)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = m._step(b, "train")
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    grads = [p.grad for p in m.gigp.parameters()]
    assert all(g is not None for g in grads)
    assert m.gigp.phi[-1].weight.grad.abs().sum() > 0            # the zero-initialised layer is learnt
    before = m.gigp.phi[-1].weight.detach().clone()
    opt.step()
    assert not torch.equal(before, m.gigp.phi[-1].weight)
    assert m(b).shape == (3, 1)


def test_other_poolings_and_node_tasks_have_no_gigp_parameters():
    from farfield.train.module import TaskModule
    base = sum(p.numel() for p in TaskModule(_schnet(), TaskConfig(kind="graph_regression", num_outputs=1,
                                                                    pooling="sum"), OptimConfig()).parameters())
    for pooling in ("mean", "max"):
        m = TaskModule(_schnet(), TaskConfig(kind="graph_regression", num_outputs=1, pooling=pooling), OptimConfig())
        assert not hasattr(m, "gigp") and sum(p.numel() for p in m.parameters()) == base
    g = TaskModule(_schnet(), TaskConfig(kind="graph_regression", num_outputs=1, pooling="gigp"), OptimConfig())
    assert sum(p.numel() for p in g.parameters()) == base + sum(p.numel() for p in g.gigp.parameters())
    node = TaskModule(_schnet(), TaskConfig(kind="node_regression", num_outputs=2, pooling="gigp"), OptimConfig())
    assert not hasattr(node, "gigp")
    b = Batch.from_data_list(_graphs())
    assert node(b).shape == (14, 2)                                          # node tasks do not pool


def test_task_module_gigp_is_invariant_end_to_end():
    from farfield.train.module import TaskModule
    m = TaskModule(_schnet(), TaskConfig(kind="graph_regression", num_outputs=1, pooling="gigp"),
                   OptimConfig()).double().eval()
    _perturbed(m.gigp)
    gs = _graphs(dtype=torch.float64)
    q, shift = _rotation(7, reflect=True), torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
    moved = [Data(**{k: v for k, v in g}) for g in gs]
    for g in moved:
        g.pos = g.pos @ q.T + shift
    with torch.no_grad():
        y = m(Batch.from_data_list(gs))
        assert torch.allclose(y, m(Batch.from_data_list(moved)), atol=TOL, rtol=0)
        alone = torch.cat([m(Batch.from_data_list([g])) for g in gs])
        assert torch.allclose(y, alone, atol=TOL, rtol=0)


def test_pair_items_pool_each_component_with_gigp():
    from farfield.train.module import TaskModule
    m = TaskModule(_schnet(), TaskConfig(kind="binary", num_outputs=1, pooling="gigp"), OptimConfig(),
                   pair=True).double()
    assert m.gigp.dim == 8                                                   # the hidden width d
    items = []
    for k, (a, c) in enumerate([(4, 3), (5, 1), (3, 6)]):
        g = torch.Generator().manual_seed(20 + k)
        pos = torch.cat([torch.randn(a, 3, generator=g, dtype=torch.float64),
                         torch.randn(c, 3, generator=g, dtype=torch.float64) + 2.0])
        items.append(Data(x_s=torch.randn(a + c, 4, generator=g, dtype=torch.float64), pos=pos,
                          edge_index=torch.zeros(2, 0, dtype=torch.long),
                          component=torch.cat([torch.zeros(a, dtype=torch.long), torch.ones(c, dtype=torch.long)]),
                          y=torch.tensor([[float(k % 2)]], dtype=torch.float64), name=f"pair{k}"))
    b = Batch.from_data_list(items)
    view, n, s, _ = m._encode(b)
    with torch.no_grad():                                                    # sum pooling per component at init
        assert torch.allclose(m._head(view, n, s), m.head(pool(s, view.batch, "sum", n).reshape(3, -1)), atol=TOL)
    _perturbed(m.gigp)
    with torch.no_grad():
        together = m(b)
        alone = torch.cat([m(Batch.from_data_list([g])) for g in items])
    assert together.shape == (3, 1) and torch.allclose(together, alone, atol=TOL, rtol=0)
    loss = m._step(b, "train")
    loss.backward()
    assert all(p.grad is not None for p in m.gigp.parameters())


def test_a_2d_backbone_is_refused():
    from farfield.models import InputSpec, build_backbone
    from farfield.train.module import TaskModule
    gcn = build_backbone("gcn", InputSpec(4), hidden=8, num_layers=1)
    with pytest.raises(ConfigError, match=r"task\.pooling=gigp needs 3D coordinates \(pos\); GCN"):
        TaskModule(gcn, TaskConfig(kind="graph_regression", num_outputs=1, pooling="gigp"), OptimConfig())
    with pytest.raises(ConfigError, match=r"task\.pooling=gigp needs 3D coordinates"):
        TaskModule(gcn, TaskConfig(kind="binary", num_outputs=1, pooling="gigp"), OptimConfig(), pair=True)
    # node tasks do not pool: accepted
    TaskModule(gcn, TaskConfig(kind="node_regression", num_outputs=1, pooling="gigp"), OptimConfig())
    # a batch without coordinates reaching the readout is named at forward time
    m = TaskModule(_schnet(), TaskConfig(kind="graph_regression", num_outputs=1, pooling="gigp"), OptimConfig())
    b = Batch.from_data_list(_graphs())
    view, n, s, _ = m._encode(b)
    del view.pos
    with pytest.raises(InputError, match=r"task\.pooling=gigp needs 3D coordinates \(pos\)"):
        m._head(view, n, s)

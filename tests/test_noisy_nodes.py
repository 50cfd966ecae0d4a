"""Noisy Nodes (Godwin et al. 2022): the lambda-weighted denoising loss, the equivariant head, the noise target,
clean evaluation, the 2D refusal and one training run with the auxiliary task."""
from __future__ import annotations

import json

import pytest
import torch
from torch_geometric.data import Batch, Data

from farfield.errors import ConfigError
from farfield.models.denoising import NOISE_TARGET, DenoisingHead, add_position_noise, denoising_loss
from farfield.symmetry.transforms import random_rotation
from farfield.train.config import OptimConfig, TaskConfig, TrainConfig, apply_overrides

ROT = random_rotation(torch.Generator().manual_seed(3))


def _graphs(n=12, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        m = 5 + k % 4
        out.append(Data(x_s=torch.randn(m, 4, generator=g, dtype=dtype),
                        pos=(torch.randn(m, 3, generator=g, dtype=dtype) * 1.5),
                        y=torch.randn(1, 1, generator=g, dtype=dtype), name=f"toy{k}"))
    return out


def _batch(graphs, edges="radius:6.0"):
    from farfield.graphs import parse_edge_spec
    b = parse_edge_spec(edges)
    return Batch.from_data_list([b.apply(g.clone()) for g in graphs])


def _module(lam, dtype=torch.float32, seed=0):
    from farfield.models import InputSpec, build_backbone
    from farfield.train.module import TaskModule
    torch.manual_seed(seed)
    m = TaskModule(build_backbone("schnet", InputSpec(4), hidden=8, num_layers=2, cutoff=10.0),
                   TaskConfig(kind="graph_regression", num_outputs=1, noisy_nodes=lam), OptimConfig())
    return m.to(dtype)


def test_lambda_scales_exactly_the_denoising_term():
    clean = _batch(_graphs(3))
    noisy = add_position_noise(clean, 0.02, torch.Generator().manual_seed(1))     # one fixed draw
    a, b = _module(0.1), _module(0.7)
    b.load_state_dict(a.state_dict())
    d = denoising_loss(a.denoise(noisy), noisy[NOISE_TARGET])
    assert float(d) > 0
    la, lb = a._step(noisy, "train"), b._step(noisy, "train")
    main = a._step(noisy, "val")                                   # evaluation: the main loss only
    assert torch.allclose(lb - la, (0.7 - 0.1) * d, rtol=1e-5, atol=1e-7)
    assert torch.allclose(la, main + 0.1 * d, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(la, main)


def test_head_is_equivariant_in_float64():
    gs = _graphs(2, torch.float64)
    m = _module(0.1, torch.float64).eval()
    x = _batch(gs)
    with torch.no_grad():
        pred = m.denoise(x)
        xr = x.clone()
        xr.pos = x.pos @ ROT.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        pred_r = m.denoise(xr)
        refl = x.clone()
        refl.pos = -x.pos
        pred_m = m.denoise(refl)
    assert pred.shape == (x.num_nodes, 3) and pred.abs().max() > 1e-6
    assert torch.allclose(pred_r, pred @ ROT.T, atol=1e-10)        # rotates, ignores translation
    assert torch.allclose(pred_m, -pred, atol=1e-10)               # and reflects
    head = DenoisingHead(8).double()                               # the head alone, any invariant features
    h = torch.randn(x.num_nodes, 8, dtype=torch.float64)
    assert torch.allclose(head(h, x.pos @ ROT.T, x.edge_index), head(h, x.pos, x.edge_index) @ ROT.T, atol=1e-12)


def test_target_is_the_added_noise_also_under_rotation():
    g = _graphs(1, torch.float64)[0]
    pos0 = g.pos.clone()
    n = add_position_noise(g, 0.05, torch.Generator().manual_seed(7))
    assert torch.equal(g.pos, pos0) and NOISE_TARGET not in g              # input untouched
    assert torch.allclose(n.pos - g.pos, 0.05 * n[NOISE_TARGET], atol=1e-15)
    # the same draw on the rotated structure: the target is still exactly what was added
    gr = g.clone()
    gr.pos = g.pos @ ROT.T
    nr = add_position_noise(gr, 0.05, torch.Generator().manual_seed(7))
    assert torch.allclose(nr.pos - gr.pos, 0.05 * nr[NOISE_TARGET], atol=1e-15)
    # rotating the noisy input and its noise together leaves the denoising loss unchanged
    m = _module(0.1, torch.float64).eval()
    x = _batch([g])
    x = add_position_noise(x, 0.05, torch.Generator().manual_seed(7))
    xr = x.clone()
    xr.pos, xr[NOISE_TARGET] = x.pos @ ROT.T, x[NOISE_TARGET] @ ROT.T
    with torch.no_grad():
        assert torch.allclose(denoising_loss(m.denoise(xr), xr[NOISE_TARGET]),
                              denoising_loss(m.denoise(x), x[NOISE_TARGET]), atol=1e-12)


@pytest.fixture
def toy(monkeypatch):
    """A tiny 3D dataset ``toy3d`` and a 2D one ``toy2d`` (bond edges, no coordinates) in the registry."""
    from farfield import datasets
    three = _graphs(16)
    two = [Data(x_s=g.x_s, y=g.y, name=g.name, edge_index=torch.tensor([[0, 1], [1, 0]])) for g in three]

    def load3(path=None, **kw):
        return [g.clone() for g in three]

    def load2(path=None, **kw):
        return [g.clone() for g in two]
    load2.info = {"provides_edges": True}
    monkeypatch.setitem(datasets.DATASETS, "toy3d", load3)
    monkeypatch.setitem(datasets.DATASETS, "toy2d", load2)
    return three


def test_noise_only_on_training_batches(toy):
    from farfield.train.data import GraphDataModule
    cfg = apply_overrides(TrainConfig(), ["data.dataset=toy3d", "data.batch_size=4"]).data
    dm = GraphDataModule(cfg, "radius:6.0", seed=0)
    noisy = dm.with_noise(0.1)
    assert dm.noise_std == 0 and noisy.train is dm.train                  # a view sharing the graphs
    clean = {g.name: g.pos for g in dm.train + dm.val}
    for b in noisy.train_dataloader():
        assert NOISE_TARGET in b
        ref = torch.cat([clean[n] for n in b.name])
        assert torch.allclose(b.pos - ref, 0.1 * b[NOISE_TARGET], atol=1e-6)
        # edges are built on the noisy positions: every edge is within the radius
        assert float((b.pos[b.edge_index[0]] - b.pos[b.edge_index[1]]).norm(dim=-1).max()) <= 6.0
    for b in noisy.val_dataloader():
        assert NOISE_TARGET not in b
        assert torch.equal(b.pos, torch.cat([clean[n] for n in b.name]))
    a = [b[NOISE_TARGET] for b in noisy.train_dataloader()]
    noisy.train_dataloader().batch_sampler.set_epoch(0)
    assert all(torch.equal(x, y) for x, y in zip(a, [b[NOISE_TARGET] for b in noisy.train_dataloader()]))


def test_noisy_nodes_needs_coordinates(toy):
    from farfield.train.data import GraphDataModule
    from farfield.train.run import train
    cfg = apply_overrides(TrainConfig(), ["data.dataset=toy2d", "model.backbone=gcn", "task.noisy_nodes=0.1"])
    dm = GraphDataModule(cfg.data, cfg.data.edges)
    with pytest.raises(ConfigError, match="noisy_nodes needs 3D coordinates"):
        dm.with_noise(0.02)
    with pytest.raises(ConfigError, match="noisy_nodes needs 3D coordinates"):
        train(cfg, quiet=True)
    with pytest.raises(ConfigError, match="task.noisy_nodes must be a non-negative"):
        apply_overrides(TrainConfig(), ["task.noisy_nodes=-1"])


def test_hash_is_unchanged_without_noisy_nodes_and_changes_with_it():
    from farfield.train.run import config_hash, config_key
    base = TrainConfig()
    key = config_key(base)
    assert "noisy_nodes" not in key["task"] and "noise_std" not in key["task"]
    on = apply_overrides(base, ["task.noisy_nodes=0.1"])
    assert config_hash(on) != config_hash(base)
    assert config_key(on)["task"]["noisy_nodes"] == 0.1 and config_key(on)["task"]["noise_std"] == 0.02


def test_training_with_noisy_nodes_logs_the_denoising_loss(toy, tmp_path):
    from farfield.train.run import train
    cfg = apply_overrides(TrainConfig(), ["data.dataset=toy3d", "data.edges=radius:6.0", "data.batch_size=8",
                                          "model.backbone_options={hidden: 8, num_layers: 1}", "optim.epochs=1",
                                          "task.noisy_nodes=0.1", "run.progress=false", f"run.out={tmp_path / 'r'}"])
    res = train(cfg, quiet=True)
    assert res["curve"][0]["train/denoise"] > 0 and "test/mae" in res
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["config_hash"] == res["config_hash"]

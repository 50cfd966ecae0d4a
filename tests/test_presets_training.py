"""Shipped training presets (farfield.configs): the tuned GCN of Toenshoff, Ritzert, Rosenbluth and Grohe (2023)
on LRGB Peptides, and what it needs: the 2D blocks' activation / norm / positional-encoding options, the task
head depth (task.head_layers, head_parameter_count) and the learning-rate warm-up (optim.warmup_epochs).

The tiny training run reads FARFIELD_TEST_DATA/lrgb (skipped with a reason when absent, failed under CI=true)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GCNConv

from conftest import missing_data
from farfield.cli.main import main
from farfield.configs import PUBLISHED, preset_path, presets
from farfield.errors import ConfigError, InputError
from farfield.models import InputSpec, build_backbone
from farfield.models.graph2d import GCN
from farfield.train.config import OptimConfig, TaskConfig, TrainConfig, apply_overrides, load_config
from farfield.train.module import TaskModule, head_dims, head_parameter_count, warmup_factor
from tests.conftest import data_root

#: the published settings (configs/LRGB-tuned/peptides-{func,struct}-GCN.yaml of toenshoff/LRGB, GraphGPS keys
#: in the comments) as farfield config keys
PUBLISHED_SETTINGS = {
    "peptides_func_gcn_tuned": {
        "data.dataset": "peptides_func",
        "data.batch_size": 200,                               # train.batch_size
        "data.options": {"rwse": 20},                         # posenc_RWSE, times range(1, 21)
        "model.backbone": "gcn",                              # layer_type gcnconv, residual true
        "model.long_range": "none",
        "model.backbone_options": {"hidden": 235,             # dim_inner
                                   "num_layers": 6,           # layers_mp
                                   "dropout": 0.1,
                                   "activation": "gelu",      # act
                                   "norm": "none",            # GCNConvLayer has no normalisation
                                   "pe_encoder": "rwse",      # Atom+RWSE, raw_norm BatchNorm, model Linear
                                   "pe_columns": 20,
                                   "pe_width": 28},           # posenc_RWSE.dim_pe
        "task.kind": "multilabel", "task.num_outputs": 10, "task.monitor": "ap",
        "task.pooling": "mean",                               # graph_pooling
        "task.head_layers": 3,                                # layers_post_mp
        "optim.lr": 1e-3, "optim.weight_decay": 0.0,          # adamW, base_lr, weight_decay
        "optim.epochs": 250,                                  # max_epoch
        "optim.scheduler": "cosine", "optim.warmup_epochs": 5,   # cosine_with_warmup, num_warmup_epochs
        "optim.grad_clip": 1.0,                               # clip_grad_norm (GraphGPS value 1.0)
    },
    "peptides_struct_gcn_tuned": {
        "data.dataset": "peptides_struct",
        "data.batch_size": 200,
        "data.options": {"lap_pe": 10},                       # posenc_LapPE, max_freqs 10, laplacian_norm none
        "model.backbone": "gcn",
        "model.long_range": "none",
        "model.backbone_options": {"hidden": 235, "num_layers": 6, "dropout": 0.1, "activation": "gelu",
                                   "norm": "none",
                                   "pe_encoder": "lap_deepset",   # Atom+LapPE, model DeepSet, layers 2
                                   "pe_columns": 20,              # 10 eigenvectors + 10 eigenvalues
                                   "pe_width": 16},               # posenc_LapPE.dim_pe
        "task.kind": "graph_regression", "task.num_outputs": 11, "task.monitor": "mae",
        "task.pooling": "mean", "task.head_layers": 3,
        "optim.lr": 1e-3, "optim.weight_decay": 0.0, "optim.epochs": 250,
        "optim.scheduler": "cosine", "optim.warmup_epochs": 5, "optim.grad_clip": 1.0,
    },
}


def _get(cfg: TrainConfig, key: str):
    sec, name = key.split(".", 1)
    return getattr(getattr(cfg, sec), name)


# -- presets --------------------------------------------------------------------------------------------------
def test_presets_resolve_to_the_published_settings():
    assert presets() == sorted(PUBLISHED_SETTINGS)
    assert PUBLISHED == {"peptides_func_gcn_tuned": ("ap", 0.6860, PUBLISHED["peptides_func_gcn_tuned"][2]),
                         "peptides_struct_gcn_tuned": ("mae", 0.2460, PUBLISHED["peptides_struct_gcn_tuned"][2])}
    for name, table in PUBLISHED_SETTINGS.items():
        cfg = load_config(name)                        # a preset name: no such file here
        assert cfg == load_config(preset_path(name))   # the same as the shipped file's path
        for key, want in table.items():
            assert _get(cfg, key) == want, (name, key)
        assert cfg.data.max_atoms >= 200 * 500         # the atom budget never splits a batch of 200 peptides
        # the model builds from the preset's options with the published widths
        from farfield.datasets.lrgb import ATOM_WIDTH
        m = cfg.model.build(InputSpec(ATOM_WIDTH + 20, 0, 13))        # RWSE 20 / LapPE 10 + 10 eigenvalues
        assert isinstance(m, GCN) and len(m.layers) == 6 and m.hidden_s == 235
        assert isinstance(m.act, nn.GELU) and all(isinstance(n, nn.Identity) for n in m.norms)
        assert m.embedding.linear_x.out_features == 235 - table["model.backbone_options"]["pe_width"]
    # overrides apply on top of a preset
    cfg = load_config("peptides_func_gcn_tuned", ["optim.epochs=3", "data.path=/somewhere"])
    assert cfg.optim.epochs == 3 and cfg.data.path == "/somewhere" and cfg.task.head_layers == 3


def test_preset_files_are_package_data():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import fnmatch
    import tomllib
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["farfield"]
    for name in presets():
        rel = preset_path(name).relative_to(root / "farfield").as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), rel


def test_unknown_preset_and_missing_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="presets: .*peptides_func_gcn_tuned.*peptides_struct_gcn_tuned"):
        load_config("peptides_func_gcn")
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_path("nope")
    with pytest.raises(InputError, match="config file not found"):       # a path stays a path
        load_config(tmp_path / "peptides_func_gcn_tuned.yaml")
    with pytest.raises(InputError, match="config file not found"):
        load_config("configs/peptides_func_gcn_tuned")


# -- 2D block options -----------------------------------------------------------------------------------------
def _batch(node_s=12, edge_s=4, sizes=(5, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    gs = []
    for n in sizes:
        ei = torch.randint(0, n, (2, 3 * n), generator=g)
        gs.append(Data(x_s=torch.randn(n, node_s, generator=g), edge_index=ei,
                       edge_s=torch.randn(3 * n, edge_s, generator=g), num_nodes=n))
    return Batch.from_data_list(gs)


def test_default_gcn_is_unchanged_by_the_new_options():
    """A seeded default GCN has the parameters of the construction before the options existed (same creation
    order) and computes the LRGB block h + Dropout(ReLU(BN(conv(h))))."""
    spec, b = InputSpec(12, 0, 4), _batch()
    torch.manual_seed(3)
    m = GCN(spec, hidden=16, num_layers=3, dropout=0.1)
    torch.manual_seed(3)                               # the original creation order, by hand
    emb, edge = nn.Linear(12, 16), nn.Linear(4, 16)
    bns = [nn.BatchNorm1d(16) for _ in range(3)]
    convs = [GCNConv(16, 16) for _ in range(3)]
    assert torch.equal(m.embedding.weight, emb.weight) and torch.equal(m.edge_embedding.weight, edge.weight)
    for a, c in zip(m.layers, convs):
        assert torch.equal(a.lin.weight, c.lin.weight) and torch.equal(a.bias, c.bias)
    assert sorted(m.state_dict()) == sorted(
        ["embedding.weight", "embedding.bias", "edge_embedding.weight", "edge_embedding.bias"]
        + [f"layers.{i}.{k}" for i in range(3) for k in ("bias", "lin.weight")]
        + [f"norms.{i}.{k}" for i in range(3) for k in ("weight", "bias", "running_mean", "running_var",
                                                        "num_batches_tracked")])
    explicit = GCN(spec, hidden=16, num_layers=3, dropout=0.1, activation="relu", norm="batch")
    explicit.load_state_dict(m.state_dict())
    m.eval(), explicit.eval()
    for bn in bns:
        bn.eval()
    with torch.no_grad():
        h = emb(b.x_s)
        for conv, bn in zip(convs, bns):
            h = h + torch.relu(bn(conv(h, b.edge_index)))
        out = m(b).s
    assert torch.allclose(out, h, atol=1e-6) and torch.equal(out, explicit(b).s)


def test_gelu_and_norm_options():
    spec, b = InputSpec(12, 0, 4), _batch()
    torch.manual_seed(0)
    relu = GCN(spec, hidden=16, num_layers=2)
    torch.manual_seed(0)
    gelu = GCN(spec, hidden=16, num_layers=2, activation="gelu")
    assert isinstance(relu.act, nn.ReLU) and isinstance(gelu.act, nn.GELU)
    relu.eval(), gelu.eval()
    with torch.no_grad():
        assert not torch.allclose(relu(b).s, gelu(b).s)
    torch.manual_seed(0)
    plain = GCN(spec, hidden=16, num_layers=2, activation="gelu", norm="none", dropout=0.0)
    assert not any(isinstance(x, nn.BatchNorm1d) for x in plain.modules())
    with torch.no_grad():                              # the tuned block: h + GELU(conv(h)), no normalisation
        h = plain.embedding(b.x_s)
        for conv in plain.layers:
            h = h + nn.functional.gelu(conv(h, b.edge_index))
        assert torch.allclose(plain(b).s, h, atol=1e-6)
    for bad, match in (({"norm": "layer"}, "norm must be one of"), ({"activation": "swishy"}, "unknown activation"),
                       ({"pe_encoder": "rwse", "pe_columns": 0, "pe_width": 4}, "pe_columns"),
                       ({"pe_encoder": "rwse", "pe_columns": 4, "pe_width": 16}, "pe_width"),
                       ({"pe_encoder": "lap_deepset", "pe_columns": 5, "pe_width": 4}, "even"),
                       ({"pe_columns": 4}, "need pe_encoder")):
        with pytest.raises(ConfigError, match=match):
            build_backbone("gcn", spec, hidden=16, num_layers=1, **bad)
    # the options are accepted by every 2D backbone
    for name in ("gine", "gatedgcn"):
        m = build_backbone(name, spec, hidden=16, num_layers=1, activation="gelu", norm="none")
        assert isinstance(m.act, nn.GELU) and m(b).s.shape == (12, 16)


def test_positional_encoding_encoders():
    spec, b = InputSpec(12, 0, 4), _batch()
    m = GCN(spec, hidden=16, num_layers=1, pe_encoder="rwse", pe_columns=4, pe_width=6)
    e = m.embedding
    assert (e.linear_x.in_features, e.linear_x.out_features) == (8, 10)
    assert isinstance(e.raw_norm, nn.BatchNorm1d) and e.raw_norm.num_features == 4 and e.pe.out_features == 6
    assert m(b).s.shape == (12, 16)
    lap = GCN(spec, hidden=16, num_layers=1, pe_encoder="lap_deepset", pe_columns=6, pe_width=4)
    lap.eval()
    x = b.x_s.clone()
    with torch.no_grad():
        base = lap.embedding(x)
        perm = x.clone()                                # a DeepSet: the order of the eigenpairs does not matter
        perm[:, 6:9] = x[:, [8, 6, 7]]
        perm[:, 9:12] = x[:, [11, 9, 10]]
        assert torch.allclose(lap.embedding(perm), base, atol=1e-5)
        moved = x.clone()                               # ... but pairing an entry with its own eigenvalue does
        moved[:, 9:12] = x[:, [10, 11, 9]]
        assert not torch.allclose(lap.embedding(moved), base, atol=1e-5)
    assert lap(b).s.shape == (12, 16)


# -- task head -------------------------------------------------------------------------------------------------
def _module(head_layers=2, pair=False, d=8, k=3):
    task = TaskConfig(kind="multilabel", num_outputs=k, pooling="mean", head_layers=head_layers)
    model = GCN(InputSpec(12, 0, 4), hidden=d, num_layers=1)
    return TaskModule(model, task, OptimConfig(), pair=pair)


def test_head_layers_and_parameter_count():
    default = _module()
    lin = [m for m in default.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(8, 8), (8, 3)]     # today's head, [d, d, k]
    three = _module(3)
    lin = [m for m in three.head if isinstance(m, nn.Linear)]
    assert len(lin) == 3 and [(m.in_features, m.out_features) for m in lin] == [(8, 8), (8, 8), (8, 3)]
    assert len([m for m in _module(1).head if isinstance(m, nn.Linear)]) == 1
    for layers in (1, 2, 3):
        for pair in (False, True):
            mod = _module(layers, pair)
            real = sum(p.numel() for p in mod.head.parameters())
            assert head_parameter_count(mod.task, 8, 3, pair) == real, (layers, pair)
    d, k = 8, 3
    assert head_parameter_count(TaskConfig(), d, k, False) == d * d + d + d * k + k
    assert head_parameter_count(TaskConfig(), d, k, True) == 2 * d * d + d + d * k + k
    assert head_dims({"head_layers": 3}, 4, 2, True) == [8, 4, 4, 2] and head_dims(None, 4, 2) == [4, 4, 2]
    with pytest.raises(ConfigError, match="task.head_layers"):
        TaskConfig(head_layers=0)
    assert apply_overrides(TrainConfig(), ["task.head_layers=3"]).task.head_layers == 3
    # the default seeded module is unchanged: same head parameters as the [d, d, k] MLP built directly
    from farfield.nn.mlp import MLP
    torch.manual_seed(5)
    GCN(InputSpec(12, 0, 4), hidden=8, num_layers=1)                  # the backbone is built first
    a = MLP([8, 8, 3], act="silu")
    torch.manual_seed(5)
    b = _module().head
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# -- warm-up ---------------------------------------------------------------------------------------------------
def test_warmup_schedule():
    f = [warmup_factor(e, 5, 250) for e in range(251)]
    assert f[0] == 1e-6 and f[1:5] == [0.2, 0.4, 0.6, 0.8] and f[5] == 1.0
    assert abs(f[5 + 245 // 2] - 0.5) < 0.01 and f[250] == 0.0 and all(a >= b for a, b in zip(f[5:], f[6:]))
    assert [warmup_factor(e, 2, 10, cosine=False) for e in range(4)] == [1e-6, 0.5, 1.0, 1.0]
    assert OptimConfig().warmup_epochs == 0
    with pytest.raises(ConfigError, match="warmup_epochs"):
        OptimConfig(warmup_epochs=3)                   # the default plateau schedule
    with pytest.raises(ConfigError, match="warmup_epochs"):
        OptimConfig(warmup_epochs=-1, scheduler="cosine")

    def sched(**kw):
        mod = _module()
        mod.optim = OptimConfig(**kw)
        return mod.configure_optimizers()

    out = sched(scheduler="cosine", epochs=10)                                  # unchanged without warm-up
    assert isinstance(out["lr_scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    out = sched(scheduler="cosine", epochs=10, warmup_epochs=2, lr=1e-3)
    s, opt = out["lr_scheduler"], out["optimizer"]
    assert isinstance(s, torch.optim.lr_scheduler.LambdaLR)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    assert lrs[0] == pytest.approx(1e-9) and lrs[1] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3)
    assert lrs[3] < lrs[2] and s.state_dict()["lr_lambdas"] == [{}]        # checkpointable (plain data)
    assert isinstance(sched(scheduler="none", warmup_epochs=2)["lr_scheduler"], torch.optim.lr_scheduler.LambdaLR)


# -- end to end ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lrgb_dir() -> Path:
    d = data_root() / "lrgb"
    if not (d / "peptides-functional" / "raw" / "peptide_multi_class_dataset.csv.gz").is_file():
        missing_data(f"LRGB Peptides-func files are missing under {d} (set FARFIELD_TEST_DATA)")
    return d


def test_tiny_training_run_of_the_func_preset(lrgb_dir, tmp_path, isolated_cache):
    """The preset as published (6 x 235 GCN, RWSE 20, 3-layer head, warm-up) on the first 60 peptides, 2 epochs."""
    out = tmp_path / "run"
    assert main(["train", "peptides_func_gcn_tuned", f"data.path={lrgb_dir}", "data.options.limit=60",
                 "optim.epochs=2", "run.progress=false", "--out", str(out)]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert 0 < res["test/ap"] <= 1 and 0 < res["val/ap"] <= 1
    assert res["epochs"] == 2
    import yaml
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["task"]["head_layers"] == 3 and cfg["optim"]["warmup_epochs"] == 5
    assert cfg["data"]["options"] == {"rwse": 20, "limit": 60}
    # parameters: the published ~500k budget (backbone + the 3-layer head)
    total = res["params"]["total"] + head_parameter_count(TaskConfig(head_layers=3), 235, 10, False)
    assert 450_000 < total < 520_000

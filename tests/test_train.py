"""Training stack and studies: configs, an end-to-end study, resume after a kill, NaN handling, DDP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from farfield.cli.main import main
from farfield.errors import ConfigError, InputError
from farfield.train.config import TrainConfig, apply_overrides, load_config
from farfield.train.data import AtomBudgetBatchSampler, split_indices

SMALL = ["data.limit=40", "data.batch_size=8", "model.backbone_options={hidden: 8, num_layers: 1}",
         "optim.epochs=1", "run.progress=false"]


# -- configuration ---------------------------------------------------------------------------------------
def test_config_round_trip_and_overrides(tmp_path):
    cfg = apply_overrides(TrainConfig(), ["optim.lr=3e-3", "model.long_range=ewald",
                                          "model.long_range_options={k_cutoff: 0.4}", "data.split=[0.6, 0.2, 0.2]"])
    assert cfg.optim.lr == 3e-3 and cfg.model.long_range == "ewald" and cfg.data.split == (0.6, 0.2, 0.2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    import yaml
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(p) == cfg


@pytest.mark.parametrize("override,match", [
    ("optim.lrr=1", "unknown optim key"), ("optim.lr=-1", "optim.lr must be a positive"),
    ("task.kind=regression", "task.kind must be one of"), ("data.split=[0.5, 0.1]", "data.split"),
    ("model.long_range=ewlad", "unknown long-range strategy"), ("nosection.x=1", "must start with a section"),
    ("optim.lr", "not of the form"), ("data.edges=radius", "radius needs a cutoff"),
    ("data.dataset=qm10", "data.dataset must be one of"), ("run.strategy=fsdp", "run.strategy"),
    ("optim.epochs=1.5", "optim.epochs must be an integer"), ("run.seed=abc", "run.seed must be an integer"),
    ("optim.epochs=0", "optim.epochs must be an integer >= 1"), ("data.batch_size=2.0", "data.batch_size"),
    ("run.progress=maybe", "run.progress must be true or false"),
])
def test_config_errors_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(TrainConfig(), [override])


def test_shipped_example_configs_load_and_train(tmp_path):
    examples = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))
    assert examples
    from farfield.cli.study import load_study_config
    for p in examples:
        if "study:" in p.read_text():                  # a study config: its base trains, `farfield train` refuses it
            with pytest.raises(InputError, match="is a study config"):
                load_config(p)
            cfg, _ = load_study_config(str(p), [])
            p = tmp_path / f"{p.stem}_base.yaml"
            import yaml
            p.write_text(yaml.safe_dump(cfg.to_dict()))
        cfg = load_config(p)
        assert main(["train", str(p), *SMALL, "--out", str(tmp_path / p.stem)]) == 0, p
        assert (tmp_path / p.stem / "metrics.json").is_file() and cfg.model.backbone


def test_config_file_errors(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(bad)
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(InputError, match="mapping"):
        load_config(tmp_path / "list.yaml")


# -- data ------------------------------------------------------------------------------------------------
def test_atom_budget_batches():
    sizes = [100, 900, 50, 400, 3000, 20, 20]
    s = AtomBudgetBatchSampler(sizes, batch_size=3, max_atoms=1000, shuffle=True, seed=1)
    batches = list(iter(s))
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    for b in batches:
        assert len(b) <= 3 and (sum(sizes[i] for i in b) <= 1000 or len(b) == 1)
    s.set_epoch(1)
    assert list(iter(s)) != batches                   # reshuffled per epoch (deterministic for this seed)
    s.set_epoch(0)
    assert list(iter(s)) == batches                   # the same epoch gives the same order (resume)


def test_split_is_fixed_and_disjoint():
    a = split_indices(100, (0.8, 0.1, 0.1), 0)
    b = split_indices(100, (0.8, 0.1, 0.1), 0)
    assert all((x == y).all() for x, y in zip(a, b))
    assert len(set(np.concatenate(a))) == 100 and [len(x) for x in a] == [80, 10, 10]


def test_nan_in_data_is_named(tmp_path, monkeypatch):
    from farfield.datasets import DATASETS
    from farfield.train.data import GraphDataModule
    graphs = DATASETS["peptide_electrostatics"]()[:12]       # the loader (the package's name is the module)
    graphs[2].pos[0, 0] = float("nan")
    monkeypatch.setitem(__import__("farfield.datasets", fromlist=["DATASETS"]).DATASETS, "peptide_electrostatics",
                        lambda path=None, **kw: graphs)
    with pytest.raises(InputError, match=f"{graphs[2].name}.*NaN"):
        GraphDataModule(TrainConfig().data, "radius:5.0").setup()


def test_empty_validation_split_is_refused():
    from farfield.train.data import GraphDataModule
    cfg = apply_overrides(TrainConfig(), ["data.limit=16"]).data       # 4 sequences: 3 / 0 / 1
    with pytest.raises(InputError, match="validation split is empty"):
        GraphDataModule(cfg, "radius:5.0").setup()


# -- module ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,n,y", [("graph_regression", 1, lambda: torch.randn(2, 1)),
                                      ("binary", 1, lambda: torch.tensor([[0.0], [1.0]])),
                                      ("multiclass", 3, lambda: torch.tensor([0, 2])),
                                      ("multilabel", 4, lambda: torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0.0]])),
                                      ("node_regression", 2, None)])
def test_task_heads(kind, n, y):
    from farfield.models import InputSpec, build_backbone
    from farfield.train.config import OptimConfig, TaskConfig
    from farfield.train.module import TaskModule
    gs = []
    for k in range(2):
        d = Data(x_s=torch.randn(5, 4), pos=torch.randn(5, 3) * 2, edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]))
        gs.append(d)
    b = Batch.from_data_list(gs)
    b.y = y() if y is not None else torch.randn(10, n)
    m = TaskModule(build_backbone("schnet", InputSpec(4), hidden=8, num_layers=1, cutoff=50.0),
                   TaskConfig(kind=kind, num_outputs=n), OptimConfig())
    out = m(b)
    assert out.shape == ((10, n) if kind == "node_regression" else (2, n))
    loss = m._step(b, "train")
    assert torch.isfinite(loss) and loss.requires_grad


def test_non_finite_loss_stops_with_a_clear_error():
    from farfield.models import InputSpec, build_backbone
    from farfield.train.config import OptimConfig, TaskConfig
    from farfield.train.module import NonFiniteLossError, TaskModule
    m = TaskModule(build_backbone("schnet", InputSpec(4), hidden=8, num_layers=1, cutoff=10.0), TaskConfig(),
                   OptimConfig())
    b = Batch.from_data_list([Data(x_s=torch.randn(3, 4), pos=torch.randn(3, 3), edge_index=torch.tensor([[0], [1]]),
                                   y=torch.tensor([[float("nan")]]))])
    with pytest.raises(NonFiniteLossError, match="training loss became NaN"):
        m.training_step(b, 0)


# -- end to end ------------------------------------------------------------------------------------------
def test_tiny_study_writes_report_and_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["study", *SMALL, "--strategies", "none", "virtual_node", "--seeds", "2", "--workers", "0",
            "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [g["arm"] for g in summary["groups"]] == ["none", "none-wide", "virtual_node"]
    vn, wide = summary["groups"][2], summary["groups"][1]
    assert vn["n"] == 2 and "vs_control" in vn and "vs_wide" in vn and "p_holm" in vn["vs_control"]
    assert wide["params"] >= vn["params"] > summary["groups"][0]["params"]      # parameter-matched baseline
    assert "mean" in summary["baselines"]["0"]
    for f in ("results.csv", "results.json", "report.md", "metric.png", "curves.png", "cost.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    report = (out / "report.md").read_text()
    assert "| schnet | virtual_node |" in report and "Student-t" in report and "Holm" in report
    runs = sorted((out / "runs" / "schnet" / "none").iterdir())
    assert [r.name.split("-")[0] for r in runs] == ["seed0", "seed1"]
    run = runs[0]
    assert {"config.yaml", "metrics.json", "config_hash"} <= {p.name for p in run.iterdir()}
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    stamp = (run / "metrics.json").stat().st_mtime_ns
    assert main(args[:-1]) == 0                        # rerun: everything reused
    assert "6 of 6 runs already finished with the same config" in capsys.readouterr().err
    assert (run / "metrics.json").stat().st_mtime_ns == stamp


def test_study_with_a_changed_config_trains_new_runs(tmp_path, capsys):
    out = tmp_path / "study"
    flags = ["--strategies", "none", "--seeds", "1", "--workers", "0", "--out", str(out), "--json"]
    assert main(["study", *SMALL, *flags]) == 0
    capsys.readouterr()
    assert main(["study", *SMALL, "optim.lr=0.01", *flags, "--epochs", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["groups"][0]["epochs"] == 2                 # not the stale 1-epoch run
    assert len(list((out / "runs" / "schnet" / "none").iterdir())) == 2
    assert "2 epochs, lr 0.01" in (out / "report.md").read_text()


def test_study_runs_are_reproducible(tmp_path, capsys):
    res = []
    for k in range(2):
        assert main(["study", *SMALL, "--strategies", "none", "--seeds", "1", "--workers", "1",
                     "--out", str(tmp_path / f"s{k}"), "--json"]) == 0
        res.append(json.loads(capsys.readouterr().out)["groups"][0]["mean"])
    assert res[0] == res[1]


def test_train_refuses_a_directory_of_another_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    assert main(["train", *SMALL, "optim.lr=0.1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "optim.lr" in err
    # the checkpoint is checked too, even without config.yaml
    (out / "config.yaml").unlink()
    (out / "metrics.json").unlink()
    assert main(["train", *SMALL, "optim.lr=0.1", "--out", str(out)]) == 2
    assert "last.ckpt was written by a different configuration" in capsys.readouterr().err


def test_epochs_zero_is_refused(capsys):
    assert main(["study", "--epochs", "0", "--seeds", "1"]) == 2
    assert "optim.epochs must be an integer >= 1" in capsys.readouterr().err


def test_yaml_model_section_keeps_the_default_backbone_options():
    assert TrainConfig.from_dict({"model": {"long_range": "ewald"}}).model.backbone_options == \
        TrainConfig().model.backbone_options
    assert TrainConfig.from_dict({"model": {"backbone": "painn"}}).model.backbone_options == {}


def test_model_cutoff_follows_the_edge_spec():
    from farfield.train.run import effective_model
    cfg = apply_overrides(TrainConfig(), ["model.backbone=gvp", "data.edges=radius:6.0"])
    assert effective_model(cfg).backbone_options["cutoff"] == 6.0
    cfg = apply_overrides(cfg, ["model.backbone_options={cutoff: 7.0}"])
    assert effective_model(cfg).backbone_options["cutoff"] == 7.0


def test_random_edges_are_redrawn_every_epoch():
    from farfield.graphs import parse_edge_spec
    from farfield.train.data import EpochEdges
    g = Data(pos=torch.randn(40, 3) * 6, x_s=torch.randn(40, 6), graph_key=torch.tensor([3]))
    ds = EpochEdges([g], parse_edge_spec("radius:5.0+random:4"), seed=1, epoch_of=lambda: epoch)
    edges = {}
    for epoch in (0, 1, 0):
        d = ds[0]
        edges.setdefault(epoch, []).append(d.edge_index[:, d.edge_type == 1])
        local = d.edge_index[:, d.edge_type == 0]
        edges.setdefault("local", []).append(local)
    assert torch.equal(edges[0][0], edges[0][1])                     # reproducible
    assert not torch.equal(edges[0][0], edges[1][0])                 # redrawn
    assert all(torch.equal(edges["local"][0], x) for x in edges["local"])
    assert g.edge_index is None                                      # the stored graph is untouched


def _wait_for_epoch(last, epoch, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if last.is_file():
            try:
                if torch.load(last, weights_only=True)["epoch"] >= epoch:
                    return True
            except Exception:  # noqa: BLE001 - being written
                pass
        time.sleep(0.2)
    return False


def test_sigterm_stops_train_with_a_message_and_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "farfield.cli.main", "train", *SMALL[:-2], "optim.epochs=30", "run.progress=false",
           "--out", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert _wait_for_epoch(out / "checkpoints" / "last.ckpt", 1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted by SIGTERM; re-run the same command to resume" in err
    assert not (out / "metrics.json").exists()
    assert main(["train", *SMALL[:-2], "optim.epochs=30", "run.progress=false", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 30


def test_sigint_stops_a_study_with_workers_and_it_resumes(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["study", *SMALL[:-2], "optim.epochs=300", "--strategies", "none", "--seeds", "1", "--workers", "1",
            "--no-param-matched", "--out", str(out)]
    p = subprocess.Popen([sys.executable, "-m", "farfield.cli.main", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 180 and not list(out.glob("runs/*/*/*/checkpoints/last.ckpt")):
        time.sleep(0.2)
    assert _wait_for_epoch(next(out.glob("runs/*/*/*/checkpoints/last.ckpt")), 1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "re-run the same command to resume" in err
    assert not list(out.glob("runs/*/*/*/metrics.json"))
    assert main(args + ["--workers", "0"]) == 0
    assert json.loads(next(out.glob("runs/*/*/*/metrics.json")).read_text())["epochs"] == 300


def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "farfield.cli.main", "train", *SMALL[:-2], "optim.epochs=30", "run.progress=false",
           "--out", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = out / "checkpoints" / "last.ckpt"
    assert _wait_for_epoch(last, 1)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert last.is_file() and not (out / "metrics.json").exists()
    assert main(["train", *SMALL[:-2], "optim.epochs=30", "run.progress=false", "--out", str(out)]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["epochs"] == 30
    logged = {c["epoch"] for c in res["curve"]}
    assert logged >= set(range(30))                   # the log continues across the kill


def test_unreadable_checkpoint_is_set_aside(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        assert main(["train", *SMALL, "--out", str(out)]) == 0
    assert (out / "checkpoints" / "last.ckpt.unreadable").is_file() and (out / "metrics.json").is_file()


def test_train_cli_errors(capsys, tmp_path):
    assert main(["train", "optim.lrr=1"]) == 2
    assert "unknown optim key" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["study", "--strategies", "vn"]) == 2
    assert "unknown strategy 'vn'" in capsys.readouterr().err


def test_tensorboard_flag(tmp_path, capsys):
    import importlib.util
    args = ["train", *SMALL, "run.tensorboard=true", "--out", str(tmp_path / "tb")]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        assert main(args) == 0 and any((tmp_path / "tb" / "tensorboard").rglob("events.*"))
    else:
        assert main(args) == 2
        assert "needs the tensorboard package" in capsys.readouterr().err


def test_ddp_metrics_equal_single_process_ones(tmp_path):
    """3 processes, 8 test graphs in batches of 3: uneven shards, no graph evaluated twice."""
    from farfield.train.run import evaluate
    out = tmp_path / "ddp"
    exe = Path(sys.executable).with_name("farfield")
    small = ["data.limit=40", "data.batch_size=3", "model.backbone_options={hidden: 8, num_layers: 1}",
             "optim.epochs=1", "run.progress=false"]
    cmd = [str(exe) if exe.exists() else "farfield", "train", *small, "--devices", "3", "--strategy", "ddp",
           "--out", str(out)]
    env = {**os.environ, "PL_DISABLE_FORK": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "metrics.json").read_text())
    cfg = load_config(None, small)
    single = evaluate(cfg, out / "checkpoints" / res["best_checkpoint"])
    assert single["test/mae"] == pytest.approx(res["test/mae"], rel=1e-5)
    assert single["test/rmse"] == pytest.approx(res["test/rmse"], rel=1e-5)
    for k in ("test/pearson", "test/spearman", "test/group_spearman"):    # concatenated states: exact
        assert single[k] == pytest.approx(res[k], rel=1e-5, abs=1e-7), k


@pytest.mark.parametrize("backbone", ["schnet", "painn", "gvp"])
def test_random_strategy_leaves_local_edge_features_unchanged(backbone):
    """Adding random long-range edges must not change the local model: local edges (edge_type 0) get exactly
    the plain model's radial features and envelope weight; long edges get their own block and weight > 0."""
    from farfield.graphs import parse_edge_spec
    from farfield.models import InputSpec, edge_geometry
    from farfield.models.config import ModelConfig
    torch.manual_seed(0)
    g = Data(pos=torch.randn(60, 3) * 8, x_s=torch.randn(60, 6), graph_key=torch.tensor([0]))
    parse_edge_spec("radius:5.0+random:4").apply(g)
    b = Batch.from_data_list([g])
    local = b.edge_type == 0
    opts = {"hidden": 8, "num_layers": 1, "cutoff": 5.0}
    plain = ModelConfig(backbone, opts).build(InputSpec(6, node_v=0))
    rnd = ModelConfig(backbone, opts, "random").build(InputSpec(6, node_v=0), max_edge_length=60.0)
    bl = Batch.from_data_list([Data(pos=g.pos, x_s=g.x_s, edge_index=g.edge_index[:, g.edge_type == 0])])
    gp = edge_geometry(bl.pos, bl, plain.radial)
    gr = edge_geometry(b.pos, b, rnd.radial)
    k = gp.rbf.shape[1]
    assert torch.equal(gr.rbf[local, :k], gp.rbf) and torch.equal(gr.weight[local], gp.weight)
    assert (gr.rbf[local, k:] == 0).all() and (gr.rbf[~local, :k] == 0).all()
    assert (gr.weight[~local] > 0).all() and (~local).sum() > 0


def test_study_over_several_splits_separates_seed_and_split_variance(tmp_path, capsys):
    assert main(["study", *SMALL, "--strategies", "none", "virtual_node", "--seeds", "2", "--split-seeds", "0", "1",
                 "--no-param-matched", "--workers", "0", "--out", str(tmp_path / "s"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    g = summary["groups"][1]
    assert g["n"] == 4 and g["vs_control"]["n"] == 4                    # paired by (split, seed)
    assert g["variance"]["splits"] == 2 and g["variance"]["seed_sd"] >= 0 and g["variance"]["split_sd"] >= 0
    assert set(summary["baselines"]) == {"0", "1"}
    assert "seed sd" in (tmp_path / "s" / "report.md").read_text()


def test_identity_labels_come_from_the_deepfri_cutoffs(monkeypatch):
    from farfield.datasets import deepfri
    from farfield.train import run
    assert not hasattr(run, "IDENTITY_CUTOFFS")                   # one definition: deepfri's
    assert run.identity_labels() == ("30%", "40%", "50%", "70%", "95%")
    monkeypatch.setattr(deepfri, "IDENTITY_CUTOFFS", (0.25, 0.9))
    assert run.identity_labels() == ("25%", "90%")

"""Checkpoints are loaded with ``torch.load(weights_only=True)`` everywhere in the train layer (our own check of
``last.ckpt``, Lightning's resume, test and evaluate): a crafted checkpoint cannot run code, and what a run
writes (its config as plain data, callback / loop / optimizer / scheduler states) loads under that restriction."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from farfield.errors import ConfigError, InputError
from farfield.train.config import TrainConfig, apply_overrides

SMALL = ["data.limit=40", "data.batch_size=8", "model.backbone_options={hidden: 8, num_layers: 1}",
         "optim.epochs=1", "run.progress=false"]


class _Payload:
    """Unpickling this runs Python code that writes ``marker`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"with open({self.marker!r}, 'w') as f: f.write('pwned')",)


def _crafted(path: Path, marker: Path) -> None:
    """A checkpoint that looks like Lightning's, with the payload in its hyper-parameters."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "global_step": 1, "pytorch-lightning_version": "2.6.6", "state_dict": {},
                "hyper_parameters": {"config": {"payload": _Payload(marker)}}}, path)


def test_the_crafted_checkpoint_is_a_working_exploit(tmp_path):
    """Guards the other tests: unrestricted unpickling of the crafted file does run its code."""
    marker = tmp_path / "marker"
    _crafted(tmp_path / "x.ckpt", marker)
    torch.load(tmp_path / "x.ckpt", weights_only=False)
    assert marker.read_text() == "pwned"


def test_resuming_from_a_crafted_checkpoint_runs_no_code(tmp_path):
    from farfield.train.run import train
    out, marker = tmp_path / "run", tmp_path / "marker"
    last = out / "checkpoints" / "last.ckpt"
    _crafted(last, marker)
    cfg = apply_overrides(TrainConfig(), SMALL + [f"run.out={out}"])
    with pytest.warns(UserWarning, match="refused.*could run code.*starting over"):
        res = train(cfg, quiet=True)
    assert not marker.exists()
    assert (out / "checkpoints" / "last.ckpt.unreadable").is_file()        # set aside, not deleted
    assert res["epochs"] == 1 and (out / "metrics.json").is_file()          # a fresh run


def test_evaluating_a_crafted_checkpoint_runs_no_code(tmp_path):
    from farfield.train.run import evaluate
    marker = tmp_path / "marker"
    _crafted(tmp_path / "x.ckpt", marker)
    cfg = apply_overrides(TrainConfig(), SMALL + [f"run.out={tmp_path / 'run'}"])
    with pytest.raises(InputError, match="could run code"):
        evaluate(cfg, tmp_path / "x.ckpt")
    assert not marker.exists()


class _Stop(Exception):
    pass


def _plain(x, where="config"):
    if isinstance(x, dict):
        for k, v in x.items():
            assert isinstance(k, str), where
            _plain(v, f"{where}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _plain(v, f"{where}[{i}]")
    else:
        assert x is None or isinstance(x, (str, int, float, bool)), f"{where}: {type(x).__name__}"


def test_an_interrupted_run_resumes_with_weights_only_loads(tmp_path, monkeypatch):
    from farfield.train.module import TaskModule
    from farfield.train.run import train
    out = tmp_path / "run"
    cfg = apply_overrides(TrainConfig(), SMALL + ["optim.epochs=2", f"run.out={out}"])

    def stop(self):
        if self.current_epoch == 1:
            raise _Stop()
    with pytest.MonkeyPatch.context() as mp:            # killed after epoch 0's checkpoint
        mp.setattr(TaskModule, "on_train_epoch_start", stop, raising=False)
        with pytest.raises(_Stop):
            train(cfg, quiet=True)
    last = out / "checkpoints" / "last.ckpt"
    ck = torch.load(last, weights_only=True)
    assert ck["epoch"] == 0 and not (out / "metrics.json").exists()
    _plain(ck["hyper_parameters"]["config"])

    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only", "not given"))
        return real(*args, **kwargs)
    monkeypatch.setattr(torch, "load", spy)
    res = train(cfg, quiet=True)
    # our check of last.ckpt, Lightning's restore for the resume and its load of best.ckpt for the test split
    assert len(calls) >= 3 and all(c is True for c in calls), calls
    assert res["epochs"] == 2
    with open(out / "logs" / "part1" / "metrics.csv") as f:
        epochs = {int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("train/loss")}
    assert epochs == {1}                                                    # resumed: epoch 0 was not redone


def test_checkpoints_of_every_scheduler_and_early_stopping_load_weights_only(tmp_path):
    from farfield.train.run import train
    for sched in ("cosine", "none"):
        out = tmp_path / sched
        train(apply_overrides(TrainConfig(), SMALL + [f"optim.scheduler={sched}", "optim.patience=2",
                                                      f"run.out={out}"]), quiet=True)
        for name in ("last", "best"):
            ck = torch.load(out / "checkpoints" / f"{name}.ckpt", weights_only=True)
            _plain(ck["hyper_parameters"]["config"])
            assert json.loads(json.dumps(ck["hyper_parameters"]["config"])) == ck["hyper_parameters"]["config"]


def test_module_stores_its_config_as_plain_data():
    from farfield.models import InputSpec, build_backbone
    from farfield.train.config import OptimConfig, TaskConfig
    from farfield.train.module import TaskModule
    bb = build_backbone("schnet", InputSpec(4), hidden=8, num_layers=1, cutoff=5.0)
    m = TaskModule(bb, TaskConfig(), OptimConfig(), config={"data": {"split": (0.8, 0.1, 0.1)}})
    assert m.hparams["config"] == {"data": {"split": [0.8, 0.1, 0.1]}}
    with pytest.raises(ConfigError, match=r"config\.data\.path.*PosixPath"):
        TaskModule(bb, TaskConfig(), OptimConfig(), config={"data": {"path": Path("x")}})

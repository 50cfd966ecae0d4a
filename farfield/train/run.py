"""``train(config)``: one reproducible, resumable training run with Lightning.

Run directory (``config.run.out``): ``config.yaml`` (the resolved config), ``checkpoints/last.ckpt`` (every
epoch) and ``checkpoints/best.ckpt`` (best validation metric), ``logs/`` (CSV, optional TensorBoard),
``metrics.json`` (written last: its presence marks a finished run). Re-running a killed run resumes from
``last.ckpt``; re-running a finished run returns its metrics without training.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch

from farfield.errors import ConfigError
from farfield.train.config import TrainConfig

__all__ = ["train", "build_module"]


def build_module(cfg: TrainConfig, dm):
    from farfield.models.config import parameter_counts
    from farfield.train.module import TaskModule
    L_seed(cfg.run.seed)
    strategy = cfg.model.strategy()
    model = cfg.model.build(dm.input_spec, max_edge_length=dm.max_edge_length if strategy.is_graph else None)
    module = TaskModule(model, cfg.task, cfg.optim, dm.target_mean, dm.target_std, config=cfg.to_dict())
    return module, parameter_counts(model)


def L_seed(seed: int) -> None:
    import lightning as L
    L.seed_everything(seed, workers=True, verbose=False)


class _EpochTimer:
    def __init__(self):
        import lightning as L

        class T(L.Callback):
            def __init__(s):
                s.times, s.t0 = [], None

            def on_train_epoch_start(s, trainer, pl_module):
                s.t0 = time.perf_counter()

            def on_train_epoch_end(s, trainer, pl_module):
                s.times.append(time.perf_counter() - s.t0)
        self.cb = T()


def _quiet_lightning() -> None:
    import logging
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def train(cfg: TrainConfig, datamodule=None, quiet: bool = False) -> dict:
    """Train (or resume, or return the finished result of) the run described by ``cfg``; returns metrics:
    ``val/<metric>`` and ``test/<metric>`` of the best checkpoint, parameter counts, seconds per epoch,
    peak memory, inference throughput, epochs run and the learning curve."""
    import lightning as L
    import yaml
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from farfield.train.data import GraphDataModule

    if quiet:
        _quiet_lightning()
    out = Path(cfg.run.out)
    done = out / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    dm = datamodule or GraphDataModule(cfg.data, cfg.model.edge_spec(cfg.data.edges), seed=cfg.run.seed,
                                       standardize=cfg.task.standardize)
    dm.setup("fit")
    _reset_peak()
    module, params = build_module(cfg, dm)
    monitor = f"val/{module.monitor}"
    ckpt_dir = out / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=module.mode, save_top_k=1,
                           save_last=True, enable_version_counter=False)
    callbacks = [best]
    if cfg.optim.patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=module.mode, patience=cfg.optim.patience))
    timer = _EpochTimer()
    callbacks.append(timer.cb)
    # a resumed run logs into a new version folder; the learning curve merges them all
    previous = sorted((out / "logs").glob("**/metrics.csv"))
    loggers = [CSVLogger(out, name="logs", version=f"part{len(previous)}")]
    if cfg.run.tensorboard:
        import importlib.util
        if not (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")):
            raise ConfigError("run.tensorboard=true needs the tensorboard package (pip install tensorboard)")
        loggers.append(TensorBoardLogger(out, name="tensorboard", version=f"part{len(previous)}"))
    if cfg.run.devices > 1 and cfg.run.strategy == "auto":
        raise ConfigError("run.devices > 1 needs run.strategy=ddp (or ddp_spawn)")
    trainer = L.Trainer(max_epochs=cfg.optim.epochs, accelerator=cfg.run.accelerator, devices=cfg.run.devices,
                        strategy=cfg.run.strategy, callbacks=callbacks, logger=loggers, deterministic=False,
                        gradient_clip_val=cfg.optim.grad_clip or None, use_distributed_sampler=False,
                        enable_progress_bar=cfg.run.progress and not quiet, enable_model_summary=False,
                        log_every_n_steps=1, num_sanity_val_steps=0)
    last = ckpt_dir / "last.ckpt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*treespec.*")
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.is_file() else None)
        best_path = best.best_model_path or str(last)
        test = trainer.test(module, datamodule=dm, ckpt_path=best_path, verbose=False)
    if trainer.global_rank != 0:
        return {}
    val_best = float(best.best_model_score) if best.best_model_score is not None else float("nan")
    result = {
        "val/" + module.monitor: val_best,
        **{k: float(v) for k, v in (test[0] if test else {}).items()},
        "params": params,
        "epochs": int(trainer.current_epoch),
        "sec_per_epoch": (sum(timer.cb.times) / len(timer.cb.times)) if timer.cb.times else None,
        **_throughput(module, dm),
        "curve": _curve(sorted((out / "logs").glob("part*/metrics.csv"), key=lambda p: int(p.parent.name[4:])),
                        module.monitor),
        "best_checkpoint": str(Path(best_path).name),
    }
    done.write_text(json.dumps(result, indent=2))
    return result


def _throughput(module, dm) -> dict:
    """Inference graphs/s and peak memory (MB; CUDA allocator or CPU resident-set growth) on the test set."""
    from torch_geometric.data import Batch
    module.eval()
    graphs = dm.test or dm.val
    batches = [Batch.from_data_list(graphs[i:i + 32]) for i in range(0, len(graphs), 32)]
    with torch.no_grad():
        module(batches[0])                       # warm-up
    t = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            module(b)
    dt = time.perf_counter() - t
    return {"graphs_per_sec": len(graphs) / dt if dt > 0 else None, "peak_rss_mb": _peak_rss_mb()}


def _reset_peak() -> None:
    """Reset the process's peak resident set (Linux >= 4.0), so that each run reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _curve(csv_paths: list[Path], monitor: str) -> list[dict]:
    """Per-epoch train/val metric and loss from the CSV logs (later parts override earlier epochs)."""
    import csv
    rows = {}
    for path in csv_paths:
        with open(path) as f:
            for r in csv.DictReader(f):
                e = r.get("epoch")
                if e in (None, ""):
                    continue
                e = int(float(e))
                for key in (f"train/{monitor}", f"val/{monitor}", "train/loss", "val/loss"):
                    if r.get(key) not in (None, ""):
                        rows.setdefault(e, {"epoch": e})[key] = float(r[key])
    return [rows[e] for e in sorted(rows)]

"""``train(config)``: one reproducible, resumable training run with Lightning.

Run directory (``config.run.out``): ``config.yaml`` (the resolved config), ``checkpoints/last.ckpt`` (every
epoch) and ``checkpoints/best.ckpt`` (best validation metric), ``logs/`` (CSV, optional TensorBoard),
``metrics.json`` (written last: its presence marks a finished run). Re-running a killed run resumes from
``last.ckpt``; re-running a finished run returns its metrics without training. Both only when the run
directory holds the *same* configuration (:func:`config_key`): a directory holding a different one is
refused with the keys that differ, never silently reused. SIGINT / SIGTERM stop training at the next batch
boundary (the last finished epoch's checkpoint is kept) and raise :class:`Interrupted`.

Checkpoints are only ever read with ``torch.load(weights_only=True)`` (our check of ``last.ckpt``, and
Lightning's own loads for resuming, testing and :func:`evaluate`, which default to ``weights_only=None``: the
torch default, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turns into full unpickling): a checkpoint is a pickle,
and unpickling one without that restriction runs whatever code it names. What a run stores is loadable that way:
tensors, and its config as plain data (:func:`farfield.train.module.plain_data`).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from farfield.errors import ConfigError, FarfieldError
from farfield.train.config import TrainConfig

__all__ = ["train", "build_module", "config_key", "config_hash", "run_data_identity", "Interrupted", "local_cutoff", "sign_flip_columns",
           "check_pooling", "identity_labels"]

#: run options that do not change what is computed
_PRESENTATION_KEYS = ("out", "progress", "tensorboard")
#: data options that do not change what is computed (the loader's parallelism; where the same edges are built)
_DATA_PRESENTATION_KEYS = ("num_workers", "edges_on")


class Interrupted(FarfieldError):
    """Training was stopped by SIGINT / SIGTERM; the last finished epoch's checkpoint is kept."""

    def __init__(self, signum: int = signal.SIGTERM):
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}; re-run the same command to resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: task options added after runs were first recorded, left out of the key at their defaults (so that the hash of
#: every configuration that does not use them is unchanged)
_NEW_TASK_DEFAULTS = {"monitor": None, "noisy_nodes": 0.0, "head_layers": 2}
_NEW_OPTIM_DEFAULTS = {"warmup_epochs": 0, "backbone_lr": None}
_NEW_MODEL_DEFAULTS = {"canonicaliser": "none", "canonicaliser_options": {}, "init": None, "freeze": False}
_NEW_RUN_DEFAULTS = {"precision": "32", "deterministic": False}


def config_key(cfg: TrainConfig | dict) -> dict:
    """The part of a config that determines the result (everything but where and how it is displayed), with
    the task resolved against the dataset (``task.kind=auto`` and the kind it resolves to give one key)."""
    if not isinstance(cfg, TrainConfig):
        try:
            cfg = TrainConfig.from_dict(json.loads(json.dumps(cfg)))
        except FarfieldError:           # a config of another version: compared as written
            pass
    d = cfg.to_dict(resolved=True) if isinstance(cfg, TrainConfig) else json.loads(json.dumps(cfg))
    for k in _PRESENTATION_KEYS:
        d.get("run", {}).pop(k, None)
    for k in _DATA_PRESENTATION_KEYS:
        d.get("data", {}).pop(k, None)
    task = d.get("task", {})
    for k, v in _NEW_TASK_DEFAULTS.items():
        if k in task and task[k] == v:
            task.pop(k)
    if "noisy_nodes" not in task:
        task.pop("noise_std", None)
    optim = d.get("optim", {})
    for k, v in _NEW_OPTIM_DEFAULTS.items():
        if k in optim and optim[k] == v:
            optim.pop(k)
    model = d.get("model", {})
    for k, v in _NEW_MODEL_DEFAULTS.items():
        if k in model and model[k] == v:
            model.pop(k)
    run = d.get("run", {})
    for k, v in _NEW_RUN_DEFAULTS.items():
        if k in run and run[k] == v:
            run.pop(k)
    return d


def run_data_identity(cfg: TrainConfig | dict) -> str:
    """The identity of the data ``cfg`` trains on (:func:`farfield.datasets.identity.data_identity`): '' when
    there is nothing to identify or the config cannot be read."""
    from farfield.datasets.identity import data_identity
    if not isinstance(cfg, TrainConfig):
        try:
            cfg = TrainConfig.from_dict(json.loads(json.dumps(cfg)))
        except FarfieldError:
            return ""
    return data_identity(cfg.data.dataset, cfg.data.path, dict(cfg.data.options))


def config_hash(cfg: TrainConfig | dict) -> str:
    """A short stable hash (sha256 of sorted JSON, 10 hex digits) of :func:`config_key` and the identity of the
    data (:func:`run_data_identity`, when there is one): a changed data file at the same path gives a new hash,
    hence a new run directory in a study, instead of reusing runs trained on the old data."""
    key, ident = config_key(cfg), run_data_identity(cfg)
    if ident:
        key = {**key, "data_identity": ident}
    init = (key.get("model") or {}).get("init")
    if init:
        # the pretrained weights' content, not their path: a retrained checkpoint at the same path is a new run
        from farfield.pretrain.finetune import checkpoint_identity
        key = {**key, "init_identity": checkpoint_identity(init)}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}: {x!r} -> {y!r}")
    return out


def _check_same_config(out: Path, cfg: TrainConfig) -> None:
    """Refuse a run directory that holds a run of another configuration (config.yaml or last.ckpt)."""
    import yaml
    new = config_key(cfg)
    path = out / "config.yaml"
    if path.is_file():
        try:
            old = config_key(yaml.safe_load(path.read_text()) or {})
        except yaml.YAMLError:
            old = None
        if old is not None and old != new:
            diff = "; ".join(_differences(old, new)[:6])
            raise ConfigError(f"run directory {out} holds a run of a different configuration ({diff}); use another "
                              "--out / run.out, or delete the directory to start over")
    stored = out / "data_identity"
    if not stored.is_file() and (out / "config_hash").is_file() and path.is_file():
        # a run directory from before data identities were recorded: its stored hash must match today's, which
        # includes the data's identity (it differs for every run keyed by an earlier farfield, so such a directory
        # is refused rather than resumed or reported on data that may have changed since)
        was_hash = (out / "config_hash").read_text().strip()
        if was_hash != config_hash(cfg):
            raise ConfigError(f"run directory {out} holds a run keyed {was_hash}, not {config_hash(cfg)}: it was "
                              "written by an earlier farfield (before run keys included the data's identity) or "
                              "on other data; use another --out / run.out, or delete the directory to start over")
    if stored.is_file():
        was, now = stored.read_text().strip(), run_data_identity(cfg)
        if was != now:
            raise ConfigError(f"run directory {out} holds a run trained on other data: {cfg.data.dataset} "
                              f"{cfg.data.path or '(built-in)'} had identity {was or '(none)'} and now has "
                              f"{now or '(none)'}; use another --out / run.out, or delete the directory to start "
                              "over")


def _refused(e: BaseException) -> bool:
    """True if ``e`` is torch's refusal (``weights_only=True``) of a checkpoint that holds more than tensors and
    plain data."""
    import pickle
    return isinstance(e, pickle.UnpicklingError) and "weights only load failed" in str(e).lower()


#: why a refused checkpoint is not loaded
_REFUSED = "holds objects other than tensors and plain data; refused to load it, since unpickling it could run code"


def readable_checkpoint(last: Path):
    """The contents of checkpoint ``last`` read with ``weights_only=True``, or None when there is none or it is
    unreadable (killed mid-write, or holding objects other than tensors and plain data, whose unpickling could
    run code): such a file is moved aside to ``*.ckpt.unreadable`` with a warning, so the run starts over."""
    if not last.is_file():
        return None
    try:
        return torch.load(last, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is set aside, never half-loaded
        bad = last.with_suffix(".ckpt.unreadable")
        last.replace(bad)
        why = _REFUSED if _refused(e) else f"is unreadable ({type(e).__name__})"
        warnings.warn(f"checkpoint {last} {why}; moved to {bad.name}, starting over")
        return None


def _check_checkpoint(last: Path, cfg: TrainConfig) -> bool:
    """True if ``last`` can be resumed: readable (:func:`readable_checkpoint`) and written by the same
    configuration."""
    ck = readable_checkpoint(last)
    if ck is None:
        return False
    old = (ck.get("hyper_parameters") or {}).get("config") if isinstance(ck, dict) else None
    if old is not None and config_key(old) != config_key(cfg):
        diff = "; ".join(_differences(config_key(old), config_key(cfg))[:6])
        raise ConfigError(f"checkpoint {last} was written by a different configuration ({diff}); use another "
                          "--out / run.out, or delete the run directory to start over")
    return True


@contextmanager
def _stop_on_signals():
    """SIGINT and SIGTERM ask Lightning to stop at the next batch boundary (its SIGTERM path), instead of
    killing the process mid-write; the signal is remembered so that :func:`train` raises :class:`Interrupted`."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    got = {}

    def on_int(signum, frame):
        got.setdefault("signum", signum)
        os.kill(os.getpid(), signal.SIGTERM)         # Lightning's SIGTERM handler stops at a safe point

    def on_term(signum, frame):
        got.setdefault("signum", signum)

    old = signal.signal(signal.SIGINT, on_int), signal.signal(signal.SIGTERM, on_term)
    try:
        yield got
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])


def local_cutoff(edges: str) -> float | None:
    """The radius of the first radius builder of an edge spec (the model's natural cutoff), if any."""
    from farfield.graphs import parse_edge_spec
    for b in parse_edge_spec(edges).builders:
        if b.kind == "radius":
            return float(b.r)
    return None


def effective_model(cfg: TrainConfig):
    """The model config with the backbone's cutoff taken from the local edge spec (``data.edges``) unless
    ``model.backbone_options.cutoff`` is given, so that the radial basis spans the edges it is fed."""
    from dataclasses import replace
    r = local_cutoff(cfg.data.edges)
    if r is None or "cutoff" in cfg.model.backbone_options:
        return cfg.model
    return replace(cfg.model, backbone_options={"cutoff": r, **cfg.model.backbone_options})


def sign_flip_columns(cfg: TrainConfig) -> slice | None:
    """The ``x_s`` columns holding Laplacian eigenvectors, whose signs are flipped at random on training
    batches: the loader's ``sign_flip_columns(options)`` (LRGB loaders), else None."""
    from farfield.datasets import DATASETS
    try:
        fn = getattr(DATASETS[cfg.data.dataset], "sign_flip_columns", None)
    except (ImportError, AttributeError):
        fn = None
    return fn(dict(cfg.data.options)) if callable(fn) else None


def task_for_data(cfg: TrainConfig, dm):
    """``cfg.task`` checked against the loaded targets: ``num_outputs`` left unset takes the targets' width
    (e.g. QM9 with a list of targets, a DeepFRI-format file with its own classes); an explicit value that
    differs is a :class:`ConfigError`. (Multiclass targets are one class index per item: not checked.)"""
    from dataclasses import replace
    t = cfg.task
    if t.kind == "multiclass" or getattr(dm, "target_mean", None) is None:
        return t
    width = int(dm.target_mean.reshape(-1).shape[0])
    if width == t.num_outputs:
        return t
    if t.requested["num_outputs"] is None:
        out = replace(t, num_outputs=width)             # resolved from the data; the request stays None
        object.__setattr__(out, "_requested", t.requested)
        return out
    raise ConfigError(f"task.num_outputs={t.num_outputs}, but the targets of {cfg.data.dataset!r} have {width} "
                      f"column(s); set task.num_outputs={width} or leave it unset")


def _train_sizes(dm):
    """Node counts of the training graphs: a lazy split's index (``sizes``), else each graph's ``num_nodes``."""
    import numpy as np
    train = getattr(dm, "train", None)
    if train is None:
        return np.zeros(0, dtype=np.int64)
    sizes = getattr(train, "sizes", None)
    if sizes is None:
        sizes = [g.num_nodes for g in train]
    return np.asarray(sizes, dtype=np.int64)


#: graph sizes (max / min node count) above which a sum-pooled regression warns
SIZE_SPREAD = 10.0


def check_pooling(cfg: TrainConfig, dm) -> None:
    """Warn when a sum-pooled graph regression trains on graphs whose node counts span more than an order of
    magnitude (max / min > :data:`SIZE_SPREAD`): a sum readout's output grows with the number of nodes, which is
    right for extensive targets (energies) but makes an intensive per-structure target (a score, a stability)
    depend on chain length, and training diverges on mixed sizes (a small GVP, 2 epochs, on 12 proteins of 20 to
    1,294 residues with N(0, 1) labels: validation MAE 10 to 100 with sum, 0.8 to 0.9 with mean, over 3 seeds)."""
    t = cfg.task
    if t.kind != "graph_regression" or t.pooling not in ("sum", "gigp"):     # GIGP is a sum over orbits
        return
    n = _train_sizes(dm)
    n = n[n > 0]
    if not len(n) or n.max() <= SIZE_SPREAD * n.min():
        return
    why = (f"as requested (task.pooling={t.pooling})" if t.requested["pooling"] == t.pooling
           else f"as {cfg.data.dataset!r} declares its target extensive")
    warnings.warn(f"task.pooling={t.pooling} on {cfg.data.dataset!r} ({why}), but its training graphs have {n.min():,} to "
                  f"{n.max():,} nodes ({n.max() / n.min():.0f}x): a summed readout grows with graph size, which "
                  "suits extensive targets (energies) only; for a per-structure (intensive) property set "
                  "task.pooling=mean", UserWarning, stacklevel=2)


def _check_positions(cfg: TrainConfig, dm) -> None:
    """A 3D backbone on graphs without coordinates fails before training, naming the 2D alternatives."""
    from farfield.models import BACKBONES
    cls = BACKBONES.get(cfg.model.backbone)
    if cls is None or not getattr(cls, "uses_positions", True) or not len(dm.train):
        return
    first = dm.train.raw(0) if hasattr(dm.train, "raw") else dm.train[0]
    if getattr(first, "pos", None) is None:
        flat = sorted(n for n, c in BACKBONES.items() if not getattr(c, "uses_positions", True))
        raise ConfigError(f"backbone {cfg.model.backbone!r} needs 3D coordinates, but the graphs of "
                          f"{cfg.data.dataset!r} have none (2D graphs); choose a 2D backbone ({', '.join(flat)}) "
                          "or a dataset option that adds coordinates (LRGB: data.options={conformers: true})")


def build_module(cfg: TrainConfig, dm):
    """The :class:`~farfield.train.module.TaskModule` of ``cfg`` on the set-up data module ``dm``; returns
    (module, parameter counts of the model)."""
    from farfield.models.config import parameter_counts
    from farfield.train.module import TaskModule
    L_seed(cfg.run.seed)
    task = task_for_data(cfg, dm)
    _check_positions(cfg, dm)
    strategy = cfg.model.strategy()
    model = effective_model(cfg).build(dm.input_spec,
                                       max_edge_length=dm.max_edge_length if strategy.is_graph else None)
    regression = task.kind in ("graph_regression", "node_regression")   # class labels are not standardised
    module = TaskModule(model, task, cfg.optim, dm.target_mean if regression else None,
                        dm.target_std if regression else None, config=cfg.to_dict(),
                        grouped=getattr(dm, "grouped", False), pair=getattr(dm, "pair", False),
                        sign_flip=sign_flip_columns(cfg), seed=cfg.run.seed)
    if cfg.model.init is not None:
        from farfield.pretrain.finetune import load_pretrained
        load_pretrained(model, cfg.model.init, input_spec=dm.input_spec, model_cfg=effective_model(cfg),
                        data_cfg=cfg.data, freeze=cfg.model.freeze)
    counts = parameter_counts(model)
    # the task head's own parameters (node MLP, GIGP's orbit network, the denoising head), outside "total",
    # which stays the model's count as every earlier run recorded it
    counts["head"] = sum(p.numel() for p in module.parameters() if p.requires_grad) - counts["total"]
    return module, counts


def L_seed(seed: int) -> None:
    import lightning as L
    L.seed_everything(seed, workers=True, verbose=False)


class _EpochTimer:
    """Wall-clock and CPU (process) seconds of every training epoch."""

    def __init__(self):
        import lightning as L

        class T(L.Callback):
            def __init__(s):
                s.times, s.cpu, s.t0 = [], [], None

            def on_train_epoch_start(s, trainer, pl_module):
                s.t0 = (time.perf_counter(), time.process_time())

            def on_train_epoch_end(s, trainer, pl_module):
                s.times.append(time.perf_counter() - s.t0[0])
                s.cpu.append(time.process_time() - s.t0[1])
        self.cb = T()


@contextmanager
def _restore_deterministic(was: bool):
    """Put ``torch.use_deterministic_algorithms`` back as it was once a run ends (Lightning sets it process-wide
    from ``Trainer(deterministic=...)``; a deterministic run must not make later work in the process raise on
    operations that have no deterministic implementation)."""
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def _quiet_lightning() -> None:
    """Lightning's start-up banners (GPU / TPU availability, logger tips) are info-level: hide them."""
    import logging
    for name in ("lightning.pytorch", "lightning.fabric", "lightning",
                 "lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def train(cfg: TrainConfig, datamodule=None, quiet: bool = False) -> dict:
    """Train (or resume, or return the finished result of) the run described by ``cfg``; returns metrics:
    ``val/<metric>`` and ``test/<metric>`` of the best checkpoint, parameter counts, seconds per epoch,
    peak memory, inference throughput, epochs run and the learning curve."""
    import lightning as L
    import yaml
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from farfield.train.data import GraphDataModule

    _quiet_lightning()
    out = Path(cfg.run.out)
    done = out / "metrics.json"
    _check_same_config(out, cfg)
    if done.is_file():
        return json.loads(done.read_text())
    last = out / "checkpoints" / "last.ckpt"
    resume = _check_checkpoint(last, cfg)
    dm = datamodule or GraphDataModule(cfg.data, cfg.model.edge_spec(cfg.data.edges), seed=cfg.run.seed,
                                       standardize=cfg.task.standardize)
    dm.setup("fit")
    # recorded once the data loads, so that a start that fails on its input leaves no run of that config behind
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (out / "config_hash").write_text(config_hash(cfg) + "\n")
    (out / "data_identity").write_text(run_data_identity(cfg) + "\n")
    if cfg.task.noisy_nodes > 0:
        dm = dm.with_noise(cfg.task.noise_std)        # a view of the same graphs: training items get noise
    check_pooling(cfg, dm)
    _reset_peak()
    module, params = build_module(cfg, dm)
    monitor = f"val/{module.monitor}"
    ckpt_dir = out / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=module.mode, save_top_k=1,
                           save_last=False, enable_version_counter=False)
    # Lightning's save_last only refreshes last.ckpt when a new best is saved: a separate, unmonitored
    # checkpoint is overwritten at the end of every epoch, so a resumed run loses at most the epoch in flight
    every = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                            enable_version_counter=False)
    callbacks = [best, every]
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
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    trainer = L.Trainer(max_epochs=cfg.optim.epochs, accelerator=cfg.run.accelerator, devices=cfg.run.devices,
                        strategy=cfg.run.strategy, callbacks=callbacks, logger=loggers,
                        deterministic=cfg.run.deterministic, precision=cfg.run.precision,
                        gradient_clip_val=cfg.optim.grad_clip or None, use_distributed_sampler=False,
                        enable_progress_bar=cfg.run.progress and not quiet, enable_model_summary=False,
                        log_every_n_steps=1, num_sanity_val_steps=0)
    with warnings.catch_warnings(), _stop_on_signals() as got, _restore_deterministic(was_deterministic):
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*treespec.*")
        try:
            # weights_only=True: Lightning's default (None) defers to torch's, which an environment variable
            # can turn into full unpickling
            trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None, weights_only=True)
            if got or trainer.received_sigterm:
                raise SIGTERMException()
            best_path = best.best_model_path or str(last)
            test = trainer.test(module, datamodule=dm, ckpt_path=best_path, verbose=False, weights_only=True)
        except SIGTERMException:
            raise Interrupted(got.get("signum", signal.SIGTERM)) from None
        except ConfigError as e:
            if "exceed the cutoff" in str(e):
                raise ConfigError(f"{e}. In a training config: set model.backbone_options.cutoff to at least the "
                                  "longest edge, or shorten data.edges") from None
            raise
    if trainer.global_rank != 0:
        return {}
    from farfield.train.stats import convergence
    val_best = float(best.best_model_score) if best.best_model_score is not None else float("nan")
    curve = _curve(sorted((out / "logs").glob("part*/metrics.csv"), key=lambda p: int(p.parent.name[4:])),
                   module.monitor)
    times = timer.cb.times
    result = {
        "val/" + module.monitor: val_best,
        **{k: float(v) for k, v in (test[0] if test else {}).items()},
        "params": params,
        "epochs": int(trainer.current_epoch),
        "sec_per_epoch": float(sorted(times)[len(times) // 2]) if times else None,
        "sec_per_epoch_spread": float(max(times) / min(times)) if times and min(times) > 0 else None,
        "cpu_sec_per_epoch": float(sorted(timer.cb.cpu)[len(times) // 2]) if times else None,
        "threads": torch.get_num_threads(),
        **_throughput(module, dm),
        **_by_identity(module, dm),
        "convergence": convergence([c.get(f"val/{module.monitor}") for c in curve], mode=module.mode),
        "curve": curve,
        "pooling": module.task.pooling,
        **_by_target(cfg, test[0] if test else {}, module.task.num_outputs),
        "best_checkpoint": str(Path(best_path).name),
        "config_hash": config_hash(cfg),
        "data_identity": run_data_identity(cfg),
        "monitor": module.monitor,
    }
    done.write_text(json.dumps(result, indent=2))
    return result


def target_names(cfg: TrainConfig, k: int) -> list[str]:
    """Names of the ``k`` regression targets: ``data.target`` split at commas, or the loader's ``info['targets']``
    for ``all``, else ``target 0`` ... when they do not add up to ``k``."""
    from farfield.datasets import DATASETS, dataset_info
    from farfield.train.config import _target_names
    default = None
    try:
        default = getattr(DATASETS[cfg.data.dataset], "default_target", None)
    except (ImportError, AttributeError, KeyError):
        pass
    info = dataset_info(cfg.data.dataset)
    names = _target_names(cfg.data.target, default, info)
    if names and len(names) == k:
        return list(names)
    listed = list(info.get("targets") or [])          # every target of the dataset (e.g. Peptides-struct's 11)
    return listed if len(listed) == k else [f"target {i}" for i in range(k)]


def _by_target(cfg: TrainConfig, test: dict, k: int) -> dict:
    """``test_by_target``: each target's test MAE / RMSE (``ColumnError``) of a multi-target regression."""
    if not k or k < 2 or "test/mae_0" not in test:
        return {}
    return {"test_by_target": {name: {m: float(test.get(f"test/{m}_{i}", float("nan"))) for m in ("mae", "rmse")}
                               for i, name in enumerate(target_names(cfg, k))}}


def identity_labels() -> tuple[str, ...]:
    """Labels of DeepFRI's sequence-identity cut-offs (:data:`farfield.datasets.deepfri.IDENTITY_CUTOFFS`, the
    columns of its test.csv), e.g. ``"30%"``: test chains below that identity to the training set."""
    from farfield.datasets.deepfri import IDENTITY_CUTOFFS
    return tuple(f"{c:.0%}" for c in IDENTITY_CUTOFFS)


def _eval_batches(dm):
    """The test split's batches exactly as the test loop sees them (fixed draw of random edges, padding copies
    marked), falling back to validation when there is no test split."""
    loader = dm.test_dataloader() if len(dm.test) else dm.val_dataloader()
    return list(loader)


def _by_identity(module, dm) -> dict:
    """Test metrics per sequence-identity cut-off (Gligorijevic et al. 2021) when the test graphs carry
    ``identity`` [1, 5] (DeepFRI sets): ``{"test_by_identity": {"30%": {"n": ..., "fmax": ...}, ...}}`` for the
    best checkpoint; {} otherwise. Predictions come from the test loader's batches, so the graphs have the
    edges the model was evaluated with (including a random-edge strategy's fixed evaluation draw)."""
    from farfield.data.fields import IDENTITY
    from farfield.train.stats import classification_metrics
    graphs = dm.test
    if not len(graphs) or module.task.kind not in ("multilabel", "binary"):
        return {}
    raw = graphs.raw if hasattr(graphs, "raw") else graphs.__getitem__
    if getattr(raw(0), IDENTITY, None) is None:
        return {}
    module.eval()
    scores, labels, ident = [], [], []
    with torch.no_grad():
        for b in dm.test_dataloader():
            keep = b.eval_weight > 0 if getattr(b, "eval_weight", None) is not None else slice(None)
            scores.append(torch.sigmoid(module(b)).double()[keep])
            labels.append(b.y.double().reshape(b.num_graphs, -1)[keep])
            ident.append(getattr(b, IDENTITY).reshape(b.num_graphs, -1).bool()[keep])
    s, y, ident = torch.cat(scores).numpy(), torch.cat(labels).numpy(), torch.cat(ident).numpy()
    out = {}
    for c, name in enumerate(identity_labels()[: ident.shape[1]]):
        keep = ident[:, c]
        m = classification_metrics(y[keep], s[keep], module.task.kind) if keep.any() else {}
        out[name] = {"n": int(keep.sum()), **m}
    return {"test_by_identity": out}


def _throughput(module, dm) -> dict:
    """Inference graphs/s on the test loader's batches (as evaluated: with the strategy's edges) and peak
    memory (MB; CUDA allocator or CPU resident-set growth)."""
    module.eval()
    batches = _eval_batches(dm)
    if not batches:
        return {"graphs_per_sec": None, "peak_rss_mb": _peak_rss_mb()}
    with torch.no_grad():
        module(batches[0])                       # warm-up
    t = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            module(b)
    dt = time.perf_counter() - t
    n = sum(int(b.num_graphs) for b in batches)
    return {"graphs_per_sec": n / dt if dt > 0 else None, "peak_rss_mb": _peak_rss_mb()}


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
                for key in (f"train/{monitor}", f"val/{monitor}", "train/loss", "val/loss", "train/denoise"):
                    if r.get(key) not in (None, ""):
                        rows.setdefault(e, {"epoch": e})[key] = float(r[key])
    return [rows[e] for e in sorted(rows)]


def evaluate(cfg: TrainConfig, checkpoint: str | Path, split: str = "test") -> dict:
    """Metrics of ``checkpoint`` on ``split`` ('val' or 'test') under ``cfg.run`` (devices, strategy): under
    several processes each graph is evaluated exactly once, so the result equals the single-process one."""
    import lightning as L

    from farfield.errors import InputError
    from farfield.train.data import GraphDataModule
    _quiet_lightning()
    dm = GraphDataModule(cfg.data, cfg.model.edge_spec(cfg.data.edges), seed=cfg.run.seed,
                         standardize=cfg.task.standardize)
    dm.setup("test")
    module, _ = build_module(cfg, dm)
    trainer = L.Trainer(accelerator=cfg.run.accelerator, devices=cfg.run.devices, strategy=cfg.run.strategy,
                        precision=cfg.run.precision, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        run = trainer.validate if split == "val" else trainer.test
        try:
            res = run(module, datamodule=dm, ckpt_path=str(checkpoint), verbose=False, weights_only=True)
        except Exception as e:  # noqa: BLE001
            if _refused(e):
                raise InputError(checkpoint, _REFUSED) from None
            raise
    return {k: float(v) for k, v in (res[0] if res else {}).items()}

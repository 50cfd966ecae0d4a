"""``pretrain(config)``: one reproducible, resumable pretraining run (``farfield pretrain CONFIG [KEY=VALUE ...]``).

A pretraining config has the sections of a training config with ``pretrain`` in place of ``task``::

    data:     {dataset: corpus, path: afdb/, edges: "knn:16", batch_size: 32, options: {preset: ca_bb, workers: 8}}
    model:    {backbone: gvp, backbone_options: {...}, long_range: none}
    pretrain: {tasks: {sequence_structure_denoising: 1.0, plddt_prediction: 0.5}}
    optim:    {lr: 1.0e-4, epochs: 10, scheduler: cosine, warmup_epochs: 1}
    run:      {out: runs/pretrain, seed: 0}

Run directory (``run.out``): ``config.yaml``, ``checkpoints/last.ckpt`` (every epoch; a killed run resumes from it),
``checkpoints/best.ckpt`` (lowest validation loss), ``logs/``, ``backbone.pt`` (the best model's weights with the
featuriser and architecture they fit: :func:`farfield.pretrain.finetune.save_pretrained`; what ``model.init`` of a
training config takes) and ``metrics.json`` (written last; its presence marks a finished run). A directory holding
a run of another configuration is refused, naming the keys that differ. Checkpoints are read with
``weights_only=True`` only.
"""
from __future__ import annotations

import json
import math
import signal
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from farfield._config import check_keys
from farfield.errors import ConfigError, InputError
from farfield.models.config import ModelConfig
from farfield.train.config import DataConfig, OptimConfig, RunConfig, parse_value

__all__ = ["PretrainSection", "PretrainConfig", "load_pretrain_config", "pretrain"]


@dataclass(frozen=True)
class PretrainSection:
    """``tasks``: ``{name: weight}`` or ``{name: {weight: w, <option>: value}}`` over
    :data:`farfield.pretrain.tasks.TASKS` (validated by :func:`farfield.pretrain.tasks.build_tasks`)."""

    tasks: dict = field(default_factory=lambda: {"sequence_structure_denoising": 1.0})

    def __post_init__(self):
        from farfield.pretrain.tasks import build_tasks
        build_tasks(self.tasks)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "pretrain": PretrainSection, "optim": OptimConfig,
             "run": RunConfig}
_DEFAULTS = {"data": {"dataset": "corpus", "edges": "knn:16", "batch_size": 16, "max_atoms": 8000},
             "model": {"backbone": "schnet", "backbone_options": {"hidden": 64, "num_layers": 3}},
             "optim": {"lr": 1e-3, "epochs": 10, "scheduler": "cosine"},
             "run": {"out": "runs/pretrain"}}


@dataclass(frozen=True)
class PretrainConfig:
    data: DataConfig
    model: ModelConfig
    pretrain: PretrainSection
    optim: OptimConfig
    run: RunConfig

    @classmethod
    def from_dict(cls, d: dict | None) -> "PretrainConfig":
        d = d or {}
        if not isinstance(d, dict):
            raise ConfigError(f"a pretraining config must be a mapping of sections {list(_SECTIONS)}")
        if "task" in d:
            raise ConfigError("a pretraining config has a 'pretrain' section (tasks: {name: weight}) instead of "
                              "'task'; a config with 'task' is for `farfield train`")
        check_keys(cls, d, "pretraining config section")
        kw = {}
        for name, sec in _SECTIONS.items():
            v = d.get(name) or {}
            if not isinstance(v, dict):
                raise ConfigError(f"config section {name!r} must be a mapping, got {v!r}")
            base = dict(_DEFAULTS.get(name, {}))
            if name == "model" and v.get("backbone", base["backbone"]) != base["backbone"]:
                base["backbone_options"] = {}
            merged = {**base, **v}
            check_keys(sec, merged, name)
            kw[name] = sec(**merged)
        if kw["model"].init is not None:
            raise ConfigError("model.init applies to fine-tuning (`farfield train`), not to pretraining")
        return cls(**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"]["split"] = list(self.data.split)
        return d


def _apply(d: dict, overrides) -> dict:
    for o in overrides:
        key, eq, raw = o.partition("=")
        parts = key.split(".")
        if not eq or len(parts) < 2 or parts[0] not in _SECTIONS:
            raise ConfigError(f"override {o!r} must be section.key=value with a section of {list(_SECTIONS)}")
        node = d
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"override {o!r}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = parse_value(raw, f"override {o!r}")
    return d


def load_pretrain_config(path, overrides=()) -> PretrainConfig:
    """A YAML pretraining config (or the defaults when ``path`` is None) with ``key=value`` overrides."""
    from farfield.train.config import read_yaml_mapping
    d = read_yaml_mapping(path, list(_SECTIONS)) if path is not None else {}
    return PretrainConfig.from_dict(_apply(d, list(overrides)))


def _key(cfg: PretrainConfig | dict) -> dict:
    d = cfg.to_dict() if isinstance(cfg, PretrainConfig) else json.loads(json.dumps(cfg))
    for k in ("out", "progress", "tensorboard"):
        d.get("run", {}).pop(k, None)
    from farfield.train.run import _NEW_RUN_DEFAULTS       # run.precision / run.deterministic: in the key when set
    for k, v in _NEW_RUN_DEFAULTS.items():
        if d.get("run", {}).get(k, v) == v:
            d.get("run", {}).pop(k, None)
    d.get("data", {}).pop("num_workers", None)
    return d


def _check_dir(out: Path, cfg: PretrainConfig) -> None:
    import yaml

    from farfield.train.run import _differences
    path = out / "config.yaml"
    if path.is_file():
        old = yaml.safe_load(path.read_text()) or {}
        if _key(old) != _key(cfg):
            diff = "; ".join(_differences(_key(old), _key(cfg))[:6])
            raise ConfigError(f"run directory {out} holds a run of a different configuration ({diff}); use another "
                              "--out / run.out, or delete the directory to start over")


def _model_config(cfg: PretrainConfig, dm, tasks):
    """The effective model config: the backbone's cutoff from the local radius of ``data.edges``, or for other
    edges (kNN, sequence), unless given, 1.25 x the longest edge of the clean corpus plus 8 x the largest
    coordinate noise of the tasks (Angstrom), rounded up: corrupted structures have longer kNN edges. Fine-tuning
    from this model needs the same cutoff (``backbone.pt`` records it)."""
    from dataclasses import replace

    from farfield.train.run import local_cutoff
    opts = dict(cfg.model.backbone_options)
    if "cutoff" not in opts:
        r = local_cutoff(cfg.data.edges)
        noise = max([float(t.options.get("std", 0.0)) for t in tasks if t.structure and t.name != "torsional_denoising"]
                    or [0.0])
        opts["cutoff"] = float(r) if r is not None else float(math.ceil(1.25 * max(dm.max_edge_length, 1.0) + 8 * noise))
    return replace(cfg.model, backbone_options=opts)


def pretrain(cfg: PretrainConfig, quiet: bool = False) -> dict:
    """Pretrain (or resume, or return the finished result of) the run ``cfg`` describes; returns its metrics:
    validation / test loss per task, residues per second, seconds per epoch (and per 1,000 residues), peak
    memory, the learning curve and the exported checkpoint's path."""
    import lightning as L
    import yaml
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from farfield.models.config import parameter_counts
    from farfield.pretrain.finetune import FILENAME, save_pretrained
    from farfield.pretrain.module import PretrainModule
    from farfield.pretrain.tasks import Corruption, build_tasks
    from farfield.train.data import GraphDataModule
    from farfield.train.run import (Interrupted, L_seed, _curve, _EpochTimer, _peak_rss_mb, _quiet_lightning,
                                    _reset_peak, _restore_deterministic, _stop_on_signals,
                                    readable_checkpoint)
    from farfield.train.stats import convergence

    _quiet_lightning()
    out = Path(cfg.run.out)
    _check_dir(out, cfg)
    done = out / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    tasks = build_tasks(cfg.pretrain.tasks)
    preset = str(dict(cfg.data.options).get("preset", "gvp"))
    corruption = Corruption(tasks, preset)             # validates tasks against the preset before any work
    last = out / "checkpoints" / "last.ckpt"
    resume = readable_checkpoint(last) is not None
    dm = GraphDataModule(cfg.data, cfg.model.edge_spec(cfg.data.edges), seed=cfg.run.seed, standardize=False,
                         labelled=False)
    dm.setup("fit")
    # recorded once the corpus loads: a start that fails on its input leaves no run of that config behind
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if any(t.needs_plddt for t in tasks):
        first = dm.train.raw(0) if hasattr(dm.train, "raw") else dm.train[0]
        if getattr(first, "plddt", None) is None:
            raise InputError(cfg.data.path or cfg.data.dataset, "plddt_prediction needs pLDDT, and this corpus has "
                                                                "none (build it from AlphaFold / ESMFold models)")
    dm = dm.with_transform(corruption)
    _reset_peak()
    L_seed(cfg.run.seed)
    mcfg = _model_config(cfg, dm, tasks)
    strategy = mcfg.strategy()
    model = mcfg.build(dm.input_spec, max_edge_length=dm.max_edge_length if strategy.is_graph else None)
    with torch.no_grad():                               # how many vector channels the backbone outputs
        probe = model(next(iter(dm.val_dataloader())))
    vectors = 0 if probe.v is None else int(probe.v.shape[1])
    L_seed(cfg.run.seed)
    module = PretrainModule(model, tasks, cfg.optim, config=cfg.to_dict(), vectors=vectors)
    ckpt_dir = out / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min", save_top_k=1,
                           enable_version_counter=False)
    every = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                            enable_version_counter=False)
    timer = _EpochTimer()
    previous = sorted((out / "logs").glob("**/metrics.csv"))
    logger = CSVLogger(out, name="logs", version=f"part{len(previous)}")
    if cfg.run.devices > 1 and cfg.run.strategy == "auto":
        raise ConfigError("run.devices > 1 needs run.strategy=ddp (or ddp_spawn)")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    trainer = L.Trainer(max_epochs=cfg.optim.epochs, accelerator=cfg.run.accelerator, devices=cfg.run.devices,
                        strategy=cfg.run.strategy, callbacks=[best, every, timer.cb], logger=logger,
                        deterministic=cfg.run.deterministic, precision=cfg.run.precision,
                        gradient_clip_val=cfg.optim.grad_clip or None, use_distributed_sampler=False,
                        enable_progress_bar=cfg.run.progress and not quiet, enable_model_summary=False,
                        log_every_n_steps=1, num_sanity_val_steps=0)
    with warnings.catch_warnings(), _stop_on_signals() as got, _restore_deterministic(was_deterministic):
        for msg in (".*does not have many workers.*", ".*smaller than the logging interval.*",
                    ".*Checkpoint directory.*exists and is not empty.*", ".*treespec.*"):
            warnings.filterwarnings("ignore", message=msg)
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None, weights_only=True)
            if got or trainer.received_sigterm:
                raise SIGTERMException()
            best_path = best.best_model_path or str(last)
            test = trainer.test(module, datamodule=dm, ckpt_path=best_path, verbose=False, weights_only=True) \
                if len(dm.test) else [{}]
        except SIGTERMException:
            raise Interrupted(got.get("signum", signal.SIGTERM)) from None
    if trainer.global_rank != 0:
        return {}
    # the best checkpoint's weights, with what they fit
    state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    save_pretrained(out / FILENAME, model, model_cfg=asdict(mcfg),
                    featuriser={"level": "residue", "preset": preset, "dataset": cfg.data.dataset},
                    input_spec=dm.input_spec, tasks=dict(cfg.pretrain.tasks), config=cfg.to_dict())
    curve = _curve(sorted((out / "logs").glob("part*/metrics.csv"), key=lambda p: int(p.parent.name[4:])), "loss")
    times = sorted(timer.cb.times)
    residues = int(sum(dm.train.sizes)) if hasattr(dm.train, "sizes") else sum(g.num_nodes for g in dm.train)
    sec = float(times[len(times) // 2]) if times else None
    result = {
        "val/loss": float(best.best_model_score) if best.best_model_score is not None else float("nan"),
        **{k: float(v) for k, v in (test[0] if test else {}).items()},
        "params": parameter_counts(model),
        "head_params": sum(p.numel() for p in module.heads.parameters()),
        "epochs": int(trainer.current_epoch),
        "train_items": len(dm.train), "train_residues": residues,
        "sec_per_epoch": sec,
        "sec_per_1000_residues": sec / residues * 1000 if sec and residues else None,
        "residues_per_sec": residues / sec if sec else None,
        "peak_rss_mb": _peak_rss_mb(),
        "convergence": convergence([c.get("val/loss") for c in curve], mode="min"),
        "curve": curve,
        "backbone_vectors": vectors,
        "checkpoint": str(out / FILENAME),
    }
    done.write_text(json.dumps(result, indent=2))
    return result

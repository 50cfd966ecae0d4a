"""Pretrained weights: the exported checkpoint of ``farfield pretrain`` and loading it for fine-tuning.

``backbone.pt`` (:func:`save_pretrained`) holds only tensors and plain data (``torch.load(weights_only=True)``
reads it; nothing in it can run code): ``format``, ``version``, ``state_dict`` (the model: backbone, and its
long-range module and canonicaliser when it has them), ``model`` (the *effective* model config it was built with,
cutoff included), ``featuriser`` (``level``, ``preset``: how the graphs it saw were made), ``input_spec`` (widths
of ``x_s`` / ``x_v`` / ``edge_s``), ``tasks`` and ``config`` (the pretraining config).

:func:`load_pretrained` (``model.init`` of a training config) refuses a checkpoint that does not fit, naming the
difference: another feature preset or input widths, another backbone or backbone option (e.g. ``hidden`` or
``cutoff``), another canonicaliser, or a parameter whose shape differs. A different long-range strategy is allowed:
then only the backbone is loaded and the long-range module starts from its initialisation (a warning says so),
which is how "pretrained backbone + a long-range mechanism added for the downstream task" is asked for.
"""
from __future__ import annotations

import hashlib
import inspect
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from farfield.errors import ConfigError, InputError

__all__ = ["FORMAT", "save_pretrained", "read_pretrained", "load_pretrained", "checkpoint_identity",
           "resolve_checkpoint", "dataset_preset"]

FORMAT = "farfield-pretrained"
VERSION = 1
#: the exported file inside a pretraining run directory
FILENAME = "backbone.pt"


def resolve_checkpoint(path) -> Path:
    """``path`` itself, or ``<path>/backbone.pt`` for a pretraining run directory."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    if not p.is_file():
        raise InputError(str(path), f"pretrained checkpoint not found (model.init takes a {FILENAME} written by "
                                    "`farfield pretrain`, or its run directory)")
    return p


def checkpoint_identity(path) -> str:
    """MD5 of the pretrained checkpoint's bytes ('' when it does not exist yet)."""
    try:
        p = resolve_checkpoint(path)
    except InputError:
        return ""
    return hashlib.md5(p.read_bytes()).hexdigest()


def save_pretrained(path, model, *, model_cfg: dict, featuriser: dict, input_spec, tasks: dict, config: dict) -> Path:
    """Write ``model``'s weights and what they fit (module docstring) to ``path`` atomically."""
    from farfield.train.module import plain_data
    path = Path(path)
    blob = {"format": FORMAT, "version": VERSION,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model": plain_data(model_cfg, "model"), "featuriser": plain_data(featuriser, "featuriser"),
            "input_spec": plain_data(asdict(input_spec), "input_spec"), "tasks": plain_data(tasks, "tasks"),
            "config": plain_data(config, "config")}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def read_pretrained(path) -> dict:
    """The contents of a pretrained checkpoint (InputError naming the file when it is not one)."""
    p = resolve_checkpoint(path)
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is refused with its reason
        from farfield.train.run import _REFUSED, _refused
        raise InputError(p, _REFUSED if _refused(e) else f"is not a readable checkpoint ({type(e).__name__}: {e})") \
            from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError(p, f"is not a pretrained checkpoint of `farfield pretrain` (no format {FORMAT!r}; a "
                            "Lightning checkpoint of `farfield train` cannot be used as model.init)")
    if blob.get("version") != VERSION:
        raise InputError(p, f"pretrained checkpoint version {blob.get('version')} is not {VERSION}")
    return blob


def dataset_preset(data_cfg) -> str | None:
    """The residue feature preset a training config's dataset featurises with: ``data.options.preset``, else the
    default of its loader's ``preset`` argument; None for datasets without one (atom-level data)."""
    opts = dict(getattr(data_cfg, "options", {}) or {})
    if "preset" in opts:
        return str(opts["preset"])
    from farfield.datasets import DATASETS
    try:
        fn = DATASETS[data_cfg.dataset]
        fn = fn.resolve() if hasattr(fn, "resolve") else fn
        p = inspect.signature(fn).parameters.get("preset")
    except (ImportError, KeyError, TypeError, ValueError):
        return None
    return None if p is None or p.default is inspect.Parameter.empty else str(p.default)


def _first_difference(a: dict, b: dict, prefix: str = "") -> str | None:
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            d = _first_difference(x, y, f"{prefix}{k}.")
            if d:
                return d
        elif x != y:
            return f"{prefix}{k}: pretrained {x!r}, here {y!r}"
    return None


def load_pretrained(model, path, *, input_spec, model_cfg, data_cfg=None, freeze: bool = False) -> dict:
    """Load the pretrained checkpoint ``path`` into ``model`` (built from ``model_cfg``, the effective
    :class:`~farfield.models.config.ModelConfig`, on data of ``input_spec`` made with ``data_cfg``).

    Returns ``{"loaded": [parameter names], "fresh": [names left at their initialisation], "frozen": n}``.

    Raises:
        ConfigError: the featuriser, the input widths, the backbone, its options, the canonicaliser or a
            parameter's shape differ (the message names the first difference).
    """
    from farfield.models.long_range import WithLongRange
    p = resolve_checkpoint(path)
    blob = read_pretrained(p)
    where = f"model.init={str(path)!r}"
    feat = blob.get("featuriser") or {}
    here_preset = dataset_preset(data_cfg) if data_cfg is not None else None
    if feat.get("preset") is not None and here_preset is not None and feat["preset"] != here_preset:
        raise ConfigError(f"{where} was pretrained on residue features of preset {feat['preset']!r}, but "
                          f"{data_cfg.dataset!r} here is featurised with {here_preset!r}: set data.options.preset="
                          f"{feat['preset']} (or pretrain with {here_preset!r})")
    spec_here = asdict(input_spec)
    diff = _first_difference(blob.get("input_spec") or {}, spec_here)
    if diff:
        raise ConfigError(f"{where} does not fit these inputs (featuriser differs): {diff} (x_s / x_v / edge_s widths; "
                          f"pretrained on {feat or 'unknown features'})")
    cfg_here = asdict(model_cfg) if not isinstance(model_cfg, dict) else dict(model_cfg)
    old = dict(blob.get("model") or {})
    for key in ("backbone", "backbone_options", "canonicaliser", "canonicaliser_options"):
        d = _first_difference({key: old.get(key)}, {key: cfg_here.get(key)})
        if d:
            raise ConfigError(f"{where} has another architecture: {d}; fine-tuning needs the pretrained backbone "
                              "as it was (set the same model.backbone / backbone_options, or pretrain this one)")
    state = blob["state_dict"]
    same_lr = (old.get("long_range"), old.get("long_range_options") or {}) == \
        (cfg_here.get("long_range"), cfg_here.get("long_range_options") or {})
    if same_lr:
        target, prefix = model, ""
    else:
        target = model.backbone if isinstance(model, WithLongRange) else model
        prefix = "backbone." if any(k.startswith("backbone.") for k in state) and old.get("long_range") != "none" \
            else ""
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        warnings.warn(f"{where} was pretrained with long_range={old.get('long_range')!r}, this model has "
                      f"{cfg_here.get('long_range')!r}: only the backbone is loaded; the long-range module starts from "
                      "its initialisation", UserWarning, stacklevel=2)
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ConfigError(f"{where} does not match this model's parameters: "
                          + (f"missing {missing[:4]}" if missing else "") + (" " if missing and extra else "")
                          + (f"unexpected {extra[:4]}" if extra else ""))
    for k, v in state.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise ConfigError(f"{where}: parameter {k} has shape {tuple(v.shape)} there and {tuple(own[k].shape)} here")
    target.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    frozen = 0
    if freeze:
        for prm in target.parameters():
            if prm.requires_grad:
                prm.requires_grad_(False)
                frozen += prm.numel()
    inside = "backbone." if target is not model else ""
    loaded = {inside + k for k in state}
    return {"loaded": sorted(loaded), "fresh": [n for n, _ in model.named_parameters() if n not in loaded],
            "frozen": frozen}

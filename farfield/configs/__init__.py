"""Ready training configurations (presets) shipped with farfield.

A preset is a YAML training config (sections data, model, task, optim, run) stored in this package; anything
that reads a config file accepts its name instead of a path when no such file exists::

    farfield train peptides_func_gcn_tuned data.path=../shared/data/lrgb
    load_config("peptides_struct_gcn_tuned", ["optim.epochs=10"])

Presets:

``peptides_func_gcn_tuned`` / ``peptides_struct_gcn_tuned``
    The tuned GCN of Toenshoff, Ritzert, Rosenbluth and Grohe ("Where Did the Gap Go? Reassessing the
    Long-Range Graph Benchmark", 2023) on LRGB Peptides-func / -struct (Dwivedi et al. 2022): 6 residual GCN
    layers of width 235 with GELU, no normalisation, dropout 0.1; RWSE with 20 steps encoded to 28 channels
    (func) or LapPE with 10 eigenpairs through a DeepSet to 16 channels (struct), concatenated with the atom
    embedding as in GraphGPS (Rampasek et al. 2022); mean pooling; a head of 3 linear layers; AdamW, lr 1e-3, no
    weight decay, gradient norm clipped at 1, batches of 200 graphs, 250 epochs with a 5-epoch linear warm-up
    and a cosine decay. Published test results (250 epochs): AP 0.6860 (func) and MAE 0.2460 (struct).
    Differences that remain (their code vs this package): the head maps each node and then pools (theirs
    pools, then maps) and uses SiLU without dropout (theirs GELU with dropout 0.1 before each layer); struct
    trains with MSE on standardised targets (theirs L1); atom features enter through one linear map of the
    OGB one-hots (theirs a sum of per-feature embeddings: the same function class).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["PRESET_DIR", "PUBLISHED", "presets", "preset_path", "load_preset"]

#: the folder holding the preset YAML files (package data)
PRESET_DIR = Path(__file__).resolve().parent

#: published test result of each preset: (metric, value, source)
PUBLISHED = {
    "peptides_func_gcn_tuned": ("ap", 0.6860, "Toenshoff, Ritzert, Rosenbluth and Grohe 2023"),
    "peptides_struct_gcn_tuned": ("mae", 0.2460, "Toenshoff, Ritzert, Rosenbluth and Grohe 2023"),
}


def presets() -> list[str]:
    """Names of the shipped presets (sorted)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; an unknown name is a :class:`~farfield.errors.ConfigError` listing them."""
    from farfield.errors import ConfigError
    p = PRESET_DIR / f"{name}.yaml"
    if not name or "/" in name or not p.is_file():
        raise ConfigError(f"unknown preset {name!r}; presets: {presets()}")
    return p


def load_preset(name: str, overrides=()):
    """The :class:`~farfield.train.config.TrainConfig` of preset ``name`` with ``key=value`` overrides."""
    from farfield.train.config import load_config
    return load_config(preset_path(name), list(overrides))

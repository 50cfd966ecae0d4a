"""Study arms: a name plus config overrides, and the ways to declare them.

An **arm** is one treatment of a controlled comparison: the study's base config with a few keys changed
(``{"model.long_range": "ewald"}``, ``{"data.edges": "radius:8.0,max=40"}``, ``{"task.noisy_nodes": 0.1}``).
Every arm is compared with a named **control** arm, paired by seed. Long-range strategies, Noisy Nodes and
graph constructions are all arms; a new kind of treatment (a canonicaliser, a pretrained initialisation) is a
new override, not a new code path. Backbones are **blocks**: every arm runs on every backbone of the study and
is compared with the control on the same backbone.

Ways to declare arms:

* strategies: ``strategy_arm("ewald", base)`` (``"ewald+noisy_nodes"`` adds the Noisy Nodes task);
* explicit: ``Arm("r8", {"data.edges": "radius:8.0"})``, on the command line ``--arm r8 data.edges=radius:8.0``,
  in YAML an ``arms:`` mapping ``{r8: {data.edges: "radius:8.0"}}``;
* factorial grids: :func:`grid` over dotted keys, or over named variables substituted into a ``template``
  (``grid({"cutoff": [3, 5], "max": [10, 40]}, {"data.edges": "radius:{cutoff},max={max}"})`` gives 4 arms).

An arm may not change what the arms are compared *on*: the dataset, its file, target, split, sample limit,
task kind and metric, and the run's seed and directory (:data:`FIXED_KEYS`).
"""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from farfield.errors import ConfigError

__all__ = ["Arm", "FIXED_KEYS", "NOISY", "WIDE_SUFFIX", "grid", "strategy_arm", "split_noisy", "parse_cli_arm",
           "parse_grid_option", "arms_from_mapping", "set_dotted", "apply_overrides_dict", "dir_name"]

#: suffix of a strategy arm that adds the Noisy Nodes auxiliary task (Godwin et al. 2022)
NOISY = "+noisy_nodes"
#: suffix of the parameter-matched control: ``none-wide`` = the control ``none`` widened
WIDE_SUFFIX = "-wide"

#: keys an arm may not override: they define the comparison itself (same data, same split, same test metric,
#: paired seeds), so an arm that changed them would not be comparable with its control
FIXED_KEYS = ("data.dataset", "data.path", "data.target", "data.split", "data.split_seed", "data.limit",
              "task.kind", "task.num_outputs", "task.monitor", "run.seed", "run.out")


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


@dataclass(frozen=True)
class Arm:
    """One arm: ``name`` and its ``overrides`` (dotted config key -> value, applied in order after the block's
    backbone). ``kind`` says where the arm came from (``strategy``, ``grid``, ``custom``, ``wide``) for the report."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "custom"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"study arm: a name must be a non-empty string, got {self.name!r}")
        if "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"study arm {self.name!r}: a name may not contain '/'")
        if not isinstance(self.overrides, Mapping):
            raise ConfigError(f"study arm {self.name!r}: overrides must be a mapping of dotted keys to values, "
                              f"got {self.overrides!r}")
        for k in self.overrides:
            if not isinstance(k, str) or "." not in k:
                raise ConfigError(f"study arm {self.name!r}: override key {k!r} must be a dotted config key such as "
                                  "model.long_range or data.edges")
            if k in FIXED_KEYS or any(k.startswith(f + ".") for f in FIXED_KEYS):
                raise ConfigError(f"study arm {self.name!r}: {k} defines what the arms are compared on (data, split, "
                                  f"task, metric, seeds); it must be the same for every arm: set it in the base config")
        object.__setattr__(self, "overrides", dict(self.overrides))

    def __hash__(self):
        return hash((self.name, _freeze(self.overrides), self.kind))

    def describe(self) -> str:
        """``key=value, ...`` (or ``base config`` when the arm changes nothing)."""
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "base config"


def split_noisy(label: str) -> tuple[str, bool]:
    """``'ewald+noisy_nodes'`` -> (``'ewald'``, True); ``'ewald'`` -> (``'ewald'``, False)."""
    return (label[: -len(NOISY)], True) if label.endswith(NOISY) else (label, False)


def strategy_arm(label: str, base, noisy_nodes: float = 0.1) -> Arm:
    """The arm of a long-range strategy name (:data:`farfield.models.long_range.STRATEGIES`), optionally with
    :data:`NOISY`. The base config's ``long_range_options`` are kept for the base's own strategy; any other
    strategy runs with its defaults (options meant for one mechanism never leak into another)."""
    from farfield.models.long_range import STRATEGIES
    strategy, noisy = split_noisy(label)
    if strategy not in STRATEGIES:
        raise ConfigError(f"study: unknown strategy {label!r}; choose from {list(STRATEGIES)}, each optionally with "
                          f"the suffix {NOISY!r} (adds the Noisy Nodes auxiliary task)")
    over: dict = {"model.long_range": strategy}
    if strategy != base.model.long_range:
        over["model.long_range_options"] = {}
    if noisy:
        if not (isinstance(noisy_nodes, (int, float)) and noisy_nodes > 0):
            raise ConfigError(f"study: noisy_nodes (the loss weight of the {NOISY} arms) must be > 0, got {noisy_nodes!r}")
        if getattr(base.task, "noisy_nodes", 0):
            raise ConfigError(f"study: the base config already sets task.noisy_nodes; {NOISY} arms compare with and "
                              "without it, so leave it 0 in the base")
        over["task.noisy_nodes"] = float(noisy_nodes)
    return Arm(label, over, kind="strategy")


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def grid(factors: Mapping[str, Iterable], template: Mapping[str, str] | None = None) -> list[Arm]:
    """The factorial product of ``factors`` (key -> levels), one arm per combination, in row-major order.

    A dotted key (``model.backbone_options.num_layers``) is an override itself. A plain name (``cutoff``) is a
    variable that is substituted, with ``str.format``, into the values of ``template`` (dotted key -> string),
    e.g. ``{"data.edges": "radius:{cutoff},max={max}"}``. Arm names list the levels: ``cutoff=3,max=10``."""
    if not factors:
        raise ConfigError("study grid: give at least one factor with its levels")
    template = dict(template or {})
    names, levels = [], []
    for k, v in factors.items():
        vals = list(v) if isinstance(v, (list, tuple)) else None
        if not vals:
            raise ConfigError(f"study grid: factor {k!r} needs a non-empty list of levels, got {v!r}")
        if len(set(map(repr, vals))) != len(vals):
            raise ConfigError(f"study grid: factor {k!r} repeats a level: {vals}")
        names.append(k)
        levels.append(vals)
    variables = [k for k in names if "." not in k]
    used = {m for t in template.values() for m in re.findall(r"{(\w+)}", str(t))}
    if variables and not template:
        raise ConfigError(f"study grid: {variables} are variables (no section), so they need a template that uses "
                          "them, e.g. template data.edges='radius:{cutoff},max={max}'")
    missing = used - set(variables)
    if missing:
        raise ConfigError(f"study grid: the template uses {sorted(missing)}, which no grid factor defines")
    unused = set(variables) - used
    if unused:
        raise ConfigError(f"study grid: factors {sorted(unused)} are not used by the template {template}")
    arms = []
    for combo in itertools.product(*levels):
        values = dict(zip(names, combo))
        over = {k: v for k, v in values.items() if "." in k}
        for key, t in template.items():
            over[key] = str(t).format(**{k: values[k] for k in variables})
        name = ",".join(f"{_short(k)}={v}" for k, v in values.items())
        arms.append(Arm(name, over, kind="grid"))
    return arms


def _yaml_value(raw: str, where: str):
    from farfield.train.config import parse_value
    return parse_value(raw, where)


def parse_cli_arm(tokens: list[str]) -> Arm:
    """``--arm NAME KEY=VALUE ...`` -> :class:`Arm` (values are YAML, as in config overrides)."""
    if not tokens:
        raise ConfigError("--arm needs a name, then KEY=VALUE overrides: --arm r8 data.edges=radius:8.0")
    name, over = tokens[0], {}
    if "=" in name:
        raise ConfigError(f"--arm {' '.join(tokens)}: the first word is the arm's name, e.g. --arm r8 data.edges=radius:8.0")
    for t in tokens[1:]:
        key, eq, raw = t.partition("=")
        if not eq or not key:
            raise ConfigError(f"--arm {name}: {t!r} is not of the form section.key=value")
        over[key] = _yaml_value(raw, f"--arm {name} {key}")
    return Arm(name, over)


def parse_grid_option(text: str) -> tuple[str, list]:
    """``--grid KEY=[v1, v2, ...]`` (a YAML list) -> (key, levels)."""
    key, eq, raw = text.partition("=")
    if not eq or not key:
        raise ConfigError(f"--grid {text!r}: use KEY=[level, level, ...], e.g. --grid cutoff=[3,5,8]")
    levels = _yaml_value(raw, f"--grid {key}")
    if not isinstance(levels, list) or not levels:
        raise ConfigError(f"--grid {key}: the levels must be a YAML list such as [3, 5, 8], got {raw!r}")
    return key, levels


def arms_from_mapping(arms, where: str = "arms") -> list[Arm]:
    """A YAML ``arms:`` section: ``{name: {dotted.key: value, ...}, ...}`` -> arms, in file order."""
    if not isinstance(arms, Mapping):
        raise ConfigError(f"{where}: must map arm names to overrides, e.g. {{r8: {{data.edges: 'radius:8.0'}}}}; "
                          f"got {type(arms).__name__}")
    out = []
    for name, over in arms.items():
        over = {} if over is None else over
        if not isinstance(over, Mapping):
            raise ConfigError(f"{where}.{name}: must be a mapping of dotted keys to values, got {over!r}")
        out.append(Arm(str(name), dict(over)))
    return out


def set_dotted(d: dict, key: str, value) -> None:
    """Set ``d[a][b][c] = value`` for ``key = 'a.b.c'`` (creating empty mappings on the way)."""
    parts = key.split(".")
    node = d
    for i, p in enumerate(parts[:-1]):
        if node.get(p) is None:
            node[p] = {}
        if not isinstance(node[p], dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[:i + 1])} is not a section")
        node = node[p]
    node[parts[-1]] = copy.deepcopy(value)


def apply_overrides_dict(cfg, overrides: Mapping[str, Any], where: str = "override"):
    """``cfg`` (a :class:`~farfield.train.config.TrainConfig`) with ``overrides`` applied; the result is validated
    like any config (an unknown key or value names the arm)."""
    from farfield.train.config import TrainConfig
    if not overrides:
        return cfg
    d = cfg.to_dict()
    for k, v in overrides.items():
        if k.split(".")[0] not in d:
            raise ConfigError(f"{where}: {k} must start with a section: {list(d)}")
        set_dotted(d, k, v)
    try:
        return TrainConfig.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e


def dir_name(name: str) -> str:
    """A file-system-safe directory name for an arm (``cutoff=3,max=10`` -> ``cutoff=3_max=10``)."""
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", name)

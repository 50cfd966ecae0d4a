"""A study's plan: which runs train, with which configs, where they live, and the parameter-matched control.

A :class:`Study` is blocks (backbones) x arms (+ the control widened to the largest arm's size) x seeds x split
seeds. Every run is the base config with the block's backbone, then the arm's overrides, then the seeds; nothing
else differs between the arms of a block, so paired differences measure the arm.

Run directories: ``OUT/runs/<backbone>/<arm>/seed<k>[-split<s>]-<hash>/`` with ``<hash>`` =
:func:`farfield.train.run.config_hash` of the run's config: re-running a study reuses finished runs and resumes
interrupted ones, and a changed config trains new runs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from farfield.errors import ConfigError
from farfield.study.arms import WIDE_SUFFIX, Arm, apply_overrides_dict, dir_name, strategy_arm
from farfield.train.config import TrainConfig

__all__ = ["DEFAULT_STRATEGIES", "WIDE", "RunSpec", "Study", "matched_width", "total_params"]

#: the default study: the baseline and the mechanisms of the main families (graph construction, a global node,
#: learned pooling-and-broadcast, a physics-inspired k-space sum, learned latent charges with an exact Coulomb-like
#: kernel); quadratic attention is left out of the default for time (``--strategies ... attention`` adds it)
DEFAULT_STRATEGIES = ("none", "random", "virtual_node", "neural_atoms", "ewald", "latent_charges")
#: the parameter-matched control of the default control ``none``
WIDE = "none" + WIDE_SUFFIX


@dataclass(frozen=True)
class RunSpec:
    backbone: str       # the block
    arm: str            # the arm's name (the control's widened twin: ``<control>-wide``)
    seed: int
    split_seed: int
    cfg: TrainConfig

    @property
    def finished(self) -> bool:
        return (Path(self.cfg.run.out) / "metrics.json").is_file()


@dataclass(frozen=True)
class Study:
    """A controlled comparison. Arms: one per name in ``strategies`` (:func:`~farfield.study.arms.strategy_arm`)
    followed by the explicit ``arms`` (:class:`~farfield.study.arms.Arm`, e.g. from
    :func:`~farfield.study.arms.grid`); each runs on every backbone of ``backbones`` with ``seeds`` seeds on every
    split seed of ``split_seeds``, and is compared with the ``control`` arm of its backbone (default: ``none``
    when present, else the first arm). With ``param_matched`` the control is also trained widened (``hidden``)
    to at least the parameter count of the block's largest arm, so that "more parameters" is not mistaken for
    the arm's effect."""

    base: TrainConfig
    backbones: tuple = ("schnet",)
    strategies: tuple = DEFAULT_STRATEGIES
    seeds: int = 5
    out: str = "farfield_study"
    param_matched: bool = True
    split_seeds: tuple = (0,)
    workers: int = 0
    noisy_nodes: float = 0.1
    arms: tuple = ()
    control: str | None = None

    def __post_init__(self):
        from farfield.models import BACKBONES
        for b in self.backbones:
            if b not in BACKBONES:
                raise ConfigError(f"study: unknown backbone {b!r}; choose from {sorted(BACKBONES)}")
        if not self.backbones:
            raise ConfigError("study: give at least one backbone")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"study: seeds must be an integer >= 1, got {self.seeds!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"study: workers must be an integer >= 0, got {self.workers!r}")
        if not self.split_seeds:
            raise ConfigError("study: give at least one split seed")
        arms = self.all_arms()           # validates the strategies and the arm names
        if not arms:
            raise ConfigError("study: give at least one arm (a strategy, --arm or --grid)")
        names = [a.name for a in arms]
        if self.control is not None and self.control not in names:
            raise ConfigError(f"study: the control arm {self.control!r} is not one of the arms {names}")
        if self.wide_name in names:
            raise ConfigError(f"study: an arm may not be called {self.wide_name!r}: that is the name of the "
                              "parameter-matched control")
        for b in self.backbones:           # every arm builds a valid config on every block
            for a in arms:
                self.arm_config(b, a)

    # -- arms -------------------------------------------------------------------------------------------------
    def all_arms(self) -> list[Arm]:
        """The strategy arms then the explicit arms; names must be unique."""
        out = [strategy_arm(s, self.base, self.noisy_nodes) for s in self.strategies]
        for a in self.arms:
            if not isinstance(a, Arm):
                raise ConfigError(f"study: arms must be Arm objects, got {a!r}")
            out.append(a)
        seen = set()
        for a in out:
            if a.name in seen:
                raise ConfigError(f"study: two arms are called {a.name!r}; arm names must be unique")
            seen.add(a.name)
        return out

    @property
    def control_name(self) -> str:
        names = [a.name for a in self.all_arms()]
        return self.control or ("none" if "none" in names else names[0])

    @property
    def wide_name(self) -> str:
        return self.control_name + WIDE_SUFFIX

    def arm(self, name: str) -> Arm:
        return next(a for a in self.all_arms() if a.name == name)

    def backbone_options(self, backbone: str) -> dict:
        if backbone == self.base.model.backbone:
            return dict(self.base.model.backbone_options)
        return {k: v for k, v in self.base.model.backbone_options.items() if k in ("hidden", "num_layers")}

    def block_overrides(self, backbone: str) -> dict:
        """The overrides that put ``backbone`` (with the base's width and depth) in place of the base's."""
        if backbone == self.base.model.backbone:
            return {}
        return {"model.backbone": backbone, "model.backbone_options": self.backbone_options(backbone)}

    def arm_config(self, backbone: str, arm: Arm, widen: dict | None = None) -> TrainConfig:
        """The base config with ``backbone``, then ``arm``'s overrides, then the ``widen`` backbone options (the
        parameter-matched control). Runs and parameter matching both build their models from this, so the matched
        width is computed on the models that train."""
        cfg = apply_overrides_dict(self.base, self.block_overrides(backbone), f"study backbone {backbone}")
        cfg = apply_overrides_dict(cfg, arm.overrides, f"study arm {arm.name!r}")
        if widen:
            cfg = apply_overrides_dict(cfg, {f"model.backbone_options.{k}": v for k, v in widen.items()},
                                       f"study arm {self.wide_name!r}")
        return cfg

    def labels(self, wide: bool | None = None) -> list[str]:
        """Arm names in report order, with the widened control right after the control (when ``param_matched``
        and the study has more than one arm; ``wide`` forces it on or off)."""
        out = [a.name for a in self.all_arms()]
        show = (self.param_matched and len(out) > 1) if wide is None else wide
        if show:
            out.insert(out.index(self.control_name) + 1, self.wide_name)
        return out

    def runs(self, wide_options: dict[str, dict] | None = None) -> list[RunSpec]:
        """Every run. ``wide_options``: backbone -> backbone options of its widened control (from
        :func:`matched_width`); without it the parameter-matched runs are left out."""
        from farfield.train.run import config_hash
        out = []
        arms = {a.name: a for a in self.all_arms()}
        for b in self.backbones:
            for label in self.labels():
                if label == self.wide_name:
                    if not (wide_options and b in wide_options):
                        continue
                    cfg0 = self.arm_config(b, arms[self.control_name], wide_options[b])
                else:
                    cfg0 = self.arm_config(b, arms[label])
                for split in self.split_seeds:
                    for k in range(self.seeds):
                        cfg = replace(cfg0, data=replace(cfg0.data, split_seed=int(split)),
                                      run=replace(cfg0.run, seed=k, progress=False))
                        tag = f"seed{k}" + (f"-split{split}" if len(self.split_seeds) > 1 else "")
                        run_dir = Path(self.out) / "runs" / b / dir_name(label) / f"{tag}-{config_hash(cfg)}"
                        out.append(RunSpec(b, label, k, int(split), replace(cfg, run=replace(cfg.run, out=str(run_dir)))))
        return out


# -- parameter matching -----------------------------------------------------------------------------------
def total_params(cfg: TrainConfig, spec, max_edge_length: float, pair: bool = False) -> int:
    """Parameters a prediction uses: the model and the task head (TaskModule's MLP [d, d, k], or [2d, d, k] on
    pairs). The Noisy Nodes denoising head is a training-time auxiliary and is not counted."""
    from farfield.models.config import parameter_counts
    from farfield.train.run import effective_model
    st = cfg.model.strategy()
    model = effective_model(cfg).build(spec, max_edge_length=max_edge_length if st.is_graph else None)
    d, k = model.hidden_s, cfg.task.num_outputs
    try:
        from farfield.train.module import head_parameter_count
    except ImportError:                 # older module without configurable heads
        head = (2 * d if pair else d) * d + d + d * k + k
    else:
        head = head_parameter_count(cfg.task, d, k, pair)
    return parameter_counts(model)["total"] + head


def matched_width(study: Study, spec, max_edge_length: float, pair: bool = False) -> tuple[dict[str, dict], dict]:
    """For each backbone, the smallest ``hidden`` at which the control (with the task head) has at least as many
    parameters as the block's largest arm; returns (backbone -> widened options, parameter counts). A block whose
    control is already the largest gets no widened control."""
    out, counts = {}, {}
    arms = study.all_arms()
    control = study.arm(study.control_name)
    for b in study.backbones:
        target, largest = 0, None
        for a in arms:
            n = total_params(study.arm_config(b, a), spec, max_edge_length, pair)
            if n > target:
                target, largest = n, a.name
        plain = study.arm_config(b, control)
        if total_params(plain, spec, max_edge_length, pair) >= target:
            continue
        h0 = int(plain.model.backbone_options.get("hidden", 64))
        size = lambda h: total_params(study.arm_config(b, control, {"hidden": h}), spec, max_edge_length, pair)
        lo, hi = h0, h0 * 2
        while size(hi) < target:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if size(mid) < target else (lo, mid)
        out[b] = {"hidden": hi}
        counts[b] = {"target": target, "largest_arm": largest, "wide": size(hi)}
    return out, counts

"""``farfield train``, ``farfield pretrain`` and ``farfield study``."""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_commands", "DEFAULT_STUDY"]

#: the default study: the built-in benchmark that isolates long-range geometry, its per-atom electrostatic
#: potential (node-level: composition explains 8% of it, the exact within-cutoff potential 53%), SchNet (32 x 3,
#: 16 Gaussians) on a 5 A radius graph, 35 epochs with a cosine schedule, 5 seeds, the baseline, its
#: parameter-matched widening and four mechanisms: about 17 minutes on an idle 2-core CPU (2 workers at one
#: thread; longer on a busy machine)
DEFAULT_STUDY = [
    "data.dataset=peptide_electrostatics", "data.target=potential", "task.kind=node_regression",
    "data.edges=radius:5.0", "data.batch_size=8", "data.split=[0.6, 0.2, 0.2]", "model.backbone=schnet",
    "model.backbone_options={hidden: 32, num_layers: 3, num_basis: 16}",
    "optim.epochs=35", "optim.lr=3e-3", "optim.scheduler=cosine",
]

#: keys of :data:`DEFAULT_STUDY` that belong to its dataset: dropped when another dataset is chosen (the task
#: then follows the dataset's own definition, ``task.kind=auto``)
_DATASET_KEYS = ("data.dataset=", "data.target=", "task.kind=")


def _default_study(args) -> list[str]:
    """DEFAULT_STUDY, without its dataset-specific keys when the command names another dataset."""
    other = args.dataset is not None or any(o.startswith("data.dataset=") for o in args.overrides)
    return [o for o in DEFAULT_STUDY if not (other and o.startswith(_DATASET_KEYS))]


def add_commands(sub) -> None:
    t = sub.add_parser("train", help="train one model from a YAML config (resumes a killed run)",
                       description="Train one model. CONFIG is a YAML file with sections data, model, task, optim, "
                                   "run; KEY=VALUE overrides use dotted keys (optim.lr=1e-3, model.long_range=ewald).")
    t.add_argument("config", nargs="?", default=None, help="YAML config (default: the built-in defaults)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    t.add_argument("--out", default=None, help="run directory (overrides run.out)")
    t.add_argument("--devices", type=int, default=None, help="number of devices / processes (run.devices)")
    t.add_argument("--strategy", default=None, choices=["auto", "ddp", "ddp_spawn"], help="Lightning strategy")
    t.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    t.set_defaults(func=_cmd_train)

    pt = sub.add_parser("pretrain", help="pretrain a model on a structure corpus (resumes a killed run)",
                        description="Pretrain a backbone (+ long-range strategy) on a structure corpus with "
                                    "ProteinWorkshop's tasks (sequence / structure / torsional denoising, edge distance, "
                                    "pLDDT, inverse folding). CONFIG is a YAML file with sections data, model, pretrain, "
                                    "optim, run; KEY=VALUE overrides use dotted keys (pretrain.tasks={inverse_folding: 1}). "
                                    "Writes RUN/backbone.pt, which `farfield train ... model.init=RUN` fine-tunes.")
    pt.add_argument("config", nargs="?", default=None, help="YAML pretraining config")
    pt.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    pt.add_argument("--out", default=None, help="run directory (overrides run.out)")
    pt.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    pt.set_defaults(func=_cmd_pretrain)

    s = sub.add_parser("study", help="train every backbone x long-range strategy x seed and report what each buys",
                       description="A controlled study. With no arguments: the built-in peptide_electrostatics benchmark "
                                   "(per-atom electrostatic potential), "
                                   "SchNet, strategies none (+ its parameter-matched widening none-wide) / random / "
                                   "virtual_node / neural_atoms / ewald / latent_charges, 5 seeds, with reference baselines and "
                                   "Holm-corrected paired tests. Runs are keyed by a hash of their config: re-running "
                                   "reuses finished runs, resumes interrupted ones and retrains changed ones.")
    s.add_argument("config", nargs="?", default=None, help="YAML training config used as the base of every run")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    s.add_argument("--dataset", default=None, help="dataset name (data.dataset)")
    s.add_argument("--data-path", default=None, help="dataset file (data.path; default: the shipped one)")
    s.add_argument("--backbones", nargs="+", default=None, metavar="NAME", help="backbones (default: the config's)")
    s.add_argument("--strategies", nargs="+", default=None, metavar="NAME",
                   help="long-range strategies, one arm each; NAME+noisy_nodes adds an arm with the Noisy Nodes "
                        "auxiliary task (e.g. none none+noisy_nodes). Default: none random virtual_node neural_atoms "
                        "ewald latent_charges, or only none when --arm / --grid declare the arms")
    s.add_argument("--arm", nargs="+", action="append", default=None, metavar="NAME_OR_KEY=VALUE",
                   help="an arm: a name, then config overrides (repeatable), e.g. --arm r8 data.edges=radius:8.0")
    s.add_argument("--grid", action="append", default=None, metavar="KEY=[LEVELS]",
                   help="a factor of a factorial grid of arms (repeatable; all combinations): a dotted config key or "
                        "a variable used by --template, with a YAML list of levels, e.g. --grid cutoff=[3,5,8] "
                        "--grid max=[10,40] --template 'data.edges=radius:{cutoff},max={max}'")
    s.add_argument("--template", action="append", default=None, metavar="KEY=PATTERN",
                   help="an override built from the grid's variables with {name} placeholders (repeatable)")
    s.add_argument("--control", default=None, metavar="NAME",
                   help="the arm every other arm is compared with (default: none when present, else the first arm)")
    s.add_argument("--noisy-nodes", type=float, default=None, metavar="LAMBDA",
                   help="loss weight of the Noisy Nodes auxiliary task in +noisy_nodes arms (default 0.1)")
    s.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 5)")
    s.add_argument("--split-seeds", type=int, nargs="+", default=None, metavar="S",
                   help="split seeds (default: the config's data.split_seed); several separate seed and split variance")
    s.add_argument("--workers", type=int, default=None,
                   help="parallel training processes at one thread each (default: the number of CPUs, at most 8; "
                        "0 = in this process)")
    s.add_argument("--no-param-matched", action="store_true",
                   help="leave out the parameter-matched baseline (none-wide)")
    s.add_argument("--epochs", type=int, default=None, help="epochs per run (optim.epochs)")
    s.add_argument("--limit", type=int, default=None, help="use only the first N samples (data.limit)")
    s.add_argument("--out", default="farfield_study", help="output directory (default ./farfield_study)")
    s.add_argument("--no-diagnostics", action="store_true",
                   help="leave out the report's diagnostics section (range measure and influence profile per arm)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=_cmd_study)


def _split_config(args) -> None:
    """``farfield train key=value`` without a config file: the first positional is an override."""
    if args.config is not None and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        args.overrides = [args.config, *args.overrides]
        args.config = None


def _flag_overrides(args, mapping: dict[str, str]) -> list[str]:
    """``key=value`` overrides for the command-line flags that were given (``mapping``: flag -> config key);
    a flag given as 0 is passed on (and validated), not dropped."""
    return [f"{key}={getattr(args, flag)}" for flag, key in mapping.items() if getattr(args, flag) is not None]


def _interrupted(e) -> int:
    print(f"farfield: {e}", file=sys.stderr)
    return e.exit_code


def _cmd_train(args: argparse.Namespace) -> int:
    from farfield.train.config import load_config
    from farfield.train.run import Interrupted, train

    _split_config(args)
    extra = _flag_overrides(args, {"out": "run.out", "devices": "run.devices", "strategy": "run.strategy"})
    cfg = load_config(args.config, list(args.overrides) + extra)
    try:
        res = train(cfg, quiet=args.json)
    except Interrupted as e:
        return _interrupted(e)
    if not res:          # non-zero ranks of a distributed run
        return 0
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        m = {k: v for k, v in res.items() if "/" in k}
        print(f"run {cfg.run.out}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items())
              + f"; {res['params']['total']:,} parameters; {res['epochs']} epochs")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from farfield.pretrain.run import load_pretrain_config, pretrain
    from farfield.train.run import Interrupted

    _split_config(args)
    cfg = load_pretrain_config(args.config, list(args.overrides) + _flag_overrides(args, {"out": "run.out"}))
    try:
        res = pretrain(cfg, quiet=args.json)
    except Interrupted as e:
        return _interrupted(e)
    if not res:
        return 0
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        per_task = ", ".join(f"{k} {v:.4g}" for k, v in res.items() if k.startswith("test/") and k.count("/") == 1)
        print(f"pretrained {cfg.run.out}: val/loss {res['val/loss']:.4g}; {per_task}; "
              f"{res['residues_per_sec'] or 0:,.0f} residues/s; {res['epochs']} epochs; weights in {res['checkpoint']}")
    return 0


#: keys of a study config file besides the training config's sections (top level or under ``study:``)
STUDY_KEYS = ("arms", "grid", "template", "control", "strategies", "backbones", "seeds", "noisy_nodes")


def load_study_config(path, overrides):
    """(training config, study section) from a YAML file whose training sections may sit beside a ``study:``
    mapping (or top-level ``arms:`` / ``grid:`` / ``template:`` / ``control:``), or from a plain training config."""
    from pathlib import Path

    import yaml

    from farfield.errors import ConfigError, InputError
    from farfield.train.config import TrainConfig, apply_overrides, load_config
    d = None
    if path is not None and Path(path).is_file():
        try:
            d = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError:
            d = None                     # load_config reports it with the file's name
    if not isinstance(d, dict) or not ({"study", *STUDY_KEYS} & set(d)):
        return load_config(path, overrides), {}
    sec = d.pop("study", None) or {}
    if not isinstance(sec, dict):
        raise InputError(str(path), f"its study section must be a mapping of {list(STUDY_KEYS)}, got {sec!r}")
    for k in STUDY_KEYS:
        if k in d:
            if k in sec:
                raise InputError(str(path), f"{k} is given both at the top level and under study:")
            sec[k] = d.pop(k)
    unknown = set(sec) - set(STUDY_KEYS)
    if unknown:
        raise InputError(str(path), f"unknown study keys {sorted(unknown)}; choose from {list(STUDY_KEYS)}")
    try:
        return apply_overrides(TrainConfig.from_dict(d), list(overrides)), sec
    except ConfigError as e:
        raise InputError(str(path), str(e)) from e


def study_arms(args, sec: dict) -> tuple[list, bool]:
    """The explicit arms of the command line and the study section: ``--arm``, ``arms:``, ``--grid`` /
    ``grid:`` (with ``--template`` / ``template:``); returns (arms, whether any were declared)."""
    from farfield.errors import ConfigError
    from farfield.study.arms import arms_from_mapping, grid, parse_cli_arm, parse_grid_option
    arms = arms_from_mapping(sec["arms"], "study arms") if sec.get("arms") is not None else []
    arms += [parse_cli_arm(t) for t in args.arm or []]
    factors = dict(sec.get("grid") or {})
    if not isinstance(factors, dict):
        raise ConfigError(f"study grid: must map factors to lists of levels, got {factors!r}")
    for g in args.grid or []:
        k, levels = parse_grid_option(g)
        factors[k] = levels
    template = dict(sec.get("template") or {})
    for t in args.template or []:
        k, eq, v = t.partition("=")
        if not eq or not k:
            raise ConfigError(f"--template {t!r}: use KEY=PATTERN, e.g. --template 'data.edges=radius:{{cutoff}}'")
        template[k] = v
    if template and not factors:
        raise ConfigError("study: --template / template: needs --grid / grid: factors to fill it")
    if factors:
        arms += grid(factors, template)
    return arms, bool(arms)


def _cmd_study(args: argparse.Namespace) -> int:
    import os

    from farfield.study import DEFAULT_STRATEGIES, Study, format_table, run_study
    from farfield.train.run import Interrupted

    _split_config(args)
    over = ([] if args.config else _default_study(args)) + list(args.overrides) + _flag_overrides(
        args, {"dataset": "data.dataset", "data_path": "data.path", "epochs": "optim.epochs", "limit": "data.limit"})
    base, sec = load_study_config(args.config, over)
    arms, declared = study_arms(args, sec)
    strategies = args.strategies or sec.get("strategies") or (("none",) if declared else DEFAULT_STRATEGIES)
    backbones = args.backbones or sec.get("backbones") or [base.model.backbone]
    seeds = args.seeds if args.seeds is not None else int(sec.get("seeds", 5))
    workers = args.workers if args.workers is not None else min(8, len(os.sched_getaffinity(0)))
    study = Study(base, tuple(backbones), tuple(strategies), seeds, args.out, param_matched=not args.no_param_matched,
                  split_seeds=tuple(args.split_seeds or [base.data.split_seed]), workers=workers,
                  noisy_nodes=args.noisy_nodes if args.noisy_nodes is not None else float(sec.get("noisy_nodes", 0.1)),
                  arms=tuple(arms), control=args.control or sec.get("control"))
    try:
        summary = run_study(study, quiet=args.json, diagnose=not args.no_diagnostics)
    except Interrupted as e:
        return _interrupted(e)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from farfield.study.report import diagnostics_section
        print(format_table(summary))
        diag = diagnostics_section(summary)
        if diag:
            print("\n" + "\n".join(diag[4:]))          # the table (the report explains it)
        print(f"\nreport: {args.out}/report.md (plots metric.png, curves.png, cost.png; results.csv / results.json)",
              file=sys.stdout)
    if summary.get("failed"):
        print(f"farfield: {len(summary['failed'])} run(s) failed (listed in the report); the summary leaves them out",
              file=sys.stderr)
        return 1
    return 0

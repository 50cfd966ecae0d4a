"""``farfield study``: every backbone x long-range strategy x seed on one task, with reference baselines,
paired statistics and a report.

Output directory::

    OUT/runs/<backbone>/<label>/seed<k>[-split<s>]-<hash>/   one training run each (config.yaml, checkpoints,
                                                            logs, metrics.json); <hash> = config_hash(config)
    OUT/results.csv, OUT/results.json                       one row per run, the summary and the baselines
    OUT/report.md                                           the table, the baselines and how to read them
    OUT/metric.png, OUT/curves.png, OUT/cost.png

Runs are keyed by a hash of their resolved configuration, so re-running the same command reuses finished runs
and resumes interrupted ones, and a changed configuration (more epochs, another learning rate) trains new
runs instead of reporting stale ones. Runs are paired by seed: every strategy trains with the same split, the
same seeds and the same budget. The comparison set contains ``none-wide``, the baseline widened to the
parameter count of the largest mechanism, so that "more parameters" is not mistaken for "long range".

Runs execute in ``workers`` processes at one thread each (independent runs in parallel use a small CPU better
than one multi-threaded run, and single-threaded CPU kernels make every run reproducible), or in this process
with ``workers=0``.
"""
from __future__ import annotations

import csv
import json
import math
import queue
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from farfield.errors import ConfigError
from farfield.models.long_range import STRATEGIES
from farfield.train.config import TrainConfig
from farfield.train.run import Interrupted, config_hash

__all__ = ["DEFAULT_STRATEGIES", "WIDE", "NOISY", "split_arm", "Study", "RunSpec", "run_study", "summarize", "format_table",
           "reference_baselines", "execution_order", "estimate_remaining"]

#: the default study: the baseline and the mechanisms of the main families (graph construction, a global node,
#: learned pooling-and-broadcast, a physics-inspired k-space sum); quadratic attention is left out of the default
#: for time (``--strategies ... attention`` adds it)
DEFAULT_STRATEGIES = ("none", "random", "virtual_node", "neural_atoms", "ewald")

#: suffix of a study arm that adds the Noisy Nodes auxiliary task (Godwin et al. 2022) to a strategy:
#: ``none+noisy_nodes`` is strategy ``none`` trained with ``task.noisy_nodes`` = the study's ``noisy_nodes``
NOISY = "+noisy_nodes"


def split_arm(label: str) -> tuple[str, bool]:
    """``'ewald+noisy_nodes'`` -> (``'ewald'``, True); ``'ewald'`` -> (``'ewald'``, False)."""
    return (label[: -len(NOISY)], True) if label.endswith(NOISY) else (label, False)
#: label of the parameter-matched baseline
WIDE = "none-wide"
#: one colour per strategy across all plots
_PALETTE = {name: f"C{i}" for i, name in enumerate(("none", WIDE, *[s for s in STRATEGIES if s != "none"]))}


@dataclass(frozen=True)
class RunSpec:
    backbone: str
    label: str          # the strategy, or WIDE for the parameter-matched baseline
    seed: int
    split_seed: int
    cfg: TrainConfig

    @property
    def finished(self) -> bool:
        return (Path(self.cfg.run.out) / "metrics.json").is_file()


@dataclass(frozen=True)
class Study:
    """A controlled comparison: ``backbones`` x ``strategies`` (+ the parameter-matched baseline when
    ``param_matched``) x ``seeds`` x ``split_seeds``, each run the ``base`` config with only the model's
    strategy (and, for ``none-wide``, width) and the seeds changed."""

    base: TrainConfig
    backbones: tuple = ("schnet",)
    strategies: tuple = DEFAULT_STRATEGIES
    seeds: int = 5
    out: str = "farfield_study"
    param_matched: bool = True
    split_seeds: tuple = (0,)
    workers: int = 0
    noisy_nodes: float = 0.1

    def __post_init__(self):
        from farfield.models import BACKBONES
        for b in self.backbones:
            if b not in BACKBONES:
                raise ConfigError(f"study: unknown backbone {b!r}; choose from {sorted(BACKBONES)}")
        for s in self.strategies:
            if split_arm(s)[0] not in STRATEGIES:
                raise ConfigError(f"study: unknown strategy {s!r}; choose from {list(STRATEGIES)}, each optionally "
                                  f"with the suffix {NOISY!r} (adds the Noisy Nodes auxiliary task)")
        if any(split_arm(s)[1] for s in self.strategies):
            if not (isinstance(self.noisy_nodes, (int, float)) and self.noisy_nodes > 0):
                raise ConfigError(f"study: noisy_nodes (the loss weight of the {NOISY} arms) must be > 0, "
                                  f"got {self.noisy_nodes!r}")
            if getattr(self.base.task, "noisy_nodes", 0):
                raise ConfigError(f"study: the base config already sets task.noisy_nodes; {NOISY} arms compare "
                                  "with and without it, so leave it 0 in the base")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"study: seeds must be an integer >= 1, got {self.seeds!r}")
        if not self.strategies or not self.backbones:
            raise ConfigError("study: give at least one backbone and one strategy")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"study: workers must be an integer >= 0, got {self.workers!r}")
        if not self.split_seeds:
            raise ConfigError("study: give at least one split seed")

    def backbone_options(self, backbone: str) -> dict:
        if backbone == self.base.model.backbone:
            return dict(self.base.model.backbone_options)
        return {k: v for k, v in self.base.model.backbone_options.items() if k in ("hidden", "num_layers")}

    def arm_model(self, backbone: str, strategy: str, widen: dict | None = None):
        """The model config of one arm: the base model with ``backbone`` (its options), ``strategy`` (with the
        base config's long-range options when it is the base's strategy, else the strategy's defaults) and the
        ``widen`` backbone options of the parameter-matched baseline. Runs and parameter matching both build
        their models here, so the matched width is computed on the models that train."""
        lr_opts = dict(self.base.model.long_range_options) if strategy == self.base.model.long_range else {}
        return replace(self.base.model, backbone=backbone, long_range=strategy, long_range_options=lr_opts,
                       backbone_options={**self.backbone_options(backbone), **(widen or {})})

    def labels(self) -> list[str]:
        out = list(self.strategies)
        if self.param_matched and "none" in out and len(out) > 1:
            out.insert(out.index("none") + 1, WIDE)
        return out

    def runs(self, wide_options: dict[str, dict] | None = None) -> list[RunSpec]:
        """Every run, in execution order. ``wide_options``: backbone -> options of its ``none-wide`` model
        (from :func:`matched_width`); without it the parameter-matched runs are left out."""
        out = []
        for b in self.backbones:
            for label in self.labels():
                if label == WIDE and not (wide_options and b in wide_options):
                    continue
                strategy, noisy = ("none", False) if label == WIDE else split_arm(label)
                model = self.arm_model(b, strategy, wide_options[b] if label == WIDE else None)
                task = self.base.task.evolve(noisy_nodes=float(self.noisy_nodes)) if noisy else self.base.task
                for split in self.split_seeds:
                    for k in range(self.seeds):
                        cfg = replace(self.base, model=model, task=task,
                                      data=replace(self.base.data, split_seed=int(split)),
                                      run=replace(self.base.run, seed=k, progress=False))
                        tag = f"seed{k}" + (f"-split{split}" if len(self.split_seeds) > 1 else "")
                        run_dir = Path(self.out) / "runs" / b / label / f"{tag}-{config_hash(cfg)}"
                        out.append(RunSpec(b, label, k, int(split), replace(cfg, run=replace(cfg.run, out=str(run_dir)))))
        return out


# -- parameter matching -----------------------------------------------------------------------------------
def _total_params(cfg: TrainConfig, spec, max_edge_length: float, pair: bool = False) -> int:
    """Parameters a prediction uses: the model and the task head (TaskModule's MLP [d, d, k], or [2d, d, k] on
    pairs). The Noisy Nodes denoising head is a training-time auxiliary and is not counted."""
    from farfield.models.config import parameter_counts
    from farfield.train.run import effective_model
    st = cfg.model.strategy()
    model = effective_model(cfg).build(spec, max_edge_length=max_edge_length if st.is_graph else None)
    d, k = model.hidden_s, cfg.task.num_outputs
    head = (2 * d if pair else d) * d + d + d * k + k
    return parameter_counts(model)["total"] + head


def matched_width(study: Study, spec, max_edge_length: float, pair: bool = False) -> tuple[dict[str, dict], dict]:
    """For each backbone, the smallest ``hidden`` at which the plain backbone (with the task head) has at least
    as many parameters as the largest model of the study; returns (backbone -> options, parameter counts)."""
    out, counts = {}, {}
    for b in study.backbones:
        opts = study.backbone_options(b)
        target = 0
        for label in study.strategies:
            cfg = replace(study.base, model=study.arm_model(b, split_arm(label)[0]))
            target = max(target, _total_params(cfg, spec, max_edge_length, pair))
        plain = replace(study.base, model=study.arm_model(b, "none"))
        h0 = int(opts.get("hidden", 64))
        if _total_params(plain, spec, max_edge_length, pair) >= target:
            continue
        lo, hi = h0, h0 * 2
        wide = lambda h: replace(plain, model=study.arm_model(b, "none", {"hidden": h}))
        while _total_params(wide(hi), spec, max_edge_length, pair) < target:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _total_params(wide(mid), spec, max_edge_length, pair) < target else (lo, mid)
        out[b] = {"hidden": hi}
        counts[b] = {"target": target, "wide": _total_params(wide(hi), spec, max_edge_length, pair)}
    return out, counts


# -- reference baselines ------------------------------------------------------------------------------------
BASELINE_LABELS = {
    "mean": "mean predictor (training mean)",
    "prior": "label-frequency predictor (training frequencies; CAFA's naive baseline)",
    "composition": "non-geometric: ridge on composition",
    "cutoff_oracle": "cutoff oracle: ridge on the exact within-cutoff part + composition",
}

REGRESSION = ("graph_regression", "node_regression")


def reference_baselines(dm, kind: str = "graph_regression") -> dict[str, dict]:
    """Test-split metrics of the reference baselines on the datamodule's split. Regression: the mean predictor
    and a ridge regression (fitted on train, penalty chosen on val) on every ``baseline_<name>`` feature set the
    dataset provides (typically ``composition`` and ``cutoff_oracle``). Classification (``kind`` binary,
    multiclass, multilabel): the label-frequency predictor and a ridge on the 0/1 labels used as a score on
    each feature set (:func:`farfield.train.stats.linear_score_baseline`)."""
    from farfield.train.stats import linear_score_baseline, mean_baseline, prior_baseline, ridge_baseline
    out = {}
    y = dm.split_targets()                       # streamed: no edges built, no lazy store held in memory
    regression = kind in REGRESSION
    if regression:
        out["mean"] = mean_baseline(y["train"], y["test"])
    else:
        out["prior"] = prior_baseline(y["train"], y["test"], kind)
    for name in dm.baselines:
        a = dm.baseline_arrays(name)
        out[name] = ridge_baseline(*a["train"], *a["val"], *a["test"]) if regression else \
            linear_score_baseline(*a["train"], *a["val"], *a["test"], kind=kind)
    for k, v in out.items():
        v["label"] = BASELINE_LABELS.get(k, f"ridge on {k}")
        if not regression and k != "prior":
            v["label"] = f"non-geometric: ridge score on {k}" if k == "composition" else f"ridge score on {k}"
    return out


# -- execution ----------------------------------------------------------------------------------------------
_DATAMODULES: dict = {}


def _datamodule(cfg: TrainConfig):
    from farfield.train.data import GraphDataModule
    spec = cfg.model.edge_spec(cfg.data.edges)
    key = (spec, json.dumps(cfg.to_dict()["data"], sort_keys=True), cfg.task.standardize)
    if key not in _DATAMODULES:
        _DATAMODULES[key] = GraphDataModule(cfg.data, spec, seed=cfg.run.seed, standardize=cfg.task.standardize)
    dm = _DATAMODULES[key]
    dm.seed = cfg.run.seed
    return dm


def _train_one(cfg_dict: dict) -> dict:
    from farfield.train.run import train
    cfg = TrainConfig.from_dict(cfg_dict)
    return train(cfg, datamodule=_datamodule(cfg), quiet=True)


def _worker(tasks, results) -> None:
    """A study worker process: one thread, runs until it gets None; SIGINT is left to the parent, which
    forwards SIGTERM (Lightning then stops at the next batch boundary). Messages to the parent:
    ``("start", i, None)`` when run i begins, ``("done", i, (result, error, wall seconds))`` when it ends."""
    import torch
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    while True:
        job = tasks.get()
        if job is None:
            return
        i, cfg_dict = job
        results.put(("start", i, None))
        t = time.perf_counter()
        try:
            results.put(("done", i, (_train_one(cfg_dict), None, time.perf_counter() - t)))
        except Interrupted:
            results.put(("done", i, (None, "interrupted", time.perf_counter() - t)))
            return
        except Exception as e:  # noqa: BLE001 - a failed run is reported, the others go on
            results.put(("done", i, (None, f"{type(e).__name__}: {e}", time.perf_counter() - t)))


def execution_order(runs: list[RunSpec], pending: list[int]) -> list[int]:
    """``pending`` interleaved across arms: seed 0 of every arm, then seed 1, ... (split seeds likewise), so
    that the first finished runs measure every arm's cost and the ETA is not fitted on the cheapest arm alone.
    Results do not depend on the order (each run is independent and keyed by its config)."""
    arm = {}
    for i in pending:
        arm.setdefault((runs[i].backbone, runs[i].label), len(arm))
    return sorted(pending, key=lambda i: (runs[i].split_seed, runs[i].seed, arm[(runs[i].backbone, runs[i].label)]))


def estimate_remaining(remaining: list[str], durations: dict[str, list[float]], running: list[tuple[str, float]],
                       workers: int) -> tuple[float, int]:
    """Seconds until the study ends: the wall time still needed by every unfinished run, divided over the
    workers. Each run is costed at the mean wall time of the finished runs of its arm (``durations``: arm ->
    seconds; these are measured on this machine under its current load, so a busier machine gives a longer
    ETA); an arm with no finished run yet is costed at the dearest arm measured so far (a guess, which the
    progress line flags by counting the arms not timed yet; runs are interleaved so that this lasts one round). ``remaining``: the arm of every run not finished (running ones included);
    ``running``: (arm, seconds already spent) of each run in flight, each credited up to 95% of its own
    estimate. Returns (seconds, number of arms not measured yet); NaN seconds before any run has finished."""
    means = {a: float(np.mean(v)) for a, v in durations.items() if v}
    if not means:
        return float("nan"), len(set(remaining))
    fallback = max(means.values())
    cost = lambda a: means.get(a, fallback)
    work = sum(cost(a) for a in remaining)
    work -= sum(min(t, 0.95 * cost(a)) for a, t in running)
    lanes = max(1, min(workers, len(remaining)))
    return max(work, 0.0) / lanes, len({a for a in remaining if a not in means})


class _Signals:
    """Turn SIGINT / SIGTERM in the study's process into :class:`Interrupted` at a safe point."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        def handler(signum, frame):
            self.signum = signum
            raise Interrupted(signum)
        self.old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        return False


def _execute(runs: list[RunSpec], workers: int, log, quiet: bool) -> tuple[dict, dict]:
    """Train every unfinished run (interleaved across arms, :func:`execution_order`); returns (index -> result,
    index -> error message). Progress lines carry an ETA from :func:`estimate_remaining`."""
    pending = execution_order(runs, [i for i, r in enumerate(runs) if not r.finished])
    results, errors = {}, {}
    for i, r in enumerate(runs):
        if r.finished:
            results[i] = json.loads((Path(r.cfg.run.out) / "metrics.json").read_text())
    t0, n_done = time.perf_counter(), 0
    arm = lambda i: f"{runs[i].backbone}/{runs[i].label}"
    durations: dict[str, list[float]] = {}
    started: dict[int, float] = {}
    left = set(pending)
    several_splits = len(set(x.split_seed for x in runs)) > 1

    def report(i, what, wall):
        nonlocal n_done
        n_done += 1
        left.discard(i)
        started.pop(i, None)
        durations.setdefault(arm(i), []).append(wall)
        if quiet:
            return
        now = time.perf_counter()
        running = [(arm(j), now - t) for j, t in started.items()]
        eta, unmeasured = estimate_remaining([arm(j) for j in left], durations, running, max(workers, 1))
        note = f" ({unmeasured} arm{'s' if unmeasured != 1 else ''} not timed yet)" if unmeasured and left else ""
        r = runs[i]
        print(f"[study] {n_done}/{len(pending)} trained ({len(runs)} runs, {len(runs) - len(pending)} reused): "
              f"{r.backbone} + {r.label}, seed {r.seed}{f', split {r.split_seed}' if several_splits else ''}"
              f" {what} in {_fmt(wall)}; elapsed {_fmt(now - t0)}, ETA {_fmt(eta)}{note}", file=log, flush=True)

    if not quiet and len(pending) < len(runs):
        print(f"[study] {len(runs) - len(pending)} of {len(runs)} runs already finished with the same config: reused",
              file=log, flush=True)
    if not pending:
        return results, errors
    if workers == 0:
        for i in pending:
            started[i] = t = time.perf_counter()
            try:
                results[i] = _train_one(runs[i].cfg.to_dict())
                report(i, "done", time.perf_counter() - t)
            except Interrupted:
                raise
            except Exception as e:  # noqa: BLE001
                errors[i] = f"{type(e).__name__}: {e}"
                report(i, f"FAILED ({errors[i]})", time.perf_counter() - t)
        return results, errors

    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    tasks, out_q = ctx.Queue(), ctx.Queue()
    for i in pending:
        tasks.put((i, runs[i].cfg.to_dict()))
    n = min(workers, len(pending))
    for _ in range(n):
        tasks.put(None)
    procs = [ctx.Process(target=_worker, args=(tasks, out_q), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    received = 0
    try:
        while received < len(pending):
            try:
                kind, i, payload = out_q.get(timeout=1.0)
            except queue.Empty:                  # check that the workers are alive
                if not any(p.is_alive() for p in procs) and out_q.empty():
                    raise RuntimeError("study workers exited unexpectedly") from None
                continue
            if kind == "start":
                started[i] = time.perf_counter()
                continue
            received += 1
            res, err, wall = payload
            if err is None:
                results[i] = res
                report(i, "done", wall)
            else:
                errors[i] = err
                report(i, f"FAILED ({err})", wall)
    except (Interrupted, KeyboardInterrupt):
        for p in procs:
            if p.is_alive():
                p.terminate()            # SIGTERM: Lightning stops at the next batch boundary
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
        raise
    for p in procs:
        p.join(timeout=10)
    return results, errors


def run_study(study: Study, quiet: bool = False, log=None) -> dict:
    """Run (or resume) every run of ``study``; compute the reference baselines; write results and the report;
    return the summary. Progress lines go to ``log`` (default stderr). SIGINT / SIGTERM raise
    :class:`Interrupted` after the workers have stopped at a safe point (finished epochs are kept)."""
    log = log or sys.stderr
    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    with _Signals():
        baselines, wide, counts, split_source = {}, {}, {}, "seeded"
        for split in study.split_seeds:
            base = replace(study.base, data=replace(study.base.data, split_seed=int(split)))
            from farfield.train.data import GraphDataModule
            dm = GraphDataModule(base.data, base.data.edges, seed=0, standardize=base.task.standardize)
            dm.setup()
            if len(study.split_seeds) > 1 and getattr(dm, "split_source", "seeded") == "official":
                raise ConfigError(f"study: --split-seeds {' '.join(map(str, study.split_seeds))} on "
                                  f"{study.base.data.dataset!r}, which has its own (official) split: every split "
                                  "seed would train the same runs and pair them as independent; use one split seed")
            baselines[str(int(split))] = reference_baselines(dm, _task_kind(base))
            split_source = getattr(dm, "split_source", "seeded")
            if study.param_matched and not wide and "none" in study.strategies and len(study.strategies) > 1:
                wide, counts = matched_width(study, dm.input_spec, _longest_distance(dm), bool(getattr(dm, "pair", False)))
        runs = study.runs(wide)
        results, errors = _execute(runs, study.workers, log, quiet)
    rows = []
    for i, r in enumerate(runs):
        if i in results and results[i]:
            rows.append({"backbone": r.backbone, "strategy": r.label, "seed": r.seed, "split_seed": r.split_seed,
                         "run_dir": r.cfg.run.out, **results[i]})
    summary = summarize(rows, study, baselines)
    summary["split"] = split_source
    summary["failed"] = [{"backbone": runs[i].backbone, "strategy": runs[i].label, "seed": runs[i].seed,
                          "error": e} for i, e in errors.items()]
    summary["param_matching"] = {b: {**wide.get(b, {}), **counts.get(b, {})} for b in wide}
    write_outputs(out, rows, summary, study)
    return summary


def _fmt(sec: float) -> str:
    if not math.isfinite(sec):
        return "?"
    m, s = divmod(int(sec), 60)
    return f"{m}m{s:02d}s"


# -- summary ------------------------------------------------------------------------------------------------
def _task_kind(cfg) -> str:
    """The task kind of a config (``TrainConfig`` resolves ``auto`` against the dataset)."""
    return cfg.task.kind


def _longest_distance(dm) -> float:
    """The longest intra-graph distance over all splits, one graph at a time (lazy datasets are streamed, not
    materialised); 1.0 when no graph has two positioned nodes."""
    import torch
    longest = 1.0
    for part in (dm.train, dm.val, dm.test):
        get = part.raw if hasattr(part, "raw") else part.__getitem__
        for i in range(len(part)):
            g = get(i)
            if g.pos is not None and g.num_nodes > 1:
                longest = max(longest, float(torch.pdist(g.pos.double()).max()))
    return longest


#: metrics that are better when lower
_LOWER = ("mae", "rmse")


def _metric_key(rows, preferred: str | None = None) -> tuple[str, str]:
    """The study's metric: the dataset's ``info['task']['monitor']`` when runs report it, else the first known."""
    order = [preferred] if preferred else []
    order += ["mae", "auroc", "ap", "fmax", "acc"]
    for m in order:
        key = f"test/{m}"
        if any(key in r for r in rows):
            return key, "min" if m in _LOWER else "max"
    raise ConfigError("study: runs report no known test metric")


def _units(study: Study) -> str:
    try:
        from farfield.datasets import target_units
        return target_units(study.base.data.dataset, study.base.data.target) or ""
    except (ImportError, KeyError, AttributeError):
        return ""


def summarize(rows: list[dict], study: Study, baselines: dict | None = None) -> dict:
    """Per (backbone, strategy): mean, sd and per-seed values of the test metric, cost, convergence; paired
    comparisons (by seed and split) with ``none`` and with ``none-wide``: mean difference, Student-t 95% CI,
    Cohen's d_z, paired t-test p-value and its Holm adjustment over the strategies compared with that
    baseline; **better** only with a finite Holm-adjusted p < 0.05 in the better direction."""
    from farfield.train.stats import holm, paired_t, variance_components
    if not rows:
        raise ConfigError("study: no run finished; nothing to summarise")
    from farfield.datasets import dataset_info
    # compare on the metric the runs selected their checkpoints on (task.monitor as resolved for the runs)
    monitors = {r.get("monitor") for r in rows if r.get("monitor")}
    preferred = monitors.pop() if len(monitors) == 1 else \
        (study.base.task.monitor or (dataset_info(study.base.data.dataset).get("task") or {}).get("monitor"))
    key, mode = _metric_key(rows, preferred)
    metric = key.split("/", 1)[1]
    out = {"metric": key, "better": "lower" if mode == "min" else "higher", "units": _units(study), "groups": [],
           "baselines": baselines or {}, "split_seeds": list(study.split_seeds), "seeds": study.seeds}
    by = {}
    for r in rows:
        by.setdefault((r["backbone"], r["strategy"]), []).append(r)
    for b in study.backbones:
        for label in study.labels():
            rs = by.get((b, label))
            if not rs:
                continue
            vals = np.array([r[key] for r in rs], float)
            conv = [r.get("convergence") or {} for r in rs]
            spe = [r["sec_per_epoch"] for r in rs if r.get("sec_per_epoch")]
            g = {"backbone": b, "strategy": label, "n": len(rs), "mean": float(vals.mean()),
                 "std": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
                 "values": {f"{r['split_seed']}/{r['seed']}": float(r[key]) for r in rs},
                 "params": rs[0]["params"]["total"], "long_range_params": rs[0]["params"]["long_range"],
                 "sec_per_epoch": float(np.median(spe)) if spe else float("nan"),
                 "sec_per_epoch_range": [float(min(spe)), float(max(spe))] if spe else None,
                 "cpu_sec_per_epoch": float(np.median([r.get("cpu_sec_per_epoch") or np.nan for r in rs])),
                 "graphs_per_sec": float(np.median([r["graphs_per_sec"] or np.nan for r in rs])),
                 "peak_rss_mb": float(np.max([r["peak_rss_mb"] or np.nan for r in rs])),
                 "epochs": int(max(r["epochs"] for r in rs)),
                 "converged": sum(1 for c in conv if c.get("converged")),
                 # runs long enough to judge (convergence needs >= 5 validated epochs)
                 "assessable": sum(1 for c in conv if c.get("converged") is not None),
                 "max_rel_change_last20": float(np.nanmax([c.get("rel_change", np.nan) for c in conv] + [np.nan]))
                 if any(np.isfinite(c.get("rel_change", np.nan)) for c in conv) else float("nan")}
            if len(study.split_seeds) > 1:
                g["variance"] = variance_components(vals, [r["split_seed"] for r in rs])
            out["groups"].append(g)
    for ref in ("none", WIDE):
        tag = "vs_none" if ref == "none" else "vs_wide"
        for b in study.backbones:
            base = {(r["split_seed"], r["seed"]): r[key] for r in by.get((b, ref), [])}
            if not base:
                continue
            family = [g for g in out["groups"] if g["backbone"] == b and g["strategy"] not in ("none", ref)]
            for g in family:
                pairs = [(base[(r["split_seed"], r["seed"])], r[key]) for r in by[(b, g["strategy"])]
                         if (r["split_seed"], r["seed"]) in base]
                g[tag] = paired_t([p[0] for p in pairs], [p[1] for p in pairs])
            for g, p in zip(family, holm([g[tag]["p_value"] for g in family])):
                t = g[tag]
                t["p_holm"] = p
                direction = t["diff"] < 0 if mode == "min" else t["diff"] > 0
                t["better"] = bool(math.isfinite(p) and p < 0.05 and direction)
                t["worse"] = bool(math.isfinite(p) and p < 0.05 and not direction)
                t["family_size"] = sum(1 for x in family if math.isfinite(x[tag]["p_value"]))
            none = next((x for x in out["groups"] if x["backbone"] == b and x["strategy"] == "none"), None)
            for g in out["groups"]:
                if g["backbone"] == b and none is not None and none["mean"]:
                    g["change_vs_none_pct"] = 100 * (g["mean"] - none["mean"]) / abs(none["mean"])
    # position between "knows nothing" (mean predictor) and "knows everything within the cutoff" (oracle)
    # per split seed (each split has its own baselines), then averaged over the split seeds
    if baselines and metric == "mae":
        for g in out["groups"]:
            fractions = []
            for split, bl in baselines.items():
                if "mean" not in bl or "cutoff_oracle" not in bl:
                    continue
                lo, hi = bl["mean"]["mae"], bl["cutoff_oracle"]["mae"]
                vals = [v for k, v in g["values"].items() if k.split("/", 1)[0] == str(split)]
                if vals and lo != hi:
                    fractions.append((lo - float(np.mean(vals))) / (lo - hi))
            if fractions:
                g["oracle_fraction"] = float(np.mean(fractions))
    # per sequence-identity cut-off (DeepFRI test sets): mean over seeds of the study metric
    by_id = {}
    for (b, label), rs in by.items():
        per = [r.get("test_by_identity") for r in rs if r.get("test_by_identity")]
        if per:
            by_id[f"{b} + {label}"] = {c: {"n": per[0][c]["n"], "mean": float(np.nanmean(
                [p[c].get(metric, np.nan) for p in per])) if any(np.isfinite(p[c].get(metric, np.nan)) for p in per)
                else float("nan")} for c in per[0]}
    if by_id:
        out["by_identity"] = by_id
    # per target of a multi-target regression (the pooled metric averages targets in different units)
    by_target = {}
    for (b, label), rs in by.items():
        per = [r["test_by_target"] for r in rs if r.get("test_by_target")]
        if per:
            by_target[f"{b} + {label}"] = {t: {m: _mean_sd([p[t][m] for p in per if t in p]) for m in ("mae", "rmse")}
                                            for t in per[0]}
    if by_target:
        out["by_target"] = by_target
    out["wall_time_warning"] = [f"{g['backbone']} + {g['strategy']}: seconds per epoch vary {g['sec_per_epoch_range'][0]:.2f}"
                                f"-{g['sec_per_epoch_range'][1]:.2f} across seeds"
                                for g in out["groups"] if g.get("sec_per_epoch_range") and
                                g["sec_per_epoch_range"][0] > 0 and g["sec_per_epoch_range"][1] / g["sec_per_epoch_range"][0] > 1.5]
    return out


def _mean_sd(values) -> dict:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    return {"mean": float(v.mean()) if len(v) else float("nan"),
            "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "n": int(len(v))}


def _digits(summary: dict | None) -> int:
    """Decimals for a metric: 4 for scores in [0, 1] (AP, Fmax, AUROC, accuracy), else 2."""
    m = (summary or {}).get("metric", "")
    return 4 if m.split("/")[-1] in ("ap", "fmax", "aupr", "auroc", "acc", "spearman", "pearson") else 2


def _cmp(t: dict | None, nd: int = 2) -> str:
    if not t:
        return "-"
    if not math.isfinite(t.get("ci_low", float("nan"))):
        return f"{t['diff']:+.{nd}f} (n={t['n']}: no interval)"
    flag = " **better**" if t["better"] else (" *worse*" if t["worse"] else "")
    return (f"{t['diff']:+.{nd}f} [{t['ci_low']:+.{nd}f}, {t['ci_high']:+.{nd}f}], d_z={t['d_z']:+.1f}, "
            f"p_Holm={t['p_holm']:.2g}{flag}")


def format_table(summary: dict) -> str:
    """The main table (markdown) and the reference baselines."""
    m, u = summary["metric"], summary.get("units")
    unit = f" ({u})" if u else ""
    lines = [f"| backbone | strategy | {m}{unit} mean +- sd (n) | vs none: diff [95% t-CI], d_z, p_Holm | "
             f"vs {WIDE}: diff [95% t-CI], d_z, p_Holm | params | s/epoch (CPU s) | converged |",
             "|---|---|---|---|---|---|---|---|"]
    nd = _digits(summary)
    for g in summary["groups"]:
        vs_none = "baseline" if g["strategy"] == "none" else _cmp(g.get("vs_none"), nd)
        vs_wide = "baseline" if g["strategy"] == WIDE else ("-" if g["strategy"] == "none" else _cmp(g.get("vs_wide"), nd))
        sd = f"{g['std']:.{nd}f}" if math.isfinite(g["std"]) else "n/a"
        lines.append(f"| {g['backbone']} | {g['strategy']} | {g['mean']:.{nd}f} +- {sd} ({g['n']}) | {vs_none} | {vs_wide} "
                     f"| {g['params']:,} | {g['sec_per_epoch']:.2f} ({g['cpu_sec_per_epoch']:.2f}) "
                     f"| {_converged_cell(g)} |")
    bl = summary.get("baselines") or {}
    if bl:
        first = next(iter(bl))
        split0 = bl[first]
        cols = [c for c in ("mae", "rmse", "r2", "ap", "fmax", "aupr", "auroc", "acc")
                if any(c in v for v in split0.values())]
        names = {"mae": f"MAE{unit}", "rmse": "RMSE", "r2": "R^2", "ap": "AP", "fmax": "Fmax", "aupr": "AUPR",
                 "auroc": "AUROC", "acc": "accuracy"}
        lines += ["", f"| reference baseline (test split{'' if len(bl) == 1 else ', split seed ' + first}) | "
                  + " | ".join(names[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for k, v in split0.items():
            lines.append(f"| {v['label']} | " + " | ".join(
                f"{v[c]:.{3 if c == 'r2' else (2 if c in ('mae', 'rmse') else 4)}f}" if c in v else "-" for c in cols) + " |")
    return "\n".join(lines)


def _assessable(g: dict) -> int:
    """Runs of a group whose convergence can be judged (summaries written before this count had all of them)."""
    return int(g.get("assessable", g["n"]))


def _converged_cell(g: dict) -> str:
    """``converged/assessable``, with the runs too short to judge named; ``n/a`` when none can be judged."""
    a = _assessable(g)
    if a == 0:
        return "n/a (< 5 epochs)"
    return f"{g['converged']}/{a}" + (f" ({g['n'] - a} too short)" if a < g["n"] else "")


def write_outputs(out: Path, rows: list[dict], summary: dict, study: Study) -> None:
    flat = []
    for r in rows:
        f = {k: v for k, v in r.items() if k not in ("curve", "params", "convergence", "test_by_target")}
        f.update({"params": r["params"]["total"], "long_range_params": r["params"]["long_range"],
                  "converged": (r.get("convergence") or {}).get("converged"),
                  "rel_change_last20": (r.get("convergence") or {}).get("rel_change")})
        flat.append(f)
    keys = sorted({k for f in flat for k in f}, key=lambda k: (k not in ("backbone", "strategy", "seed"), k))
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)
    (out / "results.json").write_text(json.dumps({"summary": summary, "runs": rows}, indent=2, default=str))
    (out / "report.md").write_text(report_markdown(summary, study))
    try:
        plots(out, rows, summary)
    except Exception as e:  # noqa: BLE001 - a plotting failure must not lose the results
        print(f"[study] plots skipped: {type(e).__name__}: {e}", file=sys.stderr)


def report_markdown(summary: dict, study: Study) -> str:
    d, o = study.base.data, study.base.optim
    groups = summary["groups"]
    unconverged = [f"{g['backbone']} + {g['strategy']} ({_assessable(g) - g['converged']} of {_assessable(g)})"
                   for g in groups if g["converged"] < _assessable(g)]
    lines = [
        "# farfield study", "",
        f"Dataset `{d.dataset}` (target `{d.target}`, edges `{d.edges}`, "
        + ("the dataset's official split" if summary.get("split") == "official" else
           f"split {list(d.split)} with split seed(s) {list(study.split_seeds)}")
        + f"); backbones {list(study.backbones)}; {study.seeds} seeds per strategy; "
        f"{o.epochs} epochs, lr {o.lr}, {o.scheduler} schedule, batch {d.batch_size}.", "",
        f"Metric: `{summary['metric']}`{' in ' + summary['units'] if summary.get('units') else ''} on the test split at "
        f"the best validation checkpoint ({summary['better']} is better).",
        "Comparisons are paired by seed (same split, same seed, same budget): mean difference, its Student-t 95% "
        "confidence interval over seeds, Cohen's d_z (mean / sd of the paired differences) and the paired t-test "
        "p-value adjusted by Holm's method over the strategies compared with the same baseline. **better** / "
        "*worse* = adjusted p < 0.05; with fewer than 2 seeds or identical differences no interval or p-value "
        "exists and nothing is flagged.",
        f"`{WIDE}` is the baseline widened to at least the parameter count of the largest model in the study "
        f"(hidden {summary.get('param_matching', {})}).",
        "s/epoch is the median wall time of a training epoch over seeds, with the CPU time in brackets "
        "(comparable across runs that shared the machine); converged = runs whose best validation metric improved "
        "by at most 2% during the last 20% of epochs.", "",
        format_table(summary), ""]
    split0 = next(iter((summary.get("baselines") or {}).values()), {})
    if split0 and "prior" in split0:
        lines += ["Reading: the label-frequency predictor knows nothing about the item (every item gets the training "
                  "frequency of each label); the ridge score on composition knows what the item is made of but not "
                  "how it is connected or shaped. A model that does not beat them has not learned structure.", ""]
    if split0 and "mean" in split0:
        lines += ["Reading: the mean predictor knows nothing; the composition ridge knows the sequence but no "
                  "geometry; the cutoff oracle is a ridge on the exact contribution of every pair within the cutoff "
                  "(plus composition): the best *linear use of one cutoff's pairs*. A multi-layer message-passing "
                  "model sees farther (L layers reach L cutoffs) and is nonlinear, so it can pass the oracle; the "
                  "oracle marks what one cutoff's pairs explain, not a bound. `oracle fraction` = (MAE_mean - MAE) "
                  "/ (MAE_mean - MAE_oracle): 1 = as good as the oracle, above 1 = better.", ""]
        if any("oracle_fraction" in g for g in groups):
            lines += ["| strategy | oracle fraction | change vs none |", "|---|---|---|"]
            lines += [f"| {g['backbone']} + {g['strategy']} | {g['oracle_fraction']:.2f} | "
                      f"{g.get('change_vs_none_pct', float('nan')):+.1f}% |" for g in groups]
            lines.append("")
    ident = summary.get("by_identity")
    if ident:
        cut = list(next(iter(ident.values())))
        lines += [f"Test `{summary['metric'].split('/')[-1]}` by sequence identity to the training set (test chains "
                  "below each cut-off; mean over seeds; n = chains):", "",
                  "| backbone + strategy | " + " | ".join(f"<{c} (n={ident[next(iter(ident))][c]['n']})" for c in cut)
                  + " |", "|---" * (len(cut) + 1) + "|"]
        for label, per in ident.items():
            lines.append(f"| {label} | " + " | ".join(f"{per[c]['mean']:.4f}" if math.isfinite(per[c]["mean"])
                                                      else "n/a" for c in cut) + " |")
        lines.append("")
    per_target = summary.get("by_target")
    if per_target:
        targets = list(next(iter(per_target.values())))
        lines += [f"Test MAE **per target** (mean +- sd over seeds). The headline `{summary['metric']}` averages the "
                  f"{len(targets)} targets' errors, which may be in different units; read these instead:", "",
                  "| backbone + strategy | " + " | ".join(f"`{t}`" for t in targets) + " |",
                  "|---" * (len(targets) + 1) + "|"]
        for label, per in per_target.items():
            lines.append(f"| {label} | " + " | ".join(
                f"{per[t]['mae']['mean']:.4g} +- {per[t]['mae']['sd']:.2g}" if t in per else "-" for t in targets) + " |")
        lines.append("")
    if any("variance" in g for g in groups):
        lines += ["| strategy | seed sd | split sd |", "|---|---|---|"]
        lines += [f"| {g['strategy']} | {g['variance']['seed_sd']:.2f} | {g['variance']['split_sd']:.2f} |"
                  for g in groups if "variance" in g]
        lines.append("")
    if unconverged:
        lines.append(f"**Still improving in the last 20% of epochs:** {', '.join(unconverged)}: train longer.")
    if summary.get("wall_time_warning"):
        lines.append("**Wall times varied widely** (the machine was shared?): " + "; ".join(summary["wall_time_warning"])
                     + ". Compare CPU seconds instead.")
    if summary.get("failed"):
        lines.append("**Failed runs:** " + "; ".join(f"{f['backbone']} + {f['strategy']} seed {f['seed']}: {f['error']}"
                                                     for f in summary["failed"]))
    lines += ["", "![metric](metric.png) ![learning curves](curves.png) ![cost](cost.png)", ""]
    return "\n".join(lines)


def plots(out: Path, rows: list[dict], summary: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups = summary["groups"]
    single = len({x["backbone"] for x in groups}) == 1
    labels = [g["strategy"] if single else f"{g['backbone']}\n{g['strategy']}" for g in groups]
    colors = [_PALETTE.get(split_arm(g["strategy"])[0], "C9") for g in groups]
    unit = f" ({summary['units']})" if summary.get("units") else ""
    m = summary["metric"]

    fig, ax = plt.subplots(figsize=(1.2 * len(groups) + 3, 3.8))
    ax.bar(range(len(groups)), [g["mean"] for g in groups], yerr=[g["std"] if math.isfinite(g["std"]) else 0 for g in groups],
           color=colors, capsize=4, alpha=0.85)
    for i, g in enumerate(groups):
        pts = list(g["values"].values())
        ax.scatter([i] * len(pts), pts, color="k", s=8, zorder=3)
        t = g.get("vs_none")
        if t and t.get("better"):
            ax.text(i, g["mean"], "*", ha="center", va="bottom", fontsize=14)
    bl = summary.get("baselines") or {}
    if bl:
        for (k, v), ls in zip(next(iter(bl.values())).items(), ("--", ":", "-.", "-")):
            ax.axhline(v.get(m.split("/", 1)[1], np.nan), color="0.3", ls=ls, lw=1, label=v["label"])
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xticks(range(len(groups)), labels, rotation=30, ha="right")
    ax.set_ylabel(f"{m}{unit}")
    ax.set_title("mean +- sd over seeds (dots: seeds; *: better than none, Holm p < 0.05)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "metric.png", dpi=120)
    plt.close(fig)

    key = m.split("/", 1)[1]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for g, lab, col in zip(groups, labels, colors):
        curves = [r["curve"] for r in rows if r["backbone"] == g["backbone"] and r["strategy"] == g["strategy"]]
        ep = sorted({c["epoch"] for cur in curves for c in cur if f"val/{key}" in c})
        if not ep:
            continue
        vals = np.array([[next((c[f"val/{key}"] for c in cur if c["epoch"] == e and f"val/{key}" in c), np.nan)
                          for e in ep] for cur in curves])
        x = np.array(ep) + 1
        ax.plot(x, np.nanmean(vals, 0), label=lab.replace("\n", " "), color=col)
        if len(curves) > 1:
            ax.fill_between(x, np.nanmin(vals, 0), np.nanmax(vals, 0), color=col, alpha=0.15, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"val/{key}{unit}")
    ax.set_title("validation metric: mean over seeds, band = min-max", fontsize=9)
    if summary.get("better") == "lower":
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for g, lab, col in zip(groups, labels, colors):
        cpu = [r.get("cpu_sec_per_epoch") or np.nan for r in rows
               if r["backbone"] == g["backbone"] and r["strategy"] == g["strategy"]]
        ax.errorbar(np.nanmedian(cpu), g["mean"], yerr=g["std"] if math.isfinite(g["std"]) else 0,
                    xerr=[[np.nanmedian(cpu) - np.nanmin(cpu)], [np.nanmax(cpu) - np.nanmedian(cpu)]],
                    fmt="o", color=col, capsize=3, label=lab.replace("\n", " "))
    ax.set_xlabel("CPU seconds per training epoch (median, range over seeds)")
    ax.set_ylabel(f"{m}{unit}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "cost.png", dpi=120)
    plt.close(fig)

"""``farfield study``: every backbone x long-range strategy x seed on one task, with a report.

Output directory::

    OUT/runs/<backbone>/<strategy>/seed<k>/   one training run each (config.yaml, checkpoints, logs, metrics.json)
    OUT/results.csv, OUT/results.json         one row per run, and the per-strategy summary
    OUT/report.md                             table: metric mean +- std, parameters, time per epoch, memory,
                                              throughput, paired test against the baseline
    OUT/metric.png, OUT/curves.png, OUT/cost.png

Re-running the same command skips finished runs (``metrics.json`` present) and resumes interrupted ones
from their last checkpoint. Runs are paired by seed: the same split and the same seed for every strategy.
"""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from farfield.errors import ConfigError
from farfield.models.long_range import STRATEGIES
from farfield.train.config import TrainConfig

__all__ = ["DEFAULT_STRATEGIES", "Study", "run_study", "summarize", "paired_test"]

#: the default study: the baseline and every mechanism that is linear or near-linear in N, plus attention
DEFAULT_STRATEGIES = ("none", "random", "virtual_node", "neural_atoms", "ewald", "attention")


@dataclass(frozen=True)
class Study:
    base: TrainConfig
    backbones: tuple = ("schnet",)
    strategies: tuple = DEFAULT_STRATEGIES
    seeds: int = 3
    out: str = "runs/study"

    def __post_init__(self):
        from farfield.models import BACKBONES
        for b in self.backbones:
            if b not in BACKBONES:
                raise ConfigError(f"study: unknown backbone {b!r}; choose from {sorted(BACKBONES)}")
        for s in self.strategies:
            if s not in STRATEGIES:
                raise ConfigError(f"study: unknown strategy {s!r}; choose from {list(STRATEGIES)}")
        if self.seeds < 1:
            raise ConfigError(f"study: seeds must be >= 1, got {self.seeds}")
        if not self.strategies or not self.backbones:
            raise ConfigError("study: give at least one backbone and one strategy")

    def runs(self) -> list[tuple[str, str, int, TrainConfig]]:
        out = []
        for b in self.backbones:
            opts = dict(self.base.model.backbone_options) if b == self.base.model.backbone else \
                {k: v for k, v in self.base.model.backbone_options.items() if k in ("hidden", "num_layers")}
            for s in self.strategies:
                lr_opts = dict(self.base.model.long_range_options) if s == self.base.model.long_range else {}
                for k in range(self.seeds):
                    model = replace(self.base.model, backbone=b, backbone_options=opts, long_range=s,
                                    long_range_options=lr_opts)
                    run = replace(self.base.run, seed=k, out=str(Path(self.out) / "runs" / b / s / f"seed{k}"))
                    out.append((b, s, k, replace(self.base, model=model, run=run)))
        return out


def run_study(study: Study, quiet: bool = False, log=None) -> dict:
    """Run (or resume) every run of ``study``; write results and the report; return the summary. Progress
    lines go to ``log`` (default stderr)."""
    log = log or sys.stderr
    from farfield.train.data import GraphDataModule
    from farfield.train.run import train

    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = study.runs()
    rows, modules, t0, trained = [], {}, time.perf_counter(), 0
    for i, (b, s, k, cfg) in enumerate(runs, 1):
        finished = (Path(cfg.run.out) / "metrics.json").is_file()
        spec = cfg.model.edge_spec(cfg.data.edges)
        if not finished and spec not in modules:
            modules[spec] = GraphDataModule(cfg.data, spec, seed=k, standardize=cfg.task.standardize)
        if not finished:
            modules[spec].seed = k
        elapsed = time.perf_counter() - t0
        eta = elapsed / trained * sum(1 for r in runs[i - 1:] if not (Path(r[3].run.out) / "metrics.json").is_file()) \
            if trained else float("nan")
        if not quiet:
            print(f"[study] run {i}/{len(runs)}: {b} + {s}, seed {k}"
                  f"{' (done, skipped)' if finished else ''}; elapsed {_fmt(elapsed)}, ETA {_fmt(eta)}", file=log, flush=True)
        res = train(cfg, datamodule=None if finished else modules[spec], quiet=True)
        trained += 0 if finished else 1
        rows.append({"backbone": b, "strategy": s, "seed": k, **res})
    summary = summarize(rows, study)
    write_outputs(out, rows, summary, study)
    return summary


def _fmt(sec: float) -> str:
    if not math.isfinite(sec):
        return "?"
    m, s = divmod(int(sec), 60)
    return f"{m}m{s:02d}s"


def paired_test(base: list[float], other: list[float], seed: int = 0, n_boot: int = 10000) -> dict:
    """Paired comparison by seed: mean difference (other - base), its bootstrap 95% CI over seeds, and the
    paired t-test p-value (scipy; NaN with fewer than 2 pairs)."""
    from scipy import stats
    a, b = np.asarray(base, float), np.asarray(other, float)
    d = b - a
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1) if len(d) else np.array([np.nan])
    p = float(stats.ttest_rel(b, a).pvalue) if len(d) >= 2 and np.std(d) > 0 else float("nan")
    return {"diff": float(d.mean()) if len(d) else float("nan"), "ci_low": float(np.percentile(boots, 2.5)),
            "ci_high": float(np.percentile(boots, 97.5)), "p_value": p}


def _metric_key(rows) -> tuple[str, str]:
    for key, mode in (("test/mae", "min"), ("test/auroc", "max"), ("test/ap", "max"), ("test/acc", "max")):
        if any(key in r for r in rows):
            return key, mode
    raise ConfigError("study: runs report no known test metric")


def summarize(rows: list[dict], study: Study) -> dict:
    key, mode = _metric_key(rows)
    out = {"metric": key, "better": "lower" if mode == "min" else "higher", "groups": []}
    for b in study.backbones:
        base = {r["seed"]: r[key] for r in rows if r["backbone"] == b and r["strategy"] == "none"}
        for s in study.strategies:
            rs = [r for r in rows if r["backbone"] == b and r["strategy"] == s]
            vals = np.array([r[key] for r in rs], float)
            g = {"backbone": b, "strategy": s, "n": len(rs), "mean": float(vals.mean()),
                 "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                 "params": rs[0]["params"]["total"], "long_range_params": rs[0]["params"]["long_range"],
                 "sec_per_epoch": float(np.mean([r["sec_per_epoch"] or np.nan for r in rs])),
                 "graphs_per_sec": float(np.mean([r["graphs_per_sec"] or np.nan for r in rs])),
                 "peak_rss_mb": float(np.max([r["peak_rss_mb"] or np.nan for r in rs]))}
            if s != "none" and base:
                pairs = [(base[r["seed"]], r[key]) for r in rs if r["seed"] in base]
                t = paired_test([p[0] for p in pairs], [p[1] for p in pairs])
                better = t["ci_high"] < 0 if mode == "min" else t["ci_low"] > 0
                g.update({"vs_none": t, "better_than_none": bool(better and (t["p_value"] < 0.05 or len(pairs) < 2 or
                                                                                 math.isnan(t["p_value"])))})
            out["groups"].append(g)
    return out


def write_outputs(out: Path, rows: list[dict], summary: dict, study: Study) -> None:
    flat = []
    for r in rows:
        f = {k: v for k, v in r.items() if k not in ("curve", "params")}
        f.update({"params": r["params"]["total"], "long_range_params": r["params"]["long_range"]})
        flat.append(f)
    keys = sorted({k for f in flat for k in f}, key=lambda k: (k not in ("backbone", "strategy", "seed"), k))
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)
    (out / "results.json").write_text(json.dumps({"summary": summary, "runs": rows}, indent=2))
    (out / "report.md").write_text(report_markdown(summary, study))
    try:
        plots(out, rows, summary)
    except Exception as e:  # noqa: BLE001 - a plotting failure must not lose the results
        print(f"[study] plots skipped: {type(e).__name__}: {e}", file=sys.stderr)


def format_table(summary: dict) -> str:
    m = summary["metric"]
    lines = [f"| backbone | strategy | {m} (mean +- std) | vs none: diff [95% CI], p | params | s/epoch | graphs/s | peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    for g in summary["groups"]:
        t = g.get("vs_none")
        vs = "baseline" if g["strategy"] == "none" else (
            f"{t['diff']:+.2f} [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}], p={t['p_value']:.3g}"
            + (" **better**" if g.get("better_than_none") else "") if t else "-")
        lines.append(f"| {g['backbone']} | {g['strategy']} | {g['mean']:.2f} +- {g['std']:.2f} | {vs} | {g['params']:,} "
                     f"| {g['sec_per_epoch']:.2f} | {g['graphs_per_sec']:.0f} | {g['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def report_markdown(summary: dict, study: Study) -> str:
    d, o = study.base.data, study.base.optim
    return "\n".join([
        "# farfield study", "",
        f"Dataset `{d.dataset}` (target `{d.target}`, edges `{d.edges}`, split {list(d.split)} with split seed "
        f"{d.split_seed}); backbones {list(study.backbones)}; {study.seeds} seeds; {o.epochs} epochs, lr {o.lr}.",
        f"Metric: {summary['metric']} on the test split at the best validation checkpoint ({summary['better']} is "
        "better). Comparisons with `none` are paired by seed: mean difference, bootstrap 95% CI over seeds, paired "
        "t-test; **better** = the CI excludes 0 in the better direction (and p < 0.05 when it can be computed).",
        "peak MB is the peak resident memory of the process during the run (CPU; Linux).", "",
        format_table(summary), "",
        "![metric](metric.png) ![learning curves](curves.png) ![cost](cost.png)", ""])


def plots(out: Path, rows: list[dict], summary: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = summary["groups"]
    labels = [g["strategy"] if len({x["backbone"] for x in groups}) == 1 else f"{g['backbone']}\n{g['strategy']}"
              for g in groups]
    fig, ax = plt.subplots(figsize=(1.3 * len(groups) + 2, 3.5))
    colors = ["0.6" if g["strategy"] == "none" else ("C2" if g.get("better_than_none") else "C0") for g in groups]
    ax.bar(range(len(groups)), [g["mean"] for g in groups], yerr=[g["std"] for g in groups], color=colors, capsize=4)
    for i, g in enumerate(groups):
        pts = [r[summary["metric"]] for r in rows if r["backbone"] == g["backbone"] and r["strategy"] == g["strategy"]]
        ax.scatter([i] * len(pts), pts, color="k", s=8, zorder=3)
    ax.set_xticks(range(len(groups)), labels, rotation=30, ha="right")
    ax.set_ylabel(summary["metric"])
    ax.set_title("mean +- std over seeds (green: better than none)")
    fig.tight_layout()
    fig.savefig(out / "metric.png", dpi=120)
    plt.close(fig)

    key = summary["metric"].split("/", 1)[1]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, g in enumerate(groups):
        curves = [r["curve"] for r in rows if r["backbone"] == g["backbone"] and r["strategy"] == g["strategy"]]
        ep = sorted({c["epoch"] for cur in curves for c in cur if f"val/{key}" in c})
        if not ep:
            continue
        mean = [np.nanmean([next((c[f"val/{key}"] for c in cur if c["epoch"] == e and f"val/{key}" in c), np.nan)
                            for cur in curves]) for e in ep]
        ax.plot(ep, mean, label=labels[i].replace("\n", " "), color=f"C{i}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"val/{key} (mean over seeds)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, g in enumerate(groups):
        ax.errorbar(g["sec_per_epoch"], g["mean"], yerr=g["std"], fmt="o", color=f"C{i}", capsize=3,
                    label=labels[i].replace("\n", " "))
    ax.set_xlabel("training seconds per epoch")
    ax.set_ylabel(summary["metric"])
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "cost.png", dpi=120)
    plt.close(fig)

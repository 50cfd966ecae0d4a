"""A study's statistics: per arm the mean, sd and per-seed values of the test metric, cost and convergence; paired
comparisons (by seed and split) of every arm with the control and with the parameter-matched control: mean
difference, Student-t 95% confidence interval, Cohen's d_z, paired t-test and its Holm adjustment over the arms
compared with the same reference (Holm 1979); per-target and per-identity tables; the oracle fraction."""
from __future__ import annotations

import math

import numpy as np

from farfield.errors import ConfigError

__all__ = ["summarize", "metric_key", "mean_sd", "LOWER"]

#: metrics that are better when lower
LOWER = ("mae", "rmse")


def metric_key(rows, preferred: str | None = None) -> tuple[str, str]:
    """The study's metric: the dataset's ``info['task']['monitor']`` when runs report it, else the first known."""
    order = [preferred] if preferred else []
    order += ["mae", "auroc", "ap", "fmax", "acc"]
    for m in order:
        key = f"test/{m}"
        if any(key in r for r in rows):
            return key, "min" if m in LOWER else "max"
    raise ConfigError("study: runs report no known test metric")


def _units(study) -> str:
    try:
        from farfield.datasets import target_units
        return target_units(study.base.data.dataset, study.base.data.target) or ""
    except (ImportError, KeyError, AttributeError):
        return ""


def summarize(rows: list[dict], study, baselines: dict | None = None) -> dict:
    """Per (backbone, arm): mean, sd and per-seed values of the test metric, cost, convergence; paired
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
    key, mode = metric_key(rows, preferred)
    metric = key.split("/", 1)[1]
    out = {"metric": key, "better": "lower" if mode == "min" else "higher", "units": _units(study), "groups": [],
           "baselines": baselines or {}, "split_seeds": list(study.split_seeds), "seeds": study.seeds,
           "control": study.control_name, "wide": study.wide_name}
    arms = {a.name: a for a in study.all_arms()}
    by = {}
    for r in rows:
        by.setdefault((r["backbone"], r["arm"]), []).append(r)
    for b in study.backbones:
        for label in study.labels(wide=True):
            rs = by.get((b, label))
            if not rs:
                continue
            vals = np.array([r[key] for r in rs], float)
            conv = [r.get("convergence") or {} for r in rs]
            spe = [r["sec_per_epoch"] for r in rs if r.get("sec_per_epoch")]
            arm = arms.get(label)
            g = {"backbone": b, "arm": label, "kind": arm.kind if arm else "wide",
                 "overrides": arm.describe() if arm else f"{study.control_name} widened", "n": len(rs), "mean": float(vals.mean()),
                 "std": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
                 "values": {f"{r['split_seed']}/{r['seed']}": float(r[key]) for r in rs},
                 "params": rs[0]["params"]["total"], "long_range_params": rs[0]["params"]["long_range"],
                 "canonicaliser_params": rs[0]["params"].get("canonicaliser", 0),
                 "head_params": rs[0]["params"].get("head"),
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
    control = study.control_name
    for ref in (control, study.wide_name):
        tag = "vs_control" if ref == control else "vs_wide"
        for b in study.backbones:
            base = {(r["split_seed"], r["seed"]): r[key] for r in by.get((b, ref), [])}
            if not base:
                continue
            family = [g for g in out["groups"] if g["backbone"] == b and g["arm"] not in (control, ref)]
            for g in family:
                pairs = [(base[(r["split_seed"], r["seed"])], r[key]) for r in by[(b, g["arm"])]
                         if (r["split_seed"], r["seed"]) in base]
                g[tag] = paired_t([p[0] for p in pairs], [p[1] for p in pairs])
            for g, p in zip(family, holm([g[tag]["p_value"] for g in family])):
                t = g[tag]
                t["p_holm"] = p
                direction = t["diff"] < 0 if mode == "min" else t["diff"] > 0
                t["better"] = bool(math.isfinite(p) and p < 0.05 and direction)
                t["worse"] = bool(math.isfinite(p) and p < 0.05 and not direction)
                t["family_size"] = sum(1 for x in family if math.isfinite(x[tag]["p_value"]))
            c = next((x for x in out["groups"] if x["backbone"] == b and x["arm"] == control), None)
            for g in out["groups"]:
                if g["backbone"] == b and c is not None and c["mean"]:
                    g["change_vs_control_pct"] = 100 * (g["mean"] - c["mean"]) / abs(c["mean"])
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
            by_target[f"{b} + {label}"] = {t: {m: mean_sd([p[t][m] for p in per if t in p]) for m in ("mae", "rmse")}
                                            for t in per[0]}
    if by_target:
        out["by_target"] = by_target
    out["wall_time_warning"] = [f"{g['backbone']} + {g['arm']}: seconds per epoch vary {g['sec_per_epoch_range'][0]:.2f}"
                                f"-{g['sec_per_epoch_range'][1]:.2f} across seeds"
                                for g in out["groups"] if g.get("sec_per_epoch_range") and
                                g["sec_per_epoch_range"][0] > 0 and g["sec_per_epoch_range"][1] / g["sec_per_epoch_range"][0] > 1.5]
    return out


def mean_sd(values) -> dict:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    return {"mean": float(v.mean()) if len(v) else float("nan"),
            "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "n": int(len(v))}

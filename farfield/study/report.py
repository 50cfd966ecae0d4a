"""A study's report: the markdown table (``format_table``), ``report.md``, ``results.csv`` / ``results.json`` and
the plots (metric per arm, validation curves, metric against cost)."""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

__all__ = ["format_table", "report_markdown", "write_outputs", "plots", "pareto_front", "diagnostics_section"]

def _digits(summary: dict | None) -> int:
    """Decimals for a metric: 4 for scores in [0, 1] (AP, Fmax, AUROC, accuracy), else 2, or more when the
    smallest arm mean is below 1 so that it keeps three significant digits (an MAE of 0.0758 prints as 0.0758,
    not 0.08)."""
    m = (summary or {}).get("metric", "")
    if m.split("/")[-1] in ("ap", "fmax", "aupr", "auroc", "acc", "spearman", "pearson"):
        return 4
    means = [abs(g["mean"]) for g in (summary or {}).get("groups", [])
             if isinstance(g.get("mean"), (int, float)) and math.isfinite(g["mean"]) and g["mean"] != 0]
    return max(2, 2 - math.floor(math.log10(min(means)))) if means else 2


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
    control, wide = summary.get("control", "none"), summary.get("wide", "none-wide")
    lines = [f"| backbone | arm | {m}{unit} mean +- sd (n) | vs {control}: diff [95% t-CI], d_z, p_Holm | "
             f"vs {wide}: diff [95% t-CI], d_z, p_Holm | params | s/epoch (CPU s) | converged |",
             "|---|---|---|---|---|---|---|---|"]
    nd = _digits(summary)
    # the task head (node MLP, GIGP's orbit network) is outside the model's total; named where arms differ in it
    heads = {g.get("head_params") for g in summary["groups"] if g.get("head_params") is not None}
    for g in summary["groups"]:
        vs_none = "baseline" if g["arm"] == control else _cmp(g.get("vs_control"), nd)
        vs_wide = "baseline" if g["arm"] == wide else ("-" if g["arm"] == control else _cmp(g.get("vs_wide"), nd))
        sd = f"{g['std']:.{nd}f}" if math.isfinite(g["std"]) else "n/a"
        lines.append(f"| {g['backbone']} | {g['arm']} | {g['mean']:.{nd}f} +- {sd} ({g['n']}) | {vs_none} | {vs_wide} "
                     f"| {g['params']:,}{_canon_cell(g)}{_head_cell(g, len(heads) > 1)} | {g['sec_per_epoch']:.2f} ({g['cpu_sec_per_epoch']:.2f}) "
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
                f"{v[c]:.{3 if c == 'r2' else (nd if c in ('mae', 'rmse') else 4)}f}" if c in v else "-" for c in cols) + " |")
    return "\n".join(lines)


def _canon_cell(g: dict) -> str:
    """`` (canon. n)``: the trainable parameters of the arm's canonicaliser, part of the total, when it has any."""
    n = g.get("canonicaliser_params") or 0
    return f" (canon. {n:,})" if n else ""


def _head_cell(g: dict, differ: bool) -> str:
    """`` + head n``: the task head's parameters (outside the total), shown when the study's arms differ in them."""
    n = g.get("head_params")
    return f" + head {n:,}" if differ and n is not None else ""


def _arms_table(groups) -> list[str]:
    """What each arm changes (one row per arm name)."""
    seen, lines = set(), ["| arm | kind | overrides of the base config |", "|---|---|---|"]
    for g in groups:
        if g["arm"] not in seen and "overrides" in g:
            seen.add(g["arm"])
            lines.append(f"| {g['arm']} | {g.get('kind', '')} | {g['overrides'] or 'base config'} |")
    return lines if len(lines) > 2 else []


def _f(x, nd=2, pct=False) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:.{nd}f}%" if pct else f"{x:.{nd}f}"


def _e(x) -> str:
    return f"{x:.1e}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def diagnostics_section(summary: dict) -> list[str]:
    """Where each arm's models read from (:mod:`farfield.study.diagnostics`), next to the metric."""
    diag = summary.get("diagnostics") or {}
    if not diag.get("arms"):
        return []
    means = {(g["backbone"], g["arm"]): g["mean"] for g in summary["groups"]}
    nd = _digits(summary)
    cut = next((r.get("reference_cutoff") for a in diag["arms"] for r in a["runs"] if r.get("reference_cutoff")), None)
    L = next((r.get("layers") for a in diag["arms"] for r in a["runs"] if r.get("layers")), None)
    lines = ["## Diagnostics: where each arm's models read from", "",
             f"Influence of every input atom on every output (Jacobian norms of the trained best checkpoints, float64; "
             f"{diag['graphs']} test graphs, seed(s) < {diag['seeds']}). Range = the range measure of Bamberger et al. "
             "(ICML 2025): the influence-weighted mean distance of what an output reads, in Angstrom and in hops on "
             f"the reference graph `{diag['reference_edges']}` (the same for every arm)."
             + (f" Beyond cutoff = share of influence from atoms farther than {cut:g} A; beyond L cutoffs = farther "
                f"than {L} x {cut:g} A, which {L} message-passing layers on the reference graph cannot reach at all."
                if cut and L else "") + " MAD = mean average cosine distance of the final node embeddings (Chen et "
             "al. 2020; near 0 = over-smoothed).", "",
             f"| backbone + arm | {summary['metric']} | range (A) | range (hops) | beyond cutoff | beyond L cutoffs "
             "| MAD |", "|---|---|---|---|---|---|---|"]
    rot = any(math.isfinite(a.get("rotation_error_mean", math.nan)) for a in diag["arms"])
    if rot:
        lines[-4] += (" Rotation error = the rotation-invariance error of the trained predictions (Duval et al. 2024): "
                      "mean |f(Qx) - f(x)| / mean |f(x)| over 8 random rotations (mean) and its entrywise max relative to "
                      "max |f(x)| (max), float64, over every test graph; ~1e-15 = exactly invariant. Ill-defined "
                      "frames = share of those graphs whose frame (FA / canonicaliser) is flagged degenerate; the last "
                      "column is the error on the others.")
        lines[-2] += " rotation error mean / max | ill-defined frames | error on well-defined frames |"
        lines[-1] += "---|---|---|"
    for a in diag["arms"]:
        m = means.get((a["backbone"], a["arm"]))
        row = (f"| {a['backbone']} + {a['arm']} | {_f(m, nd)} | {_f(a.get('range_angstrom'))} | "
               f"{_f(a.get('range_hops'), 3)} | {_f(a.get('beyond_cutoff'), 2, True)} | "
               f"{_f(a.get('beyond_L_cutoffs'), 3, True)} | {_f(a.get('mad'), 3)} |")
        if rot:
            row += (f" {_e(a.get('rotation_error_mean'))} / {_e(a.get('rotation_error_max'))} | "
                    f"{_f(a.get('rotation_degenerate_share'), 0, True)} | {_e(a.get('rotation_error_mean_regular'))} / "
                    f"{_e(a.get('rotation_error_max_regular'))} |")
        if a.get("errors"):
            row += " " + "; ".join(a["errors"])
        lines.append(row)
    lines.append("")
    return lines


def _assessable(g: dict) -> int:
    """Runs of a group whose convergence can be judged (summaries written before this count had all of them)."""
    return int(g.get("assessable", g["n"]))


def _converged_cell(g: dict) -> str:
    """``converged/assessable``, with the runs too short to judge named; ``n/a`` when none can be judged."""
    a = _assessable(g)
    if a == 0:
        return "n/a (< 5 epochs)"
    return f"{g['converged']}/{a}" + (f" ({g['n'] - a} too short)" if a < g["n"] else "")


def write_outputs(out: Path, rows: list[dict], summary: dict, study) -> None:
    flat = []
    for r in rows:
        f = {k: v for k, v in r.items() if k not in ("curve", "params", "convergence", "test_by_target")}
        f.update({"params": r["params"]["total"], "long_range_params": r["params"]["long_range"],
                  "canonicaliser_params": r["params"].get("canonicaliser", 0),
                  "head_params": r["params"].get("head"),
                  "converged": (r.get("convergence") or {}).get("converged"),
                  "rel_change_last20": (r.get("convergence") or {}).get("rel_change")})
        flat.append(f)
    keys = sorted({k for f in flat for k in f}, key=lambda k: (k not in ("backbone", "arm", "seed"), k))
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


def report_markdown(summary: dict, study) -> str:
    d, o = study.base.data, study.base.optim
    groups = summary["groups"]
    control, wide = summary.get("control", "none"), summary.get("wide", "none-wide")
    unconverged = [f"{g['backbone']} + {g['arm']} ({_assessable(g) - g['converged']} of {_assessable(g)})"
                   for g in groups if g["converged"] < _assessable(g)]
    lines = [
        "# farfield study", "",
        f"Dataset `{d.dataset}` (target `{d.target}`, edges `{d.edges}`, "
        + ("the dataset's official split" if summary.get("split") == "official" else
           f"split {list(d.split)} with split seed(s) {list(study.split_seeds)}")
        + f"); backbones {list(study.backbones)}; {study.seeds} seeds per arm; "
        f"{o.epochs} epochs, lr {o.lr}, {o.scheduler} schedule, batch {d.batch_size}.", "",
        f"Metric: `{summary['metric']}`{' in ' + summary['units'] if summary.get('units') else ''} on the test split at "
        f"the best validation checkpoint ({summary['better']} is better).",
        "Comparisons are paired by seed (same split, same seed, same budget): mean difference, its Student-t 95% "
        "confidence interval over seeds, Cohen's d_z (mean / sd of the paired differences) and the paired t-test "
        "p-value adjusted by Holm's method over the arms compared with the same reference. **better** / "
        "*worse* = adjusted p < 0.05; with fewer than 2 seeds or identical differences no interval or p-value "
        "exists and nothing is flagged.",
        f"Each arm is the base config with the overrides listed below; it is compared with the control `{control}`. "
        f"`{wide}` is the control widened to at least the parameter count of the largest model in the study "
        f"(hidden {summary.get('param_matching', {})}).",
        "s/epoch is the median wall time of a training epoch over seeds, with the CPU time in brackets "
        "(comparable across runs that shared the machine); converged = runs whose best validation metric improved "
        "by at most 2% during the last 20% of epochs.", "",
        format_table(summary), "", *_arms_table(groups), ""]
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
            lines += [f"| arm | oracle fraction | change vs {control} |", "|---|---|---|"]
            lines += [f"| {g['backbone']} + {g['arm']} | {g['oracle_fraction']:.2f} | "
                      f"{g.get('change_vs_control_pct', float('nan')):+.1f}% |" for g in groups]
            lines.append("")
    ident = summary.get("by_identity")
    if ident:
        cut = list(next(iter(ident.values())))
        lines += [f"Test `{summary['metric'].split('/')[-1]}` by sequence identity to the training set (test chains "
                  "below each cut-off; mean over seeds; n = chains):", "",
                  "| backbone + arm | " + " | ".join(f"<{c} (n={ident[next(iter(ident))][c]['n']})" for c in cut)
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
                  "| backbone + arm | " + " | ".join(f"`{t}`" for t in targets) + " |",
                  "|---" * (len(targets) + 1) + "|"]
        for label, per in per_target.items():
            lines.append(f"| {label} | " + " | ".join(
                f"{per[t]['mae']['mean']:.4g} +- {per[t]['mae']['sd']:.2g}" if t in per else "-" for t in targets) + " |")
        lines.append("")
    if any("variance" in g for g in groups):
        lines += ["| arm | seed sd | split sd |", "|---|---|---|"]
        lines += [f"| {g['arm']} | {g['variance']['seed_sd']:.2f} | {g['variance']['split_sd']:.2f} |"
                  for g in groups if "variance" in g]
        lines.append("")
    if unconverged:
        lines.append(f"**Still improving in the last 20% of epochs:** {', '.join(unconverged)}: train longer.")
    if summary.get("wall_time_warning"):
        lines.append("**Wall times varied widely** (the machine was shared?): " + "; ".join(summary["wall_time_warning"])
                     + ". Compare CPU seconds instead.")
    if summary.get("failed"):
        lines.append("**Failed runs:** " + "; ".join(f"{f['backbone']} + {f['arm']} seed {f['seed']}: {f['error']}"
                                                     for f in summary["failed"]))
    lines += diagnostics_section(summary)
    lines += ["", "![metric](metric.png) ![learning curves](curves.png) ![cost](cost.png)"
              + (" ![influence](influence.png)" if (summary.get("diagnostics") or {}).get("arms") else ""), ""]
    return "\n".join(lines)


def _colors(groups) -> list[str]:
    """One colour per arm name across all plots (the same arm keeps its colour on every backbone)."""
    names = list(dict.fromkeys(g["arm"] for g in groups))
    return [f"C{names.index(g['arm']) % 10}" for g in groups]


def plots(out: Path, rows: list[dict], summary: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups = summary["groups"]
    single = len({x["backbone"] for x in groups}) == 1
    labels = [g["arm"] if single else f"{g['backbone']}\n{g['arm']}" for g in groups]
    colors = _colors(groups)
    unit = f" ({summary['units']})" if summary.get("units") else ""
    m = summary["metric"]

    fig, ax = plt.subplots(figsize=(1.2 * len(groups) + 3, 3.8))
    ax.bar(range(len(groups)), [g["mean"] for g in groups], yerr=[g["std"] if math.isfinite(g["std"]) else 0 for g in groups],
           color=colors, capsize=4, alpha=0.85)
    for i, g in enumerate(groups):
        pts = list(g["values"].values())
        ax.scatter([i] * len(pts), pts, color="k", s=8, zorder=3)
        t = g.get("vs_control")
        if t and t.get("better"):
            ax.text(i, g["mean"], "*", ha="center", va="bottom", fontsize=14)
    bl = summary.get("baselines") or {}
    if bl:
        for (k, v), ls in zip(next(iter(bl.values())).items(), ("--", ":", "-.", "-")):
            ax.axhline(v.get(m.split("/", 1)[1], np.nan), color="0.3", ls=ls, lw=1, label=v["label"])
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xticks(range(len(groups)), labels, rotation=30, ha="right")
    ax.set_ylabel(f"{m}{unit}")
    ax.set_title("mean +- sd over seeds (dots: seeds; *: better than " + summary.get("control", "none") + ", Holm p < 0.05)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "metric.png", dpi=120)
    plt.close(fig)

    key = m.split("/", 1)[1]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for g, lab, col in zip(groups, labels, colors):
        curves = [r["curve"] for r in rows if r["backbone"] == g["backbone"] and r["arm"] == g["arm"]]
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

    diag = (summary.get("diagnostics") or {}).get("arms") or []
    if any("profile" in a for a in diag):
        colour = dict(zip([(g["backbone"], g["arm"]) for g in groups], colors))
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for a in diag:
            if "profile" not in a:
                continue
            e = np.asarray(a["profile"]["edges"], float)
            mass = np.asarray(a["profile"]["mass"], float)
            ax.step((e[:-1] + e[1:]) / 2, np.where(mass > 0, mass, np.nan), where="mid",
                    color=colour.get((a["backbone"], a["arm"]), "C9"),
                    label=a["arm"] if single else f"{a['backbone']} {a['arm']}")
        cut = next((r.get("reference_cutoff") for a in diag for r in a["runs"] if r.get("reference_cutoff")), None)
        if cut:
            ax.axvline(cut, color="0.4", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("distance between output atom and input atom (A)")
        ax.set_ylabel("share of normalised influence")
        ax.set_title("influence against distance (mean over output atoms; dotted: reference cutoff)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "influence.png", dpi=120)
        plt.close(fig)

    many = len(groups) > 8
    fig, ax = plt.subplots(figsize=(7.5, 4.6) if many else (5.5, 3.8))
    cost = []
    for g, lab, col in zip(groups, labels, colors):
        cpu = [r.get("cpu_sec_per_epoch") or np.nan for r in rows
               if r["backbone"] == g["backbone"] and r["arm"] == g["arm"]]
        cost.append(float(np.nanmedian(cpu)))
        ax.errorbar(np.nanmedian(cpu), g["mean"], yerr=g["std"] if math.isfinite(g["std"]) else 0,
                    xerr=[[np.nanmedian(cpu) - np.nanmin(cpu)], [np.nanmax(cpu) - np.nanmedian(cpu)]],
                    fmt="o", color=col, capsize=3, label=None if many else lab.replace("\n", " "))
        if many:
            ax.annotate(lab.replace("\n", " "), (np.nanmedian(cpu), g["mean"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    front = pareto_front(cost, [g["mean"] for g in groups], summary.get("better", "lower") == "lower")
    if len(front) > 1:
        ax.plot([cost[i] for i in front], [groups[i]["mean"] for i in front], "k--", lw=0.8, zorder=0,
                label="Pareto front")
    ax.set_xlabel("CPU seconds per training epoch (median, range over seeds)")
    ax.set_ylabel(f"{m}{unit}")
    ax.set_title("metric against cost (dashed: arms no other arm beats on both)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "cost.png", dpi=120)
    plt.close(fig)


def pareto_front(cost: list[float], metric: list[float], lower_is_better: bool = True) -> list[int]:
    """Indices of the arms on the cost-metric Pareto front (no other arm is at most as costly and at least as
    good, and strictly better in one), ordered by cost. NaN costs or metrics are left out."""
    pts = [(c, m if lower_is_better else -m, i) for i, (c, m) in enumerate(zip(cost, metric))
           if math.isfinite(c) and math.isfinite(m)]
    front = []
    for c, m, i in pts:
        dominated = any((c2 <= c and m2 <= m) and (c2 < c or m2 < m) for c2, m2, _ in pts)
        if not dominated:
            front.append((c, i))
    return [i for _, i in sorted(front)]

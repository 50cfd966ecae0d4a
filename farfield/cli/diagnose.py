"""``farfield diagnose``: is a task long-range, and how far do trained models look?

``farfield diagnose graphs [CONFIG] [KEY=VALUE ...] --edges SPEC [SPEC ...]``
    graph measures of a dataset under each graph construction (:mod:`farfield.diagnostics.graph_measures`):
    hop diameter, mean shortest path, the share of pairs beyond the cutoff reachable within L hops, total
    effective resistance, spectral gap, Forman and balanced Forman curvature; curvature histograms plotted.

``farfield diagnose model RUN_DIR|STUDY_DIR [...]``
    influence of every input atom on every output of trained models (:mod:`farfield.diagnostics.influence`):
    the range measure in Angstrom and hops, influence against distance, the share of influence from beyond the
    cutoff and beyond L cutoffs, and MAD of the node embeddings per layer (:mod:`farfield.diagnostics.smoothing`).
    A study directory stands for its runs (the first ``--seeds`` seeds of every arm).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(sub) -> None:
    d = sub.add_parser("diagnose", help="range diagnostics: graph measures of a dataset, influence / range / MAD of "
                                        "trained models",
                       description="Is a task long-range, and how far do trained models look? 'graphs' measures a "
                                   "dataset's graphs per construction; 'model' measures trained runs (or every arm "
                                   "of a study directory).")
    dsub = d.add_subparsers(dest="what", metavar="{graphs,model}")
    dsub.required = True
    g = dsub.add_parser("graphs", help="graph measures per edge spec (hop diameter, reachability, effective "
                                       "resistance, spectral gap, curvature)")
    g.add_argument("config", nargs="?", default=None, help="YAML training config for the data (default: the built-in "
                                                          "benchmark)")
    g.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data.* overrides, e.g. data.dataset=qm9")
    g.add_argument("--edges", nargs="+", default=None, metavar="SPEC",
                   help="graph constructions to compare (default: the config's data.edges)")
    g.add_argument("--hops", type=int, default=None, metavar="L",
                   help="reachability within 1..L hops (default: the config's number of layers)")
    g.add_argument("--cutoff", type=float, default=None,
                   help="pairs farther than this (A) are 'long-range' (default: each spec's radius, else 5)")
    g.add_argument("--max-graphs", type=int, default=None, metavar="N", help="use the first N graphs only")
    g.add_argument("--out", default=None, help="write results.json and curvature.png here")
    g.add_argument("--json", action="store_true", help="print the results as JSON")
    g.set_defaults(func=_cmd_graphs)

    m = dsub.add_parser("model", help="influence, range measure and MAD of trained runs")
    m.add_argument("runs", nargs="+", metavar="DIR", help="run directories of farfield train, or study directories")
    m.add_argument("--graphs", type=int, default=8, help="test graphs to differentiate (default 8)")
    m.add_argument("--seeds", type=int, default=1, help="for a study directory: seeds per arm (default 1)")
    m.add_argument("--reference-edges", default=None, metavar="SPEC",
                   help="graph on which hop distances are counted, the same for every run (default: the first "
                        "run's data.edges)")
    m.add_argument("--out", default=None, help="write results.json, influence.png and mad.png here")
    m.add_argument("--json", action="store_true", help="print the results as JSON")
    m.set_defaults(func=_cmd_model)


# -- graphs -------------------------------------------------------------------------------------------------
def _data_config(args):
    from farfield.cli.study import DEFAULT_STUDY, _DATASET_KEYS, _split_config
    from farfield.train.config import load_config
    _split_config(args)
    other = any(o.startswith("data.dataset=") for o in args.overrides)
    base = [] if args.config else [o for o in DEFAULT_STUDY if not (other and o.startswith(_DATASET_KEYS))]
    return load_config(args.config, base + list(args.overrides))


def _graphs_of(cfg, spec: str, limit: int | None):
    """Every graph of the dataset (train, val, test) with ``spec``'s edges, streamed."""
    from dataclasses import replace

    from farfield.train.data import GraphDataModule
    data = replace(cfg.data, edges=spec)
    dm = GraphDataModule(data, spec, seed=0, standardize=False)
    dm.setup()
    n = 0
    for part in (dm.train, dm.val, dm.test):
        for i in range(len(part)):
            if limit is not None and n >= limit:
                return
            n += 1
            yield part[i]


def _count(cfg, limit):
    from farfield.train.data import GraphDataModule
    dm = GraphDataModule(cfg.data, cfg.data.edges, seed=0, standardize=False)
    dm.setup()
    n = len(dm.train) + len(dm.val) + len(dm.test)
    return min(n, limit) if limit is not None else n


class _Sized:
    def __init__(self, it, n):
        self.it, self.n = it, n

    def __iter__(self):
        return iter(self.it)

    def __len__(self):
        return self.n


def graph_table(results: dict) -> str:
    L = max(r["max_hops"] for r in results.values())
    head = ("| edges | graphs | mean degree | hop diameter | mean shortest path | "
            f"pairs beyond cutoff reachable in {L} hops | total eff. resistance | spectral gap | Forman (aug.) mean | "
            "balanced Forman mean | BFc < 0 |")
    lines = [head, "|---" * 11 + "|"]
    for spec, r in results.items():
        dist = r["distributions"]

        def v(k, nd=2):
            x = (dist.get(k) or {}).get("mean")
            return f"{x:.{nd}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"
        lines.append(f"| `{spec}` | {r['graphs']} | {v('mean_degree', 1)} | {v('diameter_hops', 1)} | "
                     f"{v('mean_shortest_path')} | {v(f'reachable_within_{L}', 3)} | {v('effective_resistance_total', 0)} | "
                     f"{v('spectral_gap', 3)} | {v('forman_augmented_mean', 1)} | {v('balanced_forman_mean', 3)} | "
                     f"{v('balanced_forman_fraction_negative', 2)} |")
    return "\n".join(lines)


def _cmd_graphs(args) -> int:
    from farfield.diagnostics.graph_measures import dataset_graph_measures
    from farfield.errors import ConfigError
    from farfield.train.run import local_cutoff
    cfg = _data_config(args)
    specs = args.edges or [cfg.data.edges]
    hops = args.hops if args.hops is not None else int(cfg.model.backbone_options.get("num_layers", 3))
    if hops < 1:
        raise ConfigError(f"--hops must be >= 1, got {hops}")
    if args.max_graphs is not None and args.max_graphs < 1:
        raise ConfigError(f"--max-graphs must be >= 1, got {args.max_graphs}")
    n = _count(cfg, args.max_graphs)
    results = {}
    for spec in specs:
        cut = args.cutoff or local_cutoff(spec) or 5.0
        results[spec] = dataset_graph_measures(_Sized(_graphs_of(cfg, spec, args.max_graphs), n), cut, hops,
                                               progress=not args.json)
        results[spec]["max_hops"] = hops
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"dataset": cfg.data.dataset, "graphs": results}, indent=2))
        _curvature_plot(out / "curvature.png", results)
    if args.json:
        print(json.dumps({"dataset": cfg.data.dataset, "graphs": results}, indent=2))
    else:
        print(graph_table(results))
        if args.out:
            print(f"\nresults: {args.out}/results.json, curvature histograms: {args.out}/curvature.png")
    return 0


def _curvature_plot(path: Path, results: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in zip(axes, ("forman_augmented", "balanced_forman"),
                              ("augmented Forman curvature", "balanced Forman curvature")):
        for i, (spec, r) in enumerate(results.items()):
            h = r["curvature_histograms"][key]
            e = np.asarray(h["bin_edges"], float)
            c = np.asarray(h["counts"], float)
            if c.sum():
                keep = np.nonzero(c)[0]
                lo, hi = keep.min(), keep.max() + 1
                ax.step((e[lo:hi] + e[lo + 1:hi + 1]) / 2, c[lo:hi] / c.sum(), where="mid", color=f"C{i}", label=spec)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("curvature per edge")
        ax.set_ylabel("share of edges")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- model --------------------------------------------------------------------------------------------------
def _run_dirs(paths: list[str], seeds: int) -> list[tuple[str, str]]:
    """(label, run directory) for every given run, or every arm's first ``seeds`` runs of a study directory."""
    from farfield.errors import InputError
    out = []
    for p in map(Path, paths):
        if (p / "config.yaml").is_file():
            out.append((p.name if p.name else str(p), str(p)))
        elif (p / "results.json").is_file():
            try:
                runs = json.loads((p / "results.json").read_text())["runs"]
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(str(p / "results.json"), f"is not a farfield study result ({e})") from None
            for r in runs:
                if r.get("seed", 0) < seeds and r.get("split_seed", 0) == min(x.get("split_seed", 0) for x in runs):
                    label = f"{r['backbone']} + {r.get('arm', r.get('strategy'))}" + (f" seed {r['seed']}" if seeds > 1 else "")
                    out.append((label, r["run_dir"]))
        else:
            raise InputError(str(p), "is neither a run directory (config.yaml) nor a study directory (results.json)")
    return out


def _cmd_model(args) -> int:
    from tqdm import tqdm

    from farfield.errors import ConfigError
    from farfield.study.diagnostics import cached_diagnostics
    if args.graphs < 1:
        raise ConfigError(f"--graphs must be >= 1, got {args.graphs}")
    runs = _run_dirs(args.runs, args.seeds)
    ref = args.reference_edges
    results = {}
    for label, run in tqdm(runs, desc="diagnose", disable=args.json):
        if ref is None:
            from farfield.train.config import load_config
            ref = load_config(Path(run) / "config.yaml").data.edges
        results[label] = cached_diagnostics(run, ref, args.graphs)        # cached in the run directory
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        _model_plots(out, results)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(model_table(results, ref))
        if args.out:
            print(f"\nresults: {args.out}/results.json; plots: influence.png, mad.png")
    return 0


def model_table(results: dict, ref: str) -> str:
    def f(x, nd=2, pct=False):
        if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
            return "n/a"
        return f"{100 * x:.{nd}f}%" if pct else f"{x:.{nd}f}"
    graphs = {r.get("hop_graph", ref) for r in results.values()}
    hop = f"`{ref}`" if graphs == {ref} else " / ".join(sorted(f"`{g}`" if g == ref else g for g in graphs))
    lines = [f"| run | range (A) | range (hops on {hop}) | beyond cutoff | beyond L cutoffs | MAD per layer "
             "(embedding first) | backward passes | s |", "|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        lines.append(f"| {label} | {f(r.get('range_angstrom'))} | {f(r.get('range_hops'), 3)} | "
                     f"{f(r.get('beyond_cutoff'), 2, True)} | {f(r.get('beyond_L_cutoffs'), 3, True)} | "
                     f"{' '.join(f(x, 3) for x in r.get('mad_per_layer', []))} | {r['backward_passes']} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def _model_plots(out: Path, results: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (label, r) in enumerate(results.items()):
        hp = np.asarray(r["hop_profile"], float)
        axes[0].plot(np.arange(len(hp)), np.where(hp > 0, hp, np.nan), "o-", color=f"C{i % 10}", label=label, ms=3)
        if "profile" in r:
            e = np.asarray(r["profile"]["edges"], float)
            mass = np.asarray(r["profile"]["mass"], float)
            axes[1].step((e[:-1] + e[1:]) / 2, np.where(mass > 0, mass, np.nan), where="mid", color=f"C{i % 10}",
                         label=label)
    axes[0].set_xlabel("hops on the reference graph")
    axes[1].set_xlabel("Euclidean distance (A)")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_ylabel("share of normalised influence")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "influence.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (label, r) in enumerate(results.items()):
        m = r.get("mad_per_layer") or []
        ax.plot(range(len(m)), m, "o-", color=f"C{i % 10}", label=label, ms=3)
    ax.set_xlabel("layer (0 = embedding)")
    ax.set_ylabel("MAD")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "mad.png", dpi=120)
    plt.close(fig)

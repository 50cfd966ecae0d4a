"""Where each arm's trained models take their information from: the range measure and the influence profile of
the trained runs, next to how much each arm helped.

For every arm, the runs of the first ``seeds`` seeds are loaded from their best checkpoints and their per-node
outputs differentiated with respect to the input features and coordinates of ``graphs`` test graphs
(:func:`farfield.diagnostics.influence`; node tasks: the predictions; graph tasks: each node's contribution
before pooling; pair tasks: the backbone's node scalars). From the Jacobian-norm influence ``I[u, v]``:

* the **range measure** ``rho_u = sum_v I_u(v) d(u, v)`` of Bamberger et al. (ICML 2025), with ``d`` the
  Euclidean distance (Angstrom; comparable across every arm, including graph constructions) and the hop
  distance on one **reference graph** for all arms (the study's base edges, e.g. ``radius:5.0``), so that arms
  that add edges are not measured on their own, shorter, hop scale;
* the share of influence from atoms beyond the reference cutoff (what a single cutoff cannot see at all) and
  beyond ``L`` cutoffs (what ``L`` layers of the reference graph cannot reach);
* the influence profile against Euclidean distance (1 Angstrom bins), plotted per arm in ``influence.png``;
* the mean average distance of the final node embeddings (MAD, Chen et al., AAAI 2020);
* the **rotation-invariance error** of the trained model's predictions (the seed table's measure, Duval et
  al. 2024): over ``ROTATIONS`` random rotations Q of the test graphs, ``mean |f(Qx) - f(x)| / mean |f(x)|``
  (mean over rotations) and ``max |f(Qx) - f(x)| / max |f(x)|`` (max over rotations), graph predictions
  (node predictions for node tasks), float64, over every graph and over the graphs whose frame is well
  defined (``_regular``: frame averaging / canonicalisation flag the others, ``rotation_degenerate_graphs``).
  Exactly invariant models give ~1e-15; approximate canonicalisers and unconstrained backbones show their
  error.

All in float64, eval mode. Graphs never interact in farfield models, so influence is computed for one output
row of every graph per backward pass (``packed``).
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

__all__ = ["run_diagnostics", "cached_diagnostics", "study_diagnostics", "rotation_error", "DISTANCE_BINS", "ROTATIONS",
           "VERSION"]

#: Euclidean bins of the influence profile (Angstrom)
DISTANCE_BINS = tuple(float(x) for x in range(0, 41))


def _reference_cutoff(edges: str) -> float | None:
    from farfield.train.run import local_cutoff
    try:
        return local_cutoff(edges)
    except Exception:  # noqa: BLE001 - an unusual spec has no reference cutoff
        return None


def _batch(dm, graphs: int):
    from torch_geometric.data import Batch
    part = dm.test if len(dm.test) else dm.val
    n = min(graphs, len(part))
    return Batch.from_data_list([part[i] for i in range(n)])


def run_diagnostics(run_dir, reference_edges: str, graphs: int = 4) -> dict:
    """Diagnostics of one trained run (see the module docstring). Returns plain data (JSON-safe)."""
    import torch

    from farfield.data import fields as F
    from farfield.diagnostics.influence import (euclidean_distances, hop_distances, influence, influence_profile,
                                                load_trained, model_fn, range_measure)
    from farfield.diagnostics.influence import _to_dtype
    from farfield.diagnostics.smoothing import mad, mad_per_layer
    from farfield.graphs import parse_edge_spec

    t0 = time.perf_counter()
    module, cfg, dm = load_trained(run_dir, with_data=True)
    batch = _batch(dm, graphs)
    pair = bool(getattr(module, "pair", False))
    kind = "embedding" if pair else "node"
    fn = model_fn(module, kind)
    with torch.no_grad():
        emb = model_fn(module, "embedding")(batch)
    has_pos = getattr(batch, F.POS, None) is not None
    wrt = [F.X_S] + ([F.POS] if has_pos and getattr(fn.module.model, "uses_positions", True) else [])
    inf = influence(fn, batch, wrt, level="node", packed=True)
    try:                                   # hops on one reference graph for every arm (see the module docstring)
        ref = parse_edge_spec(reference_edges)(batch[F.POS], batch.batch).edge_index if has_pos else None
    except Exception:  # noqa: BLE001 - a spec without a geometric builder: the model's own edges
        ref = None
    hops = hop_distances(batch, ref)
    cut = _reference_cutoff(reference_edges) if has_pos else None
    L = int(getattr(fn.module.model, "num_layers", 0) or 0)
    out = {"run_dir": str(run_dir), "graphs": inf.num_graphs, "nodes": int(inf.ptr[-1]), "output": kind,
           "inputs": list(wrt), "backward_passes": inf.backward_passes, "layers": L,
           "hop_graph": reference_edges if ref is not None else "the model's own edges"}
    # influence of a node = its features' plus its coordinates' Jacobian norms
    total = [sum(inf[name][g].double() for name in wrt) for g in range(inf.num_graphs)]
    r_hop = range_measure(total, hops, unreachable="exclude")
    out.update({"range_hops": r_hop.mean,
                "unreachable_share": float(r_hop.unreachable.mean()) if r_hop.unreachable.numel() else 0.0,
                "hop_profile": [float(x) for x in influence_profile(total, hops).mass],
                "mad": mad(emb, batch.batch),
                "mad_per_layer": mad_per_layer(fn.module, _to_dtype(batch, torch.float64))})
    if has_pos:
        eu = euclidean_distances(batch)
        prof = influence_profile(total, eu, list(DISTANCE_BINS))
        out.update({"range_angstrom": range_measure(total, eu).mean,
                    "profile": {"edges": list(DISTANCE_BINS), "mass": [float(x) for x in prof.mass]}})
    if cut:
        beyond, beyond_l = [], []
        for a, d in zip(total, eu):
            s = a.sum(1, keepdim=True)
            keep = s.squeeze(1) > 0
            if bool(keep.any()):
                p = a[keep] / s[keep]
                beyond.append(float((p * (d[keep] > cut)).sum(1).mean()))
                if L:
                    beyond_l.append(float((p * (d[keep] > L * cut)).sum(1).mean()))
        out["beyond_cutoff"] = float(np.mean(beyond)) if beyond else math.nan
        out["beyond_L_cutoffs"] = float(np.mean(beyond_l)) if beyond_l else math.nan
        out["reference_cutoff"] = cut
    if has_pos and getattr(fn.module.model, "uses_positions", True):
        out.update(rotation_error(fn.module, batch))
    out["seconds"] = time.perf_counter() - t0
    return out


#: random rotations of the rotation-invariance error
ROTATIONS = 8


def rotation_error(module, batch, rotations: int = ROTATIONS, seed: int = 0) -> dict:
    """The rotation-invariance error of a (float64, eval-mode) TaskModule's predictions on ``batch``: see the
    module docstring. Returns ``rotation_error_mean`` / ``rotation_error_max`` over every graph (what a user
    gets), the same over the graphs whose frame is well defined (``..._regular``; equal when the model has no
    frames) and ``rotation_degenerate_graphs`` (how many were flagged)."""
    import torch

    from farfield.diagnostics.influence import _to_dtype
    from farfield.symmetry.transforms import random_rotation, transform_batch
    b = _to_dtype(batch, torch.float64)
    framed = [m for m in module.model.modules() if hasattr(m, "degenerate_graphs")]
    with torch.no_grad():
        degen = framed[0].degenerate_graphs(b) if framed else torch.zeros(b.num_graphs, dtype=torch.bool)
        ref = module(b)
        node_level = ref.shape[0] == b.num_nodes and ref.shape[0] != b.num_graphs
        regular = ~(degen[b.batch] if node_level else degen)
        gen = torch.Generator().manual_seed(seed)
        errs = {"": ([], []), "_regular": ([], [])}
        for _ in range(rotations):
            got = module(transform_batch(b, random_rotation(gen, torch.float64)))
            for tag, keep in (("", torch.ones_like(regular)), ("_regular", regular)):
                if not bool(keep.any()):
                    continue
                d, r = (got - ref).abs()[keep], ref.abs()[keep]
                errs[tag][0].append(float(d.mean() / r.mean().clamp(min=1e-300)))
                errs[tag][1].append(float(d.max() / r.max().clamp(min=1e-300)))
    out = {"rotation_degenerate_graphs": int(degen.sum()), "rotation_graphs": int(b.num_graphs)}
    for tag, (means, maxes) in errs.items():
        out[f"rotation_error_mean{tag}"] = float(np.mean(means)) if means else math.nan
        out[f"rotation_error_max{tag}"] = float(np.max(maxes)) if maxes else math.nan
    return out


def _mean(xs):
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


#: bumped when what :func:`run_diagnostics` computes changes (cached results of older versions are recomputed)
VERSION = 2


def cached_diagnostics(run_dir: str, reference_edges: str, graphs: int) -> dict:
    """:func:`run_diagnostics` of a run, cached in ``run_dir/diagnostics.json`` (keyed by the reference edges, the
    number of graphs and :data:`VERSION`), so that re-running a study costs nothing."""
    import json
    from pathlib import Path
    f = Path(run_dir) / "diagnostics.json"
    key = {"version": VERSION, "reference_edges": reference_edges, "graphs": graphs}
    if f.is_file():
        try:
            d = json.loads(f.read_text())
            if d.get("key") == key:
                return d["result"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    res = run_diagnostics(run_dir, reference_edges, graphs)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "result": res}))
    tmp.replace(f)
    return res


def _job(args):
    import torch
    torch.set_num_threads(1)
    run_dir, ref, graphs = args
    try:
        return cached_diagnostics(run_dir, ref, graphs), None
    except Exception as e:  # noqa: BLE001 - reported per run
        return None, f"{type(e).__name__}: {e}"


def study_diagnostics(rows: list[dict], study, seeds: int = 1, graphs: int = 4, quiet: bool = False,
                      log=None) -> dict:
    """Diagnostics of every arm of a study (its runs of the first ``seeds`` seeds, first split seed), as
    ``{"reference_edges", "graphs", "arms": [{"backbone", "arm", "runs": [...], <means>}], "seconds"}``, computed
    in ``study.workers`` processes and cached in each run's directory. A run that cannot be diagnosed is reported
    with its error; the report goes on."""
    log = log or sys.stderr
    t0 = time.perf_counter()
    ref = study.base.data.edges
    split0 = min(r["split_seed"] for r in rows)
    chosen = [r for r in rows if r["split_seed"] == split0 and r["seed"] < seeds]
    jobs = [(r["run_dir"], ref, graphs) for r in chosen]
    if study.workers > 0 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(min(study.workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
            results = list(ex.map(_job, jobs))
    else:
        results = [_job(j) for j in jobs]
    by = {}
    for r, (res, err) in zip(chosen, results):
        e = by.setdefault((r["backbone"], r["arm"]), {"runs": [], "errors": []})
        if res is not None:
            e["runs"].append(res)
        else:
            e["errors"].append(f"seed {r['seed']}: {err}")
    arms = []
    for (b, arm), e in by.items():
        done = e["runs"]
        entry = {"backbone": b, "arm": arm, **e}
        for k in ("range_angstrom", "range_hops", "beyond_cutoff", "beyond_L_cutoffs", "mad", "unreachable_share",
                  "rotation_error_mean", "rotation_error_mean_regular"):
            entry[k] = _mean([d.get(k) for d in done])
        for k in ("rotation_error_max", "rotation_error_max_regular"):
            rmax = [d[k] for d in done if d.get(k) is not None]
            entry[k] = float(np.nanmax(rmax)) if rmax and np.isfinite(rmax).any() else math.nan
        if any(d.get("rotation_graphs") for d in done):
            entry["rotation_degenerate_share"] = _mean([d["rotation_degenerate_graphs"] / d["rotation_graphs"]
                                                        for d in done if d.get("rotation_graphs")])
        if done and all("profile" in d for d in done):
            entry["profile"] = {"edges": done[0]["profile"]["edges"],
                                "mass": [float(x) for x in np.nanmean([d["profile"]["mass"] for d in done], 0)]}
        arms.append(entry)
    if not quiet:
        print(f"[study] diagnostics of {len(jobs)} runs in {time.perf_counter() - t0:.0f} s", file=log, flush=True)
    return {"reference_edges": ref, "graphs": graphs, "seeds": seeds, "arms": arms,
            "seconds": time.perf_counter() - t0}

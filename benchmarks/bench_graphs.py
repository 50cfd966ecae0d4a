"""Graph-construction benchmark: farfield's builders against references on the same points, same run.

* radius: ``GraphBuilder('radius:R')`` (full directed edge list as a torch tensor) vs scipy
  ``cKDTree(x).query_pairs(R, output_type='ndarray')`` (half list, NumPy, no conversion).
* knn: ``GraphBuilder('knn:K')`` (torch edge list, self removed) vs ``cKDTree(x).query(x, K + 1)`` (raw arrays).
* random: ``GraphBuilder('random:N')`` vs a plain dense NumPy Gumbel-top-k (``np.argpartition`` on
  ``-3 log d + G``) on the same points. Both are O(n^2) per graph; at the largest size the input is a
  batch of graphs (stated in the output), since one dense 100k x 100k key matrix is out of reach for both.

* periodic (``--periodic``): :func:`farfield.graphs.periodic.periodic_radius_graph` (vesin, every image,
  lattice shifts, sorted full directed list as torch tensors) vs scipy ``cKDTree(x, boxsize=L).query_pairs(R)``
  (orthorhombic boxes only, half list, minimum image, no shifts) on the same cubic box; edge counts are
  checked equal (twice the reference's pairs).

* device kernels (``--device cpu`` or ``--device cuda``): the torch kernels that build edges on the batch's
  device (``GraphBuilder(..., backend='device')``: radius by cell list, kNN by a dense row-chunked search) against
  the host path (cKDTree, the reference) and vesin-torch's neighbour list (when installed, on the same device) on
  the same points; edge sets checked identical (up to 20k atoms) and timed with synchronisation.

Points: uniform clouds at protein atom density (0.1 atoms / A^3, with hydrogens), plus the real 1IGY
antibody (12,750 atoms) when FARFIELD_TEST_DATA is available. Prints milliseconds (best of --repeat)
and ratios ours / reference; ``--json`` for machines.

    python benchmarks/bench_graphs.py [--sizes 1000 10000 100000] [--repeat 5] [--periodic] [--json]
    python benchmarks/bench_graphs.py --device cpu --threads 1 [--dense-max 10000]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from farfield.graphs import GraphBuilder


def best_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def cloud(n, seed=0, density=0.1):
    side = (n / density) ** (1 / 3)
    return np.random.default_rng(seed).uniform(0, side, (n, 3))


def dense_gumbel_reference(pos, batch, n_edges, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for g in np.unique(batch):
        idx = np.flatnonzero(batch == g)
        x = pos[idx]
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(d, 1.0)
        key = -3.0 * np.log(np.maximum(d, 1e-3)) - np.log(-np.log(rng.uniform(size=d.shape)))
        np.fill_diagonal(key, -np.inf)
        top = np.argpartition(-key, n_edges, axis=1)[:, :n_edges]
        out.append(np.stack([idx[top.ravel()], np.repeat(idx, n_edges)]))
    return np.concatenate(out, axis=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--radius", type=float, default=4.5)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--random", type=int, default=10, help="random edges per node")
    ap.add_argument("--random-graph-max", type=int, default=10000,
                    help="largest single graph for the O(n^2) random builders; bigger inputs are batched")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--periodic", action="store_true", help="only the periodic radius graph against cKDTree(boxsize)")
    ap.add_argument("--device", default=None, help="time the device kernels on this torch device (cpu, cuda)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--dense-max", type=int, default=10000, help="largest graph for the dense device kNN")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.periodic:
        return periodic(args)
    if args.device:
        return device_kernels(args)

    inputs = [(f"cloud {n}", cloud(n)) for n in args.sizes]
    data = Path(os.environ.get("FARFIELD_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if (data / "structures/1igy.pdb").exists():
        from farfield.io import read_structure

        inputs.append(("1IGY (real)", read_structure(data / "structures/1igy.pdb").coords))

    rows = []
    radius = GraphBuilder(f"radius:{args.radius:g}")
    knn = GraphBuilder(f"knn:{args.k}")
    rand = GraphBuilder(f"random:{args.random},exclude=0")
    for name, x in inputs:
        n = len(x)
        r = {"input": name, "atoms": n}
        r["radius_ref_ms"] = best_ms(lambda: cKDTree(x).query_pairs(args.radius, output_type="ndarray"), args.repeat)
        r["radius_ours_ms"] = best_ms(lambda: radius(x), args.repeat)
        r["radius_edges"] = radius(x).num_edges
        r["knn_ref_ms"] = best_ms(lambda: cKDTree(x).query(x, args.k + 1), args.repeat)
        r["knn_ours_ms"] = best_ms(lambda: knn(x), args.repeat)
        g = max(1, -(-n // args.random_graph_max))
        batch = np.repeat(np.arange(g), -(-n // g))[:n]
        r["random_graphs"] = g
        rep = max(1, args.repeat // 2)
        r["random_ref_ms"] = best_ms(lambda: dense_gumbel_reference(x, batch, args.random), rep) if n <= 20000 else None
        r["random_ours_ms"] = best_ms(lambda: rand(x, batch), rep)
        rows.append(r)
        if not args.json:
            print(_row(r, args), flush=True)
    if args.json:
        print(json.dumps({"radius": args.radius, "k": args.k, "random": args.random, "rows": rows}, indent=2))


def _timed(fn, repeat, dev):
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run():
        out = fn()
        sync()
        return out
    return best_ms(run, repeat)


def device_kernels(args):
    """Device kernels vs the host path (cKDTree) vs vesin-torch, same points, same run."""
    dev = torch.device(args.device)
    try:
        from vesin.torch import NeighborList
    except ImportError:
        NeighborList = None
    rows = []
    for n in args.sizes:
        x = cloud(n)
        xt = torch.from_numpy(x).to(dev)
        r = {"atoms": n, "device": str(dev), "threads": torch.get_num_threads()}
        for spec in (f"radius:{args.radius:g}", f"knn:{args.k}"):
            kind = spec.split(":")[0]
            if kind == "knn" and n > args.dense_max:
                continue
            gb = GraphBuilder(spec)
            host = gb(x, backend="host")
            ours = gb(xt, backend="device")
            r[f"{kind}_edges"] = host.num_edges
            if n <= 20000:
                a = set(zip(*host.edge_index.numpy().tolist()))
                b = set(zip(*ours.edge_index.cpu().numpy().tolist()))
                r[f"{kind}_identical"] = a == b
            else:
                r[f"{kind}_identical"] = host.num_edges == ours.num_edges
            r[f"{kind}_host_ms"] = best_ms(lambda: gb(x, backend="host"), args.repeat)
            r[f"{kind}_device_ms"] = _timed(lambda: gb(xt, backend="device"), args.repeat, dev)
        if NeighborList is not None:
            nl = NeighborList(cutoff=args.radius, full_list=True)
            box = torch.zeros(3, 3, dtype=torch.float64, device=dev)
            r["radius_vesin_ms"] = _timed(lambda: nl.compute(xt, box, False, "ij"), args.repeat, dev)
        rows.append(r)
        if not args.json:
            line = (f"{n:>7} atoms on {dev} ({r['threads']} threads) | radius {args.radius:g}: {r['radius_edges']:>9} "
                    f"edges, identical {r['radius_identical']}, device {r['radius_device_ms']:9.1f} ms, cKDTree host "
                    f"{r['radius_host_ms']:9.1f} ms, ratio {r['radius_device_ms'] / r['radius_host_ms']:5.2f}x")
            if "radius_vesin_ms" in r:
                line += f", vesin-torch {r['radius_vesin_ms']:9.1f} ms"
            if "knn_device_ms" in r:
                line += (f" | knn {args.k}: identical {r['knn_identical']}, device {r['knn_device_ms']:9.1f} ms, "
                         f"host {r['knn_host_ms']:9.1f} ms, ratio {r['knn_device_ms'] / r['knn_host_ms']:5.2f}x")
            print(line, flush=True)
    if args.json:
        print(json.dumps({"radius": args.radius, "k": args.k, "device_kernels": rows}, indent=2))
    return 0


def periodic(args):
    from farfield.graphs.periodic import periodic_radius_graph
    rows = []
    for n in args.sizes:
        side = (n / 0.1) ** (1 / 3)
        x = np.random.default_rng(0).uniform(0, side, (n, 3))
        cell = torch.eye(3, dtype=torch.float64) * side
        pos = torch.from_numpy(x)
        ours = best_ms(lambda: periodic_radius_graph(pos, cell, args.radius), args.repeat)
        ref = best_ms(lambda: cKDTree(x, boxsize=side).query_pairs(args.radius, output_type="ndarray"), args.repeat)
        e = periodic_radius_graph(pos, cell, args.radius)[0].shape[1]
        p = len(cKDTree(x, boxsize=side).query_pairs(args.radius, output_type="ndarray"))
        rows.append({"atoms": n, "edges": e, "ref_pairs": p, "ours_ms": ours, "ref_ms": ref, "equal": e == 2 * p})
        if not args.json:
            print(f"periodic box {n:>7} atoms, {e:>9} edges ({'= 2 x' if e == 2 * p else '!= 2 x'} reference pairs): "
                  f"ours {ours:9.1f} ms, cKDTree(boxsize) {ref:9.1f} ms, ratio {ours / ref:5.2f}x", flush=True)
    if args.json:
        print(json.dumps({"radius": args.radius, "periodic": rows}, indent=2))
    return 0


_HEADER_DONE = False


def _row(r, args):
    global _HEADER_DONE
    ratio = lambda a, b: f"{a / b:5.2f}x" if b else "  n/a"
    head = ""
    if not _HEADER_DONE:
        _HEADER_DONE = True
        head = (f"radius {args.radius:g} A (ref: cKDTree.query_pairs) | knn k={args.k} (ref: cKDTree.query) | "
                f"random n={args.random} (ref: dense NumPy Gumbel-top-k)\n"
                f"{'input':<14} {'atoms':>7} {'edges':>9} | {'radius ours':>11} {'ref':>8} {'ratio':>6} | "
                f"{'knn ours':>9} {'ref':>8} {'ratio':>6} | {'random ours':>11} {'ref':>9} {'ratio':>6} graphs\n")
    rr = r["random_ref_ms"]
    return (head + f"{r['input']:<14} {r['atoms']:>7} {r['radius_edges']:>9} | {r['radius_ours_ms']:>9.2f}ms "
            f"{r['radius_ref_ms']:>6.2f}ms {ratio(r['radius_ours_ms'], r['radius_ref_ms'])} | "
            f"{r['knn_ours_ms']:>7.2f}ms {r['knn_ref_ms']:>6.2f}ms {ratio(r['knn_ours_ms'], r['knn_ref_ms'])} | "
            f"{r['random_ours_ms']:>9.1f}ms {(f'{rr:7.1f}ms' if rr else '    n/a  ')} "
            f"{ratio(r['random_ours_ms'], rr) if rr else '  n/a'} {r['random_graphs']:>3}")


if __name__ == "__main__":
    sys.exit(main())

"""Corpus build benchmark: throughput and peak memory of :func:`farfield.datasets.corpus.build_corpus` plus one
full streaming pass over the store, at several corpus sizes, so that memory is seen to stay flat as the corpus
grows.

The corpus is generated at run time (nothing is committed): copies of the 50 TS50 chains
(``$FARFIELD_TEST_DATA/proteins_backbone/ts50.json``: sequence plus N, CA, C, O coordinates), each rigidly
rotated and translated and perturbed by Gaussian noise (0.05 A), written as backbone-only PDB files; every tenth
file is named ``AF-...`` and carries a synthetic pLDDT in its B-factor column, so the pLDDT path is exercised.

Each (size, workers) run is a fresh Python process with a fresh cache that builds the corpus and then reads every
graph once through ``ShardedGraphStore(folder, cached_shards=1)``; it reports items/s and residues/s of the build,
the pass's time, the process's resident memory after imports (``VmRSS``) and its peak (``VmHWM``, build plus
pass), and the largest peak of its worker processes (``RUSAGE_CHILDREN``; workers > 1).

    python benchmarks/bench_corpus.py [--sizes 200 2000] [--workers 1 2] [--shard-size 256] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THREE = {"A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY", "H": "HIS",
         "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER", "T": "THR", "W": "TRP",
         "Y": "TYR", "V": "VAL"}
ATOMS = ("N", "CA", "C", "O")


def data_root() -> Path:
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return Path(os.environ.get("FARFIELD_TEST_DATA", default))


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def pdb_text(seq: str, coords: np.ndarray, bfactor: np.ndarray) -> str:
    """Backbone-only PDB text: coords [L, 4, 3] (N, CA, C, O), one B-factor per residue."""
    lines, serial = [], 1
    for i, aa in enumerate(seq):
        for j, atom in enumerate(ATOMS):
            x, y, z = coords[i, j]
            lines.append(f"ATOM  {serial:5d}  {atom:<3s} {THREE.get(aa, 'UNK')} A{i + 1:4d}    "
                         f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00{bfactor[i]:6.2f}           {atom[0]}")
            serial += 1
    return "\n".join(lines + ["TER", "END"]) + "\n"


def generate(folder: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` perturbed copies of the TS50 chains into ``folder``; returns the number of residues."""
    chains = json.loads((data_root() / "proteins_backbone" / "ts50.json").read_text())
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    residues = 0
    for i in range(n):
        c = chains[i % len(chains)]
        xyz = np.asarray(c["coords"], dtype=np.float64)
        centre = xyz[:, 1].mean(0)
        xyz = (xyz - centre) @ random_rotation(rng).T + rng.uniform(-50, 50, 3) + rng.normal(0, 0.05, xyz.shape)
        model = i % 10 == 0
        b = np.clip(rng.normal(80, 10, len(c["seq"])), 0, 100) if model else np.zeros(len(c["seq"]))
        name = f"AF-SYN{i:06d}-F1-model_v4.pdb" if model else f"syn_{i:06d}_{c['name']}.pdb"
        (folder / name).write_text(pdb_text(c["seq"], xyz, b))
        residues += len(c["seq"])
    return residues


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(folder: str, cache: str, workers: int, shard_size: int) -> dict:
    """One run in this (fresh) process: build, then one full pass with one shard in memory."""
    import warnings

    from farfield.datasets.cache import ShardedGraphStore
    from farfield.datasets.corpus import CorpusConfig, build_corpus

    rss0 = _status_mb("VmRSS")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = build_corpus(folder, CorpusConfig(shard_size=shard_size), cache=cache, workers=workers,
                             progress=False)
    t1 = time.perf_counter()
    lazy = ShardedGraphStore(store.folder, cached_shards=1)
    nodes = sum(g.num_nodes for g in lazy)
    t2 = time.perf_counter()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"items": len(store), "residues": int(nodes), "shards": len(store.manifest["shards"]),
            "loads": lazy.loads, "build_s": t1 - t0, "pass_s": t2 - t1, "rss_after_imports_mb": rss0,
            "peak_mb": _status_mb("VmHWM"), "workers_peak_mb": kids if workers > 1 else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=4, metavar=("FOLDER", "CACHE", "WORKERS", "SHARD_SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        f, c, w, s = args.child
        print(json.dumps(child(f, c, int(w), int(s))))
        return 0
    if not (data_root() / "proteins_backbone" / "ts50.json").is_file():
        print(f"TS50 chains not found under {data_root()} (set FARFIELD_TEST_DATA)", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="farfield-bench-corpus-") as tmp:
        for n in args.sizes:
            folder = Path(tmp) / f"corpus_{n}"
            t = time.perf_counter()
            generate(folder, n)
            gen_s = time.perf_counter() - t
            for w in args.workers:
                cache = Path(tmp) / f"cache_{n}_{w}"
                out = subprocess.run([sys.executable, __file__, "--child", str(folder), str(cache), str(w),
                                      str(args.shard_size)], capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                r.update(size=n, workers=w, generate_s=gen_s, items_per_s=r["items"] / r["build_s"],
                         residues_per_s=r["residues"] / r["build_s"])
                rows.append(r)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"CPU cores: {os.cpu_count()}; shard_size {args.shard_size}; preset gvp; chains each")
    print("| items | workers | build s | items/s | residues/s | pass s | shards (loads) | RSS after imports MB "
          "| peak RSS MB | worker peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        wk = f"{r['workers_peak_mb']:.0f}" if r["workers_peak_mb"] is not None else "-"
        print(f"| {r['items']} | {r['workers']} | {r['build_s']:.1f} | {r['items_per_s']:.0f} | "
              f"{r['residues_per_s']:.0f} | {r['pass_s']:.1f} | {r['shards']} ({r['loads']}) | "
              f"{r['rss_after_imports_mb']:.0f} | {r['peak_mb']:.0f} | {wk} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

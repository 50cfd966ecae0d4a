"""The ``farfield`` command line.

``farfield inspect [FILE] [--level atom|residue] [--edges SPEC] [--json]`` reads a structure, builds its
graph and reports atoms, residues, chains, models, edges per type, degrees, edge lengths, the hop
diameter and the fraction of pairs beyond the cutoff reachable within L hops. Without FILE it inspects
farfield's built-in example peptide.

Errors in the input or options print one line ``farfield: error: ...`` (no traceback) and exit with 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from farfield import __version__
from farfield.errors import FarfieldError

__all__ = ["main", "build_parser"]


def _add_read_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("atom selection")
    g.add_argument("--model", type=int, default=1, help="1-based model position (default: 1, the first)")
    g.add_argument("--altloc", choices=["occupancy", "first", "all"], default="occupancy",
                   help="alternate locations: highest mean occupancy per residue (default), first label, or all")
    g.add_argument("--no-hydrogens", action="store_true", help="drop hydrogen atoms")
    g.add_argument("--waters", action="store_true", help="keep water molecules (dropped by default)")
    g.add_argument("--no-hetero", action="store_true", help="drop hetero groups (ligands, ions)")
    g.add_argument("--chains", default=None, help="comma-separated chain ids to keep (default: all)")
    g.add_argument("--item", type=int, default=0, help="item index when FILE is an ATOM3D LMDB directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="farfield", description="Geometric GNNs and long-range studies on 3D "
                                                                   "molecules and proteins.")
    parser.add_argument("--version", action="version", version=f"farfield {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("inspect", help="read a structure, build its graph and report graph statistics",
                       description="Read a structure, build its graph and report atoms, residues, chains, edges "
                                   "per type, degrees, edge lengths, hop diameter and far-field reachability.")
    p.add_argument("file", nargs="?", default=None,
                   help="PDB/mmCIF/BinaryCIF/SDF/XYZ file (optionally .gz) or ATOM3D LMDB directory; "
                        "default: the built-in example peptide")
    p.add_argument("--level", choices=["atom", "residue"], default="atom", help="graph nodes (default: atom)")
    p.add_argument("--edges", default=None, metavar="SPEC",
                   help="edge spec, e.g. 'radius:4.5,max=32+random:10' (default: radius:4.5 at atom level, "
                        "knn:30 at residue level)")
    p.add_argument("--cutoff", type=float, default=None,
                   help="distance beyond which pairs count as far (default: the first radius builder's r, "
                        "else 4.5 A at atom level and 10 A at residue level)")
    p.add_argument("--hops", type=int, default=6, help="report reachability within 1..HOPS hops (default 6)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_read_options(p)
    p.set_defaults(func=_cmd_inspect)
    return parser


def _cmd_inspect(args: argparse.Namespace) -> int:
    from farfield.data import Featuriser, FeaturiserConfig
    from farfield.diagnostics import graph_summary
    from farfield.graphs import Radius, parse_edge_spec
    from farfield.io import Atom3DLMDB, ReadOptions, ResidueView, example_path, read_structure
    from farfield.errors import ConfigError

    if args.hops < 1:
        raise ConfigError(f"--hops must be >= 1, got {args.hops}")
    read = ReadOptions(model=args.model, altloc=args.altloc, hydrogens=not args.no_hydrogens, waters=args.waters,
                       hetero=not args.no_hetero, chains=args.chains)
    path = Path(args.file) if args.file else example_path()
    if path.is_dir() and (path / "data.mdb").exists():
        s = Atom3DLMDB(path).structure(args.item, options=read)
    else:
        s = read_structure(path, read)
    edges = args.edges or ("radius:4.5" if args.level == "atom" else "knn:30")
    graph = parse_edge_spec(edges)
    cutoff = args.cutoff
    if cutoff is None:
        radii = [b.r for b in graph.builders if isinstance(b, Radius)]
        cutoff = radii[0] if radii else (4.5 if args.level == "atom" else 10.0)
    try:
        residues = ResidueView.from_structure(s)
        n_res, breaks = len(residues), int(residues.chain_break.sum())
    except FarfieldError:
        n_res, breaks = 0, 0
    data = Featuriser(FeaturiserConfig(level=args.level, edges=edges, read=read), graph=graph)(s)
    summary = graph_summary(data.edge_index, data.edge_type, graph.type_names, data.pos.double(), cutoff, args.hops)
    report = {
        "file": str(path), "name": s.name, "level": args.level, "edges_spec": graph.spec(),
        "atoms": len(s), "amino_acid_residues": n_res, "residues": s.n_residues, "chains": s.chains,
        "chain_breaks": breaks, "models": s.n_models, "model": s.model,
        "elements": {str(k): int(v) for k, v in zip(*np.unique(s.element, return_counts=True))},
        "graph": summary,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_format_report(report))
    return 0


def _format_report(r: dict) -> str:
    g = r["graph"]
    lines = [
        f"{r['name']}  ({r['file']})",
        f"  atoms {r['atoms']}   residues {r['residues']} ({r['amino_acid_residues']} amino acids, "
        f"{r['chain_breaks']} chain breaks)   chains {len(r['chains'])} {r['chains']}   model {r['model']} of "
        f"{r['models']}",
        "  elements " + " ".join(f"{k}:{v}" for k, v in sorted(r["elements"].items(), key=lambda kv: -kv[1])),
        "",
        f"graph ({r['level']} level, edges {r['edges_spec']}): {g['nodes']} nodes, {g['edges']} edges",
        f"  {'edge type':<34} {'edges':>8} {'deg min':>8} {'mean':>7} {'max':>6} {'len p50':>8} {'p95':>7} {'max':>7}",
    ]
    rows = list(g["per_type"].items()) + [("all", {"edges": g["edges"], "degree": g["degree"], "length": g["length"]})]
    for name, t in rows:
        q = t["length"].get("quantiles", {})
        lines.append(f"  {name:<34} {t['edges']:>8} {t['degree']['min']:>8} {t['degree']['mean']:>7.2f} "
                     f"{t['degree']['max']:>6} {q.get('p50', float('nan')):>8.2f} {q.get('p95', float('nan')):>7.2f} "
                     f"{q.get('max', float('nan')):>7.2f}")
    h = g["length"].get("histogram")
    if h:
        peak = max(h["counts"]) or 1
        lines += ["", "  edge length distribution (A)"]
        for lo, hi, c in zip(h["edges"][:-1], h["edges"][1:], h["counts"]):
            lines.append(f"  {lo:6.2f}-{hi:6.2f} {c:>8} " + "#" * round(40 * c / peak))
    rr = g["reachability"]
    if rr:
        lines += ["", f"  hop diameter {rr['diameter_hops']}{' (lower bound, sampled)' if rr['diameter_is_lower_bound'] else ''}"
                      f"{'' if rr['connected'] else '  (graph is disconnected)'}",
                  f"  pairs beyond {rr['cutoff']:g} A reachable within L hops "
                  f"({'all' if rr['exact'] else rr['sources']} sources, {rr['pairs_beyond_cutoff']} far pairs):"]
        lines.append("  " + "  ".join(f"L={L}: {'n/a' if v is None else f'{100 * v:.1f}%'}"
                                      for L, v in rr["reachable_within"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FarfieldError as e:
        print(f"farfield: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("farfield: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``farfield`` command line.

``farfield inspect [FILE] [--level atom|residue] [--edges SPEC] [--json]`` reads a structure, builds its
graph and reports atoms, residues, chains, models, edges per type, degrees, edge lengths, the hop
diameter and the fraction of pairs beyond the cutoff reachable within L hops. Without FILE it inspects
farfield's built-in example peptide.

``farfield check [--model NAME|all] [--long-range NAME,...|all|none] [--dtype float64|float32] [--structure
FILE] [--residue-features PRESET] [--no-shapes] [--json]`` runs the symmetry check of every backbone,
alone or with every long-range strategy (rotation, reflection, translation, permutation, batching), end to end
(the structure is transformed, then featurised), on the structure, its first half and four symmetric shapes;
it holds each model to its group within the group the features respect and exits non-zero when a claimed
symmetry fails.

``farfield expressivity [--models ...] [--tests ...] [--layers ...] [--seeds N] [--epochs N] [--mode
train|distance] [--json]`` runs the geometric-WL pairs and compares the results with the theory.

``farfield train CONFIG [KEY=VALUE ...]`` trains one model; ``farfield study`` runs a controlled study of
long-range strategies (see :mod:`farfield.cli.study`).

Errors in the input or options print one line ``farfield: error: ...`` (no traceback) and exit with 2; a
closed output pipe ends the command quietly (status 141). Heavy modules are imported inside the commands,
so ``--help`` and option errors are immediate.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from farfield import __version__
from farfield.errors import FarfieldError

#: residue feature presets (farfield.features.residues.PRESETS; listed here so that --help needs no torch import)
PRESET_NAMES = ("gvp", "parity_even", "ca", "ca_seq", "ca_angles", "ca_bb", "ca_sc")

__all__ = ["main", "build_parser"]

# The parser imports nothing heavy (torch, PyG and the models took 15 s on a loaded 2-core machine before
# `--help` could print): names are validated by the commands, against the registries, after parsing.


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive distance in Angstrom, got {text}")
    return value


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
    p.add_argument("--cutoff", type=_positive_float, default=None,
                   help="distance beyond which pairs count as far (default: the first radius builder's r, "
                        "else 4.5 A at atom level and 10 A at residue level)")
    p.add_argument("--hops", type=int, default=6, help="report reachability within 1..HOPS hops (default 6)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_read_options(p)
    p.set_defaults(func=_cmd_inspect)

    c = sub.add_parser("check", help="verify every backbone's claimed symmetries exactly",
                       description="Check rotation, reflection, translation and permutation symmetry and batch "
                                   "independence of backbones end to end: the structure is transformed, then "
                                   "featurised and run (default inputs: farfield's example peptide, its first half and "
                                   "four symmetric shapes with degenerate covariances, batched). The claim checked is "
                                   "the model's group within the group the features respect. Exit status 1 when a "
                                   "claimed symmetry fails.")
    c.add_argument("--model", default="all", help="backbone name(s), comma-separated, or 'all' (default); from farfield.models.BACKBONES (schnet, egnn, gvp, painn, tfn, tfn_products, gcn, ...)")
    c.add_argument("--long-range", default="none", metavar="NAMES",
                   help="long-range strategies to combine with every model: comma-separated names, 'all' or 'none' "
                        "(default); 'all' includes the plain backbone")
    c.add_argument("--canonicaliser", default="none", metavar="NAMES",
                   help="canonicalisers to wrap every 3D model in: comma-separated names from "
                        "farfield.symmetry.canonical.CANONICALISERS (fa, sfa, signnet, pca_sign, vn_pointnet, vn_dgcnn, "
                        "learned), 'all' or 'none' (default); 'all' includes the plain model. Exact ones are held to "
                        "their claim; approximate ones (signnet) get their rotation error measured (mean / max "
                        "relative error over 8 random rotations) instead of pass / fail")
    c.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="precision (tolerance 1e-9 in float64, 1e-4 relative in float32)")
    c.add_argument("--structure", default=None, metavar="FILE",
                   help="structure file to check on instead of the example; its coordinates are transformed and "
                        "then featurised, so the check covers the whole pipeline")
    c.add_argument("--residue-features", choices=list(PRESET_NAMES), default="gvp",
                   help="residue feature preset (default gvp: chiral sin(dihedral) and side-chain features, so the "
                        "pipeline is SE(3); parity_even: cos(dihedral) and polar vectors only, E(3); ca, ca_seq: "
                        "E(3); ca_angles, ca_bb, ca_sc: SE(3))")
    c.add_argument("--periodic", action="store_true",
                   help="check on the built-in periodic systems (rock-salt NaCl, a triclinic box) at atom level: "
                        "rigid motions move the cell with the atoms and a 'lattice' test moves atoms by lattice "
                        "vectors; models and strategies that cannot take a cell (frame averaging, canonicalisers, "
                        "graph strategies, position-reading mechanisms other than latent_charges) are skipped")
    c.add_argument("--no-shapes", dest="shapes", action="store_false",
                   help="leave out the symmetric inputs (hexagon, octahedron, star, chain) checked by default")
    c.add_argument("--level", choices=["atom", "residue"], default="residue",
                   help="graph level (default residue: nodes carry vector features too)")
    c.add_argument("--edges", default=None, metavar="SPEC", help="edge spec (default radius:4.5 atom / knn:16 residue)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random transformations and weights")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=_cmd_check)

    e = sub.add_parser("expressivity", help="geometric WL expressivity pairs: which models tell which apart",
                       description="Train (or, with --mode distance, only initialise) each model on each pair of "
                                   "the geometric WL suite and report accuracy mean +- std per model x test x depth, "
                                   "with the theory's prediction.")
    e.add_argument("--models", nargs="+", default=None, metavar="NAME",
                   help="backbones (default: farfield.expressivity.DEFAULT_MODELS)")
    e.add_argument("--tests", nargs="+", default=None, metavar="TEST",
                   help="pairs: chain:K, star:FOLD, 2body, 3body, chiral, handed "
                        "(default: farfield.expressivity.DEFAULT_TESTS)")
    e.add_argument("--layers", nargs="+", type=int, default=[1, 2, 3, 4], metavar="L", help="depths (default 1 2 3 4)")
    e.add_argument("--seeds", type=int, default=10, help="seeds per cell; each re-initialises the model (default 10)")
    e.add_argument("--epochs", type=int, default=100, help="training epochs (default 100, the published protocol)")
    e.add_argument("--mode", choices=["train", "distance"], default="train",
                   help="train: published protocol; distance: training-free readout distance")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=_cmd_expressivity)
    from farfield.cli.study import add_commands
    add_commands(sub)
    from farfield.cli import diagnose
    diagnose.add_commands(sub)
    return parser


def _check_inputs(args):
    """The structures the check runs on: the file (or the example peptide), its first half (a second, different
    graph in the batch) and, unless --no-shapes, the symmetric shapes with degenerate covariances."""
    from dataclasses import replace

    from farfield.io import example_path, read_structure
    from farfield.io.example import SYMMETRIC_SHAPES, symmetric_structure

    if getattr(args, "periodic", False):
        from farfield.io.example import PERIODIC_EXAMPLES, periodic_structure
        return [periodic_structure(n) for n in PERIODIC_EXAMPLES], "built-in periodic systems"
    path = Path(args.structure) if args.structure else example_path()
    s = read_structure(path)
    items = [s]
    res = s.residue_index()
    half = s.select(res < max(1, (int(res.max()) + 1) // 2))
    if len(half) >= 2:
        items.append(replace(half, name=f"{s.name}[first half]"))
    if args.shapes:
        items += [symmetric_structure(n) for n in SYMMETRIC_SHAPES]
    return items, str(path)


def _check_pipeline(args, items, strategy=None):
    """(build, featuriser, edges): ``build(Q, t)`` moves every input structure to ``x Q^T + t``, then
    featurises it and batches the graphs: the pipeline a user runs, end to end."""
    from dataclasses import replace

    from torch_geometric.data import Batch

    from farfield.data import Featuriser, FeaturiserConfig

    edges = args.edges or ("radius:4.5" if args.level == "atom" else "knn:16")
    if strategy is not None:
        edges = strategy.edge_spec(edges)
    feat = Featuriser(FeaturiserConfig(level=args.level, edges=edges, dtype="float64",
                                       residue_features=args.residue_features))
    reference = Batch.from_data_list([feat(s) for s in items])

    def build(Q, t):
        if Q is None and t is None:
            return reference
        Qn = Q.numpy()
        tn = 0.0 if t is None else t.numpy()
        return Batch.from_data_list([feat(replace(s, coords=s.coords @ Qn.T + tn,
                                                  cell=None if s.cell is None else s.cell @ Qn.T)) for s in items])

    return build, feat, edges


def _check_strategies(arg: str):
    from farfield.errors import ConfigError
    from farfield.models.long_range import STRATEGIES, build_strategy

    names = list(STRATEGIES) if arg == "all" else [n.strip() for n in arg.split(",") if n.strip()]
    if not names:
        raise ConfigError("--long-range: give strategy names, 'all' or 'none'")
    for n in names:
        if n not in STRATEGIES:
            raise ConfigError(f"--long-range: unknown strategy {n!r}; choose from {list(STRATEGIES)}, 'all' or 'none'")
    return [build_strategy(n) for n in names]


def _check_canonicalisers(arg: str) -> list[str]:
    from farfield.errors import ConfigError
    from farfield.symmetry.canonical import CANONICALISERS
    names = ["none", *CANONICALISERS] if arg == "all" else [n.strip() for n in arg.split(",") if n.strip()]
    if not names:
        raise ConfigError("--canonicaliser: give canonicaliser names, 'all' or 'none'")
    for n in names:
        if n != "none" and n not in CANONICALISERS:
            raise ConfigError(f"--canonicaliser: unknown canonicaliser {n!r}; choose from {list(CANONICALISERS)}, "
                              "'all' or 'none'")
    return names


def _cmd_check(args: argparse.Namespace) -> int:
    import warnings

    import torch

    from farfield.errors import ConfigError
    from farfield.models import BACKBONES, InputSpec, build_backbone
    from farfield.symmetry import check_pipeline

    names = list(BACKBONES) if args.model == "all" else [n.strip() for n in args.model.split(",") if n.strip()]
    for n in names:
        if n not in BACKBONES:
            raise ConfigError(f"unknown model {n!r}; choose from {sorted(BACKBONES)} or 'all'")
    strategies = _check_strategies(args.long_range)
    canons = _check_canonicalisers(args.canonicaliser)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    if args.periodic:
        if args.structure:
            raise ConfigError("farfield check: give --periodic (the built-in periodic systems) or --structure, not both")
        args.level = "atom"
    items, source = _check_inputs(args)
    pipelines = {}
    periodic = any(s.cell is not None for s in items)
    for st in strategies:     # graph strategies change the edges; the others share the local graph
        if periodic and st.is_graph:
            continue          # refused on periodic inputs (skipped below)
        key = st.edge_spec("") if st.is_graph else ""
        if key not in pipelines:
            pipelines[key] = _check_pipeline(args, items, st if st.is_graph else None)
    build, feat, edges = pipelines[""] if "" in pipelines else next(iter(pipelines.values()))
    batch = build(None, None)
    from farfield.symmetry.canonical import wrap_canonicaliser
    jobs = [(n, st, c) for n in names for st in strategies for c in canons
            if c == "none" or n not in ("gcn", "gine", "gatedgcn")]     # 2D baselines have no coordinates
    skipped = []
    if periodic:
        from farfield.models.long_range import MECHANISMS
        keep = []
        for n, st, c in jobs:
            mech = MECHANISMS.get(st.name)
            why = ("frame averaging" if "fa_" in n else f"canonicaliser {c}" if c != "none"
                   else f"graph strategy {st.name}" if st.is_graph
                   else f"{st.name} reads coordinates without images"
                   if mech is not None and getattr(mech, "needs_positions", False)
                   and not getattr(mech, "supports_cell", False) else None)
            (skipped.append(f"{n}+{st.name}" + ("" if c == "none" else f"[{c}]") + f" ({why})") if why
             else keep.append((n, st, c)))
        jobs = keep
    reports = []
    for n, st, canon in _progress(jobs, "check"):
        b_build, b_feat, _ = pipelines[st.edge_spec("") if st.is_graph else ""]
        b = b_build(None, None)
        # a radial cutoff spanning every edge of the graph (the check is about symmetry, not about cutoffs)
        from farfield.models.base import edge_geometry
        longest = float(edge_geometry(b.pos, b, None).dist.max())      # periodic batches: with lattice offsets
        opts = {} if n in ("gcn", "gine", "gatedgcn") else {"cutoff": longest + 1.0}
        torch.manual_seed(args.seed)
        spec = InputSpec.from_data(b)
        copts = {"cutoff": opts["cutoff"]} if canon == "learned" else {}
        model = st.wrap(wrap_canonicaliser(canon, build_backbone(n, spec, **opts), spec, **copts))
        label = (n if st.name == "none" else f"{n}+{st.name}") + ("" if canon == "none" else f"[{canon}]")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reports.append(check_pipeline(model, b_build, dtype=dtype, seed=args.seed, name=label,
                                          pipeline_group=b_feat.symmetry, chiral_features=b_feat.chiral_features))
    ok = all(r.ok for r in reports)
    pipeline = {"level": args.level, "residue_features": args.residue_features if args.level == "residue" else None,
                "group": feat.symmetry, "chiral_features": list(feat.chiral_features)}
    if args.json:
        print(json.dumps({"structure": source, "inputs": [s.name for s in items], "edges": edges,
                          "graphs": batch.num_graphs, "nodes": batch.num_nodes, "dtype": args.dtype,
                          "pipeline": pipeline, "long_range": [st.name for st in strategies],
                          "canonicalisers": canons, "ok": ok, "skipped": skipped,
                          "models": [r.to_dict() for r in reports]}, indent=2))
    else:
        text = _format_check(reports, source, batch, edges, args.dtype, [s.name for s in items], feat)
        own = [f"{st.name}: {pipelines[st.edge_spec('')][2]}" for st in strategies if st.is_graph and not periodic]
        if own:
            head, _, rest = text.partition("\n")
            text = head + "\ngraph strategies are checked on their own edges (" + "; ".join(own) + ")\n" + rest
        if skipped:
            text += f"\n\nskipped on periodic inputs ({len(skipped)}): " + ", ".join(skipped)
        print(text)
    return 0 if ok else 1


def _progress(items, desc):
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, unit="model", leave=False, disable=not sys.stderr.isatty())


def _format_check(reports, source, batch, edges, dtype, inputs, feat) -> str:
    from farfield.symmetry import TESTS
    # the lattice test applies to periodic inputs only: its column appears when some report has it
    TESTS = tuple(t for t in TESTS if t != "lattice" or any(x.test == t for r in reports for x in r.results))
    lines = [f"symmetry check of the pipeline (structure -> features -> graph -> model) on {source} "
             f"({batch.num_graphs} graphs: {', '.join(inputs)}; {batch.num_nodes} nodes, edges {edges}, {dtype})",
             f"features: {feat.config.level} level"
             + (f", preset {feat.config.residue_features}" if feat.config.level == "residue" else "")
             + f"; the featurisation respects {feat.symmetry}",
             "max |error| per test over all outputs (s, v, t, pos); '-' = not claimed by the model's group, "
             "(x) = not claimed by the pipeline (see notes); ~x = claimed only approximately: the measured mean "
             "relative error (max in the notes)", "",
             f"  {'model':<26} {'group':<6} " + " ".join(f"{t:>11}" for t in TESTS) + "  result"]
    for r in reports:
        cells = []
        for t in TESTS:
            rs = [x for x in r.results if x.test == t]
            if not rs:
                cells.append(f"{'n/a':>11}")
                continue
            err = max(x.error for x in rs)
            if t in r.approximate:
                cells.append(f"{'~' + format(r.approximate[t]['mean'], '.1e'):>11}")
                continue
            cells.append(f"{err:>11.1e}" if rs[0].claimed else f"{f'({err:.1e})':>11}" if t in r.notes
                         else f"{'-':>11}")
        group = r.group + ("*" if r.model_group and r.model_group != r.group else "")
        lines.append(f"  {r.model:<26} {group:<6} " + " ".join(cells) + f"  {'PASS' if r.ok else 'FAIL'}")
    narrowed = sorted({(r.model_group, r.group) for r in reports if r.model_group and r.model_group != r.group})
    notes = sorted({f"{t}: {why}" for r in reports for t, why in r.notes.items() if not why.startswith("approximate")})
    notes += [f"{r.model}: {t} error (approximate claim) mean {a['mean']:.2e}, max {a['max']:.2e} over "
              f"{a['transformations']} random transformations" for r in reports for t, a in r.approximate.items()]
    if narrowed or notes:
        lines.append("")
        for mg, g in narrowed:
            lines.append(f"  * the model claims {mg}; the pipeline is {g}")
        for n in notes:
            lines.append(f"  {n}")
        if feat.chiral_features:
            lines.append("  (--residue-features parity_even gives a reflection-invariant pipeline)")
    bad = [(r.model, f) for r in reports for f in r.failures()]
    for m, f in bad:
        lines.append(f"  FAIL {m}: {f.test} on output {f.output}: error {f.error:.2e} > {f.tolerance:g} x max(1, {f.scale:.3g})"
                     + (f", largest on {f.where}" if f.where else ""))
    lines.append("")
    lines.append("all claimed symmetries hold" if not bad else f"{len(bad)} claimed symmetry check(s) failed")
    return "\n".join(lines)


def _cmd_expressivity(args: argparse.Namespace) -> int:
    from farfield.errors import ConfigError

    if args.epochs < 1:   # checked before the heavy imports
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    if any(L < 1 for L in args.layers):
        raise ConfigError(f"--layers must be >= 1, got {args.layers}")
    from farfield.expressivity import DEFAULT_MODELS, DEFAULT_TESTS, run_expressivity

    args.models = list(DEFAULT_MODELS) if args.models is None else args.models
    args.tests = list(DEFAULT_TESTS) if args.tests is None else args.tests
    results = run_expressivity(args.models, args.tests, args.layers, seeds=args.seeds, epochs=args.epochs,
                               mode=args.mode, progress=not args.json)
    if args.json:
        print(json.dumps({"mode": args.mode, "seeds": args.seeds, "epochs": args.epochs,
                          "results": [r.to_dict() for r in results]}, indent=2))
        return 0
    unit = "accuracy (%)" if args.mode == "train" else "relative readout distance"
    lines = [f"geometric WL expressivity ({args.mode} mode, {args.seeds} seeds{', %d epochs' % args.epochs if args.mode == 'train' else ''}): {unit}",
             f"  {'model':<12} {'test':<9} {'layers':>6} {'mean':>10} {'std':>9}  {'verdict':<17} {'margin':>8}  "
             "theory         agrees"]
    for r in results:
        mean, std = (100 * r.mean, 100 * r.std) if args.mode == "train" else (r.mean, r.std)
        fmt = "{:>10.1f} {:>9.1f}" if args.mode == "train" else "{:>10.1e} {:>9.1e}"
        th = {True: "distinguish", False: "cannot", None: "-"}[r.theory]
        ag = {True: "yes", False: "NO", None: "-"}[r.agrees]
        verdict = getattr(r, "verdict", "") if args.mode != "train" else "-"
        margin = getattr(r, "margin", None) if args.mode != "train" else None
        mg = f"{margin:8.1e}" if isinstance(margin, float) else f"{'-':>8}"
        lines.append(f"  {r.model:<12} {r.test:<9} {r.layers:>6} " + fmt.format(mean, std)
                     + f"  {verdict:<17} {mg}  {th:<14} {ag}")
    bad = [r for r in results if r.agrees is False]
    lines += ["", f"{len(bad)} of {sum(r.theory is not None for r in results)} predictions contradicted"
                  + ("; 'near floor' = separated by less than 10x the round-off floor (agreement left open)"
                     if args.mode != "train" else "")]
    print("\n".join(lines))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import numpy as np

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
        code = args.func(args)
        sys.stdout.flush()   # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader went away (`farfield inspect --json | head -1`): stop quietly, like a command killed
        # by SIGPIPE; point stdout at /dev/null so the interpreter's final flush does not complain
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
            pass
        return 141
    except FarfieldError as e:
        print(f"farfield: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("farfield: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

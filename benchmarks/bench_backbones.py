"""Forward + backward throughput of every backbone, and GVP-GNN against a plain reference implementation.

Graphs: real proteins at residue level (kNN 30, the GVP-GNN setting) and small molecules at atom level
(radius 4.5 A), read from FARFIELD_TEST_DATA (default ../shared/data). Every backbone is timed at two
widths; GVP-GNN is also timed side by side with ``ReferenceGVPGNN`` below: the same equations written
straightforwardly (gather, torch.cat per edge, index_add_ mean, no shared work), loaded with the same
weights and checked to give the same outputs, so the ratio shows what our implementation buys. The side by
side runs at the published size (gvp-pytorch's ATOM3D layout: node dims (100, 16), edge dims (32, 1),
``--gvp-layers`` layers) on a ~4,500-residue batch of real proteins (``PUBLISHED_PROTEINS``, kNN 30, ~134k
edges) and on the molecules, one thread, the arms interleaved (A B C A B C ...) and the median taken, so that
load on the machine falls on all arms alike; ``--gvp-only`` runs just that.

The hot-path section (``--hot-path``, no data needed) times SchNet 32x3 forward + backward on 16 random
100-atom molecules (radius 5 A, one thread, median of repeats) and, side by side, the two kernels it was
tuned on: the Gaussian basis with and without its exponent clamped at -80, and a message gather by
advanced indexing ``x[src]`` against ``index_select`` (forward + backward).

    python benchmarks/bench_backbones.py [--repeats 3] [--json] [--hot-path] [--gvp-only] [--gvp-layers 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch_geometric.data import Batch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farfield.data import Featuriser, FeaturiserConfig  # noqa: E402
from farfield.models import BACKBONES, GVPGNN, InputSpec, build_backbone  # noqa: E402
from farfield.nn import GVPConv  # noqa: E402

DATA = Path(os.environ.get("FARFIELD_TEST_DATA", ROOT.parent / "shared" / "data"))
PROTEINS = ["1aki.pdb", "4hhb.pdb", "1dix.pdb", "3o5r.pdb"]
# every top-level PDB file of the test data: 4,484 residues, 134,080 kNN-30 edges
PUBLISHED_PROTEINS = ["1A8O.pdb", "1aki.pdb", "1dix.pdb", "1igy.pdb", "1k6p.pdb", "1l2y.pdb", "1orc.pdb", "2BEG.pdb",
                      "2XHE.pdb", "2axd.pdb", "2n0n_M1.pdb", "3o5r.pdb", "4hhb.pdb", "AF-P04629_alphafold_v2.pdb"]
MOLECULES = ["03F.sdf", "HWB.sdf", "TYR.sdf"]
WIDTHS = {"small": 32, "large": 128}


class ReferenceGVPGNN(torch.nn.Module):
    """The GVP-GNN equations of methods reference s.1, written plainly, reusing a GVPGNN's parameters."""

    def __init__(self, model: GVPGNN):
        super().__init__()
        self.m = model

    @staticmethod
    def gvp(g, s, v):
        if g.vi:
            vh = torch.einsum("hc,nci->nhi", g.wh.weight, v)
            vn = torch.sqrt(torch.clamp((vh ** 2).sum(-1), min=1e-8))
            s = torch.nn.functional.linear(torch.cat([s, vn], -1), g.ws.weight, g.ws.bias)
            if g.vo:
                v = torch.einsum("oh,nhi->noi", g.wv.weight, vh)
                gate = g.act_v(s) if g.act_v is not None else s
                v = v * torch.sigmoid(torch.nn.functional.linear(gate, g.wsv.weight, g.wsv.bias)).unsqueeze(-1)
        else:
            s = torch.nn.functional.linear(s, g.ws.weight, g.ws.bias)
            v = s.new_zeros(s.shape[0], g.vo, 3) if g.vo else None
        if g.act_s is not None:
            s = g.act_s(s)
        return s, (v if g.vo else None)

    @staticmethod
    def norm(ln, s, v):
        s = torch.nn.functional.layer_norm(s, (ln.s,), ln.norm.weight, ln.norm.bias)
        if v is None or not ln.v:
            return s, v
        return s, v / torch.sqrt(torch.clamp((v ** 2).sum(-1, keepdim=True), min=1e-8).mean(-2, keepdim=True))

    def forward(self, batch):
        m = self.m
        src, tgt = batch.edge_index
        n = batch.num_nodes
        s, v = self.norm(m.node_in["norm"], batch.x_s, batch.x_v)
        s, v = self.gvp(m.node_in["gvp"], s, v)
        vec = batch.pos[src] - batch.pos[tgt]
        d = vec.norm(dim=-1)
        es = torch.cat([m.radial(d), batch.edge_s], -1)
        es, ev = self.norm(m.edge_in["norm"], es, (vec / d.unsqueeze(-1)).unsqueeze(1))
        es, ev = self.gvp(m.edge_in["gvp"], es, ev)
        count = torch.zeros(n, dtype=s.dtype, device=s.device).index_add_(0, tgt, torch.ones_like(d)).clamp(min=1)
        for layer in m.layers:
            ms = torch.cat([s[src], es, s[tgt]], -1)
            mv = torch.cat([v[src], ev, v[tgt]], -2)
            for g in layer.conv.message:
                ms, mv = self.gvp(g, ms, mv)
            agg_s = torch.zeros(n, ms.shape[1], dtype=s.dtype, device=s.device).index_add_(0, tgt, ms) / count[:, None]
            agg_v = torch.zeros(n, *mv.shape[1:], dtype=s.dtype, device=s.device).index_add_(0, tgt, mv) / count[:, None, None]
            s, v = self.norm(layer.norm[0], s + agg_s, v + agg_v)
            fs, fv = s, v
            for g in layer.ff:
                fs, fv = self.gvp(g, fs, fv)
            s, v = self.norm(layer.norm[1], s + fs, v + fv)
        s2, v2 = self.norm(m.out_norm, s, v)
        return self.gvp(m.out, s2, v2)[0]


def load(kind: str) -> Batch:
    if kind in ("protein", "published"):
        feat = Featuriser(FeaturiserConfig(level="residue", edges="knn:30"))
        graphs = [feat(DATA / "structures" / f) for f in (PROTEINS if kind == "protein" else PUBLISHED_PROTEINS)]
    else:
        feat = Featuriser(FeaturiserConfig(level="atom", edges="radius:4.5"))
        graphs = [feat(DATA / "molecules" / f) for f in MOLECULES] * 8
    return Batch.from_data_list(graphs)


def timed(fn, repeats: int) -> float:
    fn()                                    # warm-up (e3nn code generation, allocator)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def step(model, batch):
    def run():
        model.zero_grad(set_to_none=True)
        out = model(batch)
        s = out if torch.is_tensor(out) else out.s
        s.square().mean().backward()
    return run


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable in ``fns``, one thread, run interleaved (A B C A B C ...) after one
    warm-up each, so that load from other processes falls on every arm alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for fn in fns.values():
            fn()
        ts = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                t = time.perf_counter()
                fn()
                ts[k].append(time.perf_counter() - t)
        return {k: statistics.median(v) for k, v in ts.items()}
    finally:
        torch.set_num_threads(threads)


def gvp_side_by_side(repeats: int, layers: int = 3) -> list[dict]:
    """GVP-GNN (ours: split form; and with ``split_first=False``, the concatenated form) against
    ``ReferenceGVPGNN``, same weights, outputs checked; forward + backward, one thread, interleaved medians."""
    ratios = []
    for kind in ("published", "molecule"):
        batch = load(kind)
        spec = InputSpec.from_data(batch)
        if spec.edge_s == 0:
            batch.edge_s = batch.pos.new_zeros(batch.edge_index.shape[1], 0)
        if spec.node_v == 0:
            batch.x_v = batch.pos.new_zeros(batch.num_nodes, 0, 3)
        cutoff = float((batch.pos[batch.edge_index[0]] - batch.pos[batch.edge_index[1]]).norm(dim=-1).max()) + 1
        torch.manual_seed(0)
        # the published ATOM3D sizes; the reference is the published plain mean: compare with envelope=None
        ours = GVPGNN(spec, node_dims=(100, 16), edge_dims=(32, 1), num_layers=layers, cutoff=cutoff, dropout=0.0,
                      envelope=None)
        cat = GVPGNN(spec, node_dims=(100, 16), edge_dims=(32, 1), num_layers=layers, cutoff=cutoff, dropout=0.0,
                     envelope=None)
        cat.load_state_dict(ours.state_dict())
        for c in cat.modules():
            if isinstance(c, GVPConv):
                c.split_first = False
        ref = ReferenceGVPGNN(ours)
        with torch.no_grad():
            want = ref(batch)
            diff = float((ours(batch).s - want).abs().max())
            diff_cat = float((cat(batch).s - want).abs().max())
        t = interleaved({"ours": step(ours, batch), "reference": step(ref, batch), "cat": step(cat, batch)}, repeats)
        ratios.append({"graphs": kind, "width": "(100,16)", "layers": layers, "nodes": batch.num_nodes,
                       "edges": int(batch.edge_index.shape[1]), "ours_s": t["ours"], "reference_s": t["reference"],
                       "concatenated_first_message_s": t["cat"],
                       "ratio_ours_over_reference": t["ours"] / t["reference"],
                       "speedup_over_reference": t["reference"] / t["ours"],
                       "ratio_split_over_concatenated": t["ours"] / t["cat"],
                       "max_abs_output_difference": diff, "max_abs_output_difference_concatenated": diff_cat})
    return ratios


def print_side_by_side(ratios: list[dict], repeats: int) -> None:
    print(f"\nGVP-GNN: ours vs plain reference (same weights), forward+backward, one thread, interleaved median of "
          f"{repeats}; ratio = ours / reference time")
    for r in ratios:
        print(f"{r['graphs']:9s} {r['width']:8s} x{r['layers']} ({r['nodes']} nodes, {r['edges']} edges)  ours "
              f"{r['ours_s'] * 1e3:8.1f} ms  reference {r['reference_s'] * 1e3:8.1f} ms  ratio "
              f"{r['ratio_ours_over_reference']:.2f}x ({r['speedup_over_reference']:.2f}x faster)  max |diff| "
              f"{r['max_abs_output_difference']:.1e}  (split_first=False: "
              f"{r['concatenated_first_message_s'] * 1e3:8.1f} ms, ours / that "
              f"{r['ratio_split_over_concatenated']:.2f}x)")


def _median_ms(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def hot_path(repeats: int = 9) -> dict:
    """SchNet 32x3 step and the two kernels above, one thread; milliseconds (median of ``repeats``)."""
    from torch_geometric.data import Data

    from farfield.models import SchNet
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        graphs = []
        for _ in range(16):
            pos = torch.rand(100, 3, generator=g) * 10.0
            d = torch.cdist(pos, pos)
            src, tgt = torch.nonzero((d < 5.0) & (d > 0), as_tuple=True)
            x = torch.nn.functional.one_hot(torch.randint(0, 9, (100,), generator=g), 9).float()
            graphs.append(Data(x_s=x, pos=pos, edge_index=torch.stack([src, tgt]), num_nodes=100))
        batch = Batch.from_data_list(graphs)
        torch.manual_seed(0)
        model = SchNet(InputSpec(9), hidden=32, num_layers=3, cutoff=5.0)
        out = {"edges": int(batch.edge_index.shape[1]), "schnet_32x3_step_ms": _median_ms(step(model, batch), repeats)}
        src = batch.edge_index[0]
        dist = (batch.pos[src] - batch.pos[batch.edge_index[1]]).norm(dim=-1)
        mu, width = model.radial.centres.float(), model.radial.width
        arg = -(((dist.unsqueeze(-1) - mu) / width) ** 2)
        out["rbf_exp_unclamped_ms"] = _median_ms(lambda: torch.exp(arg), repeats)
        out["rbf_exp_clamped_ms"] = _median_ms(lambda: torch.exp(arg.clamp(min=-80.0)), repeats)
        h = torch.randn(batch.num_nodes, 32, requires_grad=True)
        grad = torch.randn(len(src), 32)

        def by_index():
            h.grad = None
            h[src].backward(grad)

        def by_select():
            h.grad = None
            h.index_select(0, src).backward(grad)
        out["gather_index_ms"] = _median_ms(by_index, repeats)
        out["gather_index_select_ms"] = _median_ms(by_select, repeats)
        return out
    finally:
        torch.set_num_threads(threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=[n for n in BACKBONES if n != "sfa_mpnn"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--hot-path", action="store_true", help="only the SchNet hot-path timings (no data needed)")
    ap.add_argument("--gvp-only", action="store_true", help="only the GVP-GNN side by side with the reference")
    ap.add_argument("--gvp-layers", type=int, default=3, help="GVP-GNN layers in the side by side (default 3)")
    args = ap.parse_args(argv)
    if args.hot_path:
        hp = hot_path(max(args.repeats, 5))
        print(json.dumps(hp, indent=2) if args.json else "\n".join(f"{k:28s} {v:10.2f}" for k, v in hp.items()))
        return 0
    if not (DATA / "structures").is_dir():
        print(f"benchmark data missing: {DATA} (set FARFIELD_TEST_DATA)", file=sys.stderr)
        return 2
    if args.gvp_only:
        ratios = gvp_side_by_side(args.repeats, args.gvp_layers)
        if args.json:
            print(json.dumps({"gvp_vs_reference": ratios}, indent=2))
        else:
            print_side_by_side(ratios, args.repeats)
        return 0
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for kind in ("protein", "molecule"):
        batch = load(kind)
        spec = InputSpec.from_data(batch)
        cutoff = float((batch.pos[batch.edge_index[0]] - batch.pos[batch.edge_index[1]]).norm(dim=-1).max()) + 1
        for name in args.models:
            for wname, width in WIDTHS.items():
                opts = {"hidden": width, "num_layers": 3}
                if name not in ("gcn", "gine", "gatedgcn"):
                    opts["cutoff"] = cutoff
                model = build_backbone(name, spec, **opts).train()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sec = timed(step(model, batch), args.repeats)
                rows.append({"graphs": kind, "model": name, "width": wname, "seconds": sec,
                             "graphs_per_s": batch.num_graphs / sec, "nodes_per_s": batch.num_nodes / sec,
                             "nodes": batch.num_nodes, "edges": int(batch.edge_index.shape[1])})
                print(f"{kind:8s} {name:12s} {wname:5s} {sec * 1e3:9.1f} ms  {batch.num_graphs / sec:8.1f} graphs/s "
                      f"{batch.num_nodes / sec:10.0f} nodes/s", file=sys.stderr)
    # GVP-GNN vs the plain reference, same weights, outputs checked equal
    ratios = gvp_side_by_side(args.repeats, args.gvp_layers)
    if args.json:
        print(json.dumps({"throughput": rows, "gvp_vs_reference": ratios}, indent=2))
        return 0
    print("\nforward+backward, 3 layers (best of %d)" % args.repeats)
    print(f"{'graphs':9s} {'model':12s} {'width':6s} {'ms':>9s} {'graphs/s':>9s} {'nodes/s':>10s}")
    for r in rows:
        print(f"{r['graphs']:9s} {r['model']:12s} {r['width']:6s} {r['seconds'] * 1e3:9.1f} {r['graphs_per_s']:9.1f} "
              f"{r['nodes_per_s']:10.0f}")
    print_side_by_side(ratios, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())

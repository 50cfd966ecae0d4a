"""Forward + backward time of farfield's SchNet against PyG's ``torch_geometric.nn.models.SchNet`` blocks, same
weights, same inputs (Schuett et al., "SchNet: A continuous-filter convolutional neural network for modeling
quantum interactions", NeurIPS 2017).

Models: hidden 128, 6 interactions, 128 filters, 50 Gaussians, cosine cutoff 5 A (``--hidden``, ``--layers``,
``--basis``, ``--cutoff``). PyG's SchNet builds its radius graph with torch_cluster and embeds atomic numbers;
here its interaction blocks (``model.interactions``: filter MLP, CFConv with PyG's cosine cutoff
``0.5 (cos(pi d / c) + 1)``, ``x_j * W`` messages summed by ``propagate``, ssp, linear) are run on the **same
edge_index** as farfield, so the graph builder is not timed on either side. Both sides share everything around
the blocks: the linear embedding of ``x_s`` and the Gaussian expansion of the distances (farfield's
``GaussianRBF``: PyG's ``GaussianSmearing`` has a different width, so it would be a different function) are
computed on the PyG side by copies of farfield's modules, and the distances by ``|pos_j - pos_i|`` as PyG does.
PyG's shifted softplus subtracts log 2 rounded to float32 (a 2e-9 relative difference); it is set to the
double constant. The PyG blocks get farfield's weights and both models are run in float64 first: the outputs and all parameter
gradients must agree to 1e-10 (relative) or the benchmark stops.

Inputs: the built-in ``peptide_electrostatics`` peptides (heavy atoms, ~100 per graph) with ``radius:<cutoff>``
edges, ``--batches`` batches of ``--batch-size`` graphs. Timing: float32, one thread (``--threads``), one
training step (zero_grad, forward, ``mean(s^2)``, backward) per batch, the two models interleaved batch by batch
(order alternating between repeats), ``--repeats`` rounds after a warm-up; each model's time is the sum over
batches of its median step time, and the ratio farfield / PyG is printed (``--json`` for a JSON record).

    python benchmarks/bench_schnet.py [--batches 4] [--batch-size 8] [--repeats 7] [--json]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn.models.schnet import InteractionBlock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farfield.datasets.peptide_electrostatics import peptide_electrostatics  # noqa: E402
from farfield.graphs.compose import parse_edge_spec  # noqa: E402
from farfield.models import InputSpec, SchNet  # noqa: E402
from farfield.features.radial import GaussianRBF  # noqa: E402


class PyGSchNet(nn.Module):
    """PyG's SchNet interaction blocks on a given graph, with farfield's embedding and Gaussian basis."""

    def __init__(self, ff: SchNet, hidden: int, layers: int, filters: int, basis: int, cutoff: float):
        super().__init__()
        self.embedding = nn.Linear(ff.embedding.in_features, hidden)
        self.rbf = GaussianRBF(cutoff, basis)                         # farfield's basis, no envelope (PyG adds C)
        self.interactions = nn.ModuleList([InteractionBlock(hidden, basis, filters, cutoff) for _ in range(layers)])
        self.embedding.load_state_dict(ff.embedding.state_dict())
        self.rbf.load_state_dict(ff.radial.state_dict(), strict=False)
        for mine, theirs in zip(self.interactions, ff.layers):
            # PyG's ShiftedSoftplus subtracts log(2) rounded to float32 (torch.log(torch.tensor(2.0)).item());
            # farfield subtracts math.log(2): set PyG's to the double constant so both compute one function
            mine.mlp[1].shift = mine.act.shift = math.log(2.0)
            mine.mlp.load_state_dict(theirs.filter.state_dict())
            mine.conv.lin1.load_state_dict(theirs.lin1.state_dict())
            mine.conv.lin2.load_state_dict(theirs.lin2.state_dict())
            mine.lin.load_state_dict(theirs.lin3.state_dict())

    def forward(self, batch):
        h = self.embedding(batch.x_s)
        src, tgt = batch.edge_index
        dist = (batch.pos.index_select(0, src) - batch.pos.index_select(0, tgt)).norm(dim=-1)
        rbf = self.rbf._basis(dist)
        for block in self.interactions:
            h = h + block(h, batch.edge_index, dist, rbf)
        return h


def step(model, batch, fn=None):
    model.zero_grad(set_to_none=True)
    out = fn(batch) if fn else model(batch)
    out = out if torch.is_tensor(out) else out.s
    out.square().mean().backward()
    return out


def check_equal(ff: SchNet, pg: PyGSchNet, batch) -> float:
    """Max relative difference of outputs and parameter gradients in float64 (raises above 1e-10)."""
    ff64, pg64 = SchNet(ff.spec, **ff._bench_opts).double(), None
    ff64.load_state_dict(ff.state_dict())
    pg64 = PyGSchNet(ff64, **pg._bench_opts).double()
    b = batch.clone()
    b.x_s, b.pos = b.x_s.double(), b.pos.double()
    a, r = step(ff64, b).detach(), step(pg64, b).detach()
    worst = float((a - r).abs().max() / r.abs().max())
    pairs = [(ff64.embedding, pg64.embedding)]
    for f, p in zip(ff64.layers, pg64.interactions):
        pairs += [(f.filter, p.mlp), (f.lin1, p.conv.lin1), (f.lin2, p.conv.lin2), (f.lin3, p.lin)]
    for f, p in pairs:
        for pf, pp in zip(f.parameters(), p.parameters()):
            worst = max(worst, float((pf.grad - pp.grad).abs().max() / pp.grad.abs().max().clamp(min=1e-300)))
    if not worst <= 1e-10:
        raise SystemExit(f"farfield and PyG SchNet differ: max relative difference {worst:.2e}")
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--filters", type=int, default=128)
    ap.add_argument("--basis", type=int, default=50)
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    graphs = peptide_electrostatics()
    builder = parse_edge_spec(f"radius:{args.cutoff:g}")
    keep = ("x_s", "pos", "edge_index")
    batches = []
    for k in range(args.batches):
        part = [builder.apply(g) for g in graphs[k * args.batch_size:(k + 1) * args.batch_size]]
        batches.append(Batch.from_data_list(part, exclude_keys=[key for key in part[0].keys() if key not in keep]))

    torch.manual_seed(0)
    opts = dict(hidden=args.hidden, num_layers=args.layers, num_filters=args.filters, num_basis=args.basis,
                cutoff=args.cutoff)
    ff = SchNet(InputSpec.from_data(batches[0]), **opts)
    ff._bench_opts = opts
    pg_opts = dict(hidden=args.hidden, layers=args.layers, filters=args.filters, basis=args.basis, cutoff=args.cutoff)
    pg = PyGSchNet(ff, **pg_opts)
    pg._bench_opts = pg_opts
    diff = check_equal(ff, pg, batches[0])

    for b in batches:                                                 # warm-up
        step(ff, b), step(pg, b)
    times = {"farfield": [[] for _ in batches], "pyg": [[] for _ in batches]}
    models = {"farfield": ff, "pyg": pg}
    for r in range(args.repeats):
        order = ("farfield", "pyg") if r % 2 == 0 else ("pyg", "farfield")
        for i, b in enumerate(batches):
            for name in order:
                t = time.perf_counter()
                step(models[name], b)
                times[name][i].append(time.perf_counter() - t)
    total = {k: sum(statistics.median(v) for v in times[k]) for k in times}
    ratio = total["farfield"] / total["pyg"]
    atoms = sum(b.num_nodes for b in batches)
    edges = sum(b.edge_index.shape[1] for b in batches)
    rec = {"benchmark": "schnet_vs_pyg", "hidden": args.hidden, "layers": args.layers, "filters": args.filters,
           "basis": args.basis, "cutoff": args.cutoff, "batches": args.batches, "batch_size": args.batch_size,
           "atoms": atoms, "edges": edges, "threads": args.threads, "repeats": args.repeats,
           "max_rel_diff_float64": diff, "farfield_s": total["farfield"], "pyg_s": total["pyg"],
           "ratio_farfield_over_pyg": ratio, "speedup": 1.0 / ratio}
    if args.json:
        print(json.dumps(rec))
    else:
        print(f"inputs: {args.batches} batches x {args.batch_size} peptides, {atoms:,} atoms, {edges:,} edges "
              f"(radius {args.cutoff:g} A); {args.threads} thread(s); float64 max rel diff {diff:.1e}")
        print(f"farfield SchNet : {total['farfield'] * 1e3:8.1f} ms per pass over the batches (fwd + bwd)")
        print(f"PyG SchNet      : {total['pyg'] * 1e3:8.1f} ms")
        print(f"ratio farfield / PyG = {ratio:.3f}  (speed-up x{1 / ratio:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

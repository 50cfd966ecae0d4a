"""Seconds per training epoch of farfield's 2D ``gcn`` backbone against a plain PyG ``GCNConv`` stack of the
same size, on the same LRGB Peptides-func batches (Dwivedi et al., "Long Range Graph Benchmark", 2022).

Both models: a linear embedding of the 174 OGB one-hot atom features to ``hidden`` (155), ``layers`` (5)
blocks ``h <- h + ReLU(BN(GCNConv(h)))`` (the LRGB GCN block, dropout 0), mean pooling and a linear head to
the 10 labels; loss BCE-with-logits; AdamW (lr 1e-3). The PyG model is loaded with farfield's weights and is
checked to give the same outputs, so the two do exactly the same arithmetic and the ratio measures farfield's
overhead around it.

Method: a random subset of the official training split (``--batches`` x 128 graphs, seed 0) is collated
once into batches of 128 (collation is not timed); each training step (zero_grad, forward, loss, backward,
AdamW step) is timed for each model, the two models interleaved batch by batch (order alternating between
repeats), ``--repeats`` rounds after a warm-up; the subset time (sum over batches of the median step time) is
scaled to the full training split (10,873 graphs) by its number of
atoms: ``t_epoch = t_subset * atoms(train) / atoms(subset)``. One thread by default (``--threads``).
``--profile`` prints the top operators of one subset pass of each model (torch.profiler).

    python benchmarks/bench_2d.py [--batches 12] [--repeats 3] [--device cpu|cuda] [--profile] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn import GCNConv, global_mean_pool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farfield.datasets.lrgb import peptides_func  # noqa: E402
from farfield.models import InputSpec, build_backbone  # noqa: E402

DATA = Path(os.environ.get("FARFIELD_TEST_DATA", ROOT.parent / "shared" / "data"))


class FarfieldModel(nn.Module):
    def __init__(self, spec: InputSpec, hidden: int, layers: int, out: int):
        super().__init__()
        self.backbone = build_backbone("gcn", spec, hidden=hidden, num_layers=layers)
        self.head = nn.Linear(hidden, out)

    def forward(self, batch):
        return self.head(global_mean_pool(self.backbone(batch).s, batch.batch))


class PyGModel(nn.Module):
    """The same network written directly with PyG modules."""

    def __init__(self, node_in: int, hidden: int, layers: int, out: int):
        super().__init__()
        self.embedding = nn.Linear(node_in, hidden)
        self.convs = nn.ModuleList([GCNConv(hidden, hidden) for _ in range(layers)])
        self.norms = nn.ModuleList([nn.BatchNorm1d(hidden) for _ in range(layers)])
        self.head = nn.Linear(hidden, out)

    def forward(self, batch):
        h = self.embedding(batch.x_s)
        for conv, norm in zip(self.convs, self.norms):
            h = h + torch.relu(norm(conv(h, batch.edge_index)))
        return self.head(global_mean_pool(h, batch.batch))

    def load_from(self, ff: FarfieldModel) -> "PyGModel":
        bb = ff.backbone
        self.embedding.load_state_dict(bb.embedding.state_dict())
        for mine, theirs in zip(self.convs, bb.layers):
            mine.load_state_dict(theirs.state_dict())
        for mine, theirs in zip(self.norms, bb.norms):
            mine.load_state_dict(theirs.state_dict())
        self.head.load_state_dict(ff.head.state_dict())
        return self


def epoch(model, opt, batches, sync) -> float:
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    sync()
    t = time.perf_counter()
    for b in batches:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(b), b.y)
        loss.backward()
        opt.step()
    sync()
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=155)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--path", default=str(DATA / "lrgb"))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", action="store_true", help="also print a JSON record of the result")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    t = time.perf_counter()
    graphs = peptides_func(args.path)
    print(f"loaded {len(graphs)} graphs in {time.perf_counter() - t:.1f} s")
    train = [g for g in graphs if int(g.split) == 0]
    atoms_train = sum(g.num_nodes for g in train)
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(train))[: args.batches * args.batch_size]
    sub = [train[i] for i in pick]
    atoms_sub = sum(g.num_nodes for g in sub)
    keep = ("x_s", "edge_index", "edge_s", "y")
    batches = []
    for i in range(0, len(sub), args.batch_size):
        b = Batch.from_data_list(sub[i:i + args.batch_size], exclude_keys=[k for k in sub[0].keys() if k not in keep])
        batches.append(b.to(dev))

    torch.manual_seed(0)
    spec = InputSpec(int(sub[0].x_s.shape[1]), 0, int(sub[0].edge_s.shape[1]))
    ff = FarfieldModel(spec, args.hidden, args.layers, int(sub[0].y.shape[1])).to(dev)
    pg = PyGModel(spec.node_s, args.hidden, args.layers, int(sub[0].y.shape[1])).to(dev).load_from(ff)
    ff.eval(), pg.eval()
    with torch.no_grad():
        diff = (ff(batches[0]) - pg(batches[0])).abs().max().item()
    print(f"same outputs: max |farfield - pyg| = {diff:.2e}")
    n_ff = sum(p.numel() for p in ff.parameters())
    n_pg = sum(p.numel() for p in pg.parameters())
    print(f"parameters: farfield {n_ff:,} (incl. unused edge embedding), pyg {n_pg:,}")
    opts = {m: torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (ff, pg)}
    for m in (ff, pg):
        epoch(m, opts[m], batches[:2], sync)                   # warm-up
    # interleaved batch by batch (order alternating between repeats), so that load from other processes hits
    # both models alike; a model's subset time is the sum over batches of its median step time
    steps = {ff: [[] for _ in batches], pg: [[] for _ in batches]}
    for r in range(args.repeats):
        for i, b in enumerate(batches):
            for m in ((ff, pg) if r % 2 == 0 else (pg, ff)):
                steps[m][i].append(epoch(m, opts[m], [b], sync))
    times = {m: [sum(steps[m][i][r] for i in range(len(batches))) for r in range(args.repeats)] for m in steps}
    scale = atoms_train / atoms_sub
    t_ff = sum(statistics.median(v) for v in steps[ff]) * scale
    t_pg = sum(statistics.median(v) for v in steps[pg]) * scale
    print(f"subset: {len(batches)} batches, {len(sub)} graphs, {atoms_sub:,} atoms; full train split "
          f"{len(train):,} graphs, {atoms_train:,} atoms (scale x{scale:.2f}); device {dev}, {args.threads} thread(s)")
    print(f"farfield gcn : {t_ff:8.1f} s/epoch  (subset passes {', '.join(f'{x:.2f}' for x in times[ff])} s)")
    print(f"PyG GCNConv  : {t_pg:8.1f} s/epoch  (subset passes {', '.join(f'{x:.2f}' for x in times[pg])} s)")
    print(f"ratio farfield / PyG = {t_ff / t_pg:.3f}")
    if args.json:
        print(json.dumps({"benchmark": "gcn_vs_pyg_peptides_func", "hidden": args.hidden, "layers": args.layers,
                          "batches": len(batches), "batch_size": args.batch_size, "threads": args.threads,
                          "repeats": args.repeats, "max_abs_diff": diff, "farfield_s_per_epoch": t_ff,
                          "pyg_s_per_epoch": t_pg, "ratio_farfield_over_pyg": t_ff / t_pg, "speedup": t_pg / t_ff}))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        for name, m in (("farfield", ff), ("pyg", pg)):
            with profile(activities=acts) as prof:
                epoch(m, opts[m], batches, sync)
            print(f"--- {name}: top operators by self time")
            key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
            print(prof.key_averages().table(sort_by=key, row_limit=12))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

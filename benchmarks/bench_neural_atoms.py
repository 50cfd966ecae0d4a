"""One training step of GCN + Neural Atoms at the published Peptides-func configuration, today's per-graph
(segment) Neural Atoms block against the previous padded one, on real LRGB Peptides-func batches (Dwivedi et
al., "Long Range Graph Benchmark", 2022).

Model: farfield's ``gcn`` backbone (5 x 155, the LRGB GCN block), Neural Atoms at the published Peptides
configuration (Li et al., "Neural Atoms", ICLR 2024; their 2D code: ``avg_nodes=150, ratio=0.9``, ``desc``
schedule, so 135, 122, 110, 99, 90 neural atoms per layer; placed after each layer, heads summed; one head),
mean pooling, a linear head to the 10 labels, BCE-with-logits, AdamW. This is the model of the README's
"Neural Atoms on LRGB Peptides-func" study.

OLD (``PaddedNeuralAtomBlock``, kept here verbatim as the reference) scatters the per-atom attention into a
dense [B, N_max, H, K] layout (``to_dense_batch``) for the two sums over a graph's atoms and scores every
seed (all 135) in every layer, masking the unused ones. NEW (:class:`farfield.models.long_range.NeuralAtomBlock`)
multiplies each graph's own rows (no padded rows) and scores only the live seeds (K_l of the layer). Both
models hold the same weights (the OLD model is a copy of the NEW one with its blocks swapped): the script
asserts equal outputs and gradients (float64, one batch) before timing.

Method: ``--batches`` random batches of 128 training graphs (seed 0) are collated once (not timed). One step
= zero_grad, forward, loss, backward, AdamW step. The two models alternate (OLD NEW OLD NEW ...), each pass
covering every batch, ``--repeats`` times after one warm-up pass each; the ratio of median pass times is
reported, in wall time and in process CPU time (one thread: robust to other jobs sharing the cores). One
thread by default (``--threads``). FLOPs of one forward + backward on the first batch are
counted with ``torch.utils.flop_counter.FlopCounterMode`` inside the Neural Atoms blocks (dense matrix
products) and in total (the counter counts GCN's sparse CSR aggregation as a dense [N, N] product, so the
total is dominated by that artefact and is the same for both models).

    python benchmarks/bench_neural_atoms.py [--batches 2] [--repeats 3] [--threads 1] [--device cpu] [--json]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import global_mean_pool
from torch_geometric.utils import to_dense_batch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farfield.models import InputSpec, build_backbone  # noqa: E402
from farfield.models.long_range import NeuralAtomBlock, build_strategy  # noqa: E402

DATA = Path(os.environ.get("FARFIELD_TEST_DATA", ROOT.parent / "shared" / "data"))

#: the published Peptides configuration (Li et al. 2024), as the README's study runs it
PUBLISHED = {"ratio": 0.9, "avg_nodes": 150, "schedule": "desc"}


# -- the reference: Neural Atoms block before the segment rewrite (padded [B, N_max] layout) ------------------

class _PaddedMAB(nn.Module):
    """Set-Transformer attention block with a key mask (reference copy). q [B, M, d], x [B, K, d],
    key_mask [B, K] -> [B, M, d]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln0, self.ln1 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, q: Tensor, x: Tensor, key_mask: Tensor) -> Tensor:
        B, M, d = q.shape
        H = self.heads
        Q = self.q(q)
        Qh = Q.view(B, M, H, d // H).transpose(1, 2)
        Kh = self.k(x).view(B, -1, H, d // H).transpose(1, 2)
        Vh = self.v(x).view(B, -1, H, d // H).transpose(1, 2)
        scores = Qh @ Kh.transpose(-1, -2) / math.sqrt(d)
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        O = Q + (scores.softmax(-1) @ Vh).transpose(1, 2).reshape(B, M, d)
        O = self.ln0(O)
        return self.ln1(O + torch.relu(self.o(O)))


class PaddedNeuralAtomBlock(nn.Module):
    """The Neural Atoms block as it was before the segment rewrite (Li et al. 2024, Sec. 3.2): per-atom
    scores against all ``max_atoms`` seeds (unused ones masked), then the sums over a graph's atoms in a dense
    [B, N_max, H, K] layout. Same parameters (names and shapes) as :class:`NeuralAtomBlock`.
    h [N, d], batch [N], atoms [B] -> [N, d]."""

    def __init__(self, dim: int, max_atoms: int, heads: int = 1, head_reduce: str = "mean"):
        super().__init__()
        self.heads, self.max_atoms, self.head_reduce = heads, max_atoms, head_reduce
        self.seeds = nn.Parameter(torch.randn(max_atoms, dim) / math.sqrt(dim))
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln0, self.ln1 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.exchange = _PaddedMAB(dim, heads)

    def forward(self, h: Tensor, batch: Tensor, num_graphs: int, atoms: Tensor) -> Tensor:
        N, d = h.shape
        H, dh, K, B = self.heads, d // self.heads, self.max_atoms, num_graphs
        slot_ok = torch.arange(K, device=h.device)[None, :] < atoms[:, None]
        Q = self.q(self.seeds.to(h.dtype))
        Kx = self.k(h).view(N, H, dh)
        Vx = self.v(h).view(N, H, dh)
        scores = torch.einsum("nhe,khe->nhk", Kx, Q.view(K, H, dh)) / math.sqrt(d)
        scores = scores.masked_fill(~slot_ok[batch][:, None, :], float("-inf"))
        A = scores.softmax(-1)
        A_d, node_ok = to_dense_batch(A, batch, batch_size=B)
        V_d, _ = to_dense_batch(Vx, batch, batch_size=B)
        AV = torch.einsum("bnhk,bnhe->bkhe", A_d, V_d).reshape(B, K, d)
        Z = self.ln0(Q.unsqueeze(0) + AV)
        Z = self.ln1(Z + torch.relu(self.o(Z)))
        Z = self.exchange(Z, Z, slot_ok)
        A_bar = A_d.sum(2) if self.head_reduce == "sum" else A_d.mean(2)
        out = A_bar @ Z
        return out[node_ok]


def padded_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every :class:`NeuralAtomBlock` replaced by a
    :class:`PaddedNeuralAtomBlock` holding the same weights."""
    out = copy.deepcopy(module)
    for name, child in list(out.named_modules()):
        for cname, c in list(child.named_children()):
            if isinstance(c, NeuralAtomBlock):
                ref = PaddedNeuralAtomBlock(c.seeds.shape[1], c.max_atoms, c.heads, c.head_reduce)
                ref.load_state_dict(c.state_dict())
                setattr(child, cname, ref.to(c.seeds.device, c.seeds.dtype))
    return out


# -- the benchmark -------------------------------------------------------------------------------------------

class Model(nn.Module):
    def __init__(self, spec: InputSpec, hidden: int, layers: int, out: int, options: dict):
        super().__init__()
        bb = build_backbone("gcn", spec, hidden=hidden, num_layers=layers)
        self.backbone = build_strategy("neural_atoms", **options).wrap(bb)
        self.head = nn.Linear(hidden, out)

    def forward(self, batch):
        return self.head(global_mean_pool(self.backbone(batch).s, batch.batch))


def step(model, opt, b):
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.binary_cross_entropy_with_logits(model(b), b.y)
    loss.backward()
    opt.step()


def run_pass(model, opt, batches, sync) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one pass; CPU time is robust to other jobs on shared cores."""
    sync()
    t, c = time.perf_counter(), time.process_time()
    for b in batches:
        step(model, opt, b)
    sync()
    return time.perf_counter() - t, time.process_time() - c


def flops(model, b) -> dict:
    """FLOPs of one forward + backward pass (FlopCounterMode): in total, and inside the Neural Atoms blocks.
    The counter counts GCN's sparse (CSR) aggregation as a dense [N, N] product, so the total is dominated by an
    artefact; the Neural Atoms figure is dense matrix products only."""
    import re
    from torch.utils.flop_counter import FlopCounterMode
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as fc:
        nn.functional.binary_cross_entropy_with_logits(model(b), b.y).backward()
    blocks = re.compile(r"\.long_range\.blocks\.\d+$")
    na = sum(sum(v.values()) for k, v in fc.get_flop_counts().items() if blocks.search(k))
    return {"total": int(fc.get_total_flops()), "neural_atoms": int(na)}


def check_equal(new: nn.Module, old: nn.Module, b) -> dict:
    """Max differences of outputs and parameter gradients, float64, eval mode (no dropout, BatchNorm running
    statistics). Each gradient difference is relative to the largest gradient entry of its module's
    parameters: some gradients are zero analytically (the exchange's key bias: softmax is shift-invariant) and
    are round-off in both implementations."""
    new, old = copy.deepcopy(new).double().eval(), copy.deepcopy(old).double().eval()
    b = b.clone()
    b.x_s = b.x_s.double()
    outs = []
    for m in (new, old):
        m.zero_grad(set_to_none=True)
        y = m(b)
        y.sin().sum().backward()
        outs.append((y.detach(), {k: p.grad for k, p in m.named_parameters()}))
    (y1, g1), (y0, g0) = outs
    assert {k for k in g0 if g0[k] is not None} == {k for k in g1 if g1[k] is not None}
    scale: dict = {}
    for k, g in g0.items():
        if g is not None:
            mod = k.rsplit(".", 1)[0]
            scale[mod] = max(scale.get(mod, 0.0), g.abs().max().item())
    worst, where = 0.0, None
    for k, g in g0.items():
        if g is not None:
            r = (g1[k] - g).abs().max().item() / max(scale[k.rsplit(".", 1)[0]], 1e-300)
            if r > worst:
                worst, where = r, k
    return {"output": ((y1 - y0).abs().max() / y0.abs().max()).item(), "grad": worst, "grad_worst_param": where}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=155)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--path", default=str(DATA / "lrgb"))
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    say = (lambda *a: None) if args.json else print

    from farfield.datasets.lrgb import peptides_func
    graphs = peptides_func(args.path)
    train = [g for g in graphs if int(g.split) == 0]
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(train))[: args.batches * args.batch_size]
    sub = [train[i] for i in pick]
    keep = ("x_s", "edge_index", "edge_s", "y")
    batches = [Batch.from_data_list(sub[i:i + args.batch_size],
                                    exclude_keys=[k for k in sub[0].keys() if k not in keep]).to(dev)
               for i in range(0, len(sub), args.batch_size)]
    sizes = torch.bincount(batches[0].batch)
    say(f"{len(batches)} batches of {args.batch_size} Peptides-func training graphs; first batch: "
        f"{int(sizes.sum())} atoms, largest graph {int(sizes.max())} "
        f"(padded layout {len(sizes) * int(sizes.max())} rows)")

    torch.manual_seed(0)
    spec = InputSpec(int(sub[0].x_s.shape[1]), 0, int(sub[0].edge_s.shape[1]))
    new = Model(spec, args.hidden, args.layers, int(sub[0].y.shape[1]), PUBLISHED).to(dev)
    old = padded_copy(new)
    eq = check_equal(new, old, batches[0])
    say(f"float64 max relative difference NEW vs OLD: outputs {eq['output']:.1e}, gradients {eq['grad']:.1e}")
    assert eq["output"] < 1e-10 and eq["grad"] < 1e-10, eq
    with torch.no_grad():
        d32 = (new(batches[0]) - old(batches[0])).abs().max().item()
    say(f"float32 max |NEW - OLD| output: {d32:.1e}")
    fl = {"old": flops(old, batches[0]), "new": flops(new, batches[0])}

    opts = {m: torch.optim.AdamW(m.parameters(), lr=3e-4) for m in (old, new)}
    for m in (old, new):
        m.train()
        run_pass(m, opts[m], batches[:1], sync)                       # warm-up
    times = {old: [], new: []}
    for _ in range(args.repeats):
        for m in (old, new):
            times[m].append(run_pass(m, opts[m], batches, sync))
    t_old, t_new = (statistics.median(x for x, _ in times[m]) for m in (old, new))
    c_old, c_new = (statistics.median(c for _, c in times[m]) for m in (old, new))
    result = {
        "config": {"backbone": "gcn", "hidden": args.hidden, "layers": args.layers, "neural_atoms": PUBLISHED,
                   "batch_size": args.batch_size, "batches": len(batches), "repeats": args.repeats,
                   "threads": args.threads, "device": str(dev)},
        "equal": eq, "float32_output_diff": d32,
        "step_s": {"old": t_old / len(batches), "new": t_new / len(batches)},
        "cpu_step_s": {"old": c_old / len(batches), "new": c_new / len(batches)},
        "passes_wall_cpu_s": {"old": times[old], "new": times[new]},
        "ratio_new_over_old": t_new / t_old,
        "cpu_ratio_new_over_old": c_new / c_old,
        "gflop_per_step": {k: {kk: vv / 1e9 for kk, vv in v.items()} for k, v in fl.items()},
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for k in ("old", "new"):
            f = result["gflop_per_step"][k]
            say(f"{k.upper():3s}: {result['step_s'][k]:6.2f} s/step wall, {result['cpu_step_s'][k]:6.2f} s CPU "
                f"(passes {', '.join(f'{x:.2f}' for x, _ in times[old if k == 'old' else new])} s)"
                f"  {f['total']:7.1f} GFLOP fwd+bwd, {f['neural_atoms']:7.1f} in Neural Atoms")
        say(f"ratio NEW / OLD step time = {result['ratio_new_over_old']:.3f} wall, "
            f"{result['cpu_ratio_new_over_old']:.3f} CPU; FLOPs "
            f"{result['gflop_per_step']['new']['total'] / result['gflop_per_step']['old']['total']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

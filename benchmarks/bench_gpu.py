"""Training throughput on one accelerator: farfield against plain references on the same card and data.

Rows (each a training loop: forward, MSE loss, backward, AdamW step):

* ``gvp (farfield)`` / ``gvp (reference)``: GVP-GNN (Jing et al. 2021) at farfield's default, published width
  (node dims (100, 16), edge dims (32, 1), 5 layers) on residue graphs (kNN 30) built from the shipped / test
  structures (EC-sized chains: 300-500 residues where FARFIELD_TEST_DATA/structures has them), graph-level
  regression of a random target. The reference is the plain transcription of gvp-pytorch's equations,
  ``ReferenceGVPGNN`` of ``benchmarks/bench_backbones.py``, reusing the farfield model's parameters.
* ``schnet (farfield)`` / ``schnet (pyg)``: SchNet (Schuett et al. 2017, hidden 64, 3 interactions, as the
  built-in benchmark trains it) on the built-in ``peptide_electrostatics`` benchmark (energy, sum readout),
  against ``torch_geometric.nn.models.SchNet`` fed the same precomputed radius-5 A edges through its submodules
  (its own ``forward`` needs torch_cluster).

Per row: graphs/s and nodes/s (residues/s for residue graphs, atoms/s for SchNet), the accelerator's peak
memory (``torch.cuda.max_memory_allocated``; on the CPU the process's peak resident set, VmHWM, which includes
the Python process itself), and the share of wall time spent in the DataLoader iterator and host-to-device copy
(``data_share``) against the model step (synchronised with ``torch.cuda.synchronize`` on CUDA). The two rows of a
pair alternate (A B A B, median of repeats), so that contention affects both alike.

    python benchmarks/bench_gpu.py                       # CUDA when available; < 5 minutes on one GPU
    python benchmarks/bench_gpu.py --device cpu --quick  # smoke test (< 1 minute)
    python benchmarks/bench_gpu.py --json out.json
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from torch_geometric.loader import DataLoader  # noqa: E402
from torch_geometric.utils import scatter  # noqa: E402

from farfield.models import InputSpec, build_backbone  # noqa: E402

DATA = Path(os.environ.get("FARFIELD_TEST_DATA", ROOT.parent / "shared" / "data"))


# -- data ------------------------------------------------------------------------------------------------------------
def residue_graphs(quick: bool, min_residues: int = 300, max_residues: int = 500):
    """Residue graphs (kNN 30, farfield's residue features) of the single protein chains in
    FARFIELD_TEST_DATA/structures (else the shipped example) of ``min_residues``-``max_residues`` residues, the size
    of EC chains; chains longer than ``max_residues`` are cut to their first ``max_residues`` residues. When fewer
    than two chains qualify, every chain of at least 40 residues is used. Repeated to at least 32 graphs (8 quick)."""
    import numpy as np

    from farfield.data import Featuriser, FeaturiserConfig
    from farfield.io import example_path, read_structure
    feat = Featuriser(FeaturiserConfig(level="residue", edges="knn:30"))
    files = sorted((DATA / "structures").glob("*.pdb")) if (DATA / "structures").is_dir() else []
    chains = []
    for f in files or [example_path()]:
        try:
            s = read_structure(f)
        except Exception:  # noqa: BLE001 - files the reader does not take are not benchmark data
            continue
        for c in np.unique(s.chain_id):
            sub = s.select(s.chain_id == c)
            res = sub.residue_index()
            res = res - res.min()
            n = int(res.max()) + 1
            if n > max_residues:
                sub, n = sub.select(res < max_residues), max_residues
            chains.append((n, sub))
    ec = [c for n, c in chains if min_residues <= n <= max_residues]
    chosen = ec if len(ec) >= 2 else [c for n, c in chains if n >= 40] or [read_structure(example_path())]
    graphs = []
    for c in chosen[:4] if quick else chosen:
        try:
            graphs.append(feat(c))
        except Exception:  # noqa: BLE001
            continue
    gen = torch.Generator().manual_seed(0)
    for g in graphs:
        g.y = torch.randn(1, 1, generator=gen)
    while len(graphs) < (8 if quick else 32):
        graphs = graphs + graphs
    return graphs


def peptide_batches(quick: bool, batch_size: int = 16):
    """The built-in benchmark's training loader (peptide_electrostatics, energy, radius 5 A)."""
    from farfield.train.config import DataConfig
    from farfield.train.data import GraphDataModule
    dm = GraphDataModule(DataConfig(batch_size=batch_size, limit=64 if quick else 0), "radius:5.0", seed=0,
                         standardize=True)
    dm.setup("fit")
    return dm


# -- models ----------------------------------------------------------------------------------------------------------
class PygSchNet(torch.nn.Module):
    """``torch_geometric.nn.models.SchNet`` on precomputed edges: its embedding, Gaussian smearing,
    interaction blocks and output MLP, with ``edge_index`` from the batch (no torch_cluster radius graph).
    Atom types: the index of the batch's one-hot element features."""

    def __init__(self, hidden: int = 64, num_layers: int = 3, cutoff: float = 5.0, num_gaussians: int = 50):
        super().__init__()
        from torch_geometric.nn.models import SchNet
        self.m = SchNet(hidden_channels=hidden, num_filters=hidden, num_interactions=num_layers,
                        num_gaussians=num_gaussians, cutoff=cutoff, readout="add")

    def forward(self, b):
        m = self.m
        h = m.embedding(b.x_s.argmax(-1))
        row, col = b.edge_index
        w = (b.pos[row] - b.pos[col]).norm(dim=-1)
        attr = m.distance_expansion(w)
        for inter in m.interactions:
            h = h + inter(h, b.edge_index, w, attr)
        h = m.lin2(m.act(m.lin1(h)))
        return scatter(h, b.batch, dim=0, dim_size=b.num_graphs, reduce="sum")


class Farfield(torch.nn.Module):
    """A farfield backbone + linear head on its node scalars, summed per graph."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(backbone.hidden_s, 1)

    def forward(self, b):
        return scatter(self.head(self.backbone(b).s), b.batch, dim=0, dim_size=b.num_graphs, reduce="sum")


class Reference(torch.nn.Module):
    """bench_backbones' ReferenceGVPGNN (gvp-pytorch's equations) + the same kind of head. Its forward creates
    buffers without ``device=``; it runs under ``torch.device(<batch device>)`` so they land on the batch's device."""

    def __init__(self, farfield_model: Farfield):
        super().__init__()
        from bench_backbones import ReferenceGVPGNN
        self.ref = ReferenceGVPGNN(farfield_model.backbone)
        self.head = torch.nn.Linear(farfield_model.backbone.hidden_s, 1)
        self.head.load_state_dict(farfield_model.head.state_dict())

    def forward(self, b):
        with torch.device(b.pos.device):
            s = self.ref(b)
        return scatter(self.head(s), b.batch, dim=0, dim_size=b.num_graphs, reduce="sum")


# -- measurement -----------------------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def _peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    from farfield.train.run import _peak_rss_mb      # VmHWM, as training reports it
    rss = _peak_rss_mb()
    if rss is not None:
        return rss
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_loop(model, make_loader, device, steps: int) -> dict:
    """``steps`` training steps over a fresh ``make_loader()`` (cycled; the same batches for every model): wall time
    in the loader + copy vs in the step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    loader = make_loader()
    it = iter(loader)
    t_data = t_step = 0.0
    graphs = nodes = 0
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        b = b.to(device, non_blocking=True)
        _sync(device)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(b)
        loss = torch.nn.functional.mse_loss(out, b.y.reshape(out.shape).to(out.dtype))
        loss.backward()
        opt.step()
        _sync(device)
        t2 = time.perf_counter()
        t_data += t1 - t0
        t_step += t2 - t1
        graphs += int(b.num_graphs)
        nodes += int(b.num_nodes)
    total = t_data + t_step
    return {"graphs_per_sec": graphs / total, "nodes_per_sec": nodes / total, "data_share": t_data / total,
            "sec": total, "graphs": graphs, "nodes": nodes}


def compare(models: dict, make_loader, device, steps: int, repeats: int, node_kind: str) -> list[dict]:
    """Interleaved repeats (A B A B ...) of each model's loop; per model the median of each figure."""
    runs = {k: [] for k in models}
    peaks = {}
    for name, m in models.items():          # warm-up (allocator, kernels) and peak memory of one loop
        _reset_peak(device)
        train_loop(m, make_loader, device, max(1, steps // 4))
        peaks[name] = _peak_mb(device)
    for _ in range(repeats):
        for name, m in models.items():
            runs[name].append(train_loop(m, make_loader, device, steps))
    rows = []
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("graphs_per_sec", "nodes_per_sec", "data_share")}
        rows.append({"model": name, "node_kind": node_kind, **med,
                     "residues_per_sec": med["nodes_per_sec"], "peak_mb": peaks[name],
                     "nodes_per_graph": rs[0]["nodes"] / rs[0]["graphs"], "steps": steps, "repeats": repeats,
                     "params": sum(p.numel() for p in models[name].parameters())})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="a smoke test: few graphs, few steps (< 1 minute on a CPU)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per measurement (default 30; quick 2)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3; quick 1)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available (use --device cpu)")
    steps = args.steps or (2 if args.quick else 30)
    repeats = args.repeats or (1 if args.quick else 3)
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    rows = []

    # GVP-GNN on residue graphs
    graphs = residue_graphs(args.quick)
    def loader():
        return DataLoader(graphs, batch_size=2 if args.quick else 8, shuffle=True,
                          generator=torch.Generator().manual_seed(0), pin_memory=device.type == "cuda")
    spec = InputSpec.from_data(graphs[0])
    longest = max(float((g.pos[g.edge_index[0]] - g.pos[g.edge_index[1]]).norm(dim=-1).max()) for g in graphs)
    torch.manual_seed(0)
    opts = {"node_dims": (16, 4), "edge_dims": (8, 1), "num_layers": 2} if args.quick else {}
    ff = Farfield(build_backbone("gvp", spec, cutoff=longest + 1.0, **opts)).to(device)
    ref = Reference(Farfield(build_backbone("gvp", spec, cutoff=longest + 1.0, **opts))).to(device)
    ref.ref.m.load_state_dict(ff.backbone.state_dict())
    ref.head.load_state_dict(ff.head.state_dict())
    rows += compare({"gvp (farfield)": ff, "gvp (reference)": ref}, loader, device, steps, repeats, "residues")

    # SchNet on the built-in benchmark
    dm = peptide_batches(args.quick)
    loader = dm.train_dataloader          # seeded per epoch: the same batches on every call
    torch.manual_seed(0)
    hidden = 16 if args.quick else 64
    ff = Farfield(build_backbone("schnet", dm.input_spec, hidden=hidden, num_layers=3, cutoff=5.0)).to(device)
    pyg = PygSchNet(hidden=hidden, num_layers=3, cutoff=5.0).to(device)
    rows += compare({"schnet (farfield)": ff, "schnet (pyg)": pyg}, loader, device, steps, repeats, "atoms")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    res = {"device": name, "quick": args.quick, "torch": torch.__version__, "seconds": time.perf_counter() - t_start,
           "rows": rows}
    print(f"device: {name}; {'quick smoke test; ' if args.quick else ''}{res['seconds']:.0f} s")
    print(f"{'model':<20}{'graphs/s':>10}{'nodes/s':>12}{'nodes':>9}{'nodes/graph':>13}{'peak MB':>10}{'data share':>12}")
    for r in rows:
        print(f"{r['model']:<20}{r['graphs_per_sec']:>10.1f}{r['nodes_per_sec']:>12.0f}{r['node_kind']:>9}"
              f"{r['nodes_per_graph']:>13.0f}{r['peak_mb']:>10.0f}{r['data_share']:>12.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

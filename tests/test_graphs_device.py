"""Device-side neighbour lists (torch kernels) against the host builders (scipy cKDTree): identical edge sets,
ties included, on real proteins, clouds and lattices; their use in training (data.edges_on)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from farfield.errors import ConfigError
from farfield.graphs import GraphBuilder
from farfield.graphs import neighbours_torch as T

DATA = Path(os.environ.get("FARFIELD_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SPECS = ["radius:4.5", "radius:8,max=12", "knn:1", "knn:10", "knn:30", "full", "seq:2", "radius:4.5+random:5",
         "knn:8+random:3,law=exponential,dir=outgoing", "radius:6,chain=1", "knn:6,chain=1",
         "radius:5+random:4,chain=1", "random:3,law=uniform,exclude=0", "radius:3+seq:1+knn:4"]


def _both(spec, pos, batch=None, chain=None, key=None):
    gb = GraphBuilder(spec)
    args = [torch.as_tensor(pos), None if batch is None else torch.as_tensor(batch),
            None if chain is None else torch.as_tensor(chain), key]
    return gb(*args, backend="host"), gb(*args, backend="device")


def _typed_set(e):
    ei, et = e.edge_index.cpu().numpy(), e.edge_type.cpu().numpy()
    out = set(zip(ei[0].tolist(), ei[1].tolist(), et.tolist()))
    assert len(out) == ei.shape[1], "duplicate edges"
    return out


def _lattice():
    """216 points on a cubic lattice of spacing 1.5 A (distances repeat massively: ties everywhere; neighbours at
    exactly the cutoff), three graphs, chains of 40."""
    g = np.stack(np.meshgrid(*[np.arange(6.0)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.5
    return g, np.repeat(np.arange(3), [100, 66, 50]), np.arange(216) // 40


@pytest.mark.parametrize("spec", SPECS)
def test_device_equals_host_on_a_lattice_full_of_ties(spec):
    pos, batch, chain = _lattice()
    a, b = _both(spec, pos, batch, chain)
    assert a.num_edges > 0 and _typed_set(a) == _typed_set(b)


@pytest.mark.parametrize("r", [1.5, 3.0, 1.5 * 2 ** 0.5])
def test_radius_includes_pairs_at_exactly_the_cutoff(r):
    pos, batch, _ = _lattice()
    a, b = _both(f"radius:{r!r}", pos, batch)
    p = torch.as_tensor(pos)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    same = torch.as_tensor(batch)[:, None] == torch.as_tensor(batch)[None]
    want = int(((d2 <= r * r) & same).sum()) - len(pos)
    assert a.num_edges == b.num_edges == want


@pytest.mark.parametrize("k", [1, 5, 6, 19, 26])
def test_knn_ties_go_to_the_lower_source_index(k):
    pos, _, _ = _lattice()
    p = torch.as_tensor(pos)
    a, b = _both(f"knn:{k}", pos)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    want = set()
    for i in range(len(pos)):
        cand = sorted((float(d2[i, j]), j) for j in range(len(pos)) if j != i)[:k]
        want |= {(j, i) for _, j in cand}
    got = {tuple(x) for x in a.edge_index.T.tolist()}
    assert got == want == {tuple(x) for x in b.edge_index.T.tolist()}


def test_radius_cap_keeps_the_nearest_then_lower_indices():
    pos, _, _ = _lattice()
    p = torch.as_tensor(pos)
    a, b = _both("radius:3.2,max=9", pos)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    want = set()
    for i in range(len(pos)):
        cand = sorted((float(d2[i, j]), j) for j in range(len(pos)) if j != i and d2[i, j] <= 3.2 ** 2)[:9]
        want |= {(j, i) for _, j in cand}
    assert {tuple(x) for x in a.edge_index.T.tolist()} == want == {tuple(x) for x in b.edge_index.T.tolist()}


@pytest.mark.parametrize("seed", [0, 1])
def test_device_equals_host_on_clouds_and_batches_equal_graphs(seed):
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 57, 300, 11]
    pos = np.concatenate([rng.uniform(0, (n / 0.1) ** (1 / 3), (n, 3)) for n in sizes])
    batch = np.repeat(np.arange(len(sizes)), sizes)
    for spec in ["radius:4.5", "radius:6,max=8", "knn:12", "radius:4.5+random:6", "full"]:
        a, b = _both(spec, pos, batch)
        assert _typed_set(a) == _typed_set(b), spec
        # batched = per graph with node offsets (the device path alone)
        off, per = 0, set()
        for g, n in enumerate(sizes):
            e = GraphBuilder(spec)(torch.as_tensor(pos[off:off + n]), graph_key=torch.tensor([g]), backend="device")
            per |= {(s + off, t + off, ty) for (s, t, ty) in _typed_set(e)}
            off += n
        assert per == _typed_set(b), spec


@pytest.mark.parametrize("name", ["1aki.pdb", "4hhb.pdb"])
def test_device_equals_host_on_real_proteins(name):
    path = DATA / "structures" / name
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"test data {path} is missing under CI")
        pytest.skip(f"test data {path} is not available (set FARFIELD_TEST_DATA)")
    import gemmi
    st = gemmi.read_structure(str(path))
    pos, chain, ca = [], [], []
    for ci, ch in enumerate(st[0]):
        for res in ch:
            for at in res:
                pos.append(at.pos.tolist())
                chain.append(ci)
                ca.append(at.name == "CA")
    pos, chain, ca = np.asarray(pos), np.asarray(chain), np.asarray(ca)
    counts = {}
    for spec in ["radius:4.5", "radius:6,max=16", "knn:16", "radius:4.5+random:8"] if name == "1aki.pdb" else []:
        a, b = _both(spec, pos, None, chain)       # atoms (1aki: 1,000)
        assert _typed_set(a) == _typed_set(b), (name, spec)
        counts[spec] = a.num_edges
    assert not counts or counts["radius:4.5"] > 5 * len(pos)
    for spec in ["knn:30", "radius:10,max=30,chain=1+random:10,chain=1"]:
        a, b = _both(spec, pos[ca], None, chain[ca])
        assert _typed_set(a) == _typed_set(b), (name, spec)


def test_random_noise_is_a_pure_function_of_the_counters(monkeypatch):
    u = T.hash_uniform(torch.tensor([[7], [7], [8]]), torch.tensor([[0], [1], [0]]), torch.arange(200)[None])
    assert u.dtype == torch.float64 and bool(((u > 0) & (u < 1)).all())
    assert not torch.equal(u[0], u[1]) and not torch.equal(u[0], u[2])
    again = T.hash_uniform(torch.tensor([[7]]), torch.tensor([[1]]), torch.arange(50, 200)[None])
    assert torch.equal(again[0], u[1, 50:])
    big = T.hash_uniform(torch.tensor([[3]]), torch.arange(400)[:, None], torch.arange(400)[None]).reshape(-1)
    assert abs(float(big.mean()) - 0.5) < 0.005 and abs(float(big.var()) - 1 / 12) < 0.002
    # chunking does not change the draw
    pos, batch, _ = _lattice()
    gb = GraphBuilder("radius:2+random:4")
    ref = _typed_set(gb(torch.as_tensor(pos), torch.as_tensor(batch), backend="device"))
    monkeypatch.setattr(T, "CHUNK", 97)
    assert _typed_set(gb(torch.as_tensor(pos), torch.as_tensor(batch), backend="device")) == ref


def test_backend_is_checked():
    with pytest.raises(ConfigError, match="backend must be one of"):
        GraphBuilder("knn:3")(torch.randn(5, 3), backend="gpu")
    with pytest.raises(ConfigError, match="NaN"):
        GraphBuilder("knn:3")(torch.full((5, 3), float("nan")), backend="device")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here); the CPU tests above run "
                    "the same torch kernels on the CPU device")
def test_cuda_edges_equal_host_edges():
    pos, batch, chain = _lattice()
    for spec in SPECS:
        gb = GraphBuilder(spec)
        a = gb(torch.as_tensor(pos), torch.as_tensor(batch), torch.as_tensor(chain), backend="host")
        b = gb(torch.as_tensor(pos).cuda(), torch.as_tensor(batch).cuda(), torch.as_tensor(chain).cuda())
        assert b.edge_index.is_cuda and _typed_set(a) == _typed_set(b), spec


# ---- training: edges rebuilt on the batch's device ----------------------------------------------------------------

def _dm(edges, noise=0.0, edges_on="device"):
    from farfield.train.config import DataConfig
    from farfield.train.data import GraphDataModule
    cfg = DataConfig(dataset="peptide_electrostatics", edges=edges, limit=40, batch_size=8, edges_on=edges_on)
    dm = GraphDataModule(cfg, edges, seed=3)
    dm.setup()
    if noise:
        dm = dm.with_noise(noise)
    return dm


@pytest.mark.parametrize("edges,noise", [("radius:5.0+random:4", 0.0), ("radius:5.0", 0.3),
                                         ("radius:4.0,max=6+random:2", 0.2)])
def test_device_edges_in_the_loader_equal_the_host_edges(edges, noise):
    host = _dm(edges, noise, edges_on="loader")
    dev = _dm(edges, noise, edges_on="device")
    dev._trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    assert dev.edges_on_device() and not host.edges_on_device()
    for make in ("train_dataloader", "val_dataloader"):
        lh, ld = getattr(host, make)(), getattr(dev, make)()
        for epoch in (0, 1):
            for loader in (lh, ld):
                loader.batch_sampler.set_epoch(epoch)
            n = 0
            for bh, bd in zip(lh, ld):
                rebuilt = "random" in edges or (noise and make == "train_dataloader")
                marked = getattr(bd, "edge_epoch", None) is not None
                assert marked == bool(rebuilt)
                if marked:
                    assert bd.edge_index is None                  # nothing built in the loader
                bd = dev.on_after_batch_transfer(bd, 0)
                assert not hasattr(bd, "edge_epoch") or bd.edge_epoch is None
                assert torch.equal(bh.pos, bd.pos)                 # same (noisy) positions
                assert _typed_set(bh) == _typed_set(bd)
                n += 1
            assert n > 0


def test_train_with_edges_on_device_runs_and_matches_the_loader(tmp_path):
    from farfield.train.config import TrainConfig
    from farfield.train.run import config_hash, train
    base = {"data": {"edges": "radius:5.0", "limit": 40, "batch_size": 8},
            "model": {"backbone": "schnet", "backbone_options": {"hidden": 16, "num_layers": 2},
                      "long_range": "random"},
            "optim": {"epochs": 2}, "run": {"seed": 1, "progress": False}}
    out = {}
    for mode in ("loader", "device"):
        d = json.loads(json.dumps(base))
        d["data"]["edges_on"] = mode
        d["run"]["out"] = str(tmp_path / mode)
        cfg = TrainConfig.from_dict(d)
        out[mode] = (train(cfg, quiet=True), config_hash(cfg))
    assert out["loader"][1] == out["device"][1]                # where edges are built is not part of the run key
    a, b = out["loader"][0], out["device"][0]
    keys = [k for k in a if k.startswith("test/")]
    assert keys
    for k in keys:   # the same edges: the runs differ by the summation order of messages only
        assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-5), k


def test_edges_on_is_checked():
    from farfield.train.config import DataConfig
    with pytest.raises(ConfigError, match="data.edges_on must be one of"):
        DataConfig(edges_on="gpu")


@pytest.mark.parametrize("keyed", [True, False])
def test_batch_edges_equal_item_edges_for_pairs_and_chains(keyed):
    from farfield.graphs import parse_edge_spec
    from farfield.train.data import build_batch_edges, build_edges
    rng = np.random.default_rng(4)
    items = []
    for i, (n0, n1) in enumerate([(30, 31), (12, 12), (45, 40)]):
        pos = torch.from_numpy(rng.uniform(0, 14, (n0 + n1, 3)))
        g = Data(pos=pos, x_s=torch.zeros(n0 + n1, 1), component=torch.cat([torch.zeros(n0), torch.ones(n1)]).long(),
                 chain_index=torch.from_numpy(rng.integers(0, 2, n0 + n1)))
        if keyed:
            g.graph_key = torch.tensor([10 + i])
        items.append(g)
    builder = parse_edge_spec("radius:4+random:3+knn:2,chain=1")
    for pair in (True, False):
        per = [build_edges(builder, g.clone(), pair) for g in items]
        want, off = set(), 0
        for g in per:
            want |= {(s + off, t + off, ty) for s, t, ty in _typed_set(g)}
            off += g.num_nodes
        got = build_batch_edges(builder, Batch.from_data_list([g.clone() for g in items]), pair)
        assert _typed_set(got) == want, pair
        if pair:   # no edge between the two structures of an item
            comp = torch.cat([g.component for g in items])
            assert bool((comp[got.edge_index[0]] == comp[got.edge_index[1]]).all())

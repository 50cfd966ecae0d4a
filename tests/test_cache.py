"""farfield.datasets.cache: keys, rebuild on a changed config or source, corruption detected and rebuilt,
parallel map with a progress bar, and the sharded lazy store (lazy graph sequence protocol, LRU)."""
from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from farfield.datasets import cache as C
from farfield.errors import InputError


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FARFIELD_CACHE", str(tmp_path / "cache"))


def _graph(i: int) -> Data:
    """A small graph whose content depends on i (n = 2 + i % 4 nodes)."""
    n = 2 + i % 4
    g = Data(pos=torch.arange(3 * n, dtype=torch.float32).reshape(n, 3) + i, y=torch.tensor([[float(i)]]),
             split=torch.tensor([i % 3]), group=torch.tensor([i // 2]), num_nodes=n)
    g.name = f"g{i}"
    return g


def _graph_or_none(i: int):
    return None if i == 4 else "g6: unreadable" if i == 6 else _graph(i)


def _square(x: int) -> int:
    return x * x


def _fail(x: int) -> int:
    raise RuntimeError(f"bad item {x}")


def test_cache_key_tracks_config_and_sources(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("one")
    k = C.cache_key({"edges": "knn:16", "level": "residue"}, [src])
    assert k == C.cache_key({"level": "residue", "edges": "knn:16"}, [src])         # key order irrelevant
    assert k != C.cache_key({"edges": "knn:30", "level": "residue"}, [src])
    kc = C.cache_key({"a": 1}, [src], content=True)
    src.write_text("two!")                                                           # size and mtime change
    assert k != C.cache_key({"edges": "knn:16", "level": "residue"}, [src])
    assert kc != C.cache_key({"a": 1}, [src], content=True)
    with pytest.raises(InputError, match="source file not found"):
        C.cache_key({}, [tmp_path / "nope"])


def test_parallel_map_order_progress_and_errors(capsys):
    items = list(range(23))
    assert C.parallel_map(_square, items, workers=2, desc="squares") == [x * x for x in items]
    err = capsys.readouterr().err
    assert "squares" in err and "23/23" in err                                       # the tqdm bar
    assert C.parallel_map(_square, items, workers=1, progress=False) == [x * x for x in items]
    with pytest.raises(RuntimeError, match="bad item"):
        C.parallel_map(_fail, [1, 2, 3], workers=2, progress=False)


def test_sharded_store_lazy_protocol_and_lru(tmp_path):
    graphs = [_graph(i) for i in range(10)]
    store = C.write_store(tmp_path / "s", iter(graphs), shard_size=3)
    assert sorted(p.name for p in (tmp_path / "s").glob("shard_*.pt")) == [f"shard_0000{k}.pt" for k in range(4)]
    store = C.ShardedGraphStore(tmp_path / "s", cached_shards=2)
    assert len(store) == 10 and store.loads == 0                                     # nothing read yet
    assert store.index["num_nodes"].dtype == np.int64
    assert store.index["num_nodes"].tolist() == [g.num_nodes for g in graphs]
    assert store.index["split"].tolist() == [i % 3 for i in range(10)]
    assert store.index["group"].tolist() == [i // 2 for i in range(10)]
    assert store.index["shard"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]            # for shard-wise shuffling
    assert store.names[7] == "g7"
    for i in (0, 1, 2):
        g = store[i]
        assert torch.equal(g.pos, graphs[i].pos) and torch.equal(g.y, graphs[i].y) and g.name == f"g{i}"
        assert g.num_nodes == graphs[i].num_nodes
    assert store.loads == 1                                                          # one shard for 0..2
    store[3]
    store[6]
    assert store.loads == 3
    store[4]                                                                         # shard 1 still cached
    assert store.loads == 3
    store[0]                                                                         # shard 0 was evicted (LRU 2)
    assert store.loads == 4
    assert store[-1].name == "g9" and [g.name for g in store[8:]] == ["g8", "g9"]
    with pytest.raises(IndexError):
        store[10]
    clone = pickle.loads(pickle.dumps(store))                                        # DataLoader workers
    assert clone[5].name == "g5" and len(clone._lru) == 1
    sub = store.subset([9, 2, 5])
    assert len(sub) == 3 and sub[0].name == "g9" and sub.index["num_nodes"].tolist() == [3, 4, 3]


def test_graph_cache_reuse_rebuild_and_corruption(tmp_path):
    src = tmp_path / "labels.tsv"
    src.write_text("x\n")
    calls = []

    def make(i):
        calls.append(i)
        return _graph_or_none(i)

    cache = C.GraphCache("toy", {"edges": "knn:8"}, [src])
    assert cache.load() is None
    store = cache.build(make, range(8), shard_size=3, progress=False)
    assert len(store) == 6 and "g4" not in store.names and len(calls) == 8          # None items left out
    assert store.manifest["skipped"] == ["g6: unreadable"]                           # reasons are kept
    assert (cache.folder / "config.json").is_file()
    again = C.GraphCache("toy", {"edges": "knn:8"}, [src]).get_or_build(make, range(8), progress=False)
    assert len(calls) == 8 and len(again) == 6                                       # reused, nothing rebuilt
    # a changed config is another key: built anew
    other = C.GraphCache("toy", {"edges": "knn:16"}, [src])
    assert other.folder != cache.folder
    other.get_or_build(make, range(8), progress=False)
    assert len(calls) == 16
    # a corrupted shard is detected (MD5), reported, removed and rebuilt
    shard = cache.folder / "shard_00001.pt"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(InputError, match="MD5"):
        C.ShardedGraphStore(cache.folder)[4]                                         # a lazy reader refuses it
    with pytest.warns(UserWarning, match="unusable.*rebuilding"):
        rebuilt = C.GraphCache("toy", {"edges": "knn:8"}, [src]).get_or_build(make, range(8), progress=False)
    assert len(calls) == 24 and [rebuilt[i].name for i in range(6)] == [f"g{i}" for i in (0, 1, 2, 3, 5, 7)]
    # a half-written entry (no manifest) is discarded silently
    os.remove(cache.folder / "manifest.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert C.GraphCache("toy", {"edges": "knn:8"}, [src]).load() is None
    assert not cache.folder.exists()
    # a changed source file is another key too
    src.write_text("changed labels\n")
    assert C.GraphCache("toy", {"edges": "knn:8"}, [src]).folder != cache.folder

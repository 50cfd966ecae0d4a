"""farfield.datasets.cache: the cross-process entry lock. A second process (spawned) holds an entry's lock
file the way another farfield process would (shared while reading, exclusive while building); this process
must wait for it before deleting, replacing or building the entry, and must not featurise again what the
other process built. The child uses only the standard library (``fcntl.flock`` on ``<key>.lock``), so it
starts in a fraction of a second."""
from __future__ import annotations

import multiprocessing as mp
import os
import time
import warnings

import pytest

fcntl = pytest.importorskip("fcntl", reason="the cache lock uses POSIX flock (Linux, macOS; CI "
                                  "runs these tests); elsewhere the cache runs unlocked")

HOLD = 0.8                                  # seconds the other process holds the lock


def _hold(lock_file, shared, ready, out, folder, install_from):
    """Take the lock, say so, keep it HOLD seconds, then (exclusive) install a prepared entry as a build
    would; record whether the entry was intact just before releasing, and when it released."""
    fd = os.open(lock_file, os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    ready.set()
    time.sleep(HOLD)
    if install_from:
        os.replace(install_from, folder)
    intact = os.path.isfile(os.path.join(folder, "manifest.json")) and \
        os.path.isfile(os.path.join(folder, "shard_00000.pt"))
    with open(out, "w") as f:
        f.write(f"{intact} {time.time()!r}")
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class _Holder:
    """The other process, holding ``cache``'s lock (see :func:`_hold`)."""

    def __init__(self, tmp_path, cache, shared, install_from=None):
        ctx = mp.get_context("spawn")
        self.ready = ctx.Event()
        self.out = tmp_path / f"held-{time.monotonic_ns()}.txt"
        self.proc = ctx.Process(target=_hold, args=(str(cache.lock_file), shared, self.ready, str(self.out),
                                                     str(cache.folder), str(install_from or "")))

    def __enter__(self):
        self.proc.start()
        assert self.ready.wait(60), "the other process did not take the lock"
        return self

    def __exit__(self, *exc):
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()

    def released(self) -> tuple[bool, float]:
        """(entry intact just before the release, release time)."""
        self.proc.join(30)
        intact, t = self.out.read_text().split()
        return intact == "True", float(t)


def _graph(i):
    import torch
    from torch_geometric.data import Data
    g = Data(pos=torch.full((3, 3), float(i)), num_nodes=3)
    g.name = f"g{i}"
    return g


@pytest.fixture
def cache(tmp_path):
    from farfield.datasets.cache import GraphCache
    return GraphCache("toy", {"v": 1}, root=tmp_path / "graphs")


def _corrupt(cache):
    shard = cache.folder / "shard_00000.pt"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))


def test_a_corrupted_entry_is_not_deleted_while_another_process_reads_it(cache, tmp_path):
    cache.build(_graph, range(4), shard_size=2, progress=False)
    _corrupt(cache)
    with _Holder(tmp_path, cache, shared=True) as reader:
        with pytest.warns(UserWarning, match="unusable"):
            assert cache.load() is None                     # must wait for the reader to delete it
        done = time.time()
        intact, released = reader.released()
    assert intact and released <= done                      # the reader saw the whole entry until it let go
    assert not cache.folder.exists()


def test_a_rebuild_waits_for_a_reader_before_replacing_the_entry(cache, tmp_path):
    cache.build(_graph, range(4), shard_size=2, progress=False)
    with _Holder(tmp_path, cache, shared=True) as reader:
        store = cache.build(_graph, range(6), shard_size=2, progress=False)
        done = time.time()
        intact, released = reader.released()
    assert intact and released <= done and len(store) == 6


def test_a_second_builder_waits_and_takes_the_first_builders_entry(cache, tmp_path):
    """The other process is building the entry (exclusive lock) and installs it; this process's
    ``load()`` waits for it, and so does a ``build()`` started before the entry appeared - which then
    returns the other's entry without featurising."""
    from farfield.datasets.cache import GraphCache
    calls = []

    def make(i):
        calls.append(i)
        return _graph(i)

    prepared = GraphCache("toy", {"v": 1}, root=tmp_path / "elsewhere")
    prepared.build(_graph, range(5), shard_size=2, progress=False)
    assert prepared.key == cache.key
    (tmp_path / "graphs" / "toy").mkdir(parents=True)
    with _Holder(tmp_path, cache, shared=False, install_from=prepared.folder) as builder:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            store = cache.load()                            # waits, then reads the other's entry
        done = time.time()
        _, released = builder.released()
    assert store is not None and len(store) == 5 and released <= done
    os.replace(cache.folder, prepared.folder)               # again, now with this process in build()
    with _Holder(tmp_path, cache, shared=False, install_from=prepared.folder) as builder:
        store = cache.build(make, range(3), shard_size=2, progress=False)
        done = time.time()
        _, released = builder.released()
    assert len(store) == 5 and calls == [] and released <= done


def test_without_fcntl_the_cache_still_works(cache, monkeypatch):
    from farfield.datasets import cache as C
    monkeypatch.setattr(C, "fcntl", None)
    with C.entry_lock(cache.lock_file) as held:
        assert held is False
    store = cache.build(_graph, range(3), shard_size=2, progress=False)
    assert len(store) == 3 and len(cache.load()) == 3
    _corrupt(cache)
    with pytest.warns(UserWarning, match="unusable"):
        assert cache.load() is None
    assert not cache.folder.exists()

"""On-disk cache of featurised graphs: keyed, checksummed, built in parallel, read lazily.

* :func:`cache_key` - a stable hash of a configuration dict (e.g. ``FeaturiserConfig.to_dict()`` plus loader
  options) and the identity of the source files (:func:`file_identity`: size and modification time, or their
  content MD5), so that changing either builds a new cache entry.
* :func:`parallel_map` - ``[fn(x) for x in items]`` over worker processes, in order, with a tqdm progress bar.
* :class:`ShardedGraphStore` - graphs stored as shards of ``shard_size`` graphs (each shard one
  ``torch.save`` file of plain dicts, loadable with ``weights_only=True``), a ``manifest.json`` with every
  shard's MD5 and graph count, and ``index.npz`` with cheap per-graph metadata. Reading is lazy: ``store[i]``
  loads (and MD5-checks) the shard holding graph ``i`` and keeps the last ``cached_shards`` (default 2) in an
  LRU, so corpora larger than memory train with bounded memory when visited shard by shard.
* :class:`GraphCache` - ``<cache>/graphs/<name>/<key>/``: :meth:`GraphCache.load` returns the store when it is
  complete and every file matches its checksum (a corrupted or half-written entry is reported in a warning,
  deleted and ``None`` returned, so the caller rebuilds it); :meth:`GraphCache.build` featurises items with
  :func:`parallel_map` and writes the store atomically (a temporary folder renamed into place).
  Processes sharing a cache coordinate through a lock file next to each entry (``<key>.lock``,
  :func:`entry_lock`: ``fcntl.flock``, standard library only): an entry is opened and checked under a shared
  lock, and built, deleted or replaced under an exclusive one, so a corrupted entry is never deleted while
  another process is opening it, a reader never sees an entry half deleted or half replaced, and two processes
  that build the same entry at once featurise it once (the second waits and takes the first's entry). A store
  already open reads its shards lazily without the lock; if its entry is replaced meanwhile, each shard it
  loads is still checked (MD5) against the manifest it was opened with, so it raises rather than mixing the
  graphs of two builds.

The store implements the **lazy graph sequence protocol** consumed by
:class:`farfield.train.data.GraphDataModule`: ``len(seq)``, ``seq[i] -> Data`` and ``seq.index`` - a dict of
[n] arrays with ``num_nodes`` (int64, always) and, when the graphs carry them, ``split`` (0 train / 1 val /
2 test) and ``group`` (int64), plus any other per-graph scalar named in ``index_keys``.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import uuid
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from farfield.datasets.download import cache_root, md5sum
from farfield.errors import InputError

try:
    import fcntl
except ImportError:                         # Windows: entries are still swapped by atomic renames, unlocked
    fcntl = None

__all__ = ["cache_key", "file_identity", "parallel_map", "ShardedGraphStore", "GraphSubset", "GraphCache",
           "entry_lock", "write_store", "graph_to_dict", "graph_from_dict"]

_FORMAT = 1                  # bumped when the on-disk layout changes
_MANIFEST = "manifest.json"
_INDEX = "index.npz"


# ------------------------------------------------------------------------------------------------ keys
def file_identity(paths, content: bool = False) -> list[list]:
    """Identity of source files: ``[name, size, mtime_ns]`` each (cheap: one ``stat``), or ``[name, md5]``
    with ``content=True``; a missing file raises :class:`InputError`."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise InputError(p, "source file not found")
        st = p.stat()
        out.append([p.name, md5sum(p)] if content else [p.name, st.st_size, st.st_mtime_ns])
    return out


def cache_key(config: dict, sources=(), content: bool = False) -> str:
    """A 20-character hash of ``config`` (JSON-serialisable; keys sorted) and of ``sources``' identity
    (:func:`file_identity`)."""
    blob = json.dumps({"format": _FORMAT, "config": config, "sources": file_identity(sources, content)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------------ parallel
def _call(args):
    fn, x = args
    return fn(x)


def parallel_map(fn, items, workers: int = 1, desc: str | None = None, progress: bool = True,
                 chunksize: int = 1) -> list:
    """``[fn(x) for x in items]`` in order, over ``workers`` processes (``<= 1``: in this process), with a tqdm
    progress bar labelled ``desc``. ``fn`` must be picklable (a module-level function or a
    ``functools.partial`` of one) when ``workers > 1``; an exception in ``fn`` propagates."""
    items = list(items)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(items), desc=desc, unit="item")
    out = []
    try:
        if workers <= 1 or len(items) <= 1:
            for x in items:
                out.append(fn(x))
                if bar is not None:
                    bar.update(1)
        else:
            import multiprocessing as mp
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(min(int(workers), len(items))) as pool:
                for r in pool.imap(_call, [(fn, x) for x in items], chunksize=max(1, int(chunksize))):
                    out.append(r)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


# ------------------------------------------------------------------------------------------------ store
def graph_to_dict(g: Data) -> dict:
    """A ``Data`` as a plain dict of tensors / strings / numbers (what ``torch.load(weights_only=True)``
    reads back)."""
    return dict(g.to_dict())


def graph_from_dict(d: dict) -> Data:
    """Inverse of :func:`graph_to_dict`."""
    g = Data()
    for k, v in d.items():
        g[k] = v
    return g


def _scalar(g: Data, key: str):
    v = g[key] if key in g else None
    if v is None:
        return None
    if torch.is_tensor(v):
        return v.reshape(-1)[0].item() if v.numel() == 1 else None
    return v if isinstance(v, (int, float, bool, np.integer, np.floating)) else None


def write_store(folder: str | Path, graphs, shard_size: int = 256,
                index_keys=("split", "group")) -> "ShardedGraphStore":
    """Write ``graphs`` (any iterable of ``Data``) as a sharded store in ``folder`` (created; must not hold a
    store already) and return it opened. ``None`` items are left out; a ``str`` item is left out too and kept
    as the reason in the manifest's ``skipped`` list (e.g. ``'1ABC-A: no chain A'``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    shards, buf, n_nodes, extra, names, skipped = [], [], [], {k: [] for k in index_keys}, [], []

    def flush():
        if not buf:
            return
        name = f"shard_{len(shards):05d}.pt"
        torch.save([graph_to_dict(g) for g in buf], folder / name)
        shards.append({"file": name, "count": len(buf), "md5": md5sum(folder / name)})
        buf.clear()

    for g in graphs:
        if g is None:
            continue
        if isinstance(g, str):
            skipped.append(g)
            continue
        buf.append(g)
        n_nodes.append(int(g.num_nodes))
        names.append(str(g["name"]) if "name" in g else "")
        for k in index_keys:
            extra[k].append(_scalar(g, k))
        if len(buf) == shard_size:
            flush()
    flush()
    index = {"num_nodes": np.asarray(n_nodes, dtype=np.int64)}
    for k, vals in extra.items():
        if vals and all(v is not None for v in vals):
            arr = np.asarray(vals)
            index[k] = arr.astype(np.int64) if arr.dtype.kind in "iub" else arr
    np.savez(folder / _INDEX, names=np.asarray(names, dtype=str), **index)
    manifest = {"format": _FORMAT, "count": len(n_nodes), "shard_size": shard_size, "shards": shards,
                "index_md5": md5sum(folder / _INDEX), "skipped": skipped}
    (folder / _MANIFEST).write_text(json.dumps(manifest, indent=1))
    return ShardedGraphStore(folder)


class ShardedGraphStore:
    """A lazily read store written by :func:`write_store` (see the module docstring).

    Args:
        folder: the store's folder.
        cached_shards: how many decoded shards to keep in memory (LRU).
        verify: check every shard's MD5 when opening (otherwise each shard is checked when first loaded).

    Raises:
        InputError: the manifest or index is missing or does not match, or (``verify``) a shard's MD5 differs;
            a shard that fails its check on a later load raises it too.
    """

    def __init__(self, folder: str | Path, cached_shards: int = 2, verify: bool = False):
        self.folder = Path(folder)
        man = self.folder / _MANIFEST
        try:
            self.manifest = json.loads(man.read_text())
        except (OSError, ValueError) as e:
            raise InputError(man, f"cache manifest is missing or unreadable ({e})") from None
        if self.manifest.get("format") != _FORMAT:
            raise InputError(man, f"cache format {self.manifest.get('format')} is not {_FORMAT}")
        idx_file = self.folder / _INDEX
        if not idx_file.is_file() or md5sum(idx_file) != self.manifest["index_md5"]:
            raise InputError(idx_file, "cache index is missing or fails its MD5 check")
        with np.load(idx_file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        self.names = [str(s) for s in arrays.pop("names")]
        self.index: dict[str, np.ndarray] = arrays
        counts = [s["count"] for s in self.manifest["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if int(self._starts[-1]) != self.manifest["count"] or len(self.index["num_nodes"]) != self.manifest["count"]:
            raise InputError(man, "cache manifest and index disagree on the number of graphs")
        # which shard holds each item: samplers shuffle shard by shard so that an epoch loads each shard once
        self.index["shard"] = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        for s in self.manifest["shards"]:
            p = self.folder / s["file"]
            if not p.is_file():
                raise InputError(p, "cache shard is missing")
            if verify and md5sum(p) != s["md5"]:
                raise InputError(p, "cache shard fails its MD5 check (corrupted)")
        self.cached_shards = max(1, int(cached_shards))
        self._lru: OrderedDict[int, list[dict]] = OrderedDict()
        self.loads = 0                      # shard loads so far (for tests and diagnostics)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"ShardedGraphStore({str(self.folder)!r}, graphs={len(self)}, shards={len(self._starts) - 1})"

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_lru"] = OrderedDict()           # worker processes start with an empty LRU
        return d

    def _shard(self, k: int) -> list[dict]:
        if k in self._lru:
            self._lru.move_to_end(k)
            return self._lru[k]
        info = self.manifest["shards"][k]
        p = self.folder / info["file"]
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise InputError(p, f"cannot read cache shard ({e})") from None
        if hashlib.md5(raw).hexdigest() != info["md5"]:
            raise InputError(p, "cache shard fails its MD5 check (corrupted); delete "
                                f"{self.folder} to rebuild the cache")
        shard = torch.load(io.BytesIO(raw), weights_only=True)
        self.loads += 1
        self._lru[k] = shard
        while len(self._lru) > self.cached_shards:
            self._lru.popitem(last=False)
        return shard

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = int(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"graph {i} out of range for a store of {n}")
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return graph_from_dict(self._shard(k)[i - int(self._starts[k])])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def subset(self, indices) -> "GraphSubset":
        """A lazy view of the graphs ``indices`` (same protocol)."""
        return GraphSubset(self, indices)


class GraphSubset:
    """Lazy view of some items of a lazy graph sequence (``len``, ``[i]``, ``index``)."""

    def __init__(self, seq, indices):
        self.seq = seq
        self.indices = np.asarray(indices, dtype=np.int64)
        self.index = {k: np.asarray(v)[self.indices] for k, v in seq.index.items()}
        names = getattr(seq, "names", None)
        self.names = [names[i] for i in self.indices] if names is not None else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self.seq[int(self.indices[i])]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


# ------------------------------------------------------------------------------------------------ lock
def _lock_file(folder: Path) -> Path:
    """The lock file of a cache entry: ``<key>.lock`` next to the entry's folder (not inside it, since the
    folder is deleted and replaced). It is never deleted: removing a lock file others may hold is a race."""
    return folder.with_name(folder.name + ".lock")


@contextlib.contextmanager
def entry_lock(path: str | Path, shared: bool = False):
    """Hold a cross-process lock on the file ``path`` (created if needed) while the ``with`` block runs:
    shared (readers) or exclusive (a process that builds, deletes or replaces the entry). It is an advisory
    ``fcntl.flock`` lock, released by the kernel if the process dies. Where there is no ``fcntl`` (Windows),
    the lock file cannot be created (a read-only cache) or the file system refuses ``flock``, the block runs
    unlocked: entries are still swapped by atomic renames, so a reader sees a whole entry or none.

    Yields:
        whether the lock is held.
    """
    if fcntl is None:
        yield False
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError:
        yield False
        return
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            locked = True
        except OSError:                     # e.g. a network file system without flock
            pass
        yield locked
    finally:
        if locked:
            fcntl.flock(fd, fcntl.LOCK_UN)  # explicitly: forked workers may still hold a copy of the descriptor
        os.close(fd)


# ------------------------------------------------------------------------------------------------ cache
class GraphCache:
    """A keyed store under ``<root>/<name>/<key>`` (root default ``<cache>/graphs``; cache =
    ``$FARFIELD_CACHE`` or ``~/.cache/farfield``).

    Args:
        name: the data set's name (a folder).
        config: everything the graphs depend on (featuriser config, loader options, a version string).
        sources: the source files whose identity is part of the key.
        content: identify sources by MD5 instead of size + mtime.
    """

    def __init__(self, name: str, config: dict, sources=(), root: str | Path | None = None, content: bool = False):
        self.name = name
        self.key = cache_key(config, sources, content)
        self.root = Path(root) if root is not None else cache_root() / "graphs"
        self.folder = self.root / name / self.key
        self.config = config

    @property
    def lock_file(self) -> Path:
        """The entry's lock file (see :func:`entry_lock`): ``<root>/<name>/<key>.lock``."""
        return _lock_file(self.folder)

    def lock(self, shared: bool = False):
        """:func:`entry_lock` on this entry: shared for reading it, exclusive for building or deleting it."""
        return entry_lock(self.lock_file, shared)

    def _open(self, cached_shards: int, verify: bool) -> tuple[ShardedGraphStore | None, str | None]:
        """``(store, None)``, ``(None, None)`` when there is no entry, or ``(None, problem)`` for an entry that
        cannot be used (``''``: a half-written one, without a manifest)."""
        if not (self.folder / _MANIFEST).is_file():
            return None, ("" if self.folder.exists() else None)
        try:
            return ShardedGraphStore(self.folder, cached_shards, verify), None
        except InputError as e:
            return None, str(e)

    def _stamp(self):
        """Identity of the entry's manifest file (None without one): tells whether the entry was replaced."""
        try:
            st = (self.folder / _MANIFEST).stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _discard(self) -> None:
        """Remove the entry: first renamed away (atomic), then deleted, so no reader sees it half deleted.
        Called with the exclusive lock held."""
        trash = self.folder.with_name(f"{self.key}.trash-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(self.folder, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def load(self, cached_shards: int = 2, verify: bool = True) -> ShardedGraphStore | None:
        """The stored graphs, or None when there are none yet; a corrupted entry (any file failing its
        check) is reported in a warning, deleted, and None returned.

        The entry is opened (and checked) under a shared lock, so it waits while another process builds,
        deletes or replaces it; deleting a corrupted entry takes the exclusive lock, so it waits for the
        processes reading it, and is skipped when another process rebuilt the entry in the meantime."""
        with self.lock(shared=True):
            store, problem = self._open(cached_shards, verify)
        if store is not None or problem is None:
            return store
        with self.lock():
            store, problem = self._open(cached_shards, verify)      # rebuilt while we waited?
            if store is not None or problem is None:
                return store
            if problem:                     # (a half-written entry is discarded silently)
                warnings.warn(f"graph cache {self.folder} is unusable ({problem}); rebuilding it", stacklevel=2)
            self._discard()
        return None

    def build(self, fn, items, workers: int = 1, desc: str | None = None, shard_size: int = 256,
              index_keys=("split", "group"), progress: bool = True, cached_shards: int = 2) -> ShardedGraphStore:
        """Featurise ``items`` with ``fn`` (-> ``Data``, or None / a reason string to leave an item out; see
        :func:`write_store`) over ``workers`` processes, ``shard_size`` items at a time, and store the graphs
        (atomically).

        The build holds the entry's exclusive lock: other processes wait to read the entry (in :meth:`load`)
        or to build it, and a build that waited for another process's build of the same key returns that
        entry instead of featurising again. The new entry is written to a temporary folder and renamed into
        place; an old one is renamed away first (see :meth:`load`)."""
        items = list(items)

        def graphs():
            bar = None
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=len(items), desc=desc or f"featurise {self.name}", unit="item")
            try:
                for a in range(0, len(items), shard_size):
                    chunk = items[a:a + shard_size]
                    yield from parallel_map(fn, chunk, workers, progress=False,
                                            chunksize=max(1, len(chunk) // (4 * max(1, workers))))
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()

        return self.write(graphs(), shard_size, index_keys, cached_shards)

    def write(self, graphs, shard_size: int = 256, index_keys=("split", "group"),
              cached_shards: int = 2) -> ShardedGraphStore:
        """Store ``graphs`` (an iterable of ``Data`` / None / reason strings, consumed lazily: a generator that
        featurises as it goes keeps one shard in memory) as this entry, atomically, under the entry's exclusive
        lock (:meth:`build` is this over a featurising generator). When another process built the entry while
        this one waited for the lock, that entry is returned and ``graphs`` is not consumed (a generator is
        closed)."""
        seen = self._stamp()
        with self.lock():
            if self._stamp() not in (None, seen):       # another process built this entry while we waited
                store, _ = self._open(cached_shards, verify=True)
                if store is not None:
                    if hasattr(graphs, "close"):
                        graphs.close()
                    return store
            tmp = self.folder.with_name(f"{self.key}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            write_store(tmp, graphs, shard_size, index_keys)
            (tmp / "config.json").write_text(json.dumps(self.config, indent=1, sort_keys=True, default=str))
            self._discard()
            os.replace(tmp, self.folder)
            return ShardedGraphStore(self.folder, cached_shards)

    def get_or_build(self, fn, items, **kwargs) -> ShardedGraphStore:
        """:meth:`load`, else :meth:`build`."""
        store = self.load(kwargs.get("cached_shards", 2))
        return store if store is not None else self.build(fn, items, **kwargs)

"""Identity of the data a run trains on, so that a run is never reused after its data changed.

A run's directory is keyed by a hash of its configuration (:func:`farfield.train.run.config_hash`); the
configuration names the data (``data.dataset``, ``data.path``) but not its content. :func:`data_identity`
adds the content: a regenerated built-in benchmark, an edited label CSV or a replaced LMDB at the same path
gives another identity, hence another run directory, instead of silently reusing runs trained on the old data.

* A loader may say who its data is (``loader.identity(path, **options) -> str``): the built-in benchmark gives
  the SHA-256 of its data file.
* Otherwise ``data.path`` and every loader option that names an existing file or folder (a label CSV, a
  structures folder, a split file) are fingerprinted by :func:`path_identity`: every file's relative path and
  size; the content (SHA-256) of every file up to :data:`SMALL_FILE_BYTES`; and of larger files (whole up to
  :data:`WHOLE_FILE_BYTES`, else their first and last MiB) until :data:`CONTENT_BUDGET_BYTES` have been read,
  past which large files count by name and size alone (a folder of tens of thousands of structures).
  Modification times are not part of the identity, so a copied data folder keeps it.
* The loader's ``info["version"]`` (what its featurisation computes; bumped when graphs change) is part of the
  identity, so a code change that alters the graphs of a cached or downloaded dataset gets new runs too.
* Data farfield downloads itself (``data.path`` unset) is checked against published MD5s when it is fetched;
  it is identified by the loader's version alone.

Fingerprints are cached per process on the tree's names, sizes and modification times, so an edit is seen.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["data_identity", "path_identity", "clear_cache", "WHOLE_FILE_BYTES", "CONTENT_BUDGET_BYTES",
           "SMALL_FILE_BYTES"]

#: files up to this size are hashed whole; larger ones by their first and last MiB (plus the size)
WHOLE_FILE_BYTES = 8 << 20
#: content bytes read per fingerprint before falling back to names and sizes
CONTENT_BUDGET_BYTES = 256 << 20
_EDGE = 1 << 20


def _file_digest(path: Path, size: int, h) -> int:
    """Feed ``path``'s content (whole, or first and last MiB) into ``h``; returns the bytes read."""
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_BYTES:
            for chunk in iter(lambda: f.read(_EDGE), b""):
                h.update(chunk)
            return size
        h.update(f.read(_EDGE))
        f.seek(size - _EDGE)
        h.update(f.read(_EDGE))
        return 2 * _EDGE


#: files up to this size are always hashed whole, whatever the budget (labels, split files, configs)
SMALL_FILE_BYTES = 1 << 20
_CACHE: dict = {}


def _files(p: Path) -> list[tuple[str, Path]]:
    if p.is_file():
        return [(p.name, p)]
    return sorted((str(f.relative_to(p)), f) for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))


def _fingerprint(path: str) -> str:
    p = Path(path)
    if not p.exists():
        return "missing"
    files = _files(p)
    stats = [(rel, f.stat()) for rel, f in files]
    # cached on the tree's names, sizes and modification times: an edit after the first call is seen
    sig = hashlib.sha256(repr([(rel, st.st_size, st.st_mtime_ns) for rel, st in stats]).encode()).hexdigest()
    if _CACHE.get(path, (None,))[0] == sig:
        return _CACHE[path][1]
    h = hashlib.sha256()
    budget = CONTENT_BUDGET_BYTES
    for (rel, f), (_, st) in zip(files, stats):
        h.update(f"{rel}\0{st.st_size}\0".encode())
        if st.st_size <= SMALL_FILE_BYTES:
            _file_digest(f, st.st_size, h)          # small files always: an edited label file is always seen
        elif budget > 0:
            budget -= _file_digest(f, st.st_size, h)
    out = h.hexdigest()[:16]
    _CACHE[path] = (sig, out)
    return out


def clear_cache() -> None:
    """Forget cached fingerprints."""
    _CACHE.clear()


def path_identity(path: str | os.PathLike) -> str:
    """A content fingerprint of a file or folder (see the module docstring); ``'missing'`` if there is none."""
    return _fingerprint(str(Path(path).expanduser().resolve()))


def data_identity(dataset: str, path=None, options: dict | None = None) -> str:
    """The identity of the data ``dataset`` reads from ``path`` with loader ``options``: the loader's own
    ``identity`` when it has one, else :func:`path_identity` of ``path``, else '' (nothing to identify)."""
    from farfield.datasets import DATASETS
    loader = DATASETS.get(dataset)
    try:
        own = getattr(loader, "identity", None) if loader is not None else None
    except (ImportError, AttributeError):
        own = None
    from farfield.datasets import dataset_info
    version = dataset_info(dataset).get("version")
    if own is not None:
        content = str(own(path, **dict(options or {})))
    else:
        paths = [path] + [v for v in (options or {}).values() if _is_path(v)]
        content = "+".join(path_identity(p) for p in paths if p is not None)
    return ":".join(str(x) for x in (f"v{version}" if version is not None else None, content) if x)


def _is_path(v) -> bool:
    """A loader option that names an existing file or folder (a label CSV, a structures folder, a split file)."""
    if not isinstance(v, (str, os.PathLike)) or not str(v).strip() or len(str(v)) > 4096:
        return False
    try:
        return Path(v).expanduser().exists()
    except (OSError, ValueError):
        return False

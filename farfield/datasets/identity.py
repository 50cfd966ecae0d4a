"""Identity of the data a run trains on, so that a run is never reused after its data changed.

A run's directory is keyed by a hash of its configuration (:func:`farfield.train.run.config_hash`); the
configuration names the data (``data.dataset``, ``data.path``) but not its content. :func:`data_identity`
adds the content: a regenerated built-in benchmark, an edited label CSV or a replaced LMDB at the same path
gives another identity, hence another run directory, instead of silently reusing runs trained on the old data.

* A loader may say who its data is (``loader.identity(path, **options) -> str``): the built-in benchmark gives
  the SHA-256 of its data file.
* Otherwise a ``data.path`` file or folder is fingerprinted by :func:`path_identity`: every file's relative
  path and size, and the content (SHA-256) of files up to :data:`WHOLE_FILE_BYTES`, of the first and last MiB
  of larger ones, until :data:`CONTENT_BUDGET_BYTES` have been read; past that budget (a folder of tens of
  thousands of structures) names and sizes alone. Modification times are not used, so a copied data folder
  keeps its identity.
* Data farfield downloads itself (``data.path`` unset) is checked against published MD5s when it is fetched and
  gets the empty identity.

Fingerprints are cached per process (a study computes each once).
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

__all__ = ["data_identity", "path_identity", "WHOLE_FILE_BYTES", "CONTENT_BUDGET_BYTES"]

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


@functools.lru_cache(maxsize=64)
def _fingerprint(path: str) -> str:
    p = Path(path)
    if p.is_file():
        files = [(p.name, p)]
    elif p.is_dir():
        files = sorted((str(f.relative_to(p)), f) for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    else:
        return "missing"
    h = hashlib.sha256()
    budget = CONTENT_BUDGET_BYTES
    for rel, f in files:
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        if budget > 0:
            budget -= _file_digest(f, size, h)
    return h.hexdigest()[:16]


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
    if own is not None:
        return str(own(path, **dict(options or {})))
    return path_identity(path) if path is not None else ""

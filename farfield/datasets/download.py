"""A small downloader for public dataset files: resumable, verified (MD5 and, when known, size), cached.

A :class:`RemoteFile` names a file (its path relative to a data folder), the URL it comes from and its MD5.
:func:`fetch_all` returns the local paths of a set of files:

1. a file already present (in ``dest`` or any of ``search``) whose MD5 matches is used as is (no network);
   one whose MD5 differs raises :class:`~farfield.errors.InputError` naming it (it is never overwritten);
2. otherwise it is downloaded into ``dest`` through ``<name>.part``: an interrupted download resumes with an
   HTTP ``Range`` request (a server that ignores ranges restarts it), and the finished file is checked
   against its size and MD5 before it is moved into place, so ``dest`` never holds an unverified file;
3. when the network is off (``offline=True`` or ``FARFIELD_OFFLINE=1``) or unreachable, one ``InputError``
   lists every missing file with its URL, MD5 and the folder to put it in.

Only the standard library is used (``urllib``); a progress bar (tqdm) is shown for downloads.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from farfield.errors import InputError

__all__ = ["RemoteFile", "md5sum", "verify", "find_local", "fetch", "fetch_all", "copy_verified", "cache_root",
           "is_offline"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """``name``: path relative to the data folder (e.g. ``raw/data.csv.gz``); ``url``: where it is
    published; ``md5``: its MD5 hex digest; ``size``: its size in bytes when known (checked too)."""

    name: str
    url: str
    md5: str
    size: int | None = None

    def describe(self) -> str:
        return f"{self.name} (md5 {self.md5}) from {self.url}"


def cache_root() -> Path:
    """farfield's cache folder: ``$FARFIELD_CACHE``, else ``~/.cache/farfield``."""
    return Path(os.environ.get("FARFIELD_CACHE") or Path.home() / ".cache" / "farfield").expanduser()


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``FARFIELD_OFFLINE`` is set to a true value."""
    if offline is not None:
        return bool(offline)
    return os.environ.get("FARFIELD_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def md5sum(path: str | Path) -> str:
    """MD5 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | Path, md5: str, size: int | None = None) -> Path:
    """``path`` if it exists and has the given size (when known) and MD5; otherwise :class:`InputError`
    naming the file, the expected and the actual values."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "is missing")
    if size is not None and p.stat().st_size != size:
        raise InputError(p, f"has {p.stat().st_size} bytes, expected {size} (truncated or a different release)")
    got = md5sum(p)
    if got.lower() != md5.lower():
        raise InputError(p, f"MD5 mismatch: expected {md5}, got {got} (corrupted or a different release; "
                            "delete it to download it again)")
    return p


def find_local(remote: RemoteFile, folders) -> Path | None:
    """The first existing ``folder / remote.name`` (or ``folder / basename``) over ``folders``."""
    base = Path(remote.name).name
    for d in folders:
        if d is None:
            continue
        for cand in (Path(d) / remote.name, Path(d) / base):
            if cand.is_file():
                return cand
    return None


def _download(remote: RemoteFile, target: Path, timeout: float, progress: bool) -> None:
    """Download ``remote`` to ``target`` via ``target.part``, resuming a partial file."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(remote.url, headers={"User-Agent": "farfield-downloader"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:          # range not satisfiable: the part file is already complete
            resp = None
        else:
            raise
    if resp is not None:
        with resp:
            status = getattr(resp, "status", 200)
            mode = "ab" if (have and status == 206) else "wb"
            if mode == "wb":
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else remote.size
            bar = None
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=total, initial=have, unit="B", unit_scale=True,
                           desc=f"download {Path(remote.name).name}")
            try:
                with open(part, mode) as f:
                    for chunk in iter(lambda: resp.read(_CHUNK), b""):
                        f.write(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
    try:
        verify(part, remote.md5, remote.size)
    except InputError as e:
        part.unlink(missing_ok=True)        # a bad download is not resumed
        raise InputError(target, f"downloaded from {remote.url} but {e.reason}") from None
    os.replace(part, target)


def fetch(remote: RemoteFile, dest: str | Path, search=(), offline: bool | None = None, timeout: float = 60.0,
          progress: bool = True) -> Path:
    """The verified local path of ``remote`` (see the module docstring); downloads into ``dest`` if needed."""
    return fetch_all([remote], dest, search, offline, timeout, progress)[remote.name]


def fetch_all(files, dest: str | Path, search=(), offline: bool | None = None, timeout: float = 60.0,
              progress: bool = True, what: str = "dataset") -> dict[str, Path]:
    """Verified local paths (``name -> Path``) of every :class:`RemoteFile` in ``files``.

    Files are looked up in ``search`` folders then ``dest``; missing ones are downloaded into ``dest`` unless
    offline. A present file with a wrong MD5 / size raises at once (naming it). Download failures are
    collected and reported together in one :class:`InputError` that lists each missing file, its URL and
    MD5, and says where to put a copy obtained some other way."""
    dest = Path(dest)
    out, missing, reasons = {}, [], []
    for rf in files:
        local = find_local(rf, [*search, dest])
        if local is not None:
            out[rf.name] = verify(local, rf.md5, rf.size)
        else:
            missing.append(rf)
    if missing and not is_offline(offline):
        still = []
        for rf in missing:
            try:
                _download(rf, dest / rf.name, timeout, progress)
                out[rf.name] = dest / rf.name
            except InputError:
                raise
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError, ValueError) as e:
                still.append(rf)
                why = f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) else \
                    (getattr(e, "reason", None) or e)
                reasons.append(f"{rf.name}: {why}")
        missing = still
    if missing:
        why = "offline (FARFIELD_OFFLINE=1 or offline=True)" if is_offline(offline) else \
            "download failed (" + "; ".join(reasons) + ")"
        where = ", ".join(str(Path(s)) for s in search) + (" or " if search else "") + str(dest)
        listing = "; ".join(rf.describe() for rf in missing)
        raise InputError(", ".join(rf.name for rf in missing),
                         f"missing {what} file(s) and {why}. Needed: {listing}. To supply them, download each "
                         f"URL on a machine with network access and copy the files (same names) into {where}, "
                         "or pass path=<folder holding them>")
    return out


def copy_verified(src: str | Path, remote: RemoteFile, dest: str | Path) -> Path:
    """Copy a file obtained by hand into ``dest / remote.name`` after checking its MD5 / size."""
    verify(src, remote.md5, remote.size)
    target = Path(dest) / remote.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return target

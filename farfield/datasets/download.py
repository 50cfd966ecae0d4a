"""The package's one downloader for public files: resumable, verified, atomic; and a cache of dataset files.

:func:`download_file` fetches one URL to a local path. It is used by :func:`fetch_all` (dataset files with a
known MD5, e.g. LRGB) and by :func:`farfield.datasets.structures.fetch_structures` (PDB entries, no MD5 but
checked by parsing). The protocol:

* the file is written to ``<target>.part`` and moved into place with an atomic rename (``os.replace``) only
  once verified, so ``target`` never holds an unverified file;
* a part left by an interrupted download is resumed with ``Range: bytes=<have>-``. A 206 answer must start
  at byte ``have`` (its ``Content-Range``), otherwise the download is refused with an
  :class:`~farfield.errors.InputError` naming the file and the URL and the part is deleted, so the next try
  starts clean; a 200 answer (a server that ignores ranges) restarts the file from byte 0;
* verified means: as many bytes as ``have`` + ``Content-Length`` (a shorter body is refused and its part kept,
  so the next try resumes it), the known size, the known MD5, and an optional ``validate(path)`` check;
* a file whose completeness nothing proves - a body without ``Content-Length`` after a resume, or a resume
  answered by 416 ("range not satisfiable", which a part of any content may get) - is accepted only if its
  MD5 proves it whole; without an MD5 the part is dropped and the file downloaded again from byte 0 (no
  Range), which is accepted after the size and ``validate`` checks that apply. A resumed file that fails a
  check is downloaded once more from byte 0 as well (the old part may be what is wrong); a file downloaded
  from byte 0 that fails a check is deleted and refused.

A :class:`RemoteFile` names a file (its path relative to a data folder), the URL it comes from and its MD5.
:func:`fetch_all` returns the local paths of a set of files:

1. a file already present (in ``dest`` or any of ``search``) whose MD5 matches is used as is (no network);
   one whose MD5 differs raises :class:`~farfield.errors.InputError` naming it (it is never overwritten);
2. otherwise it is downloaded into ``dest`` with :func:`download_file`;
3. when the network is off (``offline=True`` or ``FARFIELD_OFFLINE=1``) or unreachable, one ``InputError``
   lists every missing file with its URL, MD5 and the folder to put it in.

Only the standard library is used (``urllib``); a progress bar (tqdm) is shown for downloads.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from farfield.errors import InputError

__all__ = ["RemoteFile", "md5sum", "verify", "find_local", "download_file", "fetch", "fetch_all", "copy_verified",
           "cache_root", "is_offline", "NETWORK_ERRORS", "network_error_reason"]

_CHUNK = 1 << 20
#: the exceptions of a failed request or transfer (reported as "download failed", not as bad input)
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError, ConnectionError,
                  OSError)


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


def _transfer(url: str, part: Path, have: int, target: Path, timeout: float, progress: bool,
              size: int | None) -> tuple[str, bool]:
    """One HTTP request for ``url`` into ``part``: from byte ``have`` (a ``Range`` request) when ``have > 0``.

    Returns ``(how, sized)``: ``how`` is ``'resumed'`` (206 at byte ``have``, appended), ``'whole'`` (the
    file from byte 0: no Range was sent, or the server ignored it) or ``'unsatisfiable'`` (416 to a Range
    request; nothing received); ``sized`` says whether a Content-Length header was sent (and met).

    Raises:
        InputError: a 206 that starts anywhere but byte ``have`` (the pieces would not fit together; the part
            file is deleted so the next try starts clean), or a body shorter than its Content-Length (the part
            file is kept, so the next try resumes it).
        urllib.error.HTTPError, OSError, http.client.HTTPException: the request or the transfer failed.
    """
    req = urllib.request.Request(url, headers={"User-Agent": "farfield-downloader"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            e.close()
            return "unsatisfiable", False
        raise
    with resp:
        if getattr(resp, "status", 200) == 206:
            # the server must resume exactly where the part file ends, or the pieces would not fit together
            content_range = resp.headers.get("Content-Range")
            start = re.match(r"bytes\s+(\d+)-", content_range or "")
            if start is None or int(start.group(1)) != have:
                part.unlink(missing_ok=True)
                raise InputError(target, f"the server resumed {url} at the wrong offset (Content-Range "
                                         f"{content_range!r}, expected byte {have}); the partial file was removed, "
                                         "run again to download it whole")
        else:
            have = 0                        # a 200: the whole file, from byte 0
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length is not None and length.strip().isdigit() else None
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=expected if expected is not None else size, initial=have, unit="B", unit_scale=True,
                       desc=f"download {target.name}")
        try:
            with open(part, "ab" if have else "wb") as f:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    f.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    got = part.stat().st_size
    if expected is not None and got != expected:
        raise InputError(target, f"download from {url} is truncated ({got} bytes, expected {expected}); "
                                 "run again to resume it")
    return ("resumed" if have else "whole"), expected is not None


def _check_part(part: Path, md5: str | None, size: int | None, validate) -> None:
    """Raise :class:`InputError` (its reason says what is wrong) unless ``part`` has the known size and MD5
    and passes ``validate``."""
    n = part.stat().st_size
    if size is not None and n != size:
        raise InputError(part, f"has {n} bytes, expected {size} (truncated or a different release)")
    if md5 is not None:
        got = md5sum(part)
        if got.lower() != md5.lower():
            raise InputError(part, f"MD5 mismatch: expected {md5}, got {got} (corrupted in transfer or a "
                                   "different release)")
    if validate is not None:
        validate(part)


def download_file(url: str, target: str | Path, *, md5: str | None = None, size: int | None = None,
                  timeout: float = 60.0, progress: bool = True, validate=None) -> Path:
    """Download ``url`` to ``target`` (the protocol of the module docstring) and return ``target``.

    The file is written to ``<target>.part`` and renamed into place only once verified, so ``target`` never
    holds an unverified file. A part left by an interrupted download is resumed with an HTTP Range request.
    What counts as verified: the size (Content-Length, and ``size`` when known), the MD5 (``md5``, when
    known) and ``validate``. A file whose completeness nothing proves (a resume answered by 416, or a resumed
    body without Content-Length) is accepted only if its MD5 matches; without an MD5 it is downloaded again
    from byte 0. A resumed file that fails a check is downloaded once more from byte 0 too, since the old
    part may be what is wrong; a file downloaded from byte 0 that fails a check is deleted and refused.

    Args:
        url: where the file is published.
        target: the local path (its folder is created).
        md5: the file's MD5 hex digest, when known.
        size: its size in bytes, when known.
        timeout: seconds to wait for the server (per request, and per read).
        progress: show a tqdm progress bar.
        validate: ``validate(path)`` raising :class:`InputError` when the file at ``path`` (the part file,
            before it is put in place) is unusable, e.g. does not parse.

    Raises:
        InputError: naming ``target`` and ``url``: a resume at the wrong offset, a truncated body (the part
            is kept for the next try), or a file that fails its checks (nothing is kept).
        urllib.error.URLError, OSError, http.client.HTTPException: the network failed (a part received so
            far is kept for the next try).
    """
    from farfield.datasets.cache import entry_lock    # (cache imports this module)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.is_file()
    # one process at a time per file: two commands fetching the same file would otherwise interleave their
    # writes to the part file (one from byte 0, one resuming), or append to a file already moved into place
    with entry_lock(target.with_name(target.name + ".lock")):
        if not existed and target.is_file():
            return target                   # another process downloaded and verified it while this one waited
        return _download_locked(url, target, md5, size, timeout, progress, validate)


def _download_locked(url: str, target: Path, md5, size, timeout, progress, validate) -> Path:
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if have and size is not None and have > size:      # longer than the file: not a piece of it
        part.unlink()
        have = 0
    if have:
        how, sized = _transfer(url, part, have, target, timeout, progress, size)
        if how == "whole":                 # the server ignored the Range: a download from byte 0 after all
            return _accept(part, target, url, md5, size, validate)
        if md5 is not None or (how == "resumed" and sized):
            try:
                _check_part(part, md5, size, validate)
            except InputError:
                pass                        # the old part may be what is wrong: once more, from byte 0
            else:
                os.replace(part, target)
                return target
        # else: a 416, or a resumed body without Content-Length, and no MD5: nothing proves the file whole
        part.unlink(missing_ok=True)
    _transfer(url, part, 0, target, timeout, progress, size)
    return _accept(part, target, url, md5, size, validate)


def _accept(part: Path, target: Path, url: str, md5, size, validate) -> Path:
    """Move a part downloaded from byte 0 into place if it passes its checks; else delete it and raise."""
    try:
        _check_part(part, md5, size, validate)
    except InputError as e:
        part.unlink(missing_ok=True)        # a bad download is not resumed
        raise InputError(target, f"downloaded from {url} but {e.reason}") from None
    os.replace(part, target)
    return target


def network_error_reason(e: BaseException) -> str:
    """A short reason for a failed request: ``'HTTP 404 Not Found'``, or the error's reason / text."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    return str(getattr(e, "reason", None) or e)


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
                out[rf.name] = download_file(rf.url, dest / rf.name, md5=rf.md5, size=rf.size, timeout=timeout,
                                             progress=progress)
            except InputError:
                raise
            except (*NETWORK_ERRORS, ValueError) as e:     # ValueError: a malformed URL
                still.append(rf)
                reasons.append(f"{rf.name}: {network_error_reason(e)}")
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

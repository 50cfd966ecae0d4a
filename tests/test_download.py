"""farfield.datasets.download: the one downloader behind ``fetch_all`` (LRGB files, known MD5) and
``fetch_structures`` (PDB entries, no MD5, checked by parsing), against local HTTP servers on 127.0.0.1 that
behave and misbehave: resume at the right / wrong offset, 416 answers, no Content-Length, ranges ignored,
bodies cut short, and the target never holding an unverified file."""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

import _http as H
from _http import RangeHandler, serve
from farfield.datasets import download as dl
from farfield.datasets import structures as st
from farfield.errors import InputError

pytestmark = pytest.mark.usefixtures("isolated_cache")

PAYLOAD = os.urandom(200_000)
MD5 = hashlib.md5(PAYLOAD).hexdigest()


def _log():
    return RangeHandler.log


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "served"
    r.mkdir()
    (r / "a.bin").write_bytes(PAYLOAD)
    return r


def _remote(base, md5=MD5, size=None):
    return dl.RemoteFile("sub/a.bin", f"{base}/a.bin", md5, size)


def _part(dest: Path, data: bytes) -> Path:
    part = dest / "sub" / "a.bin.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
    return part


def _corrupt(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 3] ^= 0xFF
    return bytes(b)


def _no_files(dest: Path) -> bool:
    return not (dest / "sub" / "a.bin").exists() and not (dest / "sub" / "a.bin.part").exists()


# ------------------------------------------------------------------------------------------ fresh / resume
def test_fresh_download(root, tmp_path):
    dest = tmp_path / "dest"
    with serve(root) as base:
        got = dl.fetch_all([_remote(base, size=len(PAYLOAD))], dest, offline=False, progress=False)
    assert got == {"sub/a.bin": dest / "sub" / "a.bin"} and got["sub/a.bin"].read_bytes() == PAYLOAD
    assert _log() == [("/a.bin", None)] and not (dest / "sub" / "a.bin.part").exists()
    with serve(root) as base:                                          # the function itself, no checksum
        p = dl.download_file(f"{base}/a.bin", tmp_path / "x" / "a.bin", timeout=10, progress=False)
    assert p.read_bytes() == PAYLOAD and _log() == [("/a.bin", None)]


def test_resume_at_the_right_offset(root, tmp_path):
    dest = tmp_path / "dest"
    part = _part(dest, PAYLOAD[:70_000])
    with serve(root) as base:
        p = dl.fetch(_remote(base), dest, offline=False, progress=False)
    assert p.read_bytes() == PAYLOAD and not part.exists()
    assert _log() == [("/a.bin", "bytes=70000-")]                      # one request, resumed


def test_server_ignoring_range_restarts_from_byte_0(root, tmp_path):
    dest = tmp_path / "dest"
    _part(dest, b"stale bytes from some other file")
    with serve(root, H.IgnoreRangeHandler) as base:
        p = dl.fetch(_remote(base), dest, offline=False, progress=False)
    assert p.read_bytes() == PAYLOAD and _log() == [("/a.bin", "bytes=32-")]


def test_resume_at_the_wrong_offset_is_refused_by_fetch_all(root, tmp_path):
    dest = tmp_path / "dest"
    _part(dest, PAYLOAD[:70_000])
    with serve(root, H.MisplacedRangeHandler) as base:
        with pytest.raises(InputError, match=r"wrong offset.*expected byte 70000") as e:
            dl.fetch(_remote(base), dest, offline=False, progress=False)
        assert "a.bin" in e.value.source and f"{base}/a.bin" in str(e.value)
        assert _no_files(dest)                                         # the next try starts clean
        p = dl.fetch(_remote(base), dest, offline=False, progress=False)
    assert p.read_bytes() == PAYLOAD and _log()[-1] == ("/a.bin", None)


def test_resume_at_the_wrong_offset_is_refused_by_fetch_structures(tmp_path, structures):
    root = tmp_path / "served"
    root.mkdir()
    shutil.copyfile(structures / "1aki.cif", root / "1AKI.cif")
    data = (root / "1AKI.cif").read_bytes()
    dest = tmp_path / "pdb"
    dest.mkdir()
    (dest / "1aki.cif.part").write_bytes(data[:500])
    with serve(root, H.MisplacedRangeHandler) as base:
        with pytest.warns(UserWarning, match=rf"1AKI from {base}/1AKI.cif: .*wrong offset"):
            got, failed = st.fetch_structures(["1AKI"], dest, base_url=base + "/{ID}.cif", offline=False)
    assert failed == ["1AKI"] and got == {}
    assert not (dest / "1aki.cif").exists() and not (dest / "1aki.cif.part").exists()


def test_truncated_body_is_refused_and_resumed_next_time(root, tmp_path):
    """Content-Length announced the whole file but the connection closed half way: refused, the part kept,
    and the next run asks only for the rest."""
    dest = tmp_path / "dest"
    with serve(root, H.TruncatingHandler) as base:
        with pytest.raises(InputError, match="truncated"):
            dl.fetch(_remote(base), dest, offline=False, progress=False)
    assert not (dest / "sub" / "a.bin").exists()
    assert (dest / "sub" / "a.bin.part").read_bytes() == PAYLOAD[:100_000]
    with serve(root) as base:
        p = dl.fetch(_remote(base), dest, offline=False, progress=False)
    assert p.read_bytes() == PAYLOAD and _log() == [("/a.bin", "bytes=100000-")]


# ------------------------------------------------------------------------------------------------ 416
def test_416_with_a_complete_part_and_md5_is_accepted(root, tmp_path):
    dest = tmp_path / "dest"
    _part(dest, PAYLOAD)
    with serve(root, H.Always416Handler) as base:
        p = dl.fetch(_remote(base), dest, offline=False, progress=False)
    assert p.read_bytes() == PAYLOAD and _log() == [("/a.bin", f"bytes={len(PAYLOAD)}-")]


def test_416_with_a_corrupted_part_and_md5_is_never_accepted(root, tmp_path):
    """The part does not match the MD5: it is dropped and the file downloaded whole (no Range)."""
    dest = tmp_path / "dest"
    _part(dest, _corrupt(PAYLOAD))
    with serve(root, H.Always416Handler) as base:
        p = dl.fetch(_remote(base), dest, offline=False, progress=False)
    assert p.read_bytes() == PAYLOAD
    assert _log() == [("/a.bin", f"bytes={len(PAYLOAD)}-"), ("/a.bin", None)]
    # a real server's 416: the part is longer than the file (e.g. left over from another release)
    os.remove(p)
    _part(dest, PAYLOAD + b"junk")
    with serve(root) as base:
        p = dl.fetch(_remote(base), dest, offline=False, progress=False)
    assert p.read_bytes() == PAYLOAD and _log()[-1] == ("/a.bin", None)


def test_416_without_a_checksum_downloads_the_file_whole(root, tmp_path, structures):
    """Without an MD5 a 416 proves nothing: the part (here a truncated file that still parses) is never
    accepted; the file is downloaded again from byte 0."""
    shutil.copyfile(structures / "1aki.cif", root / "1AKI.cif")
    data = (root / "1AKI.cif").read_bytes()
    pdb = tmp_path / "pdb"
    pdb.mkdir()
    lines = data.splitlines(keepends=True)
    (pdb / "1aki.cif.part").write_bytes(b"".join(lines[:2000]))       # ends inside the atom list: parses
    with serve(root, H.Always416Handler) as base:
        got, failed = st.fetch_structures(["1AKI"], pdb, base_url=base + "/{ID}.cif", offline=False)
    assert failed == [] and got["1AKI"].read_bytes() == data and _log()[-1] == ("/1AKI.cif", None)
    # the same through the function itself
    dest = tmp_path / "dest"
    _part(dest, PAYLOAD[:150_000])
    with serve(root, H.Always416Handler) as base:
        p = dl.download_file(f"{base}/a.bin", dest / "sub" / "a.bin", timeout=10, progress=False)
    assert p.read_bytes() == PAYLOAD and _log() == [("/a.bin", "bytes=150000-"), ("/a.bin", None)]


# ---------------------------------------------------------------------------------- no Content-Length
def test_no_content_length_with_md5_is_accepted_only_if_the_md5_matches(root, tmp_path):
    dest = tmp_path / "dest"
    with serve(root, H.NoLengthHandler) as base:
        assert dl.fetch(_remote(base), dest, offline=False, progress=False).read_bytes() == PAYLOAD
        os.remove(dest / "sub" / "a.bin")
        _part(dest, PAYLOAD[:50_000])                                  # a good part: resumed, MD5 proves it
        assert dl.fetch(_remote(base), dest, offline=False, progress=False).read_bytes() == PAYLOAD
        assert _log()[-1] == ("/a.bin", "bytes=50000-")
        os.remove(dest / "sub" / "a.bin")
        _part(dest, _corrupt(PAYLOAD[:50_000]))                        # a bad part: whole file fetched again
        assert dl.fetch(_remote(base), dest, offline=False, progress=False).read_bytes() == PAYLOAD
        assert _log()[-2:] == [("/a.bin", "bytes=50000-"), ("/a.bin", None)]
    os.remove(dest / "sub" / "a.bin")
    with serve(root, H.TruncatingNoLengthHandler) as base:             # cut short, undetectable but by MD5
        with pytest.raises(InputError, match="MD5 mismatch"):
            dl.fetch(_remote(base), dest, offline=False, progress=False)
    assert _no_files(dest)


def test_no_content_length_without_md5_downloads_the_file_whole(root, tmp_path, structures):
    """Without Content-Length and MD5 nothing shows that a resumed file fits together: the part is dropped
    and the file fetched from byte 0 (no Range), which is accepted."""
    # a part holding other bytes would not parse once completed
    shutil.copyfile(structures / "1aki.cif", root / "1AKI.cif")
    data = (root / "1AKI.cif").read_bytes()
    pdb = tmp_path / "pdb"
    pdb.mkdir()
    (pdb / "1aki.cif.part").write_bytes(b"\x00garbage" * 100)
    with serve(root, H.NoLengthHandler) as base:
        got, failed = st.fetch_structures(["1AKI"], pdb, base_url=base + "/{ID}.cif", offline=False)
    assert failed == [] and got["1AKI"].read_bytes() == data and _log()[-1] == ("/1AKI.cif", None)
    # the same through the function itself
    dest = tmp_path / "dest"
    _part(dest, _corrupt(PAYLOAD[:50_000]))
    with serve(root, H.NoLengthHandler) as base:
        p = dl.download_file(f"{base}/a.bin", dest / "sub" / "a.bin", timeout=10, progress=False)
    assert p.read_bytes() == PAYLOAD and _log() == [("/a.bin", "bytes=50000-"), ("/a.bin", None)]


# ----------------------------------------------------------------------------------- checks and target
def test_md5_or_size_mismatch_raises_and_leaves_no_file(root, tmp_path):
    dest = tmp_path / "dest"
    with serve(root) as base:
        with pytest.raises(InputError, match="MD5 mismatch") as e:
            dl.fetch(_remote(base, md5="0" * 32), dest, offline=False, progress=False)
        assert "a.bin" in e.value.source and f"{base}/a.bin" in str(e.value)
        assert _no_files(dest)
        _part(dest, PAYLOAD[:1000])                                    # resumed: tried once more whole, then refused
        with pytest.raises(InputError, match="MD5 mismatch"):
            dl.fetch(_remote(base, md5="0" * 32), dest, offline=False, progress=False)
        assert _no_files(dest) and _log()[-2:] == [("/a.bin", "bytes=1000-"), ("/a.bin", None)]
        with pytest.raises(InputError, match=r"200000 bytes, expected 123"):
            dl.fetch(_remote(base, size=123), dest, offline=False, progress=False)
        assert _no_files(dest)
        with pytest.raises(InputError, match="does not parse: nope"):
            dl.download_file(f"{base}/a.bin", dest / "sub" / "a.bin", timeout=10, progress=False,
                             validate=lambda p: (_ for _ in ()).throw(InputError(p, "does not parse: nope")))
        assert _no_files(dest)


def test_the_target_never_exists_while_unverified(root, tmp_path):
    target = tmp_path / "dest" / "a.bin"
    seen = []
    H.GatedHandler.reset()
    result = {}

    def validate(path):
        seen.append((Path(path), target.exists()))

    def run():
        try:
            result["path"] = dl.download_file(url, target, md5=MD5, timeout=20, progress=False, validate=validate)
        except BaseException as e:                                     # reported below
            result["error"] = e

    with serve(root, H.GatedHandler) as base:
        url = f"{base}/a.bin"
        t = threading.Thread(target=run)
        t.start()
        try:
            while not H.GatedHandler.half_sent.wait(0.05) and t.is_alive():
                pass
            assert H.GatedHandler.half_sent.is_set(), result
            # the client may still be reading headers when the server has sent half: wait for the part file
            part = target.with_name("a.bin.part")
            for _ in range(200):
                if part.exists():
                    break
                time.sleep(0.025)
            assert not target.exists() and part.exists()     # in the middle
        finally:
            H.GatedHandler.go_on.set()
            t.join(30)
    assert "error" not in result and result["path"].read_bytes() == PAYLOAD
    assert seen == [(target.with_name("a.bin.part"), False)]            # validated before it is in place


def test_fetch_structures_parses_a_file_before_it_is_in_place(root, tmp_path, structures, monkeypatch):
    """A structure is parsed while only its part file exists; one that does not parse is never put in place."""
    shutil.copyfile(structures / "1aki.cif", root / "1AKI.cif")
    (root / "2BAD.cif").write_text("data_2BAD\n_this is not a structure\n")
    real = st.read_structure
    parsed = []

    def spy(path, *a, **k):
        pid = "1aki" if "1aki" in Path(path).name.lower() else "2bad"
        parsed.append((tmp_path / "pdb" / f"{pid}.cif").exists())
        return real(path, *a, **k)

    monkeypatch.setattr(st, "read_structure", spy)
    with serve(root) as base:
        with pytest.warns(UserWarning, match="does not parse"):
            got, failed = st.fetch_structures(["1aki", "2bad"], tmp_path / "pdb", base_url=base + "/{ID}.cif",
                                              offline=False, workers=1, progress=False)
    assert failed == ["2BAD"] and list(got) == ["1AKI"] and parsed == [False, False]
    assert not (tmp_path / "pdb" / "2bad.cif").exists() and not (tmp_path / "pdb" / "2bad.cif.part").exists()

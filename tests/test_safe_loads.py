"""Files from outside never run code when opened: ATOM3D LMDBs serialised with pickle need an explicit opt-in
and are then read with an allowlist unpickler; the LRGB split pickle is read with one too. Also: the ``types``
strings farfield writes into ATOM3D items are the ones atom3d compares with."""
from __future__ import annotations

import gzip
import json
import os
import pickle
import shlex

import lmdb
import numpy as np
import pandas as pd
import pytest
from conftest import missing_data

from farfield.datasets import lrgb
from farfield.errors import InputError
from farfield.io import Atom3DLMDB, read_structure, structure_to_dataframe, write_atom3d_lmdb


class _Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class _EvilBuiltin:
    """Unpickling this calls builtins.exec (a builtin that is not a data constructor)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _raw_lmdb(path, header_ids: bytes, items: list[bytes], fmt: bytes = b"pkl"):
    path.mkdir(parents=True)
    env = lmdb.open(str(path), map_size=2**24)
    with env.begin(write=True) as txn:
        txn.put(b"num_examples", str(len(items)).encode())
        txn.put(b"serialization_format", fmt)
        txn.put(b"id_to_idx", header_ids)
        for i, raw in enumerate(items):
            txn.put(str(i).encode(), gzip.compress(raw))
    env.close()
    return path


@pytest.fixture(autouse=True)
def _no_env_opt_in(monkeypatch):
    monkeypatch.delenv("FARFIELD_ALLOW_PICKLE", raising=False)


# ------------------------------------------------------------------------------------------ ATOM3D pickle
def test_pickle_lmdb_refused_without_opt_in(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(marker))
    # the malicious pickle is in the header (id_to_idx) and in the item
    path = _raw_lmdb(tmp_path / "evil", evil, [evil])
    with pytest.raises(InputError) as e:
        Atom3DLMDB(path)
    msg = str(e.value)
    assert str(path) in msg and "arbitrary code" in msg
    assert "allow_pickle=True" in msg and "FARFIELD_ALLOW_PICKLE=1" in msg
    assert not marker.exists()
    # a benign header does not help: the format alone decides, before any byte is unpickled
    path = _raw_lmdb(tmp_path / "evil_item", pickle.dumps({"a": 0}), [evil])
    with pytest.raises(InputError, match="arbitrary code"):
        Atom3DLMDB(path)[0]
    assert not marker.exists()


@pytest.mark.parametrize("evil_cls", [_Evil, _EvilBuiltin])
def test_pickle_opt_in_still_refuses_code(tmp_path, monkeypatch, evil_cls):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(evil_cls(marker))
    # malicious header: refused when the LMDB is opened
    path = _raw_lmdb(tmp_path / "evil_header", evil, [])
    with pytest.raises(InputError) as e:
        Atom3DLMDB(path, allow_pickle=True)
    assert str(path) in str(e.value) and "not allowed" in str(e.value)
    assert not marker.exists()
    # malicious item: refused when the item is read (opened through the environment variable this time)
    monkeypatch.setenv("FARFIELD_ALLOW_PICKLE", "1")
    path = _raw_lmdb(tmp_path / "evil_item", pickle.dumps({"x": 0}), [evil])
    ds = Atom3DLMDB(path)
    assert ds.ids == ["x"]
    with pytest.raises(InputError) as e:
        ds[0]
    assert "item 0" in str(e.value) and "not allowed" in str(e.value)
    assert not marker.exists()


def test_pickle_opt_in_reads_real_dataframes(tmp_path, data_dir, monkeypatch):
    """ATOM3D's pkl LMDBs hold pickled pandas DataFrames (atom3d pickles the item dict as it is): the
    restricted unpickler rebuilds them."""
    s = read_structure(data_dir / "structures/1aki.pdb")
    df = structure_to_dataframe(s)
    items = [{"id": "1aki", "atoms": df, "scores": {"neglog_aff": np.float64(6.5)}, "labels": np.arange(3),
              "tags": {"a", "b"}, "idx": pd.Index([1, 5]), "series": pd.Series([1.0, 2.0], name="s")}]
    write_atom3d_lmdb(items, tmp_path / "pkl", "pkl")
    with pytest.raises(InputError, match="arbitrary code"):
        Atom3DLMDB(tmp_path / "pkl")
    for how in ("keyword", "environment"):
        if how == "environment":
            monkeypatch.setenv("FARFIELD_ALLOW_PICKLE", "1")
        ds = Atom3DLMDB(tmp_path / "pkl", allow_pickle=how == "keyword")
        item = ds[0]
        pd.testing.assert_frame_equal(item["atoms"], df)
        assert item["scores"] == {"neglog_aff": 6.5} and item["tags"] == {"a", "b"}
        assert np.array_equal(item["labels"], np.arange(3)) and list(item["idx"]) == [1, 5]
        np.testing.assert_allclose(ds.structure(0).coords, s.coords)
        ds.close()
    monkeypatch.setenv("FARFIELD_ALLOW_PICKLE", "0")
    with pytest.raises(InputError, match="arbitrary code"):
        Atom3DLMDB(tmp_path / "pkl")


# ------------------------------------------------------------------------------------------ ATOM3D types
CANONICAL = "<class 'pandas.core.frame.DataFrame'>"


def _raw_item(path, index=0, fmt="json"):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        raw = gzip.decompress(txn.get(str(index).encode()))
    env.close()
    if fmt == "json":
        return json.loads(raw)
    import msgpack
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_written_types_are_atom3d_canonical(tmp_path, fmt):
    df = pd.DataFrame({"x": [0.0], "y": [0.0], "z": [0.0], "element": ["C"]})
    write_atom3d_lmdb([{"id": "a", "atoms": df, "label": 1, "scores": {"s": 1.0}}], tmp_path / fmt, fmt)
    types = _raw_item(tmp_path / fmt, fmt=fmt)["types"]
    assert types["atoms"] == CANONICAL                  # what atom3d (and every ATOM3D release) compares with
    assert types["label"] == "<class 'int'>" and types["scores"] == "<class 'dict'>"
    assert types["id"] == "<class 'str'>" and types["types"] == "<class 'dict'>"


@pytest.mark.parametrize("spelling", [CANONICAL, "<class 'pandas.DataFrame'>"])
def test_both_type_spellings_are_read(tmp_path, spelling):
    frame = {"columns": ["x", "y", "z", "element"], "index": [0], "data": [[1.0, 2.0, 3.0, "C"]]}
    item = {"id": "a", "atoms": frame, "types": {"id": "<class 'str'>", "atoms": spelling}}
    path = _raw_lmdb(tmp_path / "t", json.dumps({"a": 0}).encode(), [json.dumps(item).encode()], fmt=b"json")
    back = Atom3DLMDB(path)[0]
    assert isinstance(back["atoms"], pd.DataFrame) and back["atoms"]["z"].tolist() == [3.0]


# ------------------------------------------------------------------------------------------ LRGB split pickle
def test_lrgb_split_pickle_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    for i, evil in enumerate([_Evil(marker), _EvilBuiltin(marker), {"train": _Evil(marker)}]):
        path = tmp_path / f"split{i}.pickle"
        path.write_bytes(pickle.dumps(evil))
        with pytest.raises(InputError) as e:
            lrgb._read_split(path, 10)
        assert str(path) in str(e.value) and "not allowed" in str(e.value)
        assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_lrgb_split_pickle_of_arrays_and_lists(tmp_path, protocol):
    perm = np.random.default_rng(0).permutation(10)
    for i, d in enumerate([{"train": perm[:6], "val": perm[6:8], "test": perm[8:]},
                           {"train": perm[:6].tolist(), "val": perm[6:8].astype(np.int32), "test": perm[8:]}]):
        path = tmp_path / f"split{i}.pickle"
        path.write_bytes(pickle.dumps(d, protocol=protocol))
        code = lrgb._read_split(path, 10)
        assert (code[perm[:6]] == 0).all() and (code[perm[6:8]] == 1).all() and (code[perm[8:]] == 2).all()


def test_lrgb_real_split_pickle(data_dir):
    path = data_dir / "lrgb/peptides-functional/splits_random_stratified_peptide.pickle"
    if not path.is_file():
        missing_data(f"{path} is missing (the official LRGB split file in the test data)")
    code = lrgb._read_split(path, 15535)
    assert np.bincount(code).tolist() == [10873, 2331, 2331]

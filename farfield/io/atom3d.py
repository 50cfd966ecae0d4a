"""ATOM3D LMDB datasets, read (and written) without the atom3d package.

Layout (atom3d.datasets.LMDBDataset, read from its source): keys ``b'num_examples'`` (ASCII int),
``b'serialization_format'`` (``json`` | ``msgpack`` | ``pkl``), ``b'id_to_idx'`` (serialised dict) and
``b'0'``, ``b'1'``, ... each a gzip-compressed serialised dict. In json / msgpack items, DataFrames are
stored as pandas ``orient='split'`` dicts (``columns`` / ``index`` / ``data``); in pkl items they are
pickled ``DataFrame`` objects. Newer items carry a ``types`` dict of ``str(type(value))`` per key; atom3d
rebuilds a field as a DataFrame when its entry equals ``str(pd.DataFrame)``, which every ATOM3D release
and pandas < 3 spell ``"<class 'pandas.core.frame.DataFrame'>"`` and pandas 3 ``"<class
'pandas.DataFrame'>"``. farfield always *writes* the former (:data:`DATAFRAME_TYPE`), so atom3d reads
farfield's LMDBs as tables, and *reads* both spellings, plus items without ``types`` (a split dict is
recognised by its shape).

Pickle (``serialization_format = pkl``): unpickling data can run arbitrary code (a pickle names any
importable callable and its arguments), so a pkl LMDB is opened only on request, with
``Atom3DLMDB(path, allow_pickle=True)`` or, for dataset loaders that do not pass the keyword, the
environment variable ``FARFIELD_ALLOW_PICKLE=1``; otherwise :class:`~farfield.errors.InputError` is raised
before any pickled byte (the ``id_to_idx`` header included) is read. Even then the bytes go through
:class:`RestrictedUnpickler`, which resolves only the globals listed in :data:`ATOM3D_PICKLE_GLOBALS`
(data constructors of builtins, numpy arrays / dtypes / scalars and pandas DataFrame / Series / Index and
their internal rebuild helpers); any other global (``os.system``, ``builtins.exec``, ...) is refused with
an :class:`~farfield.errors.InputError` before it is imported.

Atom DataFrame columns: ensemble subunit structure model chain hetero insertion_code residue segid
resname altloc occupancy bfactor x y z element name fullname serial_number (``hetero`` is ' ', 'W' or
'H_<resname>', as in Biopython).
"""
from __future__ import annotations

import gzip
import importlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from farfield.errors import InputError
from farfield.io.readers import normalise_element
from farfield.io.structure import ReadOptions, Structure, apply_options

__all__ = ["Atom3DLMDB", "write_atom3d_lmdb", "dataframe_to_structure", "structure_to_dataframe",
           "ATOM3D_COLUMNS", "DATAFRAME_TYPE", "ATOM3D_PICKLE_GLOBALS", "NUMPY_ARRAY_GLOBALS", "RestrictedUnpickler",
           "restricted_loads", "pickle_allowed"]

ATOM3D_COLUMNS = ("ensemble", "subunit", "structure", "model", "chain", "hetero", "insertion_code", "residue",
                  "segid", "resname", "altloc", "occupancy", "bfactor", "x", "y", "z", "element", "name",
                  "fullname", "serial_number")
_SERIALISATIONS = ("json", "msgpack", "pkl")

#: the ``types`` entry of a DataFrame field, as atom3d and every ATOM3D release write it (pandas < 3)
DATAFRAME_TYPE = "<class 'pandas.core.frame.DataFrame'>"
#: the spellings of a DataFrame's ``types`` entry that are read as one (pandas < 3, pandas 3)
_DATAFRAME_TYPES = (DATAFRAME_TYPE, "<class 'pandas.DataFrame'>")
#: environment variable that opts in to pickle-serialised LMDBs (value 1 / true / yes)
ALLOW_PICKLE_ENV = "FARFIELD_ALLOW_PICKLE"


# ---------------------------------------------------------------------------------------------------------
# restricted unpickling
def _alias(modules: tuple[str, ...], names: tuple[str, ...], target: str | None = None) -> dict:
    """{(module, name): (module to import, attribute)} for every module spelling of ``names``; ``target``
    (``module:name``) redirects them all to one object."""
    out = {}
    for m in modules:
        for n in names:
            out[(m, n)] = tuple(target.split(":")) if target else (m, n)
    return out


_NP_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
#: the globals a pickled numpy array needs (numpy 1 writes ``numpy.core``, numpy 2 ``numpy._core``)
NUMPY_ARRAY_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    **_alias(("numpy",), ("ndarray", "dtype")),
    **_alias(_NP_CORE, ("_reconstruct", "scalar")),
    **_alias(("numpy.core.numeric", "numpy._core.numeric"), ("_frombuffer",)),
    ("_codecs", "encode"): ("_codecs", "encode"),          # bytes in protocol-2 pickles
}

#: the globals :class:`RestrictedUnpickler` resolves for ATOM3D pkl items: builtin data constructors,
#: numpy arrays / dtypes / scalars, and what pandas (1.x to 3.x) pickles a DataFrame, Series or Index
#: with (the classes, the block manager, and their rebuild helpers ``_new_Index``, ``_unpickle_block``,
#: ``__pyx_unpickle_NDArrayBacked``). pandas 1.x numeric index classes (``Int64Index`` ...), gone from
#: pandas 2, are read as ``pandas.Index``. Every entry builds data; none imports, opens or evaluates.
ATOM3D_PICKLE_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    **_alias(("builtins",), ("set", "frozenset", "slice", "complex", "bytearray", "range")),
    **NUMPY_ARRAY_GLOBALS,
    **_alias(("pandas", "pandas.core.frame"), ("DataFrame",)),
    **_alias(("pandas", "pandas.core.series"), ("Series",)),
    **_alias(("pandas", "pandas.core.indexes.base"), ("Index",)),
    **_alias(("pandas", "pandas.core.indexes.range"), ("RangeIndex",)),
    **_alias(("pandas", "pandas.core.arrays.categorical"), ("Categorical",)),
    **_alias(("pandas", "pandas.core.dtypes.dtypes"), ("CategoricalDtype",)),
    **_alias(("pandas", "pandas.core.arrays.string_"), ("StringDtype",)),
    **_alias(("pandas.arrays", "pandas.core.arrays.string_"), ("StringArray",)),
    **_alias(("pandas.core.indexes.base",), ("_new_Index",)),
    **_alias(("pandas.core.internals.managers",), ("BlockManager", "SingleBlockManager")),
    **_alias(("pandas._libs.internals",), ("_unpickle_block",)),
    **_alias(("pandas._libs.arrays",), ("__pyx_unpickle_NDArrayBacked",)),
    **_alias(("pandas.core.indexes.numeric",), ("Int64Index", "UInt64Index", "Float64Index", "NumericIndex"),
             target="pandas:Index"),
}

_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _import_numpy_aware(module: str):
    """Import ``module``; numpy's ``core`` package is imported under the name the installed numpy uses
    (``numpy._core`` since numpy 2, where ``numpy.core`` is a deprecated alias; ``numpy.core`` before)."""
    for old, new in (("numpy.core", "numpy._core"), ("numpy._core", "numpy.core")):
        if module == old or module.startswith(old + "."):
            try:
                return importlib.import_module(new + module[len(old):])
            except ImportError:
                break
    return importlib.import_module(module)


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only the globals in ``allowed`` ({(module, name): (module to
    import, attribute)}); any other global raises :class:`pickle.UnpicklingError` naming it, before its module
    is imported (importing a module can itself run code). Python 2 module names (``__builtin__``) are mapped
    to their Python 3 names first. Pickle's other opcodes only build containers and call what was
    resolved, so a pickle can construct the allowed objects and nothing else."""

    def __init__(self, file, allowed: dict[tuple[str, str], tuple[str, str]]):
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        key = (_PY2_MODULES.get(module, module), name)
        if key not in self._allowed:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed (farfield unpickles only "
                                         "data: builtins containers, numpy arrays, pandas tables)")
        mod, attr = self._allowed[key]
        obj: Any = _import_numpy_aware(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


def restricted_loads(data: bytes, allowed: dict[tuple[str, str], tuple[str, str]]) -> Any:
    """``pickle.loads(data)`` through :class:`RestrictedUnpickler` with the globals ``allowed``."""
    return RestrictedUnpickler(io.BytesIO(data), allowed).load()


def pickle_allowed(allow_pickle: bool = False) -> bool:
    """Whether pickle-serialised input may be read: ``allow_pickle`` or the environment variable
    ``FARFIELD_ALLOW_PICKLE`` set to 1 / true / yes."""
    return bool(allow_pickle) or os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------------------------------------------
# DataFrames inside items
def _is_split_dict(v: Any) -> bool:
    return isinstance(v, dict) and {"columns", "index", "data"} <= set(v) and len(v) <= 4


def _split_to_frame(v: dict) -> pd.DataFrame:
    return pd.DataFrame(**{k: v[k] for k in ("columns", "index", "data")})


def _decode_frames(v: Any) -> Any:
    if _is_split_dict(v):
        return _split_to_frame(v)
    if isinstance(v, dict):
        return {k: _decode_frames(x) for k, x in v.items()}
    return v


def _decode_item(item: dict) -> dict:
    """DataFrames rebuilt: fields whose ``types`` entry names a DataFrame (either spelling), then any
    split dict (items without ``types``, nested tables)."""
    types = item.get("types")
    out = {}
    for k, v in item.items():
        declared = isinstance(types, dict) and types.get(k) in _DATAFRAME_TYPES
        if declared and isinstance(v, dict) and {"columns", "index", "data"} <= set(v):
            out[k] = _split_to_frame(v)
        else:
            out[k] = _decode_frames(v)
    return out


def _encode_frames(v: Any) -> Any:
    if isinstance(v, pd.DataFrame):
        d = v.to_dict(orient="split")
        return {"columns": list(d["columns"]), "index": [_plain(i) for i in d["index"]],
                "data": [[_plain(x) for x in row] for row in d["data"]]}
    if isinstance(v, dict):
        return {k: _encode_frames(x) for k, x in v.items()}
    return _plain(v)


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return x


def _deserialise(raw: bytes, fmt: str) -> Any:
    """Decode one value; pkl only through :class:`RestrictedUnpickler` (callers check the opt-in first)."""
    if fmt == "json":
        return json.loads(raw)
    if fmt == "msgpack":
        import msgpack

        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    if fmt == "pkl":
        return restricted_loads(raw, ATOM3D_PICKLE_GLOBALS)
    raise ValueError(fmt)


def _serialise(obj: Any, fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps(obj).encode()
    if fmt == "msgpack":
        import msgpack

        return msgpack.packb(obj, use_bin_type=True)
    return pickle.dumps(obj)         # pkl: as atom3d writes it (kept so that pkl reading can be tested)


class Atom3DLMDB:
    """Random access to an ATOM3D LMDB dataset.

    ``ds[i]`` is the i-th item as a dict whose DataFrame fields (``atoms``, ``atoms_protein``,
    ``labels``, ...) are rebuilt as ``pandas.DataFrame``. ``ds.structure(i, field='atoms')`` turns one
    of them into a :class:`Structure`.

    Args:
        path: the LMDB directory (holding data.mdb).
        allow_pickle: open an LMDB whose ``serialization_format`` is ``pkl``. Unpickling a file can run
            arbitrary code, so this is off by default; the environment variable ``FARFIELD_ALLOW_PICKLE=1``
            turns it on too (for dataset loaders that open LMDBs without this keyword). Even then only the
            data classes of :data:`ATOM3D_PICKLE_GLOBALS` are unpickled (see the module docstring).

    Raises:
        InputError: the directory is missing, is not an LMDB, or its header keys are malformed; the LMDB is
            pickle-serialised and pickle was not allowed; a pickled value names a global that is not allowed.
    """

    def __init__(self, path: str | Path, allow_pickle: bool = False):
        import lmdb

        self.path = Path(path)
        if not self.path.exists():
            raise InputError(self.path, "LMDB directory not found")
        if not (self.path / "data.mdb").exists():
            raise InputError(self.path, "not an LMDB dataset (no data.mdb inside)")
        try:
            self._env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, meminit=False,
                                  subdir=True, max_readers=1)
        except lmdb.Error as e:
            raise InputError(self.path, f"cannot open LMDB: {e}") from None
        with self._env.begin(write=False) as txn:
            n = txn.get(b"num_examples")
            fmt = txn.get(b"serialization_format")
            ids = txn.get(b"id_to_idx")
        if n is None:
            raise InputError(self.path, "not an ATOM3D dataset: key 'num_examples' missing")
        try:
            self._n = int(n)
        except ValueError:
            raise InputError(self.path, f"key 'num_examples' is not an integer: {n[:20]!r}") from None
        self.serialization_format = (fmt or b"json").decode()
        if self.serialization_format not in _SERIALISATIONS:
            raise InputError(self.path, f"unknown serialization_format {self.serialization_format!r}; "
                                        f"known: {_SERIALISATIONS}")
        if self.serialization_format == "pkl" and not pickle_allowed(allow_pickle):
            self._env.close()
            raise InputError(self.path, "is serialised with pickle (serialization_format 'pkl'), and "
                                        "unpickling a file can run arbitrary code. Open it only if you trust "
                                        "its source, with Atom3DLMDB(path, allow_pickle=True) or, through "
                                        f"dataset loaders, the environment variable {ALLOW_PICKLE_ENV}=1 "
                                        "(even then only data classes - builtins containers, numpy arrays, "
                                        "pandas tables - are unpickled)")
        self._id_to_idx = self._decode(ids, "id_to_idx") if ids is not None else {}

    def _decode(self, raw: bytes, what: str) -> Any:
        try:
            return _deserialise(raw, self.serialization_format)
        except pickle.UnpicklingError as e:
            raise InputError(self.path, f"refused to unpickle {what}: {e}") from None
        except Exception as e:  # json / msgpack / pickle each raise their own types
            raise InputError(self.path, f"cannot decode {what} as {self.serialization_format}: {e}") from None

    def __len__(self) -> int:
        return self._n

    @property
    def ids(self) -> list[str]:
        """Item ids in index order."""
        inv = {int(v): k for k, v in self._id_to_idx.items()}
        return [inv.get(i, str(i)) for i in range(self._n)]

    def index_of(self, item_id: str) -> int:
        if item_id not in self._id_to_idx:
            raise KeyError(f"{item_id!r} is not an item of {self.path}")
        return int(self._id_to_idx[item_id])

    def __getitem__(self, index: int) -> dict:
        if not -self._n <= index < self._n:
            raise IndexError(f"index {index} out of range for {self.path} with {self._n} items")
        index %= self._n
        with self._env.begin(write=False) as txn:
            raw = txn.get(str(index).encode())
        if raw is None:
            raise InputError(self.path, f"item {index} is missing although num_examples = {self._n}")
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise InputError(self.path, f"item {index} is not valid gzip data: {e}") from None
        item = self._decode(raw, f"item {index}")
        if not isinstance(item, dict):
            raise InputError(self.path, f"item {index} is a {type(item).__name__}, expected a dict")
        return _decode_item(item)

    def __iter__(self):
        for i in range(self._n):
            yield self[i]

    def structure(self, index: int, field: str = "atoms", options: ReadOptions | None = None,
                  **kwargs) -> Structure:
        """Item ``index``'s atom table ``field`` as a :class:`Structure` (ReadOptions apply; ``model``
        is the 1-based position among the table's distinct model numbers)."""
        item = self[index]
        if field not in item or not isinstance(item[field], pd.DataFrame):
            fields = [k for k, v in item.items() if isinstance(v, pd.DataFrame)]
            raise InputError(self.path, f"item {index} has no atom table {field!r}; tables: {fields}")
        name = str(item.get("id", index))
        return dataframe_to_structure(item[field], options or ReadOptions(**kwargs),
                                      source=f"{self.path}[{index}]", name=name)

    def close(self) -> None:
        self._env.close()


def dataframe_to_structure(df: pd.DataFrame, options: ReadOptions | None = None, *, source: str = "<dataframe>",
                           name: str = "") -> Structure:
    """An ATOM3D atom DataFrame -> :class:`Structure` (model selection, then ``options``)."""
    options = options or ReadOptions()
    missing = {"x", "y", "z", "element"} - set(df.columns)
    if missing:
        raise InputError(source, f"atom table lacks column(s) {sorted(missing)}")
    if len(df) == 0:
        raise InputError(source, "atom table is empty")
    models = pd.unique(df["model"]) if "model" in df else np.array([1])
    if options.model > len(models):
        raise InputError(source, f"model {options.model} requested but the table holds {len(models)} model(s)")
    if "model" in df:
        df = df[df["model"] == models[options.model - 1]]

    def col(name, default):
        return df[name].to_numpy() if name in df else np.full(len(df), default)

    het = col("hetero", " ").astype(str)
    alt = np.char.strip(col("altloc", "").astype(str))
    s = Structure(
        coords=df[["x", "y", "z"]].to_numpy(dtype=np.float64),
        element=np.array([normalise_element(e) for e in df["element"].astype(str)]),
        atom_name=np.char.strip(col("name", "").astype(str)), res_name=np.char.strip(col("resname", "UNL").astype(str)),
        res_seq=col("residue", 0).astype(np.int64), ins_code=np.char.strip(col("insertion_code", "").astype(str)),
        chain_id=np.char.strip(col("chain", "").astype(str)), hetero=np.char.strip(het) != "",
        altloc=alt, occupancy=col("occupancy", 1.0).astype(np.float64),
        b_factor=col("bfactor", 0.0).astype(np.float64), charge=np.zeros(len(df), dtype=np.int64),
        source=source, name=name, model=options.model, n_models=len(models),
    )
    return apply_options(s, options)


def structure_to_dataframe(s: Structure, ensemble: str | None = None) -> pd.DataFrame:
    """A :class:`Structure` as an ATOM3D atom DataFrame (the inverse of :func:`dataframe_to_structure`)."""
    n = len(s)
    ens = ensemble or s.name or "structure"
    water = s.is_water
    hetero = np.where(water, "W", np.where(s.hetero, np.char.add("H_", s.res_name.astype(str)), " "))
    return pd.DataFrame({
        "ensemble": [ens] * n, "subunit": np.zeros(n, dtype=np.int64), "structure": [ens] * n,
        "model": np.full(n, s.model, dtype=np.int64), "chain": s.chain_id, "hetero": hetero,
        "insertion_code": np.where(s.ins_code == "", " ", s.ins_code), "residue": s.res_seq, "segid": [""] * n,
        "resname": s.res_name, "altloc": np.where(s.altloc == "", " ", s.altloc), "occupancy": s.occupancy,
        "bfactor": s.b_factor, "x": s.coords[:, 0], "y": s.coords[:, 1], "z": s.coords[:, 2],
        "element": np.char.upper(s.element.astype(str)), "name": s.atom_name, "fullname": s.atom_name,
        "serial_number": np.arange(1, n + 1, dtype=np.int64),
    })


def write_atom3d_lmdb(items: Iterable[dict], path: str | Path, serialization_format: str = "json",
                      with_types: bool = True, map_size: int = 2**34) -> int:
    """Write items as an ATOM3D LMDB, as atom3d's ``make_lmdb_dataset`` does: DataFrame values are stored as
    split dicts (json, msgpack) or pickled as they are (pkl), and with ``with_types`` each item gets a
    ``types`` dict of ``str(type(value))`` per key, a DataFrame's written as :data:`DATAFRAME_TYPE` whatever
    the installed pandas version (pandas 3 spells ``str(pd.DataFrame)`` differently, which atom3d would
    not recognise).

    Returns the number of items written. Each item needs an ``id``.
    """
    import lmdb

    if serialization_format not in _SERIALISATIONS:
        raise ValueError(f"serialization_format must be one of {_SERIALISATIONS}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=map_size)
    id_to_idx = {}
    n = 0
    with env.begin(write=True) as txn:
        for i, item in enumerate(items):
            item = dict(item)
            if with_types:
                item["types"] = {k: DATAFRAME_TYPE if isinstance(v, pd.DataFrame) else str(type(v))
                                 for k, v in item.items()}
                item["types"]["types"] = str(dict)
            value = item if serialization_format == "pkl" else _encode_frames(item)
            txn.put(str(i).encode(), gzip.compress(_serialise(value, serialization_format)))
            id_to_idx[str(item.get("id", i))] = i
            n = i + 1
        txn.put(b"num_examples", str(n).encode())
        txn.put(b"serialization_format", serialization_format.encode())
        txn.put(b"id_to_idx", _serialise(id_to_idx, serialization_format))
    env.close()
    return n

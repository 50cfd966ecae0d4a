"""Your own data: a folder of protein structures plus a CSV of labels (the ``folder`` dataset).

Train on 50 PDB files and a CSV in one command::

    farfield train data.dataset=folder data.path=labels.csv task.kind=graph_regression \\
        data.edges=radius:10 model.backbone=gvp optim.epochs=50 run.out=runs/mine

(``data.options.structures=DIR`` when the structures are not next to the CSV; ``data.options.preset=ca_sc`` for
other residue features; ``data.options.split_file=split.csv`` for a fixed split; ``task.kind=binary`` /
``multiclass`` / ``multilabel`` with ``task.num_outputs=K`` for classification, see "Task information".)

Graph-level labels (one row per structure)
------------------------------------------
``id,<label columns...>``, e.g.::

    id,stability            id,binder          id,fold            id,go_terms
    1abc,0.73               1abc,1             1abc,alpha         1abc,GO:0003677;GO:0005524
    my_design_07,-1.2       1xyz,0             1xyz,beta          1xyz,

* ``id`` (required): the structure, resolved in the ``structures`` folders (searched recursively): first a file
  named ``<id>`` or ``<id>.<ext>`` (any PDB / mmCIF / BinaryCIF extension, optionally ``.gz``; case-insensitive),
  so any name works (``my_design_07.pdb``, ``AF-P04629-F1-model_v4.cif``); else, for PDB IDs, every name
  :func:`farfield.datasets.structures.find_structure` knows (``1abc.cif``, ``1ABC-A.pdb``, ``pdb1abc.ent.gz``
  ...), where an ID with a chain (``1abc_A``, ``1ABC-A``) selects that chain of the entry's file. A file named
  after the ID itself is read whole (every chain), whatever the ID looks like.
* ``chain`` (optional): the author chain to use (blank: every chain).
* every other column is a label (``target=col`` or ``target=col1,col2`` picks some). The task:

  ==============  ==========================================================  ======================
  task            labels                                                      ``y``
  ==============  ==========================================================  ======================
  ``regression``  one or more numeric columns                                 [1, k] float
  ``binary``      one column of 0 / 1                                         [1, 1]
  ``multiclass``  one column of class names (sorted: index = position) or of  [1, 1] class index
                  class indices 0..C-1
  ``multilabel``  several 0 / 1 columns, **or** one column of ``;``-separated [1, k] 0 / 1
                  label names (vocabulary: the sorted union; blank = none)
  ==============  ==========================================================  ======================

  Inferred when unambiguous (option ``task`` otherwise): text with ``;`` -> multilabel, other text -> multiclass,
  all 0 / 1 -> binary (one column) or multilabel (several), other numbers -> regression; integer labels with
  more than two values are ambiguous (classes or counts?) and need ``task``.

Node-level labels (one row per residue)
---------------------------------------
A CSV with a ``resnum`` column: ``id,chain,resnum[,icode],<label columns...>`` (author chain ID, author residue
number, insertion code), e.g. ``1abc,A,42,0.8``. Each structure becomes one residue graph with ``y`` [N, k], in
the order of the graph's residues. Every amino-acid residue of the structure needs a row unless
``missing_label`` fills the others (e.g. ``missing_label=0`` for binding-site labels listed as positives only);
a row naming a residue the structure does not have is an error. Node-level tasks are regression
(``node_regression``, what farfield's trainer supports at node level); ``level`` must be ``residue``.

Options
-------
``path``: the CSV, or a folder holding it (then ``csv`` names it, default: the folder's only ``.csv``);
``csv``: the CSV (when ``path`` is a folder or absent); ``structures``: folder or list of folders (default: the
CSV's folder; relative paths are taken from the working directory, else from the CSV's folder); ``task``:
``regression``, ``binary``, ``multiclass``, ``multilabel`` (or the trainer's names ``graph_regression``,
``node_regression``); ``level``: ``residue`` (default) or ``atom``; ``preset``: residue feature preset
(:data:`farfield.features.residues.PRESETS`, default ``gvp``); ``split_file``: CSV ``id,split`` with
``train`` / ``val`` / ``test`` (``valid`` and ``validation`` are read as ``val``) for every ID: the graphs carry
``split``, which the data module uses; without it the data module draws its seeded split (by entry: when one
ID appears with several chains, its graphs share a ``group``); ``missing_label`` (node level); ``hydrogens``
(atom level); ``dtype``.

Task information
----------------
The task depends on the CSV, so the loader's static ``info`` has none; :func:`task_for` (also ``folder.task_for``)
gives ``{"kind", "num_outputs", "label_names", "pooling"}`` for a path and options by reading the CSV only. Until the
trainer asks it, name the task on the command line (``task.kind=binary``; ``task.num_outputs`` for several outputs or
classes). The readout (``task.pooling=auto``) is ``mean``: a label of a whole structure (a stability, a score, a
class) should not grow with its number of residues, and with a summed readout training on chains of 20 to 1,300
residues diverges; set ``task.pooling=sum`` for an extensive target (e.g. a total energy).

Reference baselines: graph-level graphs carry ``baseline_composition`` [1, 20], the amino-acid composition
(fraction of residues of each of the 20 standard types); node-level graphs ``baseline_residue_type`` [N, 21],
the residue-type one-hot. Bad input (empty CSV, no ``id`` column, an ID without a structure, a NaN or blank
label, an unknown split name ...) raises :class:`~farfield.errors.InputError` naming the file, the row and the
problem; unknown option values raise :class:`~farfield.errors.ConfigError`.
"""
from __future__ import annotations

import csv as _csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from farfield.data import fields as F
from farfield.errors import ConfigError, InputError
from farfield.io.readers import FORMATS

__all__ = ["folder", "task_for", "read_labels", "read_split_file", "amino_acid_composition", "TASK_NAMES",
           "SPLIT_NAMES", "LabelTable", "POOLING"]

#: the ``task`` option's values -> the label level they need (``None``: either; the CSV decides)
TASK_NAMES = {"regression": None, "binary": "graph", "multiclass": "graph", "multilabel": "graph",
              "graph_regression": "graph", "node_regression": "node"}
#: split names of a split file -> the ``split`` field's code
SPLIT_NAMES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
_STRUCTURE_EXT = tuple(e for e, f in FORMATS.items() if f in ("pdb", "mmcif", "bcif", "xyz"))
_NODE_KEYS = ("id", "chain", "resnum", "icode")
_PREFERENCE = {".cif": 0, ".mmcif": 1, ".pdb": 2, ".ent": 3, ".pdb1": 4, ".bcif": 5, ".xyz": 6}


# -- the CSV ----------------------------------------------------------------------------------------------------
def _read_csv(path: Path, what: str = "label CSV") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields), ...]) of a CSV file; blank lines are skipped."""
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = [(i + 1, [c.strip() for c in row]) for i, row in enumerate(_csv.reader(f))]
    except (UnicodeDecodeError, _csv.Error) as e:
        raise InputError(path, f"cannot be read as a CSV {what} ({e})") from e
    lines = [(n, r) for n, r in lines if any(r)]
    if not lines:
        raise InputError(path, f"is empty: a {what} needs a header line and at least one row")
    (_, header), rows = lines[0], lines[1:]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup or "" in header:
        problem = f"duplicate columns {dup}" if dup else "an empty column name"
        raise InputError(path, f"header {header} has {problem}")
    if not rows:
        raise InputError(path, f"has a header {header} but no rows")
    for n, r in rows:
        if len(r) != len(header):
            raise InputError(path, f"line {n} has {len(r)} fields, the header {len(header)} ({header})")
    return header, rows


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass
class LabelTable:
    """Labels read from a CSV (:func:`read_labels`).

    Attributes:
        path: the CSV. level: ``'graph'`` or ``'node'``. kind: the trainer's task kind (``graph_regression``,
        ``node_regression``, ``binary``, ``multiclass``, ``multilabel``). columns: the label columns used.
        label_names: one name per output (classes for multiclass). keys: per row, ``(id, chain)`` (graph level)
        or ``(id, chain, resnum, icode)`` (node level). y: float64 [rows, k] (multiclass: [rows, 1] indices).
        lines: per row, its line number in the file.
    """

    path: Path
    level: str
    kind: str
    columns: list[str]
    label_names: list[str]
    keys: list[tuple]
    y: np.ndarray
    lines: list[int]

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    def task(self) -> dict:
        return {"kind": self.kind, "num_outputs": self.num_outputs, "label_names": list(self.label_names)}


def _check_task(task: str | None) -> str | None:
    if task is not None and task not in TASK_NAMES:
        raise ConfigError(f"folder: task must be one of {list(TASK_NAMES)} (or unset, to infer it), got {task!r}")
    return task


def _infer(path: Path, columns: list[str], values: list[list[str]]) -> str:
    """The task the label columns imply (see the module docstring) or a ConfigError when ambiguous."""
    numeric = {c: all(_float(v) is not None for v in vals if v) for c, vals in zip(columns, values)}
    text = [c for c in columns if not numeric[c]]
    if text:
        if len(columns) > 1:
            raise ConfigError(f"folder: cannot infer the task of {path}: column(s) {text} hold text and there are "
                              f"several label columns {columns}; pick them with target=... or set task")
        return "multilabel" if any(";" in v for v in values[0]) else "multiclass"
    nums = [np.array([_float(v) for v in vals if v], dtype=np.float64) for vals in values]
    nums_ok = [x[np.isfinite(x)] for x in nums]
    if all(np.isin(x, (0.0, 1.0)).all() for x in nums_ok):
        return "binary" if len(columns) == 1 else "multilabel"
    if len(columns) == 1 and (nums_ok[0] == np.round(nums_ok[0])).all() and len(np.unique(nums_ok[0])) > 2:
        raise ConfigError(f"folder: label column {columns[0]!r} of {path} holds integers: set task=multiclass "
                          "(class indices) or task=regression")
    return "regression"


def read_labels(path: str | Path, target: str | list | None = None, task: str | None = None) -> LabelTable:
    """Read a label CSV in the graph- or node-level format of the module docstring and encode its labels.

    Args:
        path: the CSV.
        target: label column(s) to use (a name, a comma-separated string or a list); None / ``'all'``: every
            column that is not a key column.
        task: ``regression``, ``binary``, ``multiclass``, ``multilabel`` (or ``graph_regression`` /
            ``node_regression``); None: inferred.
    """
    path = Path(path)
    _check_task(task)
    header, rows = _read_csv(path)
    if "id" not in header:
        raise InputError(path, f"has no 'id' column (columns: {header}); the first line must be a header such as "
                               "'id,label'")
    level = "node" if "resnum" in header else "graph"
    if level == "node" and "chain" not in header:
        raise InputError(path, "has a 'resnum' column (per-residue labels) but no 'chain' column; per-residue rows "
                               "are id,chain,resnum[,icode],<labels>")
    keys_cols = _NODE_KEYS if level == "node" else ("id", "chain")
    available = [h for h in header if h not in keys_cols]
    if target in (None, "all"):
        columns = available
    else:
        columns = [c.strip() for c in (target.split(",") if isinstance(target, str) else target)]
        unknown = [c for c in columns if c not in available]
        if unknown or not columns:
            raise ConfigError(f"folder: target {target!r} names no label column of {path} (label columns: "
                              f"{available})")
    if not columns:
        keys = list(keys_cols[:3] if level == "node" else keys_cols[:1])
        raise InputError(path, f"has no label column (columns: {header}); add one after {keys}")
    need = TASK_NAMES.get(task) if task is not None else None
    if need is not None and need != level:
        raise ConfigError(f"folder: task={task!r} needs {need}-level labels, but {path} has "
                          f"{'per-residue (resnum column)' if level == 'node' else 'per-structure'} labels"
                          + (" (per-residue labels are task=regression: node_regression)" if level == "node" else ""))
    col_idx = [header.index(c) for c in columns]
    values = [[r[i] for _, r in rows] for i in col_idx]
    lines = [n for n, _ in rows]
    ids = [r[header.index("id")] for _, r in rows]
    for n, i in zip(lines, ids):
        if not i:
            raise InputError(path, f"line {n}: the id is blank")
    chain_i = header.index("chain") if "chain" in header else None
    chains = [(r[chain_i] or None) if chain_i is not None else None for _, r in rows]
    if level == "node":
        ri, ii = header.index("resnum"), header.index("icode") if "icode" in header else None
        keys = []
        for (n, r), i, c in zip(rows, ids, chains):
            num = _float(r[ri])
            if num is None or num != int(num):
                raise InputError(path, f"line {n} (id {i!r}): resnum {r[ri]!r} is not an integer residue number")
            keys.append((i, c or "", int(num), r[ii] if ii is not None else ""))
        kind = "regression"
    else:
        keys = list(zip(ids, chains))
        kind = task if task is not None else _infer(path, columns, values)
    kind = {"graph_regression": "regression", "node_regression": "regression"}.get(kind, kind)
    seen: dict[tuple, int] = {}
    for n, k in zip(lines, keys):
        if k in seen:
            raise InputError(path, f"line {n} repeats {dict(zip(keys_cols, k))} of line {seen[k]}")
        seen[k] = n
    y, names = _encode(path, kind, columns, values, ids, lines)
    trainer_kind = ("node_regression" if level == "node" else "graph_regression") if kind == "regression" else kind
    return LabelTable(path, level, trainer_kind, columns, names, keys, y, lines)


def _encode(path, kind, columns, values, ids, lines) -> tuple[np.ndarray, list[str]]:
    def where(j):
        return f"line {lines[j]} (id {ids[j]!r})"

    def numbers(c, vals, allowed=None):
        out = np.empty(len(vals))
        for j, v in enumerate(vals):
            x = _float(v) if v else None
            if x is None or not math.isfinite(x):
                raise InputError(path, f"{where(j)}: label {c!r} is {v or 'blank'!r}; every label must be a finite "
                                       "number" + (f" in {allowed}" if allowed else ""))
            if allowed is not None and x not in allowed:
                raise InputError(path, f"{where(j)}: label {c!r} is {v!r}; a {kind} label must be one of {allowed}")
            out[j] = x
        return out

    if kind == "regression":
        return np.stack([numbers(c, v) for c, v in zip(columns, values)], 1), list(columns)
    if kind in ("binary", "multiclass") and len(columns) != 1:
        raise ConfigError(f"folder: task={kind} takes one label column, {path} has {columns}; pick one with "
                          f"target=... {'(several 0/1 columns are task=multilabel)' if kind == 'binary' else ''}")
    if kind == "binary":
        return numbers(columns[0], values[0], (0, 1))[:, None], list(columns)
    if kind == "multiclass":
        vals = values[0]
        for j, v in enumerate(vals):
            if not v:
                raise InputError(path, f"{where(j)}: class label {columns[0]!r} is blank")
        if all(_float(v) is not None for v in vals):
            idx = numbers(columns[0], vals)
            bad = [j for j, x in enumerate(idx) if x < 0 or x != int(x)]
            if bad:
                raise InputError(path, f"{where(bad[0])}: class index {vals[bad[0]]!r} is not an integer >= 0")
            k = int(idx.max()) + 1
            if k < 2:
                raise InputError(path, f"multiclass labels {columns[0]!r} hold a single class")
            return idx[:, None], [str(i) for i in range(k)]
        names = sorted(set(vals))
        if len(names) < 2:
            raise InputError(path, f"multiclass labels {columns[0]!r} hold a single class {names}")
        pos = {n: i for i, n in enumerate(names)}
        return np.array([[pos[v]] for v in vals], dtype=np.float64), names
    # multilabel
    if len(columns) > 1 or all(_float(v) is not None for v in values[0] if v):
        return np.stack([numbers(c, v, (0, 1)) for c, v in zip(columns, values)], 1), list(columns)
    sets = [[t.strip() for t in v.split(";") if t.strip()] for v in values[0]]
    names = sorted({t for s in sets for t in s})
    pos = {n: i for i, n in enumerate(names)}
    y = np.zeros((len(sets), len(names)))
    for j, s in enumerate(sets):
        y[j, [pos[t] for t in s]] = 1.0
    return y, names


def read_split_file(path: str | Path, ids) -> dict[str, int]:
    """``{id: 0/1/2}`` from a CSV ``id,split`` (split names in :data:`SPLIT_NAMES`, case-insensitive), for
    every id of ``ids`` (InputError naming those it lacks); rows of other ids are ignored."""
    path = Path(path)
    header, rows = _read_csv(path, "split file")
    if "id" not in header or "split" not in header:
        raise InputError(path, f"a split file needs the columns 'id' and 'split' (has {header})")
    ii, si = header.index("id"), header.index("split")
    out: dict[str, int] = {}
    for n, r in rows:
        name = r[si].lower()
        if name not in SPLIT_NAMES:
            raise InputError(path, f"line {n} (id {r[ii]!r}): unknown split {r[si]!r}; use one of "
                                   f"{sorted(set(SPLIT_NAMES) - {'valid', 'validation'})}")
        if r[ii] in out and out[r[ii]] != SPLIT_NAMES[name]:
            raise InputError(path, f"line {n}: id {r[ii]!r} is assigned to two splits")
        out[r[ii]] = SPLIT_NAMES[name]
    missing = sorted(set(ids) - set(out))
    if missing:
        raise InputError(path, f"has no split for {len(missing)} id(s): {missing[:10]}"
                               f"{' ...' if len(missing) > 10 else ''}")
    return out


# -- files ------------------------------------------------------------------------------------------------------
def _resolve(path, csv, structures) -> tuple[Path, list[Path]]:
    """(the CSV, the structure folders) from the loader's ``path`` and options."""
    if path is None and csv is None:
        raise ConfigError("folder: give the label CSV as data.path (or a folder holding it, or data.options.csv)")
    base = Path(path) if path is not None else None
    if base is not None and not base.exists():
        raise InputError(base, "not found (data.path of the folder dataset: a label CSV or a folder holding one)")
    if base is not None and base.is_file():
        if csv is not None and Path(csv) != base:
            raise ConfigError(f"folder: data.path {str(base)!r} is a CSV, and csv={str(csv)!r} names another")
        table = base
    else:
        if csv is not None:
            table = Path(csv)
            if base is not None and not table.is_absolute() and not table.exists():
                table = base / table
        else:
            found = sorted(base.glob("*.csv"))
            if len(found) != 1:
                raise ConfigError(f"folder: {base} holds {len(found)} CSV files {[p.name for p in found]}; name the "
                                  "label CSV with csv=... (or as data.path)")
            table = found[0]
    if not table.is_file():
        raise InputError(table, "label CSV not found")
    if structures is None:
        folders = [base if base is not None and base.is_dir() else table.parent]
    else:
        given = [structures] if isinstance(structures, (str, os.PathLike)) else list(structures)
        folders = []
        for f in given:
            p = Path(f)
            if not p.is_dir() and not p.is_absolute() and (table.parent / p).is_dir():
                p = table.parent / p
            if not p.is_dir():
                raise InputError(p, "structure folder not found (option structures)")
            folders.append(p)
    return table, folders


class _Finder:
    """Structure files by ID: a file named ``<id>[.<ext>][.gz]`` anywhere under the folders, else a PDB-style
    name (:class:`farfield.datasets.structures.StructureIndex`)."""

    def __init__(self, folders: list[Path]):
        from farfield.datasets.structures import StructureIndex

        self.folders = folders
        found: dict[str, list[tuple]] = {}
        for rank, folder in enumerate(folders):
            for root, _, names in os.walk(folder):
                for name in names:
                    low = name.lower()
                    gz = low.endswith(".gz")
                    stem = low[:-3] if gz else low
                    for ext in _STRUCTURE_EXT:
                        if stem.endswith(ext):
                            # the first folder, then mmCIF > PDB > BinaryCIF (as find_structure), plain > gzipped
                            pref = (rank, _PREFERENCE.get(ext, 9), gz, str(Path(root) / name))
                            for key in (stem[: -len(ext)], low):
                                found.setdefault(key, []).append((pref, Path(root) / name))
        self.by_stem = {k: min(v)[1] for k, v in found.items()}
        self.index = StructureIndex(folders)

    def find(self, id_: str, chain: str | None) -> tuple[Path | None, str | None]:
        """(file, chain to read) for an ID and an optional chain."""
        p = self.by_stem.get(id_.lower())
        if p is not None:
            return p, chain
        from farfield.datasets.structures import split_chain_id
        try:
            _, c = split_chain_id(id_)
        except InputError:
            return None, chain
        chain = chain or c
        return self.index.find(id_, chain), chain


def amino_acid_composition(res_type: np.ndarray) -> np.ndarray:
    """[20] fraction of residues of each standard amino acid (:data:`farfield.io.residues.AMINO_ACIDS` order;
    unknown residues count in the denominator only)."""
    res_type = np.asarray(res_type)
    return np.bincount(res_type[res_type < 20], minlength=20)[:20] / max(len(res_type), 1)


# -- the loader -------------------------------------------------------------------------------------------------
#: the readout of ``task.pooling=auto``: your own proteins' labels are per-structure (intensive) properties as far
#: as farfield knows, so the head's output is averaged over the residues and a prediction does not scale with chain
#: length (set ``task.pooling=sum`` for an extensive target such as a total energy). Without ``data.path`` the
#: trainer's default (:data:`farfield.train.config.DEFAULT_POOLING`) is the same.
POOLING = "mean"


def task_for(path=None, *, target=None, task: str | None = None, csv=None, structures=None, **options) -> dict:
    """The task of the folder dataset at ``path`` with the loader's options, from the CSV alone (no structure is
    read; options that only affect featurisation are accepted and ignored): ``{"kind": ..., "num_outputs": k,
    "label_names": [...], "pooling": "mean"}`` with ``kind`` as the trainer names it (``graph_regression``,
    ``node_regression``, ``binary``, ``multiclass``, ``multilabel``) and the readout :data:`POOLING`."""
    table, _ = _resolve(path, csv, structures)
    return {**read_labels(table, target, task).task(), "pooling": POOLING}


def folder(path=None, *, hydrogens: bool = False, target=None, structures=None, csv=None, task: str | None = None,
           level: str = "residue", preset: str = "gvp", split_file=None, missing_label: float | None = None,
           dtype: str = "float32") -> list[Data]:
    """Graphs of your own structures with labels from a CSV (formats and options in the module docstring).

    Returns one ``Data`` per graph-level row (per ID at node level), in CSV order, without edges (the data
    module builds them from ``data.edges``): residue level as :class:`farfield.data.Featuriser` makes it with
    ``preset``, or atom level; ``y`` [1, k] (graph) or [N, k] (node); ``name`` = the ID (``id:chain`` with a
    chain); ``baseline_composition`` [1, 20] (graph level) or ``baseline_residue_type`` [N, 21] (node level);
    ``split`` [1] with ``split_file``; ``group`` [1] when an ID appears with several chains."""
    from farfield.data.pipeline import Featuriser, FeaturiserConfig
    from farfield.datasets.structures import load_chain
    from farfield.io.residues import ResidueView
    from farfield.io.structure import ReadOptions

    if level not in ("residue", "atom"):
        raise ConfigError(f"folder: level must be 'residue' or 'atom', got {level!r}")
    if missing_label is not None and not isinstance(missing_label, (int, float)):
        raise ConfigError(f"folder: missing_label must be a number, got {missing_label!r}")
    table_path, folders = _resolve(path, csv, structures)
    labels = read_labels(table_path, target, task)
    node = labels.level == "node"
    if node and level != "residue":
        raise ConfigError(f"folder: per-residue labels ({table_path}) need level=residue, got {level!r}")
    if missing_label is not None and not node:
        raise ConfigError("folder: missing_label applies to per-residue labels only")
    read = ReadOptions(waters=False, hydrogens=bool(hydrogens))
    # edges are the data module's (data.edges); the featuriser's own edge spec is not used here
    feat = Featuriser(FeaturiserConfig(level=level, preset=preset, dtype=dtype, read=read))
    tdtype = feat.dtype

    # one graph per (id, chain) at graph level, per id at node level
    if node:
        items: dict[tuple, list[int]] = {}
        for j, k in enumerate(labels.keys):
            items.setdefault((k[0], None), []).append(j)
    else:
        items = {k: [j] for j, k in enumerate(labels.keys)}
    finder = _Finder(folders)
    files, missing = {}, []
    for key in items:
        p, chain = finder.find(*key)
        if p is None:
            missing.append(key[0] + (f" (chain {key[1]})" if key[1] else ""))
        files[key] = (p, chain)
    if missing:
        raise InputError(table_path, f"no structure file for id(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}"
                                     f" in {[str(f) for f in folders]} (searched recursively for <id>.pdb, .cif, "
                                     ".bcif, .ent, .xyz (optionally .gz) and PDB-style names such as 1ABC-A.pdb)")
    split = read_split_file(_near(split_file, table_path), [k[0] for k in items]) if split_file is not None else None
    entry = {}
    for k in items:
        entry.setdefault(k[0], len(entry))
    grouped = len(entry) < len(items)
    out = []
    for key, rows in items.items():
        p, chain = files[key]
        s = load_chain(p, chain, read)
        s.name = key[0] if not key[1] else f"{key[0]}:{key[1]}"
        g = feat.residue_graph(s) if level == "residue" else feat.atom_graph(s)
        if s.cell is not None:                # periodic (extended XYZ with a Lattice): data.edges builds image edges
            if level != "atom":
                raise InputError(p, "is periodic (has a cell); periodic structures are read at level=atom")
            g[F.CELL] = torch.as_tensor(s.cell, dtype=tdtype).reshape(1, 3, 3)
        try:
            rv = ResidueView.from_structure(s)
        except InputError:
            rv = None
        if node:
            g[F.Y] = torch.as_tensor(_node_labels(labels, rows, rv, p, missing_label), dtype=tdtype)
            g.baseline_residue_type = torch.nn.functional.one_hot(torch.from_numpy(rv.res_type), 21).to(tdtype)
        else:
            g[F.Y] = torch.as_tensor(labels.y[rows], dtype=tdtype)
            if rv is not None:
                g.baseline_composition = torch.as_tensor(amino_acid_composition(rv.res_type)[None], dtype=tdtype)
        g[F.NAME] = s.name
        if split is not None:
            g[F.SPLIT] = torch.tensor([split[key[0]]])
        if grouped:
            g[F.GROUP] = torch.tensor([entry[key[0]]])
        out.append(g)
    if not node and any("baseline_composition" not in g for g in out):     # all or none: a batch needs the same keys
        for g in out:
            if "baseline_composition" in g:
                del g["baseline_composition"]
    return out


def _near(p, table: Path) -> Path:
    p = Path(p)
    return p if p.exists() or p.is_absolute() else table.parent / p


def _node_labels(labels: LabelTable, rows: list[int], rv, path: Path, missing_label) -> np.ndarray:
    """[L, k] labels of the residues of ``rv`` from the CSV rows ``rows`` (InputError for unknown residues and,
    without ``missing_label``, for residues without a row)."""
    if rv is None:
        raise InputError(path, "has no amino-acid residues, so per-residue labels cannot be placed")
    index = {(str(c), int(r), str(i)): n for n, (c, r, i) in enumerate(zip(rv.chain_id, rv.res_seq, rv.ins_code))}
    y = np.full((len(rv), labels.y.shape[1]), np.nan)
    for j in rows:
        _, c, r, i = labels.keys[j]
        n = index.get((c, r, i))
        if n is None:
            raise InputError(labels.path, f"line {labels.lines[j]}: {path.name} has no amino-acid residue chain "
                                          f"{c!r} number {r}{i} (residue labels need chain, resnum[, icode] of a "
                                          "residue with a CA atom)")
        y[n] = labels.y[j]
    lack = np.flatnonzero(np.isnan(y).any(1))
    if len(lack):
        if missing_label is None:
            show = [f"{rv.chain_id[n]}{rv.res_seq[n]}{rv.ins_code[n]}" for n in lack[:8]]
            raise InputError(labels.path, f"id {labels.keys[rows[0]][0]!r}: {len(lack)} of {len(rv)} residues of "
                                          f"{path.name} have no label ({show}{' ...' if len(lack) > 8 else ''}); list "
                                          "them or set missing_label=<value>")
        y[lack] = float(missing_label)
    return y


from farfield.data.pipeline import FEATURES_VERSION  # noqa: E402

folder.info = {"provides_edges": False, "version": FEATURES_VERSION}
folder.units = {}
folder.default_target = None
folder.task_for = task_for

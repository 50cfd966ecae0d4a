"""ATOM3D protein tasks (Townshend et al., "ATOM3D: Tasks on molecules in three dimensions", NeurIPS 2021
Datasets and Benchmarks) from their LMDB releases, as atom-level graphs.

Item layouts (ATOM3D's ``prepare_lmdb`` scripts; read with :class:`farfield.io.atom3d.Atom3DLMDB`):

=======  ==========================================================  =========================================
task     fields                                                      graph
=======  ==========================================================  =========================================
``psr``  ``atoms``, ``scores`` {gdt_ts, rmsd, ...}, id              one decoy; ``y`` = score (gdt_ts),
         ``"('<target>', '<decoy>')"``                               ``group`` = target (per-target Spearman)
``rsr``  ``atoms``, ``scores`` {rms, ...}, id as PSR                 one RNA candidate; ``y`` = rms, ``group``
``msp``  ``original_atoms``, ``mutated_atoms``, ``label`` '0'/'1',   both structures in ONE graph, node field
         id ``<pdb>_<chain1>_<chain2>_<mutation>`` (e.g. ``LA22P``:  ``component`` 0 (original) / 1 (mutated);
         wild type L, chain A, residue 22, mutant P)                 ``y`` [1, 1] binary
``lba``  ``atoms_pocket`` (or ``atoms_protein``), ``atoms_ligand``,  pocket + ligand as one graph; last ``x_s``
         ``scores`` {neglog_aff}                                      column flags ligand atoms; ``y`` = pK
=======  ==========================================================  =========================================

``path`` is either one LMDB folder (no split: the data module splits, by ``group`` where graphs have one), a
folder of ``train`` / ``val`` / ``test`` LMDBs (or ``data/train`` ...: ATOM3D's ``split-by-*/data`` layout), or
an ATOM3D task root holding the official split folders: PSR ``split-by-year``, RSR
``candidates-split-by-time``, MSP ``split-by-sequence-identity-30`` and LBA
``split-by-sequence-identity-30`` / ``-60`` (option ``identity``, 30 by default). With split folders every
graph carries ``split`` [1] (0 train, 1 val, 2 test); ``split='none'`` drops it.

Graphs follow :mod:`farfield.data.fields` and the atom level of :class:`farfield.data.pipeline.Featuriser`:
``pos`` [N, 3], ``x_s`` [N, 9] one-hot over ATOM3D's element classes H C N O F S Cl P + other (GVP-GNN's
ATOM3D setup, Jing et al. 2021; option ``elements`` picks another preset), ``atom_type``, ``chain_index``,
``residue_index`` [N], ``y`` [1, 1], ``name`` (the item id); PSR / RSR also ``group`` [1] (the target,
:func:`group_id`). Waters are dropped (``waters=True`` keeps them) and
hydrogens unless ``hydrogens=True``. No edges: the data module builds them from the edge spec (for MSP per
``component``, never across the two structures).

Large releases (PSR: tens of thousands of decoys of 1-2k atoms each) do not fit in memory as a list:
``cache=True`` featurises the items once (``workers`` processes) into a sharded on-disk store
(:class:`farfield.datasets.cache.GraphCache`, keyed by the options, the featuriser and the LMDB files' size and
mtime) and returns it as a lazily read graph sequence, which the data module streams.

MSP "embedding around the mutation": ``radius`` (default 6 A, as ATOM3D's ``EnvironmentSelection`` in its MSP
``prepare_npz``) keeps the atoms within that distance of the mutated residue's C-alpha in each structure
(``radius=None`` keeps everything).
"""
from __future__ import annotations

import ast
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data

from farfield.data import fields as F
from farfield.errors import ConfigError, InputError

__all__ = ["psr", "rsr", "msp", "lba", "COMPONENT", "LIGAND_FLAG", "locate_lmdbs", "parse_mutation",
           "target_of_id", "group_id"]

#: node field of MSP graphs: 0 = original structure, 1 = mutated structure (defined once, in fields)
COMPONENT = F.COMPONENT
#: LBA: name of the last ``x_s`` column (1 = ligand atom)
LIGAND_FLAG = "ligand"
_SPLIT_NAMES = (("train", "training"), ("val", "valid", "validation"), ("test",))
_OFFICIAL = {"psr": ("split-by-year",), "rsr": ("candidates-split-by-time",),
             "msp": ("split-by-sequence-identity-30",)}
_COMMON = ("split", "elements", "waters", "dtype", "limit", "cache", "workers")


# -------------------------------------------------------------------------------------------- locating
def _split_dirs(path: Path) -> list[Path] | None:
    for base in (path, path / "data"):
        found = [next((base / n for n in names if (base / n / "data.mdb").is_file()), None) for names in _SPLIT_NAMES]
        if all(found):
            return found
    return None


def locate_lmdbs(path: str | Path, task: str, identity: int = 30) -> list[tuple[Path, int | None]]:
    """The LMDB folders of ``path`` with their split (0/1/2, or None for one unsplit LMDB); see the module
    docstring for the layouts. Raises :class:`InputError` when ``path`` holds none of them."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found")
    if (path / "data.mdb").is_file():
        return [(path, None)]
    dirs = _split_dirs(path)
    if dirs is None:
        names = (f"split-by-sequence-identity-{identity}",) if task == "lba" else _OFFICIAL.get(task, ())
        for name in names:
            if (path / name).is_dir():
                dirs = _split_dirs(path / name)
                if dirs is not None:
                    break
    if dirs is None:
        official = f" or the official split folder {', '.join(names)}" if names else ""
        raise InputError(path, f"no ATOM3D {task.upper()} LMDB here: expected data.mdb, train/val/test LMDB "
                               f"folders{official}")
    return [(d, k) for k, d in enumerate(dirs)]


# -------------------------------------------------------------------------------------------- items
def _check_options(task: str, options: dict, extra: tuple[str, ...]) -> None:
    bad = sorted(set(options) - set(_COMMON) - set(extra))
    if bad:
        raise ConfigError(f"unknown {task} option(s) {bad}; options: {sorted(_COMMON + extra)}")
    split = options.get("split", "official")
    if split not in ("official", "none"):
        raise ConfigError(f"{task} split must be 'official' (the LMDB split folders) or 'none', got {split!r}")


def _require(item: dict, keys, where: str, task: str) -> None:
    missing = [k for k in keys if k not in item]
    if missing:
        raise InputError(where, f"{task.upper()} item lacks field(s) {missing}; it has {sorted(item)}")


def _scores(value, where: str) -> dict[str, float]:
    """ATOM3D ``scores``: a dict, a one-row DataFrame, or a pandas Series stored as a split dict
    (``name`` / ``index`` / ``data``)."""
    if isinstance(value, pd.DataFrame):
        if len(value) != 1:
            raise InputError(where, f"'scores' table has {len(value)} rows, expected 1")
        value = value.iloc[0].to_dict()
    elif isinstance(value, dict) and {"index", "data"} <= set(value) and "columns" not in value:
        value = dict(zip(value["index"], value["data"]))
    if not isinstance(value, dict):
        raise InputError(where, f"'scores' is a {type(value).__name__}, expected a mapping of score names")
    out = {}
    for k, v in value.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def target_of_id(item_id, where: str = "id") -> str:
    """The target of a PSR / RSR decoy id ``"('T0843', 'T0843TS008_3')"`` (a tuple or list string, or
    ``target/decoy``). Raises :class:`InputError` for an id of neither form."""
    s = str(item_id)
    try:
        v = ast.literal_eval(s)
        if isinstance(v, (tuple, list)) and v:
            return str(v[0])
    except (ValueError, SyntaxError):
        pass
    if "/" in s:
        return s.split("/", 1)[0]
    raise InputError(where, f"id {s[:60]!r} does not name its target: expected \"('<target>', '<decoy>')\" or "
                            "'<target>/<decoy>'")


def parse_mutation(item_id, where: str = "id") -> tuple[str, int, str, str]:
    """(chain, residue number, wild type, mutant) of an MSP id ``<pdb>_<chain1>_<chain2>_<mutation>`` whose last
    part is ``<wt><chain><number><mutant>`` (e.g. ``LA22P``), as ATOM3D parses it."""
    tok = str(item_id).split("_")[-1]
    m = re.fullmatch(r"([A-Z])([A-Za-z0-9])(-?\d+)([A-Z])", tok)
    if not m:
        raise InputError(where, f"id {str(item_id)[:60]!r} does not end in a mutation like 'LA22P' (wild type, chain, "
                                "residue number, mutant)")
    return m.group(2), int(m.group(3)), m.group(1), m.group(4)


def _label(value, where: str) -> float:
    try:
        v = int(str(value).strip())
    except ValueError:
        v = None
    if v not in (0, 1):
        raise InputError(where, f"label {value!r} is not 0 or 1")
    return float(v)


class _Graphs:
    """DataFrame -> atom graph with the task's featuriser and read options."""

    def __init__(self, hydrogens: bool, options: dict):
        from farfield.data.pipeline import Featuriser, FeaturiserConfig
        from farfield.io.structure import ReadOptions

        self.read = ReadOptions(hydrogens=hydrogens, waters=bool(options.get("waters", False)))
        self.feat = Featuriser(FeaturiserConfig(elements=options.get("elements", "atom3d"),
                                                dtype=options.get("dtype", "float32"), read=self.read))

    def __call__(self, df, where: str) -> Data:
        from farfield.io.atom3d import dataframe_to_structure

        if not isinstance(df, pd.DataFrame):
            raise InputError(where, f"is a {type(df).__name__}, expected an ATOM3D atom table")
        s = dataframe_to_structure(df, self.read, source=where)
        if len(s) == 0:
            raise InputError(where, "no atoms left after removing hydrogens / waters")
        return self.feat.atom_graph(s)


def _concat(parts: list[Data]) -> Data:
    """Node-wise concatenation (chain and residue indices offset so that parts never share one)."""
    out = Data(num_nodes=sum(p.num_nodes for p in parts))
    for key in (F.POS, F.ATOM_TYPE, F.X_S):
        out[key] = torch.cat([p[key] for p in parts])
    for key in (F.CHAIN_INDEX, F.RESIDUE_INDEX):
        off, vals = 0, []
        for p in parts:
            vals.append(p[key] + off)
            off += int(p[key].max()) + 1 if p.num_nodes else 0
        out[key] = torch.cat(vals)
    return out


def group_id(target: str) -> int:
    """The ``group`` number of a PSR / RSR target: the first 6 bytes of the SHA-1 of its name (stable across
    runs, processes and LMDB order, so cached and parallel builds agree)."""
    return int.from_bytes(hashlib.sha1(str(target).encode()).digest()[:6], "big")


def _environment(df: pd.DataFrame, chain: str, resnum: int, radius: float, where: str) -> pd.DataFrame:
    """Atoms within ``radius`` of the C-alpha of residue ``chain``/``resnum`` (ATOM3D's EnvironmentSelection)."""
    from scipy.spatial import cKDTree

    ca = df[(df["chain"].astype(str).str.strip() == chain) & (df["residue"].astype(int) == resnum)
            & (df["name"].astype(str).str.strip() == "CA")]
    if len(ca) == 0:
        raise InputError(where, f"the mutated residue {chain}{resnum} has no CA atom")
    xyz = df[["x", "y", "z"]].to_numpy(dtype=np.float64)
    hits = cKDTree(xyz).query_ball_point(ca[["x", "y", "z"]].to_numpy(dtype=np.float64)[:1], r=radius)[0]
    return df.iloc[np.sort(hits)].reset_index(drop=True)


class _PicklableInputError(InputError):
    """An :class:`InputError` that survives the trip back from a worker process."""

    def __reduce__(self):
        return (type(self), (self.source, self.reason))


_OPEN: dict[tuple[int, str], object] = {}      # (process id, folder) -> open LMDB (an LMDB opens once per process)


def _close_open() -> None:
    for key in [k for k in _OPEN if k[0] == os.getpid()]:
        _OPEN.pop(key).close()


class _Convert:
    """item -> ``Data`` for one task (picklable, so that :func:`farfield.datasets.cache.parallel_map` can run it
    in worker processes; called with ``(lmdb folder, index, split)``)."""

    def __init__(self, task: str, hydrogens: bool, target: str, options: dict):
        self.task, self.hydrogens, self.target, self.options = task, hydrogens, target, dict(options)
        self._graphs = None

    def __getstate__(self):
        return {**self.__dict__, "_graphs": None}

    @property
    def graphs(self) -> _Graphs:
        if self._graphs is None:
            self._graphs = _Graphs(self.hydrogens, self.options)
        return self._graphs

    def __call__(self, ref) -> Data:
        from farfield.io.atom3d import Atom3DLMDB

        folder, i, split = ref
        key = (os.getpid(), folder)
        if key not in _OPEN:
            _OPEN[key] = Atom3DLMDB(folder)
        try:
            return self.convert(_OPEN[key][i], f"{folder}[{i}]", split)
        except InputError as e:
            raise _PicklableInputError(e.source, e.reason) from None

    def convert(self, item: dict, where: str, split) -> Data:
        g = getattr(self, "_" + ("decoy" if self.task in ("psr", "rsr") else self.task))(item, where)
        g[F.NAME] = str(item["id"])
        if split is not None and self.options.get("split", "official") == "official":
            g[F.SPLIT] = torch.tensor([split])
        return g

    def _y(self, g: Data, value: float) -> None:
        g[F.Y] = torch.tensor([[value]], dtype=self.graphs.feat.dtype)

    def _decoy(self, item, where) -> Data:
        _require(item, ("atoms", "scores", "id"), where, self.task)
        scores = _scores(item["scores"], where)
        if self.target not in scores:
            raise ConfigError(f"unknown {self.task} target {self.target!r}; valid names (the scores of {where}): "
                              f"{sorted(scores)}")
        if not np.isfinite(scores[self.target]):
            raise InputError(where, f"score {self.target!r} is not finite ({scores[self.target]})")
        g = self.graphs(item["atoms"], f"{where}.atoms")
        g[F.GROUP] = torch.tensor([group_id(target_of_id(item["id"], where))])
        self._y(g, scores[self.target])
        return g

    def _msp(self, item, where) -> Data:
        _require(item, ("original_atoms", "mutated_atoms", "label", "id"), where, "msp")
        chain, resnum, _, _ = parse_mutation(item["id"], where)
        radius = self.options.get("radius", 6.0)
        parts = []
        for k, key in enumerate(("original_atoms", "mutated_atoms")):
            df = item[key]
            if not isinstance(df, pd.DataFrame):
                raise InputError(f"{where}.{key}", f"is a {type(df).__name__}, expected an ATOM3D atom table")
            if radius is not None:
                df = _environment(df, chain, resnum, float(radius), f"{where}.{key}")
            parts.append(self.graphs(df, f"{where}.{key}"))
        g = _concat(parts)
        g[COMPONENT] = torch.cat([torch.full((p.num_nodes,), k, dtype=torch.long) for k, p in enumerate(parts)])
        self._y(g, _label(item["label"], where))
        return g

    def _lba(self, item, where) -> Data:
        field = "atoms_pocket" if self.options.get("protein", "pocket") == "pocket" else "atoms_protein"
        _require(item, (field, "atoms_ligand", "scores", "id"), where, "lba")
        scores = _scores(item["scores"], where)
        if "neglog_aff" not in scores or not np.isfinite(scores["neglog_aff"]):
            raise InputError(where, f"'scores' lacks a finite 'neglog_aff'; it has {sorted(scores)}")
        pocket = self.graphs(item[field], f"{where}.{field}")
        ligand = self.graphs(item["atoms_ligand"], f"{where}.atoms_ligand")
        g = _concat([pocket, ligand])
        flag = torch.cat([torch.zeros(pocket.num_nodes, 1), torch.ones(ligand.num_nodes, 1)]).to(g[F.X_S].dtype)
        g[F.X_S] = torch.cat([g[F.X_S], flag], 1)
        self._y(g, scores["neglog_aff"])
        return g


def _limit(options: dict) -> int:
    v = options.get("limit", 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ConfigError(f"limit must be an integer >= 0, got {v!r}")
    return v


def _load(task: str, path, hydrogens: bool, target: str, options: dict, identity: int = 30):
    """Every item of the task's LMDBs as a graph: a list, or with ``cache=True`` a lazily read
    :class:`~farfield.datasets.cache.ShardedGraphStore` built once (``workers`` processes) and reused while
    the LMDBs and options are unchanged."""
    from farfield.io.atom3d import Atom3DLMDB

    if path is None:
        raise ConfigError(f"{task} needs data.path: an ATOM3D {task.upper()} LMDB folder or release root "
                          "(farfield does not download it)")
    limit, cache = _limit(options), options.get("cache", False)
    workers = options.get("workers", 1)
    if not isinstance(cache, bool):
        raise ConfigError(f"{task} cache must be true or false, got {cache!r}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"{task} workers must be an integer >= 1, got {workers!r}")
    conv = _Convert(task, hydrogens, target, {k: v for k, v in options.items() if k not in ("cache", "workers")})
    refs = []
    for folder, split in locate_lmdbs(path, task, identity):
        ds = Atom3DLMDB(folder)
        refs += [(str(folder), i, split) for i in range(len(ds))]
        ds.close()
    refs = refs[:limit] if limit else refs
    if not refs:
        raise InputError(path, f"no {task.upper()} items")
    if not cache:
        try:
            return [conv(r) for r in refs]
        finally:
            _close_open()
    from farfield.datasets.cache import GraphCache

    try:
        conv(refs[0])                   # fail fast, in this process, on options the items contradict
    finally:
        _close_open()                   # worker processes open their own environments
    sources = sorted({str(Path(r[0]) / "data.mdb") for r in refs})
    config = {"task": task, "hydrogens": hydrogens, "target": target, "options": conv.options,
              "featuriser": conv.graphs.feat.config.to_dict(), "version": _VERSION, "path": str(Path(path).resolve())}
    gc = GraphCache(f"atom3d-{task}", config, sources)
    try:
        return gc.load() or gc.build(conv, refs, workers=workers, desc=f"featurise ATOM3D {task.upper()}")
    finally:
        _close_open()


#: bumped whenever the featurisation changes (part of the cache key and, through ``info["version"]``, of run
#: keys); 2: residue chain breaks by the peptide bond, not CA-CA
_VERSION = 2


# -------------------------------------------------------------------------------------------- PSR / RSR
def psr(path=None, *, hydrogens: bool = False, target: str | None = None, **options) -> list[Data]:
    """ATOM3D PSR (protein structure ranking): one graph per decoy, ``y`` [1, 1] = ``target`` score (default
    ``gdt_ts``; any score of the items' ``scores``), ``group`` [1] = the target protein (:func:`group_id`) so
    that per-target Spearman can be computed and group splits keep a target's decoys together. Official split
    ``split-by-year``. Options: ``split``, ``elements``, ``waters``, ``dtype``, ``limit``, ``cache``,
    ``workers``."""
    return _decoys("psr", path, hydrogens, target, options, "gdt_ts")


def rsr(path=None, *, hydrogens: bool = False, target: str | None = None, **options) -> list[Data]:
    """ATOM3D RSR (RNA structure ranking): as :func:`psr` with the ``rms`` score (A) by default and the official
    ``candidates-split-by-time`` split."""
    return _decoys("rsr", path, hydrogens, target, options, "rms")


def _decoys(task, path, hydrogens, target, options, default):
    _check_options(task, options, ())
    target = target or default
    if not isinstance(target, str):
        raise ConfigError(f"{task} target must be one score name, got {target!r}")
    return _load(task, path, hydrogens, target, options)


psr.default_target, psr.units = "gdt_ts", {"gdt_ts": "", "gdt_ha": "", "rmsd": "A", "tm": "", "lddt": ""}
#: readouts (``task.pooling=auto``): every ATOM3D protein target here is intensive - a per-structure quality score
#: (GDT-TS, RMSD, lDDT), a binding affinity (-log K, a free energy of binding that does not grow with the protein,
#: least of all with ``protein='full'``) or a pair label - so the head's output is averaged over the nodes. (ATOM3D's
#: GCN baselines, Townshend et al. 2021, sum node embeddings with ``global_add_pool`` before their MLP;
#: ``task.pooling=sum`` reproduces that choice.)
_MEAN = {"kind": "graph_regression", "num_outputs": 1, "pooling": "mean"}
psr.info = {"provides_edges": False, "version": _VERSION, "task": dict(_MEAN), "grouped": True}
rsr.default_target, rsr.units = "rms", {"rms": "A"}
rsr.info = {"provides_edges": False, "version": _VERSION, "task": dict(_MEAN), "grouped": True}


# -------------------------------------------------------------------------------------------- MSP
def msp(path=None, *, hydrogens: bool = False, target: str | None = None, **options) -> list[Data]:
    """ATOM3D MSP (mutation stability prediction) as pairs: one ``Data`` per mutation holding the original
    and the mutated structure concatenated, node field ``component`` [N] long (0 original, 1 mutated),
    ``y`` [1, 1] = label (1: the mutation stabilises the complex). ``radius`` (default 6.0 A; None = all atoms)
    keeps each structure's atoms within that distance of the mutated residue's CA. Official split
    ``split-by-sequence-identity-30``. The train layer treats the components as separate graphs and feeds the
    concatenation of their pooled embeddings to the head (Townshend et al. 2021, MSP baseline)."""
    _check_options("msp", options, ("radius",))
    if target not in (None, "label"):
        raise ConfigError(f"unknown msp target {target!r}; valid names: ['label']")
    radius = options.get("radius", 6.0)
    if radius is not None and (not isinstance(radius, (int, float)) or isinstance(radius, bool) or radius <= 0):
        raise ConfigError(f"msp radius must be a positive number of Angstrom or None, got {radius!r}")
    return _load("msp", path, hydrogens, "label", options)


msp.default_target, msp.units = "label", {"label": ""}
msp.info = {"provides_edges": False, "version": _VERSION, "task": {"kind": "binary", "num_outputs": 1, "pooling": "mean"}, "pair": True,
            "component_field": COMPONENT}


# -------------------------------------------------------------------------------------------- LBA
def lba(path=None, *, hydrogens: bool = False, target: str | None = None, **options) -> list[Data]:
    """ATOM3D LBA (ligand binding affinity): pocket (``protein='pocket'``, default) or whole protein
    (``'full'``) plus ligand as one graph; ``x_s`` [N, V + 1] = element one-hot then the ligand flag (1 on ligand
    atoms); ``y`` [1, 1] = ``neglog_aff`` (-log10 of Kd/Ki/IC50 in M). ``identity`` 30 (default) or 60 picks the
    official ``split-by-sequence-identity-*`` split of a release root."""
    _check_options("lba", options, ("identity", "protein"))
    if target not in (None, "neglog_aff"):
        raise ConfigError(f"unknown lba target {target!r}; valid names: ['neglog_aff']")
    identity = options.get("identity", 30)
    if identity not in (30, 60):
        raise ConfigError(f"lba identity must be 30 or 60 (the sequence-identity split), got {identity!r}")
    if options.get("protein", "pocket") not in ("pocket", "full"):
        raise ConfigError(f"lba protein must be 'pocket' or 'full', got {options['protein']!r}")
    return _load("lba", path, hydrogens, "neglog_aff", options, identity)


lba.default_target, lba.units = "neglog_aff", {"neglog_aff": "-log10(M)"}
lba.info = {"provides_edges": False, "version": _VERSION, "task": dict(_MEAN)}

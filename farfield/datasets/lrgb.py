"""LRGB Peptides-func and Peptides-struct (Dwivedi et al., "Long Range Graph Benchmark", NeurIPS 2022
Datasets and Benchmarks) as 2D molecular graphs with OGB features (Hu et al., "Open Graph Benchmark",
NeurIPS 2020).

Source files (the official release; MD5s as published with the LRGB loaders, checked on every load):

* Peptides-func: ``peptide_multi_class_dataset.csv.gz`` (columns ``smiles``, ``peptide_seq``, ``labels`` - a
  list string of 10 binary labels - and ``identifier``; 15,535 peptides) and the split pickle
  ``splits_random_stratified_peptide.pickle`` (dict ``train`` / ``val`` / ``test`` of index arrays,
  10,873 / 2,331 / 2,331).
* Peptides-struct: ``peptide_structure_dataset.csv.gz`` (the same peptides, 11 regression targets) and
  ``splits_random_stratified_peptide_structure.pickle`` (byte-identical to the func split). As in the
  official loader, each target is standardised over the whole dataset (``standardize=True``).

Files are looked up in ``path`` (the folder itself, ``raw/``, ``peptides-functional/[raw/]`` or
``peptides-structural/[raw/]`` below it) and in the download folder ``<cache>/lrgb/<folder>``; missing ones
are downloaded from the official URLs unless offline (:mod:`farfield.datasets.download`); a wrong MD5 or a
missing file raises :class:`~farfield.errors.InputError` naming it.

Graphs (one per peptide, heavy atoms only, implicit hydrogens, in the CSV's row order):

=================  =====================  ============================================================
``x_s``            [N, 174 (+k)] float    concatenated one-hots of the 9 OGB atom features
                                          (:data:`ATOM_FEATURE_DIMS`: atomic number 119, chirality 5,
                                          degree 12, formal charge 12, #H 10, radical electrons 6,
                                          hybridisation 6, aromatic 2, in ring 2 = 174 columns), then
                                          ``lap_pe`` LapPE eigenvector columns, ``lap_pe`` eigenvalue
                                          columns (unless ``lap_eigvals=False``), then ``rwse`` RWSE
                                          columns (:func:`feature_layout`, :func:`laplacian_pe`)
``edge_index``     [2, E] long            bonds, both directions (i->j then j->i for each bond, as OGB)
``edge_s``         [E, 13] float          one-hots of the 3 OGB bond features (type 5, stereo 6,
                                          conjugated 2)
``edge_type``      [E] long               zeros: every edge is a bond; ``edge_types`` = ``'bond'``
``y``              [1, 10] / [1, 11]      func: binary labels; struct: (standardised) targets
``split``          [1] long               official split: 0 train, 1 val, 2 test
``graph_key``      [1] long               row index in the CSV
``name``           str                    ``'<row>:<peptide_seq>'``
``pos``            [N, 3] float           only with ``conformers=True`` (RDKit ETKDGv3, seeded)
``baseline_``      [1, 174] float         the bag of OGB atom features (column sums of the one-hots):
``composition``                           the composition reference baseline (no bonds, no order)
``baseline_ecfp``  [1, 2048] float16      ``log(1 + c)`` of the ECFP4 counts ``c`` of the SMILES (RDKit
                                          Morgan count fingerprint, radius 2, 2,048 bins;
                                          :mod:`farfield.features.fingerprints`): the fingerprint
                                          reference baseline (``ecfp=False`` leaves it out)
=================  =====================  ============================================================

The ``baseline_*`` fields are the features of the reference baselines a study reports (a ridge on each,
:func:`farfield.train.stats.ridge_baseline` / ``linear_score_baseline``); models never read them. The
logarithm tames the long tail of the counts for the linear fit (on a 2,000-peptide slice of Peptides-func the
ridge score reaches test AP 0.50 on log counts against 0.46 on raw counts); float16 keeps them at 4 KiB per
peptide.

The graphs carry their own edges: a data module must not rebuild them from an edge spec (the loaders'
:data:`DATASET_INFO` says ``provides_edges``), and use :func:`official_split` (or each graph's ``split``).

Features are computed in pure Python with RDKit (no compiled extension of our own); the OGB vocabularies are
used as published, except that values newer RDKit releases can produce outside them (chirality tags beyond
the four OGB ones, bond stereo beyond the six) go to the ``misc`` slot (chirality) or ``STEREOANY`` (bond
stereo) instead of raising. Featurised graphs are cached (``<cache>/lrgb/processed``; cache =
``$FARFIELD_CACHE`` or ``~/.cache/farfield``) keyed by the source MD5s, every featuriser option and the
RDKit version; a corrupted cache file fails its MD5 check and is rebuilt.

Metrics as LRGB computes them: :func:`lrgb_average_precision` (Peptides-func) and :func:`lrgb_mae`
(Peptides-struct). Positional encodings of the published baselines: :func:`laplacian_pe` (LapPE) and
:func:`random_walk_se` (RWSE).
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from farfield.data import fields as F
from farfield.datasets.download import RemoteFile, cache_root, fetch_all, md5sum
from farfield.errors import ConfigError, InputError
from farfield.features.fingerprints import ECFP_BITS, ecfp_counts
# positional encodings are features of any graph (farfield.features.positional); re-exported here for LRGB users
from farfield.features.positional import laplacian_pe, random_sign_flip, random_walk_se  # noqa: F401

__all__ = ["ATOM_FEATURE_DIMS", "BOND_FEATURE_DIMS", "ATOM_WIDTH", "BOND_WIDTH", "DATASET_INFO", "SOURCES",
           "STRUCT_TARGETS", "SPLIT_NAMES", "smiles_to_graph", "onehot", "feature_layout", "laplacian_pe",
           "random_walk_se", "random_sign_flip", "embed_conformer", "source_files", "official_split",
           "load_peptides", "peptides_func", "peptides_struct", "lrgb_average_precision", "lrgb_mae",
           "sign_flip_columns"]

#: bumped whenever the featurisation changes (part of the cache key); 3: LapPE as GraphGPS (eigenvector 0
#: kept, eigenvalue columns); 4: ECFP counts cached for ``baseline_ecfp``
FEATURISER_VERSION = 4

# ---------------------------------------------------------------------------------------------------------
# OGB vocabularies (Hu et al. 2020, ogb.utils.features)
_ATOMIC_NUM = list(range(1, 119))                   # + misc
_CHIRALITY = ["CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER"]   # + misc
_DEGREE = list(range(11))                           # + misc
_CHARGE = list(range(-5, 6))                        # + misc
_NUM_H = list(range(9))                             # + misc
_RADICAL = list(range(5))                           # + misc
_HYBRID = ["SP", "SP2", "SP3", "SP3D", "SP3D2"]     # + misc
_BOND_TYPE = ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC"]   # + misc
_BOND_STEREO = ["STEREONONE", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS", "STEREOANY"]

#: categories per OGB atom feature (atomic number, chirality, degree, formal charge, #H, radical electrons,
#: hybridisation, aromatic, in ring)
ATOM_FEATURE_DIMS = (119, 5, 12, 12, 10, 6, 6, 2, 2)
#: categories per OGB bond feature (type, stereo, conjugated)
BOND_FEATURE_DIMS = (5, 6, 2)
ATOM_WIDTH = sum(ATOM_FEATURE_DIMS)   # 174
BOND_WIDTH = sum(BOND_FEATURE_DIMS)   # 13

_IDX = {name: {v: i for i, v in enumerate(vals)} for name, vals in (
    ("z", _ATOMIC_NUM), ("chi", _CHIRALITY), ("deg", _DEGREE), ("q", _CHARGE), ("h", _NUM_H),
    ("rad", _RADICAL), ("hyb", _HYBRID), ("bt", _BOND_TYPE), ("bs", _BOND_STEREO))}


def _safe(table: str, value) -> int:
    d = _IDX[table]
    return d.get(value, len(d))             # the misc slot


def smiles_to_graph(smiles: str, where: str = "SMILES") -> dict[str, np.ndarray]:
    """OGB ``smiles2graph``: ``atom`` [N, 9] and ``bond`` [E, 3] category indices (uint8), ``edge_index``
    [2, E] (int64, both directions, i->j then j->i per bond). Raises :class:`InputError` (naming ``where``)
    when RDKit cannot parse the SMILES."""
    from rdkit import Chem
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InputError(where, f"RDKit cannot parse the SMILES {smiles[:60]!r}")
    atoms = [(_safe("z", a.GetAtomicNum()), _safe("chi", str(a.GetChiralTag())), _safe("deg", a.GetTotalDegree()),
              _safe("q", a.GetFormalCharge()), _safe("h", a.GetTotalNumHs()), _safe("rad", a.GetNumRadicalElectrons()),
              _safe("hyb", str(a.GetHybridization())), int(a.GetIsAromatic()), int(a.IsInRing()))
             for a in mol.GetAtoms()]
    src, dst, feats = [], [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        f = (_safe("bt", str(b.GetBondType())), min(_safe("bs", str(b.GetStereo())), 5), int(b.GetIsConjugated()))
        src += [i, j]
        dst += [j, i]
        feats += [f, f]
    return {"atom": np.asarray(atoms, dtype=np.uint8).reshape(-1, 9),
            "bond": np.asarray(feats, dtype=np.uint8).reshape(-1, 3),
            "edge_index": np.asarray([src, dst], dtype=np.int64).reshape(2, -1)}


def onehot(codes: torch.Tensor, dims, dtype=torch.float32) -> torch.Tensor:
    """Concatenated one-hots of integer category columns ``codes`` [M, len(dims)] -> [M, sum(dims)]."""
    codes = torch.as_tensor(codes).long()
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(dims)[:-1]]), dtype=torch.long)
    if codes.numel() and (codes >= torch.tensor(dims)).any():
        raise ValueError("onehot: a category index is out of range")
    out = torch.zeros(codes.shape[0], int(sum(dims)), dtype=dtype)
    out.scatter_(1, codes + offsets, 1.0)
    return out


def feature_layout(lap_pe: int = 0, rwse: int = 0, *, lap_eigvals: bool = True) -> dict[str, slice]:
    """Column slices of ``x_s``: one per OGB atom feature (``atomic_num``, ``chirality``, ``degree``,
    ``formal_charge``, ``num_h``, ``radical``, ``hybridization``, ``aromatic``, ``in_ring``), ``ogb`` (all
    174), ``lap_pe`` (the ``lap_pe`` LapPE eigenvectors), ``lap_eigvals`` (their eigenvalues, ``lap_pe``
    columns when ``lap_eigvals``) and ``rwse`` (empty slices when off)."""
    names = ("atomic_num", "chirality", "degree", "formal_charge", "num_h", "radical", "hybridization",
             "aromatic", "in_ring")
    out, c = {}, 0
    for n, d in zip(names, ATOM_FEATURE_DIMS):
        out[n] = slice(c, c + d)
        c += d
    out["ogb"] = slice(0, ATOM_WIDTH)
    nval = lap_pe if lap_eigvals else 0
    out["lap_pe"] = slice(c, c + lap_pe)
    out["lap_eigvals"] = slice(c + lap_pe, c + lap_pe + nval)
    out["rwse"] = slice(c + lap_pe + nval, c + lap_pe + nval + rwse)
    return out


# ---------------------------------------------------------------------------------------------------------
# conformers
def embed_conformer(smiles: str, seed: int = 0, cache_dir: str | Path | None = None) -> np.ndarray:
    """Heavy-atom coordinates [N, 3] (float32, Angstrom, in the atom order of :func:`smiles_to_graph`) of one
    RDKit ETKDGv3 conformer (Wang et al., J. Chem. Inf. Model. 2020) embedded with explicit hydrogens,
    ``randomSeed=seed``, one thread, random starting coordinates (the default eigenvector start fails on
    most LRGB peptides and wastes up to ~15 s before failing). Cached as ``<cache_dir>/<hh>/<sha256>.npy``
    keyed by the SMILES, seed and RDKit version.

    Cost grows steeply with size: measured on one core, 3 s for a 119-heavy-atom peptide and 77 s for a
    338-atom one, so all 15,535 Peptides conformers take on the order of days of CPU time; embed a subset
    or precompute them in parallel (each call is independent and cached)."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem
    path = None
    if cache_dir is not None:
        tag = f"{smiles}|seed={seed}|ETKDGv3-random-coords|rdkit={rdBase.rdkitVersion}"
        h = hashlib.sha256(tag.encode()).hexdigest()
        path = Path(cache_dir) / h[:2] / f"{h}.npy"
        if path.is_file():
            try:
                return np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError):
                path.unlink(missing_ok=True)   # corrupted: recompute
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InputError("SMILES", f"RDKit cannot parse {smiles[:60]!r}")
    n = mol.GetNumAtoms()
    molh = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = 1
    params.useRandomCoords = True       # the default (eigenvector) start fails on most of these peptides
    cid = AllChem.EmbedMolecule(molh, params)
    if cid < 0:
        raise InputError("SMILES", f"ETKDG could not embed {smiles[:60]!r} (seed {seed})")
    pos = molh.GetConformer(cid).GetPositions()[:n].astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, pos)
        os.replace(tmp, path)
    return pos


# ---------------------------------------------------------------------------------------------------------
# sources, splits
_SPLIT_FUNC = RemoteFile("splits_random_stratified_peptide.pickle",
                         "https://www.dropbox.com/s/j4zcnx2eipuo0xz/splits_random_stratified_peptide.pickle?dl=1",
                         "5a0114bdadc80b94fc7ae974f13ef061")

#: name -> (folder, csv file, split file)
SOURCES = {
    "peptides_func": ("peptides-functional",
                      RemoteFile("raw/peptide_multi_class_dataset.csv.gz",
                                 "https://www.dropbox.com/s/ol2v01usvaxbsr8/peptide_multi_class_dataset.csv.gz?dl=1",
                                 "701eb743e899f4d793f0e13c8fa5a1b4"),
                      _SPLIT_FUNC),
    "peptides_struct": ("peptides-structural",
                        RemoteFile("raw/peptide_structure_dataset.csv.gz",
                                   "https://www.dropbox.com/s/464u3303eu2u4zp/peptide_structure_dataset.csv.gz?dl=1",
                                   "9786061a34298a0684150f2e4ff13f47"),
                        RemoteFile("splits_random_stratified_peptide_structure.pickle",
                                   "https://www.dropbox.com/s/9dfifzft1hqgow6/"
                                   "splits_random_stratified_peptide_structure.pickle?dl=1",
                                   "5a0114bdadc80b94fc7ae974f13ef061")),
}

#: Peptides-struct target columns, in the official order
STRUCT_TARGETS = ("Inertia_mass_a", "Inertia_mass_b", "Inertia_mass_c", "Inertia_valence_a", "Inertia_valence_b",
                  "Inertia_valence_c", "length_a", "length_b", "length_c", "Spherocity", "Plane_best_fit")
SPLIT_NAMES = ("train", "val", "test")

#: what a training pipeline needs to know about each dataset (``task.pooling``: mean over nodes, the graph
#: pooling of the LRGB / GraphGPS Peptides baselines)
DATASET_INFO = {
    "peptides_func": {"task": {"kind": "multilabel", "num_outputs": 10, "monitor": "ap", "pooling": "mean"},
                      "num_outputs": 10, "metric": "ap", "loss": "bce_with_logits",
                      "provides_edges": True, "has_official_split": True, "uses_positions": False,
                      "sizes": (10873, 2331, 2331), "version": FEATURISER_VERSION},
    "peptides_struct": {"task": {"kind": "graph_regression", "num_outputs": 11, "monitor": "mae",
                                 "pooling": "mean"},
                        "num_outputs": 11, "metric": "mae", "loss": "l1",
                        "provides_edges": True, "has_official_split": True, "uses_positions": False,
                        "sizes": (10873, 2331, 2331), "version": FEATURISER_VERSION,
                        "targets": list(STRUCT_TARGETS)},
}


def _check_name(name: str) -> str:
    if name not in SOURCES:
        raise ConfigError(f"unknown LRGB dataset {name!r}; choose from {sorted(SOURCES)}")
    return name


def _download_dir(name: str) -> Path:
    return cache_root() / "lrgb" / SOURCES[name][0]


def source_files(name: str, path: str | Path | None = None, download: bool = True, offline: bool | None = None,
                 progress: bool = True) -> tuple[Path, Path]:
    """Verified paths ``(csv, split)`` of dataset ``name``: looked up under ``path`` (see the module
    docstring), then in the download folder; downloaded there when missing (not when ``download=False`` or
    offline). A wrong MD5 or a file that cannot be had raises :class:`InputError` naming it."""
    folder, csv, split = SOURCES[_check_name(name)]
    search = []
    if path is not None:
        p = Path(path)
        if p.is_file():
            p = p.parent
        search = [p, p / "raw", p / folder, p / folder / "raw", p / "lrgb" / folder, p / "lrgb" / folder / "raw",
                  p.parent]
    files = fetch_all([csv, split], _download_dir(name), search, offline=True if not download else offline,
                      progress=progress, what=name)
    return files[csv.name], files[split.name]


def _read_split(path: Path, n: int) -> np.ndarray:
    """[n] int8 split codes (0 train, 1 val, 2 test) from the official pickle; checks it is a partition.

    The pickle is read with an allowlist unpickler (:class:`farfield.io.atom3d.RestrictedUnpickler`) that
    resolves only what a dict of numpy integer arrays or lists needs (``numpy.ndarray``, ``numpy.dtype``,
    numpy's array / scalar reconstruction functions under ``numpy.core`` or ``numpy._core``): a pickle
    naming anything else (``os.system``, ...) raises :class:`InputError` instead of running it."""
    from farfield.io.atom3d import NUMPY_ARRAY_GLOBALS, restricted_loads
    try:
        d = restricted_loads(Path(path).read_bytes(), NUMPY_ARRAY_GLOBALS)
    except pickle.UnpicklingError as e:
        raise InputError(path, f"refused to read the split pickle: {e}") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise InputError(path, f"cannot read the split pickle ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or any(k not in d for k in SPLIT_NAMES):
        raise InputError(path, f"expected a dict with keys {SPLIT_NAMES}")
    code = np.full(n, -1, dtype=np.int8)
    for c, k in enumerate(SPLIT_NAMES):
        idx = np.asarray(d[k], dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n or (code[idx] != -1).any()):
            raise InputError(path, f"split {k!r} has indices out of range or in two splits")
        code[idx] = c
    if (code < 0).any():
        raise InputError(path, f"{int((code < 0).sum())} rows are in no split")
    return code


def official_split(name: str, path: str | Path | None = None, download: bool = True,
                   offline: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The official LRGB split of ``name`` as index arrays ``(train, val, test)`` (sorted, int64) into the
    loader's list (which keeps the CSV's row order): 10,873 / 2,331 / 2,331 for both Peptides datasets."""
    csv, split = source_files(name, path, download, offline, progress=False)
    import pandas as pd
    n = len(pd.read_csv(csv, usecols=["smiles"]))
    code = _read_split(split, n)
    return tuple(np.flatnonzero(code == c) for c in range(3))


# ---------------------------------------------------------------------------------------------------------
# featurisation and cache
@dataclass(frozen=True)
class _Options:
    name: str
    lap_pe: int = 0
    lap_norm: str = "none"
    lap_skip_trivial: bool = False
    lap_eigvals: bool = True
    rwse: int = 0
    conformers: bool = False
    conformer_seed: int = 0
    standardize: bool = True
    limit: int = 0
    ecfp: bool = True

    def key(self, md5s: tuple[str, str]) -> str:
        from rdkit import rdBase
        blob = json.dumps({"v": FEATURISER_VERSION, "md5": md5s, "rdkit": rdBase.rdkitVersion,
                           **self.__dict__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _bar(it, total: int, desc: str, progress: bool):
    if not progress:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, total=total, desc=desc, unit="mol", mininterval=1.0)


def _featurise(opts: _Options, csv: Path, split: Path, progress: bool) -> dict:
    import pandas as pd
    df = pd.read_csv(csv)
    n_all = len(df)
    if "smiles" not in df.columns:
        raise InputError(csv, "has no 'smiles' column")
    code = _read_split(split, n_all)
    if opts.name == "peptides_func":
        if "labels" not in df.columns:
            raise InputError(csv, "has no 'labels' column")
        y = np.array([ast.literal_eval(s) for s in df["labels"]], dtype=np.float32)
        if y.ndim != 2 or y.shape[1] != 10:
            raise InputError(csv, f"labels must be lists of 10 values, got shape {y.shape}")
    else:
        missing = [c for c in STRUCT_TARGETS if c not in df.columns]
        if missing:
            raise InputError(csv, f"missing target columns {missing}")
        y = df.loc[:, list(STRUCT_TARGETS)].to_numpy(dtype=np.float64)
        if opts.standardize:      # as the official loader: over the whole dataset
            y = (y - y.mean(0)) / y.std(0, ddof=1)
        y = y.astype(np.float32)
    n = min(n_all, opts.limit) if opts.limit else n_all
    seqs = [str(s) for s in df["peptide_seq"][:n]] if "peptide_seq" in df.columns else [""] * n
    atoms, bonds, edges, n_nodes, n_edges, pe, pos = [], [], [], [], [], [], []
    fp_bins, fp_counts, fp_nnz = [], [], []
    conf_dir = cache_root() / "conformers"
    from rdkit import rdBase
    quiet = rdBase.BlockLogs()          # RDKit's per-molecule warnings would drown the progress bar
    t0 = time.perf_counter()
    for i, smi in enumerate(_bar(df["smiles"][:n], n, f"{opts.name}: featurising", progress)):
        g = smiles_to_graph(smi, where=f"{csv} row {i}")
        m = g["atom"].shape[0]
        atoms.append(g["atom"])
        bonds.append(g["bond"])
        edges.append(g["edge_index"].astype(np.int32))
        n_nodes.append(m)
        n_edges.append(g["edge_index"].shape[1])
        cols = []
        if opts.lap_pe:
            cols.append(laplacian_pe(g["edge_index"], m, opts.lap_pe, opts.lap_norm,
                                     skip_trivial=opts.lap_skip_trivial, eigenvalues=opts.lap_eigvals))
        if opts.rwse:
            cols.append(random_walk_se(g["edge_index"], m, opts.rwse))
        if cols:
            pe.append(np.concatenate(cols, 1))
        if opts.ecfp:                           # sparse: ~100 of the 2,048 bins are non-zero per peptide
            c = ecfp_counts(smi, where=f"{csv} row {i}")
            nz = np.flatnonzero(c)
            fp_bins.append(nz.astype(np.int16))
            fp_counts.append(c[nz].astype(np.int32))
            fp_nnz.append(nz.size)
        if opts.conformers:
            p = embed_conformer(smi, opts.conformer_seed, conf_dir)
            if p.shape != (m, 3):
                raise InputError(f"{csv} row {i}", f"conformer has shape {p.shape}, expected ({m}, 3)")
            pos.append(p)
    seconds = time.perf_counter() - t0
    del quiet
    out = {
        "atom": torch.from_numpy(np.concatenate(atoms)), "bond": torch.from_numpy(np.concatenate(bonds)),
        "edge_index": torch.from_numpy(np.concatenate(edges, 1)),
        "node_ptr": torch.from_numpy(np.concatenate([[0], np.cumsum(n_nodes)]).astype(np.int64)),
        "edge_ptr": torch.from_numpy(np.concatenate([[0], np.cumsum(n_edges)]).astype(np.int64)),
        "y": torch.from_numpy(y[:n]), "split": torch.from_numpy(code[:n].astype(np.int64)), "seq": seqs,
        "featurise_seconds": float(seconds),
    }
    if pe:
        out["pe"] = torch.from_numpy(np.concatenate(pe))
    if opts.ecfp:
        out["ecfp_bins"] = torch.from_numpy(np.concatenate(fp_bins) if fp_bins else np.zeros(0, np.int16))
        out["ecfp_counts"] = torch.from_numpy(np.concatenate(fp_counts) if fp_counts else np.zeros(0, np.int32))
        out["ecfp_ptr"] = torch.from_numpy(np.concatenate([[0], np.cumsum(fp_nnz)]).astype(np.int64))
    if pos:
        out["pos"] = torch.from_numpy(np.concatenate(pos))
    return out


def _cache_paths(opts: _Options, key: str) -> tuple[Path, Path]:
    d = cache_root() / "lrgb" / "processed"
    f = d / f"{opts.name}-{key}.pt"
    return f, f.with_name(f.name + ".md5")


def _load_cache(f: Path, m: Path, key: str) -> dict | None:
    """The cached arrays, or None when absent, corrupted (MD5 of the file differs from its sidecar) or
    stale (a different key inside)."""
    if not f.is_file():
        return None
    try:
        if not m.is_file() or m.read_text().strip() != md5sum(f):
            raise ValueError("MD5 check failed")
        d = torch.load(f, weights_only=True)
        if d.get("key") != key:
            raise ValueError("key mismatch")
        if int(d["node_ptr"][-1]) != d["atom"].shape[0] or int(d["edge_ptr"][-1]) != d["edge_index"].shape[1]:
            raise ValueError("inconsistent arrays")
        if "ecfp_ptr" in d and int(d["ecfp_ptr"][-1]) != d["ecfp_bins"].shape[0]:
            raise ValueError("inconsistent ECFP arrays")
        return d
    except Exception as e:  # noqa: BLE001 - any failure means: rebuild
        warnings.warn(f"{f}: cache file is unusable ({e}); rebuilding it", stacklevel=3)
        return None


def _save_cache(f: Path, m: Path, d: dict) -> None:
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
    torch.save(d, tmp)
    digest = md5sum(tmp)
    os.replace(tmp, f)
    m.write_text(digest + "\n")


def _graphs(d: dict, opts: _Options, dtype: torch.dtype) -> list[Data]:
    atom, bond, ei = d["atom"].long(), d["bond"].long(), d["edge_index"].long()
    pe = d.get("pe")
    npt, ept = d["node_ptr"].tolist(), d["edge_ptr"].tolist()
    pos = d.get("pos")
    y, split = d["y"].to(dtype), d["split"]
    fpp = d["ecfp_ptr"].tolist() if "ecfp_ptr" in d else None
    if fpp is not None:
        fp_bins, fp_val = d["ecfp_bins"].long(), torch.log1p(d["ecfp_counts"].double()).to(torch.float16)
    out = []
    for i in range(len(npt) - 1):
        a, b, c, e = npt[i], npt[i + 1], ept[i], ept[i + 1]
        x = onehot(atom[a:b], ATOM_FEATURE_DIMS, dtype)
        if pe is not None:
            x = torch.cat([x, pe[a:b].to(dtype)], 1)
        g = Data(x_s=x, edge_index=ei[:, c:e].clone(), edge_s=onehot(bond[c:e], BOND_FEATURE_DIMS, dtype),
                 y=y[i: i + 1].clone())
        g.num_nodes = b - a
        g[F.EDGE_TYPE] = torch.zeros(e - c, dtype=torch.long)
        g[F.EDGE_TYPES] = "bond"
        g.split = split[i: i + 1].clone()
        g[F.GRAPH_KEY] = torch.tensor([i])
        g[F.NAME] = f"{i}:{d['seq'][i]}"
        # reference baseline for study reports: the bag of OGB atom features (no bonds, no order, no geometry)
        g["baseline_composition"] = x[:, :ATOM_WIDTH].sum(0, keepdim=True)
        if fpp is not None:                 # reference baseline: log(1 + ECFP4 counts), [1, 2048] float16
            fp = torch.zeros(1, ECFP_BITS, dtype=torch.float16)
            fp[0, fp_bins[fpp[i]:fpp[i + 1]]] = fp_val[fpp[i]:fpp[i + 1]]
            g["baseline_ecfp"] = fp
        if pos is not None:
            g[F.POS] = pos[a:b].to(dtype).clone()
        out.append(g)
    return out


def load_peptides(name: str, path: str | Path | None = None, *, hydrogens: bool = False, target: str | None = None,
                  lap_pe: int = 0, lap_norm: str = "none", lap_skip_trivial: bool = False,
                  lap_eigvals: bool = True, rwse: int = 0, conformers: bool = False,
                  conformer_seed: int = 0, standardize: bool = True, limit: int = 0, ecfp: bool = True,
                  download: bool = True, offline: bool | None = None, cache: bool = True, progress: bool = True,
                  dtype: torch.dtype = torch.float32) -> list[Data]:
    """The graphs of LRGB dataset ``name`` (``'peptides_func'`` or ``'peptides_struct'``) in CSV row order
    (layout in the module docstring).

    ``target``: None / ``'all'`` (every label / target; the data module's default ``'energy'`` is rejected),
    or for Peptides-struct one target name of :data:`STRUCT_TARGETS` (``y`` [1, 1]). ``hydrogens`` must be
    False (OGB graphs have implicit hydrogens). ``lap_pe`` / ``rwse``: number of LapPE eigenvectors /
    RWSE steps appended to ``x_s`` (published baselines: LapPE 10 with ``lap_norm='none'``, RWSE 16).
    LapPE follows GraphGPS (:func:`laplacian_pe`): the ``lap_pe`` lowest eigenvectors including the constant
    one, then (``lap_eigvals=True``) their ``lap_pe`` eigenvalues; ``lap_skip_trivial=True`` drops
    eigenvector 0 (the Dwivedi et al. 2020 setting), ``lap_eigvals=False`` the eigenvalue columns.
    ``conformers``: add ``pos`` from one seeded ETKDGv3 conformer per peptide (:func:`embed_conformer`;
    slow: seconds to minutes per peptide the first time, days for the whole set on one core; cached per
    SMILES, so an interrupted run resumes). ``limit``: featurise only the first N rows. ``ecfp``: add the
    fingerprint reference baseline ``baseline_ecfp`` (about 4 ms per peptide the first time; cached).
    ``cache``: read / write the featurised arrays under ``<cache>/lrgb/processed``."""
    _check_name(name)
    if hydrogens:
        raise ConfigError(f"{name}: hydrogens=True is not supported (OGB graphs have implicit hydrogens)")
    if lap_norm not in ("none", "sym"):
        raise ConfigError(f"{name}: lap_norm must be 'none' or 'sym', got {lap_norm!r}")
    for k, v in (("lap_skip_trivial", lap_skip_trivial), ("lap_eigvals", lap_eigvals), ("ecfp", ecfp)):
        if not isinstance(v, bool):
            raise ConfigError(f"{name}: {k} must be true or false, got {v!r}")
    for k, v in (("lap_pe", lap_pe), ("rwse", rwse), ("limit", limit)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"{name}: {k} must be a non-negative integer, got {v!r}")
    col = None
    if target not in (None, "all"):
        if name == "peptides_struct" and target in STRUCT_TARGETS:
            col = STRUCT_TARGETS.index(target)
        else:
            allowed = ["all"] + (list(STRUCT_TARGETS) if name == "peptides_struct" else [])
            raise ConfigError(f"{name}: target must be one of {allowed} (or None), got {target!r}")
    csv, split = source_files(name, path, download, offline, progress)
    opts = _Options(name, lap_pe, lap_norm if lap_pe else "none", bool(lap_skip_trivial) if lap_pe else False,
                    bool(lap_eigvals) if lap_pe else True, rwse, bool(conformers), int(conformer_seed),
                    bool(standardize) if name == "peptides_struct" else True, int(limit), bool(ecfp))
    key = opts.key((md5sum(csv), md5sum(split)))
    d = None
    if cache:
        f, m = _cache_paths(opts, key)
        d = _load_cache(f, m, key)
    if d is None:
        d = _featurise(opts, csv, split, progress)
        d["key"] = key
        if cache:
            _save_cache(f, m, d)
    graphs = _graphs(d, opts, dtype)
    if col is not None:
        for g in graphs:
            g.y = g.y[:, col: col + 1]
    return graphs


def peptides_func(path: str | Path | None = None, **options) -> list[Data]:
    """LRGB Peptides-func: 15,535 peptides, 10 binary function labels (multilabel; metric
    :func:`lrgb_average_precision`). See :func:`load_peptides` for ``options``."""
    return load_peptides("peptides_func", path, **options)


def peptides_struct(path: str | Path | None = None, **options) -> list[Data]:
    """LRGB Peptides-struct: the same 15,535 peptides, 11 standardised 3D-structure targets (regression;
    metric :func:`lrgb_mae`). See :func:`load_peptides` for ``options``."""
    return load_peptides("peptides_struct", path, **options)


def sign_flip_columns(options: dict | None = None) -> slice | None:
    """The columns of ``x_s`` holding LapPE eigenvectors for loader ``options`` (None without LapPE); the
    eigenvalue columns after them are not included. Eigenvector signs are arbitrary, so training flips them at
    random per graph and eigenvector (:func:`random_sign_flip`; Dwivedi et al. 2022, Kreuzer et al. 2021)."""
    options = options or {}
    k = int(options.get("lap_pe", 0) or 0)
    if not k:
        return None
    return feature_layout(k, int(options.get("rwse", 0) or 0),
                          lap_eigvals=bool(options.get("lap_eigvals", True)))["lap_pe"]


for _f, _n in ((peptides_func, "peptides_func"), (peptides_struct, "peptides_struct")):
    _f.info = DATASET_INFO[_n]
    _f.sign_flip_columns = sign_flip_columns
    _f.units = {}
    _f.default_target = None


# ---------------------------------------------------------------------------------------------------------
# metrics
def _binary_ap(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision of one label: sum over distinct score thresholds (descending) of
    (R_k - R_{k-1}) P_k, the step-wise (non-interpolated) definition."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(1.0 - y)
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]      # last index of each distinct score
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def lrgb_average_precision(y_true, y_score) -> float:
    """Peptides-func metric as the official LRGB code computes it (its ``eval_ap``): the average precision of
    each label column, over rows whose label is not NaN, averaged over the columns that have at least one
    positive and one negative among them (others are skipped). Equals the mean over those columns of
    scikit-learn's ``average_precision_score``. Raises ``ValueError`` when no column qualifies."""
    yt = np.asarray(y_true.detach().cpu() if torch.is_tensor(y_true) else y_true, dtype=np.float64)
    ys = np.asarray(y_score.detach().cpu() if torch.is_tensor(y_score) else y_score, dtype=np.float64)
    if yt.ndim == 1:
        yt, ys = yt[:, None], ys[:, None]
    if yt.shape != ys.shape:
        raise ValueError(f"lrgb_average_precision: shapes differ, {yt.shape} vs {ys.shape}")
    aps = []
    for c in range(yt.shape[1]):
        ok = ~np.isnan(yt[:, c])
        y, s = yt[ok, c], ys[ok, c]
        if (y == 1).any() and (y == 0).any():
            aps.append(_binary_ap(y, s))
    if not aps:
        raise ValueError("lrgb_average_precision: no label has both a positive and a negative example")
    return float(np.mean(aps))


def lrgb_mae(y_true, y_pred) -> float:
    """Peptides-struct metric: mean absolute error over all graphs and all targets (NaN targets skipped)."""
    yt = np.asarray(y_true.detach().cpu() if torch.is_tensor(y_true) else y_true, dtype=np.float64)
    yp = np.asarray(y_pred.detach().cpu() if torch.is_tensor(y_pred) else y_pred, dtype=np.float64)
    if yt.shape != yp.shape:
        raise ValueError(f"lrgb_mae: shapes differ, {yt.shape} vs {yp.shape}")
    ok = ~np.isnan(yt)
    return float(np.abs(yt[ok] - yp[ok]).mean())

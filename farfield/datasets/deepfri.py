"""DeepFRI's protein function sets: Enzyme Commission numbers and Gene Ontology terms of PDB chains
(Gligorijevic et al., "Structure-based protein function prediction using graph convolutional networks",
Nature Communications 2021), as residue graphs with multi-hot labels.

Registered as ``ec`` (:func:`ec`, 538 EC classes), ``go-mf``, ``go-bp`` and ``go-cc`` (:func:`go_mf`,
:func:`go_bp`, :func:`go_cc`: molecular function, biological process, cellular component).

Files (DeepFRI's ``preprocessing/data``; ``path`` = the folder holding them, or the annotation file itself):

* ``nrPDB-EC_<release>_annot.tsv``: ``### EC-numbers``, the tab-separated classes, ``### PDB-chain<TAB>
  EC-numbers``, then one ``<ID>-<chain><TAB>ec1,ec2,...`` line per chain;
  ``nrPDB-GO_<release>_annot.tsv``: ``### GO-terms (molecular_function)``, the terms, ``### GO-names
  (molecular_function)``, the names, the same for ``biological_process`` and ``cellular_component``, then
  ``### PDB-chain<TAB>GO-terms (molecular_function)<TAB>...`` and ``<chain><TAB>mf<TAB>bp<TAB>cc`` lines (a
  column may be empty: that chain has no term of that ontology and gets an all-zero label row, as in
  DeepFRI's own training data). A malformed line or an unknown term raises
  :class:`~farfield.errors.InputError` naming the file and line.
* ``<prefix>_train.txt``, ``_valid.txt``, ``_test.txt``: the official split (one chain per line); every listed
  chain must be annotated.
* ``<prefix>_test.csv``: ``PDB-chain,<30%,<40%,<50%,<70%,<95%``: 1 where the test chain's sequence identity to
  the training set is below that cut-off (:data:`IDENTITY_CUTOFFS`).

Structures come from the ``structures`` option (folders, searched recursively, any of the names
:func:`farfield.datasets.structures.find_structure` accepts), ``<path>/structures`` and the download cache
``<cache>/pdb``; missing entries are downloaded from the RCSB (``download``, default: when online; mmCIF, or
``fmt: bcif``; ``base_url`` for a mirror). Chains that still have no structure (or whose chain is not in
the file) are left out and reported in one warning (how many, the first ids, how to supply them); when no
chain has one, an :class:`~farfield.errors.InputError` says so.

Graphs (residue level, :class:`farfield.data.pipeline.Featuriser`; the ``preset`` option selects the residue
feature preset, ``featuriser`` passes further :class:`~farfield.data.pipeline.FeaturiserConfig` fields; the
data module builds the edges from ``data.edges``, so no edges are stored):

=========================  ===============  ==============================================================
``x_s``, ``x_v``, ``pos``  per preset       residue features at CA (resolved residues only)
``seqres_index``           [N] long         position of each residue in the chain's SEQRES sequence
                                            (:func:`farfield.datasets.structures.seqres_index`; the author
                                            numbering when the file records no SEQRES), so sequence
                                            separations across unresolved loops stay right; ``seq_index``
                                            is set to it (sequence-offset edge features and ``seq:`` edges
                                            use it; the ``ca_seq`` node encoding still counts resolved
                                            residues)
``y``                      [1, C] float     multi-hot labels (C = 538 for EC)
``split``                  [1] long         official split: 0 train, 1 valid, 2 test
``identity``               [1, 5] bool      test chains: below 30/40/50/70/95 % identity to training
                                            (all False for train / valid chains)
``baseline_composition``   [1, 20] float    amino-acid composition (fractions of the 20 standard residues),
                                            for the sequence-composition reference baseline
``graph_key``              [1] long         position in train + valid + test order
``name``                   str              ``'1ABC-A'``
=========================  ===============  ==============================================================

``test_identity`` (one of :data:`IDENTITY_CUTOFFS`) keeps only the test chains below that identity, so that
results can be reported per cut-off as DeepFRI does. Graphs are cached (:class:`farfield.datasets.cache.
GraphCache`, keyed by the featuriser configuration, the annotation and split files and every structure
file's size and time) and returned as a lazily read sequence. Metric: protein-centric Fmax
(:func:`farfield.metrics.fmax`) and pair-centric AUPR (:func:`farfield.metrics.pair_aupr`).
"""
from __future__ import annotations

import csv
import os
import re
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch

from farfield.data import fields as F
from farfield.datasets.cache import GraphCache, GraphSubset, parallel_map
from farfield.datasets.download import cache_root, is_offline
from farfield.datasets.structures import (BASE_URLS, StructureIndex, fetch_structures, load_chain, read_seqres,
                                          seqres_index, split_chain_id, structures_cache)
from farfield.errors import ConfigError, FarfieldError, InputError

__all__ = ["ec", "go_mf", "go_bp", "go_cc", "read_annotations", "read_split", "read_identity",
           "IDENTITY_CUTOFFS", "ONTOLOGIES", "SOURCE_URL"]

#: the sequence-identity cut-offs of test.csv, in column order
IDENTITY_CUTOFFS = (0.3, 0.4, 0.5, 0.7, 0.95)
#: dataset -> (file family, block name in the annotation file)
ONTOLOGIES = {"ec": ("EC", "EC-numbers"), "go-mf": ("GO", "molecular_function"),
              "go-bp": ("GO", "biological_process"), "go-cc": ("GO", "cellular_component")}
SOURCE_URL = "https://github.com/flatironinstitute/DeepFRI/tree/master/preprocessing/data"
_VERSION = "deepfri-2"            # part of the cache key and run keys; bump when the graphs change (2: chain
#                                   breaks by the peptide bond, not CA-CA)
_CHAIN_RE = re.compile(r"^[0-9A-Za-z]{4}-[0-9A-Za-z]{1,4}$")
_OPTIONS = ("structures", "download", "base_url", "fmt", "preset", "featuriser", "test_identity", "workers",
            "cache", "progress", "prefix")
_DROP = ("edge_index", "edge_type", "edge_s", "edge_types")


# ------------------------------------------------------------------------------------------------ files
def read_annotations(path: str | Path, dataset: str = "ec") -> tuple[list[str], dict[str, list[int]]]:
    """Classes and per-chain class indices of a DeepFRI annotation TSV.

    Args:
        path: ``nrPDB-EC_*_annot.tsv`` or ``nrPDB-GO_*_annot.tsv``.
        dataset: ``'ec'``, ``'go-mf'``, ``'go-bp'`` or ``'go-cc'``.

    Returns:
        ``(classes [C], {chain: sorted class indices})``.

    Raises:
        InputError: missing / empty file, missing header block, malformed line or unknown class (the
            message names the file and line).
    """
    family, block = ONTOLOGIES[dataset]
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "annotation file not found")
    lines = path.read_text().splitlines()
    if not lines:
        raise InputError(path, "annotation file is empty")
    title = "### EC-numbers" if family == "EC" else f"### GO-terms ({block})"
    heads = {ln.strip(): i for i, ln in enumerate(lines) if ln.startswith("###")}
    if title not in heads or heads[title] + 1 >= len(lines):
        raise InputError(path, f"has no '{title}' header line followed by the class list (is it a DeepFRI "
                               f"{family} annotation file?)")
    classes = [c.strip() for c in lines[heads[title] + 1].split("\t")]
    if not classes or any(not c for c in classes) or len(set(classes)) != len(classes):
        raise InputError(path, f"line {heads[title] + 2}: the class list is empty, has empty or repeated entries")
    chain_head = [i for i, ln in enumerate(lines) if ln.startswith("### PDB-chain")]
    if not chain_head:
        raise InputError(path, "has no '### PDB-chain' header line before the per-chain annotations")
    cols = lines[chain_head[0]].split("\t")[1:]
    want = "EC-numbers" if family == "EC" else f"GO-terms ({block})"
    col = next((k for k, c in enumerate(cols) if c.strip() == want), None)
    if col is None:
        raise InputError(path, f"line {chain_head[0] + 1}: the '### PDB-chain' header has no '{want}' column "
                               f"(columns: {cols})")
    lookup = {c: i for i, c in enumerate(classes)}
    out: dict[str, list[int]] = {}
    for ln_no in range(chain_head[0] + 1, len(lines)):
        line = lines[ln_no]
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"line {ln_no + 1}"
        if len(fields) > len(cols) + 1 or not _CHAIN_RE.match(fields[0].strip()):
            raise InputError(path, f"{where}: expected '<PDBID>-<chain><TAB>' and {len(cols)} comma-separated "
                                   f"column(s), got {line[:80]!r}")
        value = fields[col + 1].strip() if col + 1 < len(fields) else ""
        idx = []
        for term in (t.strip() for t in value.split(",")):
            if not term:
                continue
            if term not in lookup:
                raise InputError(path, f"{where}: {term!r} is not one of the {len(classes)} classes in the header")
            idx.append(lookup[term])
        out[fields[0].strip()] = sorted(set(idx))
    if not out:
        raise InputError(path, "holds no annotated chain")
    return classes, out


def read_split(path: str | Path) -> list[str]:
    """Chain ids of a split list (one per line; blank lines ignored); :class:`InputError` for a missing
    file or a malformed id (naming the line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "split list not found")
    out = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if not _CHAIN_RE.match(s):
            raise InputError(path, f"line {k}: {s[:40]!r} is not a chain id like '1ABC-A'")
        out.append(s)
    return out


def read_identity(path: str | Path) -> dict[str, np.ndarray]:
    """``{chain: bool [5]}`` from a DeepFRI ``test.csv`` (columns ``PDB-chain,<30%,<40%,<50%,<70%,<95%``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "test identity file not found")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    want = [f"<{c:.0%}" for c in IDENTITY_CUTOFFS]
    if not rows or [c.strip() for c in rows[0][1:]] != want:
        raise InputError(path, f"line 1: expected the header 'PDB-chain,{','.join(want)}', got "
                               f"{','.join(rows[0]) if rows else '(empty file)'!r}")
    out = {}
    for k, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != 1 + len(want) or any(v.strip() not in ("0", "1") for v in row[1:]) \
                or not _CHAIN_RE.match(row[0].strip()):
            raise InputError(path, f"line {k}: expected '<chain>,' and {len(want)} 0/1 flags, got {','.join(row)!r}")
        out[row[0].strip()] = np.array([v.strip() == "1" for v in row[1:]])
    return out


def _files(path, dataset: str, prefix: str | None) -> dict[str, Path]:
    family = ONTOLOGIES[dataset][0]
    if path is None:
        path = cache_root() / "deepfri"
    path = Path(path)
    if path.is_file():
        folder, annot = path.parent, path
        prefix = prefix or path.name.removesuffix("_annot.tsv")
    else:
        folder = path
        if prefix is None:
            found = sorted(folder.glob(f"nrPDB-{family}_*_annot.tsv")) if folder.is_dir() else []
            if not found:
                raise InputError(folder, f"no DeepFRI {family} annotation file (nrPDB-{family}_<release>_annot.tsv) "
                                         f"here; download it and the split lists (_train.txt, _valid.txt, _test.txt, "
                                         f"_test.csv) from {SOURCE_URL} into this folder, or pass "
                                         "data.path=<folder holding them>")
            annot = found[-1]
            prefix = annot.name.removesuffix("_annot.tsv")
        annot = folder / f"{prefix}_annot.tsv"
    files = {"annot": annot, "train": folder / f"{prefix}_train.txt", "valid": folder / f"{prefix}_valid.txt",
             "test": folder / f"{prefix}_test.txt", "identity": folder / f"{prefix}_test.csv"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise InputError(", ".join(missing), f"missing DeepFRI file(s); get them from {SOURCE_URL}")
    return files


# ------------------------------------------------------------------------------------------------ graphs
def _featurise(item, config: dict):
    """One chain -> ``Data`` (or a string saying why it was left out). Module-level for worker processes."""
    from farfield.data.pipeline import Featuriser, FeaturiserConfig
    from farfield.io.residues import ONE_LETTER

    chain_id, file, labels, n_classes, split, identity, key = item
    _, chain = split_chain_id(chain_id)
    try:
        fc = FeaturiserConfig.from_dict(config)
        s = load_chain(file, chain, fc.read)
        g = Featuriser(fc)(s)
    except FarfieldError as e:          # InputError from the file, or a chain without amino acids
        return f"{chain_id}: {e}"
    for k in _DROP:
        if k in g:
            del g[k]
    res = g.res_type.numpy()
    seq = "".join(ONE_LETTER[t] if t < 20 else "X" for t in res)
    numbers = _author_numbers(s, len(res))
    seqres = read_seqres(file, chain) if not str(file).lower().endswith((".bcif", ".bcif.gz")) else None
    idx = None
    if seqres:
        try:
            idx = seqres_index(seq, seqres, numbers)
        except InputError:
            idx = None
    if idx is None:                      # no SEQRES: author numbering when it increases, else the order
        idx = numbers - numbers[0] if numbers is not None else np.arange(len(res))
    g.seqres_index = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    # sequence offsets (seq-offset edge features, seq: edges) count unresolved residues too
    g[F.SEQ_INDEX] = g.seqres_index.clone()
    y = torch.zeros(1, n_classes)
    y[0, list(labels)] = 1.0
    g.y = y
    g.split = torch.tensor([split], dtype=torch.long)
    g.identity = torch.as_tensor(np.asarray(identity, dtype=bool)).reshape(1, 5)
    std = res[res < 20]
    comp = np.bincount(std, minlength=20).astype(np.float32) / max(len(std), 1)
    g.baseline_composition = torch.from_numpy(comp).reshape(1, 20)
    g.graph_key = torch.tensor([key], dtype=torch.long)
    g.name = chain_id
    return g


def _author_numbers(s, n: int) -> np.ndarray | None:
    """[n] author residue numbers of the residue nodes, or None when they do not strictly increase
    (insertion codes, restarts)."""
    from farfield.io.residues import ResidueView
    num = ResidueView.from_structure(s).res_seq.astype(np.int64)
    if len(num) != n or (len(num) > 1 and not (np.diff(num) > 0).all()):
        return None
    return num


def _load(dataset: str, path=None, *, hydrogens: bool = False, target: str | None = None, **options):
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown {dataset} option(s) {sorted(unknown)}; allowed: {sorted(_OPTIONS)}")
    if target not in (None, dataset):
        raise ConfigError(f"{dataset} has the single target {dataset!r} (all {ONTOLOGIES[dataset][1]} labels), "
                          f"got target={target!r}")
    cut = options.get("test_identity")
    if cut is not None and cut not in IDENTITY_CUTOFFS:
        raise ConfigError(f"{dataset} option test_identity must be one of {IDENTITY_CUTOFFS}, got {cut!r}")
    fmt = options.get("fmt", "cif")
    if fmt not in BASE_URLS:
        raise ConfigError(f"{dataset} option fmt must be one of {sorted(BASE_URLS)} (MMTF is retired), got {fmt!r}")
    files = _files(path, dataset, options.get("prefix"))
    classes, annot = read_annotations(files["annot"], dataset)
    splits = {name: read_split(files[name]) for name in ("train", "valid", "test")}
    identity = read_identity(files["identity"])
    for name, ids in splits.items():
        absent = [c for c in ids if c not in annot]
        if absent:
            raise InputError(files[name], f"{len(absent)} listed chain(s) are not in {files['annot'].name}: "
                                          f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}")
    # structures
    folders = options.get("structures") or []
    folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
    base = Path(path) if path is not None and Path(path).is_dir() else files["annot"].parent
    folders = [Path(f) for f in folders] + [base / "structures", structures_cache()]
    for f in folders[:-2]:
        if not f.is_dir():
            raise InputError(f, "structures folder not found")
    index = StructureIndex(folders)
    chains = [(c, k) for k, name in enumerate(("train", "valid", "test")) for c in splits[name]]
    where = {c: index.find(c) for c, _ in chains}
    missing = [c for c, p in where.items() if p is None]
    download = options.get("download")
    download = (not is_offline()) if download is None else bool(download)
    fetch_note = ""
    if missing and download:
        with warnings.catch_warnings(record=True) as caught:      # folded into the one warning below
            warnings.simplefilter("always")
            got, _ = fetch_structures([split_chain_id(c)[0] for c in missing], structures_cache(),
                                      base_url=options.get("base_url"), fmt=fmt, workers=8, offline=None,
                                      progress=bool(options.get("progress", True)))
        fetch_note = "".join(f" Download: {w.message}" for w in caught)
        for c in missing:
            where[c] = got.get(split_chain_id(c)[0])
        missing = [c for c in missing if where[c] is None]
    available = [(c, k) for c, k in chains if where[c] is not None]
    how = ("put the structure files (e.g. 1abc.cif, 1ABC.cif.gz, 1ABC-A.pdb, pdb1abc.ent.gz) into a folder and "
           "pass data.options={structures: <folder>}" + ("" if download else
                                                            ", or allow downloads (download: true, online)"))
    if not available:
        raise InputError(files["annot"], f"none of the {len(chains)} listed chains has a structure file "
                                         f"(searched {', '.join(str(f) for f in folders)}); {how}")
    if missing:
        warnings.warn(f"{dataset}: {len(missing)} of {len(chains)} chains have no structure file and are left out "
                      f"(first: {', '.join(missing[:8])}); to include them, {how}.{fetch_note}", stacklevel=3)
    # graphs
    fconf = {"level": "residue", "edges": "knn:1", "seq_offset_dim": 0,
             "read": {"waters": False, "hydrogens": bool(hydrogens), "hetero": True},
             **dict(options.get("featuriser") or {})}
    if options.get("preset") is not None:
        fconf["preset"] = options["preset"]
    from farfield.data.pipeline import FeaturiserConfig
    try:
        fconf = FeaturiserConfig.from_dict(fconf)
    except TypeError as e:
        raise ConfigError(f"{dataset} featuriser options: {e}") from None
    if fconf.level != "residue":
        raise ConfigError(f"{dataset} graphs are residue level; featuriser level={fconf.level!r} is not supported")
    fdict = fconf.to_dict()
    items = [(c, str(where[c]), tuple(annot[c]), len(classes), k, identity.get(c, np.zeros(5, bool)) if k == 2
              else np.zeros(5, bool), g) for g, (c, k) in enumerate(available)]
    workers = int(options.get("workers") or min(8, os.cpu_count() or 1))
    progress = bool(options.get("progress", True))
    fn = partial(_featurise, config=fdict)
    if options.get("cache", True):
        config = {"version": _VERSION, "dataset": dataset, "featuriser": fdict, "classes": len(classes),
                  "chains": [(c, k) for c, k in available]}
        sources = [files[k] for k in ("annot", "train", "valid", "test", "identity")] + [where[c] for c, _ in available]
        cache = GraphCache(dataset, config, sources)
        seq = cache.load()
        if seq is None:
            seq = cache.build(fn, items, workers=workers, desc=f"featurise {dataset}", progress=progress)
        skipped = seq.manifest.get("skipped", [])
    else:
        out = parallel_map(fn, items, workers, desc=f"featurise {dataset}", progress=progress)
        skipped = [r for r in out if isinstance(r, str)]
        seq = [r for r in out if not isinstance(r, str)]
    if skipped:
        warnings.warn(f"{dataset}: {len(skipped)} chain(s) could not be featurised and are left out: "
                      + "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""), stacklevel=3)
    if len(seq) == 0:
        raise InputError(files["annot"], "no chain could be featurised (see the warning)")
    if cut is not None:
        col = IDENTITY_CUTOFFS.index(cut)
        if isinstance(seq, list):
            seq = [g for g in seq if int(g.split) != 2 or bool(g.identity[0, col])]
        else:
            split = seq.index["split"]
            test_ok = np.array([bool(identity.get(n, np.zeros(5, bool))[col]) for n in seq.names])
            seq = GraphSubset(seq, np.flatnonzero((split != 2) | test_ok))
    return seq


def _make(dataset: str, n_classes: int, doc: str):
    def loader(path=None, *, hydrogens: bool = False, target: str | None = None, **options):
        return _load(dataset, path, hydrogens=hydrogens, target=target, **options)

    loader.__name__ = loader.__qualname__ = dataset.replace("-", "_")
    loader.__doc__ = doc
    # function labels are properties of the protein, not sums over its residues: mean readout
    loader.info = {"provides_edges": False, "version": _VERSION, "task": {"kind": "multilabel", "num_outputs": n_classes,
                                                     "monitor": "fmax", "pooling": "mean"}}
    loader.units = {dataset: ""}
    loader.default_target = dataset
    return loader


_DOC = """DeepFRI {what} as residue graphs (see :mod:`farfield.datasets.deepfri`).

    Args:
        path: folder holding the DeepFRI files (or the annotation TSV itself).
        options: ``structures`` (folder or list of folders), ``download`` (bool; default: when online),
            ``base_url`` / ``fmt`` (``cif`` or ``bcif``) for downloads, ``preset`` (residue feature preset),
            ``featuriser`` (further FeaturiserConfig fields), ``test_identity`` (0.3, 0.4, 0.5, 0.7 or 0.95:
            keep only test chains below that identity to training), ``workers`` (featurisation processes),
            ``cache`` (default True), ``progress``, ``prefix`` (file prefix, e.g. ``nrPDB-EC_2020.04``).

    Returns:
        a lazily read sequence of ``Data`` (a list with ``cache=False``); ``y`` [1, {n}] multi-hot.
    """

#: EC numbers (538 classes in the 2020.04 release)
ec = _make("ec", 538, _DOC.format(what="Enzyme Commission numbers", n="538"))
#: GO molecular function (489 terms in the 2019.06.18 release)
go_mf = _make("go-mf", 489, _DOC.format(what="GO molecular function terms", n="489"))
#: GO biological process (1943 terms)
go_bp = _make("go-bp", 1943, _DOC.format(what="GO biological process terms", n="1943"))
#: GO cellular component (320 terms)
go_cc = _make("go-cc", 320, _DOC.format(what="GO cellular component terms", n="320"))

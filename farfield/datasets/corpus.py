"""Unlabelled structure corpora (the ``corpus`` dataset): a folder of structure files or a Foldcomp database,
featurised once into a sharded on-disk store, for pretraining at scale with flat memory.

Sources
-------
* **A folder** of PDB / mmCIF / BinaryCIF files, optionally gzipped, searched recursively (every file whose
  extension :func:`farfield.io.readers.detect_format` reads as ``pdb``, ``mmcif`` or ``bcif``). AlphaFold DB
  and ESMFold models carry the per-residue confidence pLDDT in the B-factor column (Jumper et al., Nature 2021;
  Lin et al., Science 2023).
* **A Foldcomp database** (Kim, Mirdita & Steinegger, Bioinformatics 2023): an MMseqs2-style database, i.e. a
  data file ``DB`` of compressed single-chain entries, each followed by a NUL byte, ``DB.index`` (``key`` TAB
  ``offset`` TAB ``length`` per entry, length including the NUL), ``DB.lookup`` (``key`` TAB ``name`` TAB
  ``0``; optional: without it the name stored in each entry is used) and ``DB.dbtype``. Give the data file's
  path (or a folder that holds one database and no structure file). It is read with the ``foldcomp`` package
  (``pip install foldcomp``, or the ``corpus`` extra: an optional dependency, with compiled wheels for x86-64
  Linux, macOS and Windows only), imported only when a Foldcomp corpus is built. Entries are named from
  ``DB.lookup`` (``foldcomp.open`` itself returns the name stored at compression); a decompressed entry is
  chain ``A``, numbered from its first residue. Foldcomp stores a chain as its backbone and side-chain angles
  and rebuilds it with ideal bond lengths: a complete chain comes back within about 0.1 A CA RMSD (0.08 A on
  average by its authors; 0.05-0.09 A measured on a predicted model and high-resolution crystal structures),
  a chain with strained geometry further off (0.3-0.55 A measured on an older crystal structure) and a chain
  with a gap or a missing backbone atom distorted (over 10 A), so it suits complete predicted models, its
  purpose. The B-factor column keeps one value per residue in 8 bits over the chain's range (pLDDT within
  1/510 of that range).

Items
-----
Each item is a residue graph made exactly as the ``folder`` dataset makes one
(``Featuriser(FeaturiserConfig(level="residue", preset=...)).residue_graph``), without edges (the data module
builds them) and without ``y`` (a corpus has no labels), plus

==============  ===========  ============================================================================
field           shape        meaning
==============  ===========  ============================================================================
``segment``     [N] long     contiguous backbone segment (:attr:`farfield.io.residues.ResidueView.segment_index`)
``plddt``       [N] float    the CA atom's B-factor, when pLDDT applies to the item (see ``plddt``)
``has_plddt``   [1] bool     whether the item carries ``plddt``
``name``        str          the file's stem (``1abc`` for ``1abc.cif.gz``) or the Foldcomp entry's name;
                             ``<name>:<chain>`` with ``chains`` ``each`` or a list (a blank chain ID: ``<name>``)
``split``       [1] long     0 train / 1 val / 2 test, drawn from a seeded hash of the name (below)
==============  ===========  ============================================================================

The split is ``u = int(sha256(f"{split_seed}:{name}"), 16) / 2**256`` mapped through the cumulative
``split`` fractions: it depends on the item's name alone, so items keep their split when files are added
(two files with the same stem, e.g. ``1abc.pdb`` and ``1abc.cif``, share it, which keeps copies of one
structure on one side of the split). The store's ``index`` holds ``num_nodes``, ``split`` and ``has_plddt``
per item, so a corpus can be split and filtered without loading graphs.

Options (:class:`CorpusConfig`)
-------------------------------
``preset`` (residue features, :data:`farfield.features.residues.PRESETS`, default ``gvp``); ``chains``:
``each`` (default: one item per chain), ``all`` (one item per file, every chain) or a list of chain IDs (one
item per kept chain; a file with none of them is left out); ``min_length`` / ``max_length`` (residues of the
item; ``max_length=0``: no limit); ``min_plddt`` (mean pLDDT of the item's residues; 0 = off; an item without
pLDDT is left out when it is set); ``plddt``: ``auto`` (a Foldcomp database always; a file whose name starts
with ``AF-`` or whose first 16 KB say ``ALPHAFOLD`` or ``ESMFOLD``), ``True`` (every item's B-factors are
pLDDT) or ``False``; ``split`` (three fractions, default ``(0.98, 0.01, 0.01)``); ``split_seed``;
``shard_size`` (items per shard); ``dtype``.

Build
-----
:func:`build_corpus` featurises each file (or database entry) once, in ``workers`` processes, streaming the
graphs into shards of ``shard_size`` (never holding the corpus in memory), into a
:class:`~farfield.datasets.cache.GraphCache` entry keyed by the configuration and the source's identity
(relative paths, sizes and modification times of the files; of the database's files), so a second call
opens the store without featurising. Unreadable or malformed files and filtered items are left out with a
reason (the store's ``manifest["skipped"]``, ``'<name>: <reason> (<detail>)'``), reported in one warning
with the count per reason; a corpus with no usable item raises :class:`~farfield.errors.InputError`.
The store is read lazily shard by shard (``ShardedGraphStore(folder, cached_shards=1)`` keeps one shard
in memory).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tempfile
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from farfield.data import fields as F
from farfield.data.pipeline import FEATURES_VERSION
from farfield.datasets.cache import GraphCache, ShardedGraphStore, parallel_map
from farfield.errors import ConfigError, InputError
from farfield.io.readers import detect_format

__all__ = ["CorpusConfig", "build_corpus", "corpus", "list_corpus", "split_of", "skip_summary", "PLDDT_MARKERS",
           "INDEX_KEYS"]

#: per-graph scalars of the store's index (besides ``num_nodes``)
INDEX_KEYS = ("split", "has_plddt")
#: words in a file's first :data:`_HEAD_BYTES` bytes (upper-cased) that mark a predicted model with pLDDT
PLDDT_MARKERS = (b"ALPHAFOLD", b"ESMFOLD")
_HEAD_BYTES = 16384
_FORMAT = 1                     # bumped when the items change
_STRUCTURE_FORMATS = ("pdb", "mmcif", "bcif")
_CHAIN_MODES = ("each", "all")


# -- options ----------------------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class CorpusConfig:
    """How a corpus becomes graphs (options in the module docstring). Invalid values raise
    :class:`~farfield.errors.ConfigError` naming the option; ``chains`` and ``split`` may be given as
    comma-separated strings (``"A,B"``, ``"0.8,0.1,0.1"``)."""

    preset: str = "gvp"
    chains: str | tuple[str, ...] = "each"
    min_length: int = 1
    max_length: int = 0
    min_plddt: float = 0.0
    plddt: str | bool = "auto"
    split: tuple[float, float, float] = (0.98, 0.01, 0.01)
    split_seed: int = 0
    shard_size: int = 256
    dtype: str = "float32"

    def __post_init__(self):
        from farfield.features.residues import PRESETS

        if self.preset not in PRESETS:
            raise ConfigError(f"corpus: preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        chains = self.chains
        if isinstance(chains, str) and chains not in _CHAIN_MODES:
            chains = chains.split(",")
        if not isinstance(chains, str):
            try:
                chains = tuple(str(c).strip() for c in chains)
            except TypeError:
                raise ConfigError(f"corpus: chains must be 'each', 'all' or a list of chain IDs, got "
                                  f"{self.chains!r}") from None
            if not chains or not all(chains) or len(set(chains)) < len(chains):
                raise ConfigError(f"corpus: chains must be 'each', 'all' or a non-empty list of distinct chain IDs, "
                                  f"got {self.chains!r}")
        object.__setattr__(self, "chains", chains)
        for name, low in (("min_length", 1), ("max_length", 0), ("shard_size", 1)):
            v = getattr(self, name)
            if not _is_int(v) or v < low:
                raise ConfigError(f"corpus: {name} must be an integer >= {low}, got {v!r}")
        if not _is_int(self.split_seed):
            raise ConfigError(f"corpus: split_seed must be an integer, got {self.split_seed!r}")
        if self.max_length and self.max_length < self.min_length:
            raise ConfigError(f"corpus: max_length ({self.max_length}) is below min_length ({self.min_length}); "
                              "max_length=0 means no limit")
        mp = self.min_plddt
        if isinstance(mp, bool) or not isinstance(mp, (int, float, np.number)) or not 0 <= float(mp) <= 100:
            raise ConfigError(f"corpus: min_plddt must be a number in [0, 100] (0 = off), got {mp!r}")
        object.__setattr__(self, "min_plddt", float(mp))
        if self.plddt not in ("auto", True, False):
            raise ConfigError(f"corpus: plddt must be 'auto', true or false, got {self.plddt!r}")
        split = self.split.split(",") if isinstance(self.split, str) else self.split
        try:
            split = tuple(float(x) for x in split)
        except (TypeError, ValueError):
            raise ConfigError(f"corpus: split must be three fractions (train, val, test), got {self.split!r}") from None
        if len(split) != 3 or min(split) < 0 or not np.isfinite(split).all() or abs(sum(split) - 1) > 1e-6:
            raise ConfigError(f"corpus: split must be three non-negative fractions (train, val, test) summing to 1, "
                              f"got {self.split!r}")
        object.__setattr__(self, "split", split)
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"corpus: dtype must be 'float32' or 'float64', got {self.dtype!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["chains"] = d["chains"] if isinstance(d["chains"], str) else list(d["chains"])
        d["split"] = list(d["split"])
        return d


def split_of(name: str, split=(0.98, 0.01, 0.01), seed: int = 0) -> int:
    """The split (0 train / 1 val / 2 test) of the item ``name``: ``u = int(sha256(f"{seed}:{name}"), 16) /
    2**256`` in the cumulative fractions ``split``."""
    u = int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest(), 16) / 2 ** 256
    cum = np.cumsum(split)
    return int(min(np.searchsorted(cum, u, side="right"), len(split) - 1))


# -- sources ----------------------------------------------------------------------------------------------------
def _is_structure_file(name: str) -> bool:
    try:
        return detect_format(name)[0] in _STRUCTURE_FORMATS
    except InputError:
        return False


def _stem(name: str) -> str:
    """``1abc.cif.gz`` -> ``1abc``; ``AF-P1-F1-model_v4.pdb`` -> ``AF-P1-F1-model_v4``."""
    base = name[:-3] if name.lower().endswith(".gz") else name
    return base.rsplit(".", 1)[0]


def _foldcomp_db(path: Path) -> Path | None:
    """The data file of the Foldcomp database at ``path`` (the data file, or a folder holding exactly one
    database: ``X`` next to ``X.index`` and ``X.dbtype``), else None."""
    if path.is_file():
        return path if Path(f"{path}.index").is_file() else None
    if path.is_dir():
        dbs = [p for p in path.iterdir()
               if p.is_file() and Path(f"{p}.index").is_file() and Path(f"{p}.dbtype").is_file()]
        return dbs[0] if len(dbs) == 1 else None
    return None


def _foldcomp_entries(db: Path) -> list[tuple[int, str | None]]:
    """[(position, name or None)] of a Foldcomp database: positions in the order ``foldcomp.open`` reads them
    (the index sorted by key), names from ``DB.lookup`` when there is one."""
    index = Path(f"{db}.index")
    keys = []
    for n, line in enumerate(index.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3 or not all(p.strip().isdigit() for p in parts[:3]):
            raise InputError(index, f"line {n} is not 'key<TAB>offset<TAB>length' (a Foldcomp / MMseqs2 index)")
        keys.append(int(parts[0]))
    names: dict[int, str] = {}
    lookup = Path(f"{db}.lookup")
    if lookup.is_file():
        for line in lookup.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0].strip().isdigit():
                names[int(parts[0])] = parts[1].strip()
    return [(pos, names.get(k)) for pos, k in enumerate(sorted(keys))]


def _require_foldcomp():
    try:
        import foldcomp
    except ImportError:
        raise ConfigError("corpus: reading a Foldcomp database needs the foldcomp package: pip install foldcomp "
                          "(or pip install 'farfield[corpus]')") from None
    return foldcomp


def list_corpus(source: str | Path) -> tuple[str, list[tuple], list[Path], dict]:
    """What a corpus source holds, without reading a structure: ``(kind, items, identity files, identity)``
    with kind ``'folder'`` (items ``('file', path, stem)``, sorted by relative path) or ``'foldcomp'`` (items
    ``('foldcomp', db, position, name or None)``). Raises :class:`InputError` for a missing source or one
    with no structure file, :class:`ConfigError` for a Foldcomp database without the foldcomp package."""
    source = Path(source)
    if not source.exists():
        raise InputError(source, "corpus source not found (a folder of structure files or a Foldcomp database)")
    files = []
    if source.is_dir():
        for root, dirs, names in os.walk(source):
            dirs.sort()
            files.extend(Path(root) / n for n in sorted(names) if _is_structure_file(n))
    if files:
        rel = [str(p.relative_to(source)) for p in files]
        digest = hashlib.sha256("\n".join(rel).encode()).hexdigest()
        return "folder", [("file", str(p), _stem(p.name)) for p in files], files, {"files": len(files),
                                                                                    "paths_sha256": digest}
    db = _foldcomp_db(source)
    if db is None:
        raise InputError(source, "holds no structure file (.pdb .ent .cif .mmcif .bcif, optionally .gz, searched "
                                 "recursively) and is not a Foldcomp database (DB with DB.index, DB.dbtype)")
    _require_foldcomp()
    entries = _foldcomp_entries(db)
    if not entries:
        raise InputError(db, "Foldcomp database has no entries (empty index)")
    ident = [p for p in (db, Path(f"{db}.index"), Path(f"{db}.lookup")) if p.is_file()]
    return "foldcomp", [("foldcomp", str(db), pos, name) for pos, name in entries], ident, {"entries": len(entries)}


# -- featurisation (runs in worker processes) -----------------------------------------------------------------
_FEATURISERS: dict = {}
_FOLDCOMP_HANDLES: dict = {}


def _featuriser(config: CorpusConfig):
    key = (config.preset, config.dtype)
    if key not in _FEATURISERS:
        from farfield.data.pipeline import Featuriser, FeaturiserConfig
        from farfield.io.structure import ReadOptions

        _FEATURISERS[key] = Featuriser(FeaturiserConfig(level="residue", preset=config.preset, dtype=config.dtype,
                                                         read=ReadOptions(waters=False, hydrogens=False)))
    return _FEATURISERS[key]


def _says_model(path: Path) -> bool:
    """Whether a file's name or first bytes mark a predicted model (AlphaFold, ESMFold) with pLDDT."""
    if path.name.startswith("AF-"):
        return True
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                head = f.read(_HEAD_BYTES)
        else:
            with open(path, "rb") as f:
                head = f.read(_HEAD_BYTES)
    except (OSError, EOFError):
        return False            # the reader reports the unreadable file
    head = head.upper()
    return any(m in head for m in PLDDT_MARKERS)


def _foldcomp_pdb(db: str, position: int) -> tuple[str, str]:
    """(name stored in the entry, PDB text) of a Foldcomp database entry; one handle per process."""
    foldcomp = _require_foldcomp()
    key = (os.getpid(), db)
    if key not in _FOLDCOMP_HANDLES:
        _FOLDCOMP_HANDLES[key] = foldcomp.open(Path(db))
    try:
        name, pdb = _FOLDCOMP_HANDLES[key][position]
    except Exception as e:          # foldcomp.error, or NULL without an exception (SystemError)
        raise InputError(f"{db}[{position}]", f"Foldcomp cannot decompress the entry ({e})") from None
    return name, pdb.decode() if isinstance(pdb, bytes) else pdb


def _read_item(item: tuple):
    """(structure, name, whether pLDDT applies under ``plddt='auto'``) of one source item."""
    from farfield.io.readers import read_structure
    from farfield.io.structure import ReadOptions

    read = ReadOptions(waters=False, hydrogens=False)
    if item[0] == "file":
        path = Path(item[1])
        return read_structure(path, read), item[2], _says_model(path)
    _, db, position, name = item
    stored, text = _foldcomp_pdb(db, position)
    name = name or stored or f"entry{position}"
    fd, tmp = tempfile.mkstemp(suffix=".pdb", prefix="farfield-foldcomp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            s = read_structure(tmp, read)
        except InputError as e:
            raise InputError(f"{db}:{name}", e.reason) from None
    finally:
        os.unlink(tmp)
    s.source = f"{db}:{name}"
    return s, name, True


def _skip(name: str, reason: str, detail: str = "") -> str:
    return f"{name}: {reason}" + (f" ({detail})" if detail else "")


def _graph(s, name: str, plddt: bool, config: CorpusConfig):
    """The item's graph, or the reason it is left out."""
    from farfield.io.residues import ResidueView

    try:
        rv = ResidueView.from_structure(s)
    except InputError:
        return _skip(name, "no amino-acid residues")
    n = len(rv)
    if n < config.min_length:
        return _skip(name, "shorter than min_length", f"{n} < {config.min_length}")
    if config.max_length and n > config.max_length:
        return _skip(name, "longer than max_length", f"{n} > {config.max_length}")
    values = None
    if plddt:
        ca = np.flatnonzero((rv.atom_residue >= 0) & (s.atom_name == "CA") & (s.element == "C"))
        res, first = np.unique(rv.atom_residue[ca], return_index=True)      # first CA of each residue
        values = np.empty(n)
        values[res] = s.b_factor[ca[first]]
    if config.min_plddt > 0:
        if values is None:
            return _skip(name, "no pLDDT", f"min_plddt={config.min_plddt:g} needs it; set plddt=true if the "
                                           "B-factors are pLDDT")
        if values.mean() < config.min_plddt:
            return _skip(name, "mean pLDDT below min_plddt", f"{values.mean():.1f} < {config.min_plddt:g}")
    feat = _featuriser(config)
    g = feat.residue_graph(s)
    g[F.SEGMENT] = torch.from_numpy(rv.segment_index)
    if values is not None:
        g[F.PLDDT] = torch.as_tensor(values, dtype=feat.dtype)
    g.has_plddt = torch.tensor([values is not None])
    g[F.NAME] = name
    g[F.SPLIT] = torch.tensor([split_of(name, config.split, config.split_seed)])
    return g


def _featurise(item: tuple, config: CorpusConfig) -> list:
    """Graphs (and reasons for items left out) of one file or database entry."""
    label = item[2] if item[0] == "file" else (item[3] or f"{Path(item[1]).name}[{item[2]}]")
    try:
        s, name, model = _read_item(item)
    except InputError as e:
        return [_skip(label, "unreadable", e.reason)]
    plddt = model if config.plddt == "auto" else bool(config.plddt)
    if config.chains == "all":
        return [_graph(s, name, plddt, config)]
    present = s.chains
    if config.chains == "each":
        keep = present
    else:
        keep = [c for c in config.chains if c in present]
        if not keep:
            return [_skip(name, "no chain selected", f"chains {list(config.chains)}; the file has {present}")]
    out = []
    for c in keep:
        part = s if len(present) == 1 else s.select(s.chain_id == c)
        out.append(_graph(part, f"{name}:{c}" if c else name, plddt, config))
    return out


def _featurise_pickled(item: tuple, config: CorpusConfig) -> bytes:
    """:func:`_featurise`'s result pickled by the standard pickler: a worker process returns it as one byte string,
    not as tensors sent through torch's shared-memory reductions (one segment per tensor; measured twice as slow
    for residue graphs)."""
    return pickle.dumps(_featurise(item, config), protocol=pickle.HIGHEST_PROTOCOL)


# -- build ------------------------------------------------------------------------------------------------------
def _stream(config: CorpusConfig, items: list, workers: int, progress: bool, desc: str):
    """The graphs / reasons of ``items``, featurised ``shard_size`` items at a time over ``workers``
    processes (so at most one chunk's graphs are in memory)."""
    shard_size = config.shard_size
    fn = partial(_featurise_pickled if workers > 1 else _featurise, config=config)
    if workers > 1:                 # import and set up once here: forked workers inherit it (a pool per chunk)
        import gemmi  # noqa: F401

        _featuriser(config)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(items), desc=desc, unit="file")
    try:
        for a in range(0, len(items), shard_size):
            chunk = items[a:a + shard_size]
            for results in parallel_map(fn, chunk, workers, progress=False,
                                        chunksize=max(1, len(chunk) // (4 * max(1, workers)))):
                yield from (pickle.loads(results) if workers > 1 else results)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
        for key in [k for k in _FOLDCOMP_HANDLES if k[0] == os.getpid()]:     # this process's database handles
            _FOLDCOMP_HANDLES.pop(key).close()


def skip_summary(skipped: list[str], examples: int = 3) -> list[tuple[str, int, list[str]]]:
    """``[(reason, count, first names)]`` of a store's ``manifest["skipped"]``, most frequent first."""
    by: dict[str, list[str]] = {}
    for s in skipped:
        name, _, rest = s.partition(": ")
        by.setdefault(rest.split(" (", 1)[0], []).append(name)
    counts = Counter({k: len(v) for k, v in by.items()})
    return [(k, n, by[k][:examples]) for k, n in counts.most_common()]


def _describe(summary) -> str:
    return "; ".join(f"{reason}: {n} ({', '.join(names)}{', ...' if n > len(names) else ''})"
                     for reason, n, names in summary)


def build_corpus(source: str | Path, config: CorpusConfig | None = None, *, cache: str | Path | None = None,
                 workers: int = 1, progress: bool = True) -> ShardedGraphStore:
    """Featurise the corpus at ``source`` (a folder of structure files or a Foldcomp database; see the module
    docstring) once and return its store.

    Args:
        source: the folder, or the Foldcomp database's data file (or a folder holding one database).
        config: a :class:`CorpusConfig` (default options when None).
        cache: the root of the graph cache (default ``<cache>/graphs``, cache = ``$FARFIELD_CACHE`` or
            ``~/.cache/farfield``); the store is ``<cache>/corpus/<key>``.
        workers: featurising processes.
        progress: show a progress bar while featurising.

    Returns:
        the :class:`~farfield.datasets.cache.ShardedGraphStore` (lazy; ``index`` holds ``num_nodes``,
        ``split``, ``has_plddt``; ``manifest["skipped"]`` the items left out and why).

    Raises:
        InputError: the source is missing or holds no structure, or no item is usable (the message gives the
            most frequent reasons).
        ConfigError: a Foldcomp database without the ``foldcomp`` package.
    """
    config = config if config is not None else CorpusConfig()
    if not isinstance(config, CorpusConfig):
        raise ConfigError(f"corpus: config must be a CorpusConfig, got {type(config).__name__}")
    kind, items, ident_files, ident = list_corpus(source)
    key_config = {"dataset": "corpus", "format": _FORMAT, "features_version": FEATURES_VERSION, "kind": kind,
                  "source": str(Path(source).resolve()), **ident, "config": config.to_dict()}
    gc = GraphCache("corpus", key_config, ident_files, root=cache)
    store = gc.load()
    if store is None:
        graphs = _stream(config, items, max(1, int(workers)), progress, f"featurise corpus {Path(source).name}")
        store = gc.write(graphs, config.shard_size, INDEX_KEYS)
        skipped = store.manifest.get("skipped", [])
        if skipped and len(store):
            warnings.warn(f"corpus {source}: {len(skipped)} item(s) left out, {len(store)} kept: "
                          f"{_describe(skip_summary(skipped))} (all: manifest['skipped'] of {store.folder})",
                          stacklevel=2)
    if not len(store):
        summary = skip_summary(store.manifest.get("skipped", []))
        raise InputError(source, f"corpus has no usable item; {_describe(summary[:5]) or 'nothing was read'}")
    return store


# -- the loader -------------------------------------------------------------------------------------------------
def corpus(path=None, *, hydrogens: bool = False, target=None, workers: int = 1, cache=None, progress: bool = True,
           **options) -> ShardedGraphStore:
    """The ``corpus`` dataset: :func:`build_corpus` of ``path`` with :class:`CorpusConfig` ``options``.

    ``target`` must be None (a corpus has no labels); ``hydrogens`` is accepted for the loader protocol and has
    no effect (residue graphs have no hydrogen nodes). Unknown options raise
    :class:`~farfield.errors.ConfigError` naming them."""
    if path is None:
        raise ConfigError("corpus: give the corpus as data.path (a folder of structure files or a Foldcomp "
                          "database)")
    if target is not None:
        raise ConfigError(f"corpus: a corpus has no labels, so target must be unset (got {target!r})")
    from farfield._config import check_keys

    check_keys(CorpusConfig, options, "corpus option")
    return build_corpus(path, CorpusConfig(**options), cache=cache, workers=workers, progress=progress)


corpus.info = {"provides_edges": False, "version": FEATURES_VERSION, "unlabelled": True}
corpus.units = {}
corpus.default_target = None

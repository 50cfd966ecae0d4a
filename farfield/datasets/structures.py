"""Protein structures from anywhere: local folders under any of the usual names, or the PDB by ID.

* :func:`find_structure` finds an entry (or one chain of it) in local folders, whatever the file is called:
  ``1abc.cif``, ``1ABC.cif.gz``, ``1ABC-A.pdb``, ``1abc_A.pdb``, ``pdb1abc.ent(.gz)`` (the wwPDB archive
  name), ``1abc.bcif`` ... (case-insensitive; PDB, mmCIF and BinaryCIF, optionally gzipped; searched
  recursively, so a mirror of the archive's ``ab/pdb1abc.ent.gz`` layout works as is).
* :func:`fetch_structures` downloads entries by PDB ID as mmCIF or BinaryCIF (never MMTF, retired by the
  PDB in 2024) from a configurable base URL, in parallel, with the package's one downloader
  (:func:`farfield.datasets.download.download_file`: resumed through ``<file>.part`` with an HTTP ``Range``
  request, size-checked against ``Content-Length``, renamed into place only once verified); no MD5 is
  published for an entry, so a file is parsed before it is accepted, and a resume whose completeness nothing
  proves (no ``Content-Length``, or a 416 answer) is downloaded again whole. Accepted files are recorded with
  their MD5 in a manifest, so a cached file that later changes is detected and fetched again. Offline
  (``FARFIELD_OFFLINE=1`` or ``offline=True``) it raises one :class:`~farfield.errors.InputError` naming every
  missing file and how to supply it.
* :func:`load_chain` reads one chain of a file as a :class:`~farfield.io.structure.Structure`.

Missing (unresolved) residues - the policy
-------------------------------------------
A residue graph holds the **resolved** residues only (those with a CA atom): a node needs a position.
Each node keeps its position in the chain's full (SEQRES) sequence as the node field ``seqres_index``
([N] long; :func:`seqres_index` aligns the resolved sequence to the SEQRES sequence), so sequence
separations across unresolved loops stay correct (``seqres_index[j] - seqres_index[i]``, not the number of
resolved residues in between). DeepFRI (Gligorijevic et al., Nature Communications 2021) instead builds
SEQRES-length distance maps in which unresolved residues are padding; :func:`deepfri_distance_map`
reproduces them exactly: the resolved residues' CA-CA distances at their SEQRES positions, every entry
that involves an unresolved residue 10000.0, except 1.0 between two unresolved residues at most one
position apart (the diagonal included) - the values DeepFRI's published maps hold.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from farfield.datasets.download import (NETWORK_ERRORS, cache_root, download_file, is_offline, md5sum,
                                       network_error_reason)
from farfield.errors import ConfigError, InputError
from farfield.io.readers import FORMATS, read_structure
from farfield.io.structure import ReadOptions, Structure

__all__ = ["BASE_URLS", "find_structure", "StructureIndex", "fetch_structures", "load_chain", "split_chain_id",
           "read_seqres", "seqres_index", "deepfri_distance_map", "PAD_DISTANCE", "structures_cache"]

#: default download URL per format; ``{ID}`` / ``{id}`` are the upper / lower-case PDB ID
BASE_URLS = {"cif": "https://files.rcsb.org/download/{ID}.cif", "bcif": "https://models.rcsb.org/{id}.bcif"}
#: DeepFRI's distance for entries that involve an unresolved residue
PAD_DISTANCE = 10000.0
_EXT = {"cif": ".cif", "bcif": ".bcif"}
_MANIFEST = "farfield_structures.json"
# stem of a structure file: optional 'pdb' prefix (archive names), 4-character ID, optional chain after - _ or .
_STEM = re.compile(r"^(?:pdb)?([0-9][a-z0-9]{3})(?:[-_.]([a-z0-9]{1,4}))?$")
# the formats a structure file may have (readers' extensions, without small-molecule ones)
_STRUCT_EXT = tuple(e for e, f in FORMATS.items() if f in ("pdb", "mmcif", "bcif"))
_PREFERENCE = {".cif": 0, ".mmcif": 1, ".pdb": 2, ".ent": 3, ".pdb1": 4, ".bcif": 5}


def structures_cache() -> Path:
    """Default download folder of :func:`fetch_structures`: ``<cache>/pdb``."""
    return cache_root() / "pdb"


def split_chain_id(chain_id: str) -> tuple[str, str | None]:
    """``'1ABC-A'`` / ``'1abc_A'`` -> (``'1ABC'``, ``'A'``); ``'1ABC'`` -> (``'1ABC'``, None)."""
    m = re.fullmatch(r"([0-9A-Za-z]{4})(?:[-_.]([0-9A-Za-z]+))?", str(chain_id).strip())
    if m is None:
        raise InputError(chain_id, "is not a PDB ID (4 characters) or a chain ID like '1ABC-A'")
    return m.group(1).upper(), m.group(2)


def _parse_name(name: str) -> tuple[str, str | None, str] | None:
    """(lower-case ID, chain or None, extension) of a structure file name, or None."""
    low = name.lower()
    gz = low.endswith(".gz")
    base = low[:-3] if gz else low
    for ext in _STRUCT_EXT:
        if base.endswith(ext):
            m = _STEM.match(base[: -len(ext)])
            if m:
                chain = name[m.start(2): m.end(2)] if m.group(2) else None   # keep the chain's case
                return m.group(1), chain, ext + (".gz" if gz else "")
    return None


class StructureIndex:
    """The structure files under some folders (searched recursively), indexed by PDB ID and chain.

    Building it lists each folder once; :meth:`find` then answers in O(1), which matters for data sets of
    tens of thousands of chains."""

    def __init__(self, folders):
        if isinstance(folders, (str, Path)):
            folders = [folders]
        self.folders = [Path(f) for f in folders if f is not None]
        self._entries: dict[str, list[tuple[int, str | None, Path]]] = {}
        for rank, folder in enumerate(self.folders):
            if not folder.is_dir():
                continue
            for root, _, names in os.walk(folder):
                for name in names:
                    parsed = _parse_name(name)
                    if parsed is None:
                        continue
                    pid, chain, ext = parsed
                    pref = rank * 100 + _PREFERENCE.get(ext.removesuffix(".gz"), 9) * 2 + ext.endswith(".gz")
                    self._entries.setdefault(pid, []).append((pref, chain, Path(root) / name))
        for v in self._entries.values():
            v.sort(key=lambda e: (e[0], str(e[2])))

    def find(self, pdb_id: str, chain: str | None = None) -> Path | None:
        """The file for ``pdb_id`` (``'1abc'`` or ``'1ABC-A'``): a chain-specific file of ``chain`` if one
        exists (exact case first), else a whole-entry file; None when there is none."""
        pid, c = split_chain_id(pdb_id)
        chain = chain if chain is not None else c
        entries = self._entries.get(pid.lower(), [])
        if chain is not None:
            for pred in (lambda x: x == chain, lambda x: x is not None and x.lower() == chain.lower()):
                for _, ch, p in entries:
                    if pred(ch):
                        return p
        for _, ch, p in entries:
            if ch is None:
                return p
        return None

    def __contains__(self, pdb_id: str) -> bool:
        return self.find(pdb_id) is not None


def find_structure(pdb_id: str, folders, chain: str | None = None) -> Path | None:
    """The local file holding ``pdb_id`` (and ``chain``) under ``folders`` (see :class:`StructureIndex`;
    build an index once to look up many IDs)."""
    return StructureIndex(folders).find(pdb_id, chain)


# ------------------------------------------------------------------------------------------------ download
def _load_manifest(dest: Path) -> dict:
    try:
        return json.loads((dest / _MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _save_manifest(dest: Path, manifest: dict) -> None:
    """Merge ``manifest`` into the one on disk under a cross-process lock (another command may be fetching into
    the same folder: its entries are kept), then write it atomically."""
    from farfield.datasets.cache import entry_lock
    with entry_lock(dest / (_MANIFEST + ".lock")):
        merged = {**_load_manifest(dest), **manifest}
        tmp = dest / (_MANIFEST + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        os.replace(tmp, dest / _MANIFEST)


def _parses(target: Path):
    """A ``validate`` check for :func:`~farfield.datasets.download.download_file`: the downloaded part file
    parses as a structure. The reader picks the format from the file name, so the part is read under a
    hidden temporary name with ``target``'s extension (a hard link, or a copy where links are not allowed)."""

    def check(part: Path) -> None:
        probe = part.with_name(f".{target.stem}-check-{os.getpid()}-{threading.get_ident()}{target.suffix}")
        try:
            try:
                os.link(part, probe)
            except OSError:
                shutil.copyfile(part, probe)
            read_structure(probe, ReadOptions(hydrogens=False))
        except InputError as e:
            raise InputError(target, f"does not parse: {e.reason}") from None
        finally:
            probe.unlink(missing_ok=True)

    return check


def fetch_structures(ids, dest=None, *, base_url: str | None = None, fmt: str = "cif", workers: int = 4,
                     offline: bool | None = None, timeout: float = 60.0, progress: bool = True,
                     search=()) -> tuple[dict[str, Path], list[str]]:
    """Local files for PDB entries, downloading the missing ones.

    Args:
        ids: PDB IDs (``'1abc'``; chain IDs like ``'1ABC-A'`` are reduced to their entry).
        dest: download folder (default ``<cache>/pdb``, cache = ``$FARFIELD_CACHE`` or ``~/.cache/farfield``).
        base_url: URL template with ``{ID}`` (upper case) or ``{id}`` (lower case), default
            :data:`BASE_URLS` ``[fmt]`` (RCSB).
        fmt: ``'cif'`` (mmCIF) or ``'bcif'`` (BinaryCIF).
        workers: parallel downloads.
        offline: no network (default: ``FARFIELD_OFFLINE``).
        search: extra folders searched (like ``dest``) before downloading.

    Returns:
        ``({ID: path}, [IDs that could not be fetched])``; failures are also reported in one warning that
        lists each with its URL and reason. Every returned file parses; a file in ``dest`` recorded in the
        manifest with another MD5 (changed or corrupted since) is fetched again.

    Raises:
        InputError: offline and some entries are missing (names them, their URLs and where to put them).
        ConfigError: unknown ``fmt``.
    """
    if fmt not in BASE_URLS:
        raise ConfigError(f"structure download format must be one of {sorted(BASE_URLS)} (MMTF is retired), "
                          f"got {fmt!r}")
    dest = Path(dest) if dest is not None else structures_cache()
    template = base_url or BASE_URLS[fmt]
    if "{id}" not in template and "{ID}" not in template:
        template = template.rstrip("/") + "/" + ("{ID}" if fmt == "cif" else "{id}") + _EXT[fmt]
    wanted = list(dict.fromkeys(split_chain_id(i)[0] for i in ids))
    manifest = _load_manifest(dest)
    index = StructureIndex([*search, dest])
    found, missing = {}, []
    for pid in wanted:
        p = index.find(pid)
        if p is not None and p.parent == dest and p.name in manifest and md5sum(p) != manifest[p.name]["md5"]:
            p.unlink()                      # changed since it was verified: fetch it again
            p = None
        if p is None:
            missing.append(pid)
        else:
            found[pid] = p
    if not missing:
        return found, []
    urls = {pid: template.format(ID=pid.upper(), id=pid.lower()) for pid in missing}
    if is_offline(offline):
        where = ", ".join(str(s) for s in [*search, dest])
        listing = "; ".join(f"{pid} ({urls[pid]})" for pid in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise InputError(", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""),
                         f"{len(missing)} structure file(s) missing and offline (FARFIELD_OFFLINE=1): "
                         f"{listing}{more}. To supply them, download them on a machine with network access "
                         f"and put them (named like 1abc.cif, 1ABC.cif.gz, 1ABC-A.pdb or pdb1abc.ent.gz) "
                         f"into {where} or into a folder passed as a structures folder")
    dest.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    failed: dict[str, str] = {}

    def one(pid: str) -> None:
        target = dest / (pid.lower() + _EXT[fmt])
        try:
            # the shared downloader: resumed, size-checked, parsed before it is put in place (no MD5 is known)
            download_file(urls[pid], target, timeout=timeout, progress=False, validate=_parses(target))
            digest = md5sum(target)
            with lock:                      # recorded as each file is accepted, so an interrupted fetch keeps it
                manifest[target.name] = {"md5": digest, "size": target.stat().st_size, "url": urls[pid]}
                found[pid] = target
                _save_manifest(dest, manifest)
        except InputError as e:
            failed[pid] = e.reason
        except (*NETWORK_ERRORS, ValueError) as e:     # ValueError: a malformed URL
            failed[pid] = network_error_reason(e)

    bar = None
    if progress and len(missing) > 1:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(missing), desc="download structures", unit="file")
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        for _ in pool.map(one, missing):
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    failures = [pid for pid in missing if pid in failed]
    if failures:
        warnings.warn(f"{len(failures)} of {len(wanted)} structure(s) could not be fetched: "
                      + "; ".join(f"{pid} from {urls[pid]}: {failed[pid]}" for pid in failures[:20])
                      + (f" and {len(failures) - 20} more" if len(failures) > 20 else "")
                      + f". Put a copy of each into {dest} (or a structures folder) to use them.", stacklevel=2)
    return {pid: found[pid] for pid in wanted if pid in found}, failures


# ------------------------------------------------------------------------------------------------ chains
def load_chain(path: str | Path, chain: str | None, read: ReadOptions | None = None) -> Structure:
    """Read ``chain`` (author chain ID; None = every chain) of a structure file.

    Args:
        path: a PDB / mmCIF / BinaryCIF file (optionally gzipped).
        chain: the author chain ID. When the file holds no chain of that name but a single chain and its
            name says it is that chain (``1ABC-A.pdb`` written with a blank chain ID), that chain is used;
            a case-insensitive match is accepted when it is unique.
        read: atom selection (default: first model, no waters, no hydrogens).

    Raises:
        InputError: the file cannot be read, or the chain is not in it (the message lists the chains).
    """
    path = Path(path)
    read = read or ReadOptions(waters=False, hydrogens=False)
    s = read_structure(path, ReadOptions(**{**read.to_dict(), "chains": None}))
    if chain is None:
        return s
    chains = s.chains
    pick = None
    if chain in chains:
        pick = chain
    else:
        ci = [c for c in chains if c.lower() == chain.lower()]
        parsed = _parse_name(path.name)
        if len(ci) == 1:
            pick = ci[0]
        elif len(chains) == 1 and parsed is not None and (parsed[1] or "").lower() == chain.lower():
            pick = chains[0]
    if pick is None:
        raise InputError(path, f"has no chain {chain!r} (chains: {chains})")
    out = s.select(s.chain_id == pick)
    out.name = f"{out.name}-{chain}" if not out.name.endswith(chain) else out.name
    return out


def read_seqres(path: str | Path, chain: str) -> str | None:
    """The full (SEQRES / ``entity_poly_seq``) one-letter sequence of ``chain`` from a PDB or mmCIF file
    (gemmi), or None when the file does not record one (e.g. a PDB file without SEQRES records, or
    BinaryCIF)."""
    import gemmi

    path = Path(path)
    try:
        st = gemmi.read_structure(str(path))
        st.setup_entities()
    except (RuntimeError, ValueError):
        return None
    if len(st) == 0:
        return None
    names = [c.name for c in st[0]]
    if chain not in names:
        return None
    sub = st[0][chain].get_polymer()
    ent = st.get_entity_of(sub) if len(sub) else None
    if ent is None or not ent.full_sequence:
        return None
    return gemmi.one_letter_code([gemmi.Entity.first_mon(m) for m in ent.full_sequence]).upper()


def seqres_index(resolved: str, seqres: str, numbers=None, min_identity: float = 0.9) -> np.ndarray:
    """Position in ``seqres`` ([S] one-letter) of each of the ``L`` resolved residues ([L] one-letter).

    1. Identical sequences map to ``arange(L)``.
    2. With the residues' author ``numbers`` ([L], strictly increasing, as most PDB entries number their
       chains along SEQRES): the placement ``numbers - numbers[0] + start`` that matches the most residues,
       when it matches at least ``min_identity`` of them. This places residues exactly where a gap in the
       model could be put in several places equally well by an alignment (e.g. a missing loop next to a
       residue type that repeats).
    3. Otherwise a global alignment (Needleman-Wunsch with affine gaps -10 / -1, free end gaps, BLOSUM62;
       biotite's ``align_optimal``) places each resolved residue, mutated or unknown ('X') ones included,
       so residues left out of the model become gaps.

    Returns:
        int64 [L], increasing; :class:`InputError` when a resolved residue has no counterpart.
    """
    L = len(resolved)
    if resolved == seqres:
        return np.arange(L, dtype=np.int64)
    if numbers is not None and L:
        num = np.asarray(numbers, dtype=np.int64)
        span = int(num[-1] - num[0])
        if len(num) == L and (L == 1 or (np.diff(num) > 0).all()) and span < len(seqres):
            res = np.frombuffer(resolved.encode(), dtype=np.uint8)
            ref = np.frombuffer(seqres.encode(), dtype=np.uint8)
            rel = num - num[0]
            starts = np.arange(len(seqres) - span)
            hits = (ref[starts[:, None] + rel[None, :]] == res[None, :]).sum(1)     # [starts]
            best = int(np.argmax(hits))
            if hits[best] >= min_identity * L:
                return rel + starts[best]
    from biotite.sequence import ProteinSequence
    from biotite.sequence.align import SubstitutionMatrix, align_optimal

    def seq(s):
        return ProteinSequence("".join(c if c in ProteinSequence.alphabet.get_symbols() else "X" for c in s))

    ali = align_optimal(seq(resolved), seq(seqres), SubstitutionMatrix.std_protein_matrix(), gap_penalty=(-10, -1),
                        terminal_penalty=False, max_number=1)[0]
    trace = ali.trace
    out = np.full(L, -1, dtype=np.int64)
    ok = (trace[:, 0] >= 0) & (trace[:, 1] >= 0)
    out[trace[ok, 0]] = trace[ok, 1]
    if (out < 0).any():
        raise InputError("structure", f"{int((out < 0).sum())} resolved residue(s) cannot be placed in the SEQRES "
                                      f"sequence (resolved {resolved[:30]}..., SEQRES {seqres[:30]}...)")
    return out


def deepfri_distance_map(ca: np.ndarray, index: np.ndarray | None = None, length: int | None = None) -> np.ndarray:
    """DeepFRI's SEQRES-length CA-CA distance map (Gligorijevic et al. 2021) from resolved residues.

    Args:
        ca: [L, 3] CA coordinates of the resolved residues.
        index: [L] their SEQRES positions (:func:`seqres_index`; default ``arange(L)``).
        length: S, the SEQRES length (default ``L``).

    Returns:
        float64 [S, S]: Euclidean distances between resolved residues at their SEQRES positions;
        :data:`PAD_DISTANCE` (10000) wherever an unresolved residue is involved, except 1.0 between two
        unresolved residues at most one position apart (diagonal included), as DeepFRI's maps hold.
    """
    ca = np.asarray(ca, dtype=np.float64)
    index = np.arange(len(ca)) if index is None else np.asarray(index, dtype=np.int64)
    length = len(ca) if length is None else int(length)
    resolved = np.zeros(length, dtype=bool)
    resolved[index] = True
    i = np.arange(length)
    pad_pair = ~resolved[:, None] & ~resolved[None, :]
    out = np.where(pad_pair & (np.abs(i[:, None] - i[None, :]) <= 1), 1.0, PAD_DISTANCE)
    out[np.ix_(index, index)] = np.linalg.norm(ca[:, None] - ca[None, :], axis=-1)
    return out

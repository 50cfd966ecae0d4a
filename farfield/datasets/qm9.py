"""QM9 (Ramakrishnan, Dral, Rupp and von Lilienfeld, "Quantum chemistry structures and properties of 134 kilo
molecules", Scientific Data 1, 140022, 2014) and its ATOM3D version, SMP (Townshend et al., "ATOM3D: Tasks on
molecules in three dimensions", NeurIPS 2021 Datasets and Benchmarks).

Sources :func:`qm9` reads (``path``):

* a folder of the raw extended-XYZ files ``dsgdb9nsd_NNNNNN.xyz`` (or one such file): line 2 holds
  ``gdb N`` and 15 properties ``A B C mu alpha homo lumo gap r2 zpve U0 U H G Cv`` in the units of the paper
  (GHz, Debye, Bohr^3, Hartree, Bohr^2, cal/(mol K)); Mathematica-style exponents (``1.2*^-6``) are read by
  :func:`farfield.io.readers.read_xyz`;
* an ASE SQLite database (``*.db``), the form SchNetPack (Schuett et al., J. Chem. Theory Comput. 15, 448,
  2019) builds: one row per molecule, the 15 properties in ``row.data`` under SchNetPack's names and their
  units in the database metadata (``_property_unit_dict``; the SchNetPack 1.x/2.x QM9 build stores Hartree,
  Debye, GHz, a0^3, a0^2 and cal/mol/K, not eV). The file is read with :mod:`sqlite3` and numpy following
  ASE's documented row layout (``numbers`` int32 and ``positions`` float64 blobs; ``data`` either ASE's
  binary object encoding - an 8-byte offset, the raw arrays, then JSON whose ``__ndarray__`` entries point
  into them - or ASE's JSON text encoding), so that QM9 does not pull in ASE as a dependency. Rows carry no
  QM9 index; SchNetPack writes the molecules in QM9 order, so row ``id`` i is named ``gdb_i`` unless its
  key-value pairs hold ``index`` / ``gdb_index`` (checked on gdb_5, HCN, against the raw file).

:func:`smp` reads ATOM3D SMP LMDBs (items ``atoms`` - an ATOM3D atom table -, ``labels`` - the 15 raw
properties in file order then ATOM3D's five atomisation values ``U0_atom U_atom H_atom G_atom Cv_atom``, the
first 15 in the raw file units and the atomisation energies in kcal/mol (MoleculeNet's QM9 table, from which
ATOM3D takes them; ``Cv_atom`` in cal/(mol K); ATOM3D's ``prepare_lmdb`` for SMP) -, optional ``bonds``, not
used: edges come from the edge spec; ids ``gdb_N``, ``"('gdb_N', ...)"`` or file names ``dsgdb9nsd_NNNNNN.xyz``).

Units. Both loaders convert every source to one convention (the one of the tables of SchNet, DimeNet and
PaiNN, whose MAEs are quoted in meV): energies (homo, lumo, gap, zpve, U0, U, H, G) in **eV**
(1 Hartree = 27.211386246 eV, CODATA 2018), mu in Debye, alpha in Bohr^3 (a0^3), r2 in Bohr^2, Cv in
cal/(mol K), rotational constants in GHz (:data:`UNITS`). ``atomref=True`` subtracts the published energies of
the isolated atoms (:data:`ATOMREF`, Ramakrishnan et al. 2014, figshare "Atomref" table) from U0, U, H, G and
Cv, giving atomisation energies (negative, in eV).

Splits (``split`` option): ``'random'`` (default for raw files and databases) draws, with ``split_seed``, the
common 110,000 / 10,000 / rest protocol (Gilmer et al. 2017; Schuett et al. 2018), scaled by the number of
molecules when there are fewer than 130,831 (the QM9 count after removing the 3,054 uncharacterised ones);
``'atom3d'`` uses ATOM3D's SMP id lists (``split_dir`` holding ``ids_training.txt``, ``ids_validation.txt``,
``ids_test.txt`` and ``indices_excluded.dat``; the last holds 4,452 **0-based** QM9 indices, i.e. gdb_(i+1):
the 3,054 uncharacterised molecules plus those RDKit could not parse; they are in no list and are dropped);
``'none'`` leaves the split to the data module. Each graph then carries ``split`` [1] long (0/1/2).
``excluded`` (a path to such an ``indices_excluded.dat``) drops those molecules under any split.

Graphs: ``pos`` [N, 3] (Angstrom), ``x_s`` [N, 6] element one-hot over H, C, N, O, F + other (``elements``
option: any preset of :class:`~farfield.features.atoms.ElementVocabulary`), ``atom_type`` [N],
``chain_index`` / ``residue_index`` [N] zeros, ``y`` [1, k] for the k requested targets, ``name`` ``gdb_N``,
``graph_key`` [1] = N. ``hydrogens=False`` (the library-wide default) keeps heavy atoms only; QM9 models
normally use every atom, so pass ``hydrogens=True`` (``data.hydrogens=true``) for the usual benchmark. Atom
references always count the hydrogens.

Reference-baseline features (models never read them; a study fits a ridge on each): ``baseline_composition``
[1, 5] float, the counts of H, C, N, O and F atoms (hydrogens always counted); ``baseline_ecfp`` [1, 2048]
float16, ``log(1 + c)`` of the ECFP4 counts ``c`` (RDKit Morgan count fingerprint, radius 2, 2,048 bins;
:mod:`farfield.features.fingerprints`) of the molecule perceived from its 3D structure, every atom
included, with RDKit's ``DetermineBonds`` (xyz2mol; QM9 molecules are neutral, charge 0), then hydrogens
removed. The structure is used rather than the SMILES of the raw files, so that raw files, databases and
ATOM3D LMDBs (which carry no SMILES) give the same fingerprint, and the bonds are those of the relaxed
geometry the properties were computed at (the files' first SMILES is GDB's, which differs for some
molecules). A molecule whose bond orders cannot be assigned gets the fingerprint of its connectivity with
single bonds, with a warning naming how many. Option ``ecfp=False`` leaves the fingerprint out (it costs about
1 ms per molecule and 4 KiB per graph, some 0.5 GB for all of QM9).

Readout (``task.pooling=auto``, :data:`POOLING_BY_TARGET`): ``sum`` for the extensive targets (U0, U, H, G,
ZPVE, Cv, alpha, r2, mu, the ``*_atom`` values), as SchNet (Schuett et al. 2018) and DimeNet (Gasteiger et al.
2020) pool QM9; ``mean`` for the orbital energies homo, lumo and gap, which do not grow with the molecule
(SchNetPack's per-target choice, Schuett et al. 2019). Several targets with different readouts share one head
pooled with ``sum``.
"""
from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from farfield.data import fields as F
from farfield.errors import ConfigError, InputError

__all__ = ["TARGETS", "RAW_TARGETS", "ATOM3D_LABELS", "UNITS", "ATOMREF", "HARTREE_EV", "POOLING_BY_TARGET", "qm9",
           "smp", "read_raw_folder", "read_ase_db", "random_split_sizes", "atom3d_split", "atomref_energy"]

#: 1 Hartree in eV (CODATA 2018)
HARTREE_EV = 27.211386246
#: 1 Bohr in Angstrom (CODATA 2018)
BOHR_ANGSTROM = 0.529177210903
#: 1 Debye in e*Angstrom
DEBYE_EANG = 0.20819434
#: 1 kcal/mol and 1 kJ/mol in eV
KCALMOL_EV = 0.0433641153
KJMOL_EV = 0.0103642688

#: the 15 properties of the raw files' second line, in file order
RAW_TARGETS = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
#: the 12 standard regression targets
TARGETS = ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
#: ATOM3D SMP ``labels``: the raw properties in file order, then the atomisation values ATOM3D appends
ATOM3D_LABELS = RAW_TARGETS + ("U0_atom", "U_atom", "H_atom", "G_atom", "Cv_atom")
_ENERGIES = ("homo", "lumo", "gap", "zpve", "U0", "U", "H", "G")

#: target -> unit after conversion (both loaders)
UNITS = {"A": "GHz", "B": "GHz", "C": "GHz", "mu": "D", "alpha": "a0^3", "homo": "eV", "lumo": "eV", "gap": "eV",
         "r2": "a0^2", "zpve": "eV", "U0": "eV", "U": "eV", "H": "eV", "G": "eV", "Cv": "cal/(mol K)",
         "U0_atom": "eV", "U_atom": "eV", "H_atom": "eV", "G_atom": "eV", "Cv_atom": "cal/(mol K)"}

#: Energies of the isolated atoms (Ramakrishnan et al. 2014, figshare "Atomref: reference thermochemical
#: energies of H, C, N, O, F atoms", B3LYP/6-31G(2df,p)): element -> (U0, U, H, G) in Hartree and Cv in
#: cal/(mol K). ZPVE of an atom is 0.
ATOMREF = {
    "H": (-0.500273, -0.498857, -0.497912, -0.510927, 2.981),
    "C": (-37.846772, -37.845355, -37.844411, -37.861317, 2.981),
    "N": (-54.583861, -54.582445, -54.581501, -54.598897, 2.981),
    "O": (-75.064579, -75.063163, -75.062219, -75.079532, 2.981),
    "F": (-99.718730, -99.717314, -99.716370, -99.733544, 2.981),
}
_ATOMREF_TARGETS = ("U0", "U", "H", "G", "Cv")

#: raw-file unit -> factor to :data:`UNITS` (only energies change)
#: ATOM3D's ``*_atom`` energies come from MoleculeNet's QM9 table (``gdb9.sdf.csv``), whose atomisation
#: energies are in kcal/mol (methane, gdb_1: U0 - atomrefs = -0.631066 Ha = -396.0 kcal/mol, the table's -395.9996)
_ATOM_ENERGIES = ("U0_atom", "U_atom", "H_atom", "G_atom")
_RAW_FACTOR = {t: (HARTREE_EV if t in _ENERGIES else KCALMOL_EV if t in _ATOM_ENERGIES else 1.0)
               for t in ATOM3D_LABELS}

#: SchNetPack's QM9 property names
SCHNETPACK_NAMES = {"rotational_constant_A": "A", "rotational_constant_B": "B", "rotational_constant_C": "C",
                    "dipole_moment": "mu", "isotropic_polarizability": "alpha", "homo": "homo", "lumo": "lumo",
                    "gap": "gap", "electronic_spatial_extent": "r2", "zpve": "zpve", "energy_U0": "U0",
                    "energy_U": "U", "enthalpy_H": "H", "free_energy": "G", "heat_capacity": "Cv"}

#: unit strings met in databases -> factor to our unit, per kind of quantity
_UNIT_FACTORS = {
    "energy": {"ha": HARTREE_EV, "hartree": HARTREE_EV, "ev": 1.0, "mev": 1e-3, "kcal/mol": KCALMOL_EV,
               "kj/mol": KJMOL_EV},
    "dipole": {"d": 1.0, "debye": 1.0, "e*ang": 1 / DEBYE_EANG, "eang": 1 / DEBYE_EANG, "e*a": 1 / DEBYE_EANG},
    "volume": {"a0^3": 1.0, "bohr^3": 1.0, "a0**3": 1.0, "bohr**3": 1.0, "ang^3": BOHR_ANGSTROM ** -3,
               "ang**3": BOHR_ANGSTROM ** -3, "a^3": BOHR_ANGSTROM ** -3},
    "area": {"a0^2": 1.0, "bohr^2": 1.0, "a0**2": 1.0, "bohr**2": 1.0, "ang^2": BOHR_ANGSTROM ** -2,
             "ang**2": BOHR_ANGSTROM ** -2, "a^2": BOHR_ANGSTROM ** -2},
    "frequency": {"ghz": 1.0, "mhz": 1e-3},
    "heat": {"cal/mol/k": 1.0, "cal/(mol k)": 1.0, "cal/mol k": 1.0, "kcal/mol/k": 1e3},
}
_KIND = {"A": "frequency", "B": "frequency", "C": "frequency", "mu": "dipole", "alpha": "volume", "r2": "area",
         "Cv": "heat", **{t: "energy" for t in _ENERGIES}}

#: the common QM9 protocol: 110,000 training and 10,000 validation molecules of 130,831
PROTOCOL = (110_000, 10_000, 130_831)
SPLITS = ("random", "atom3d", "none")
_SPLIT_FILES = ("ids_training.txt", "ids_validation.txt", "ids_test.txt")


# -------------------------------------------------------------------------------------------- targets
def _targets(target, allowed: tuple[str, ...], default: str) -> list[str]:
    """``target`` (None, a name, a comma-separated string, a list, or ``'all'``) -> list of names."""
    if target is None:
        return [default]
    if isinstance(target, str):
        names = list(TARGETS) if target == "all" else [t.strip() for t in target.split(",") if t.strip()]
    elif isinstance(target, (list, tuple)):
        names = [str(t) for t in target]
    else:
        raise ConfigError(f"target must be a name, a list of names or 'all', got {target!r}")
    bad = [t for t in names if t not in allowed]
    if bad or not names:
        raise ConfigError(f"unknown QM9 target(s) {bad or names!r}; valid names: {list(allowed)} or 'all'")
    return names


def atomref_energy(elements, target: str) -> float:
    """Sum of the isolated-atom references of ``elements`` for ``target`` in :data:`UNITS` (0 for targets
    without a reference)."""
    if target not in _ATOMREF_TARGETS:
        return 0.0
    k = _ATOMREF_TARGETS.index(target)
    total = 0.0
    for e in elements:
        e = str(e).capitalize()
        if e not in ATOMREF:
            raise InputError(str(e), f"no QM9 atom reference for element {e!r} (QM9 holds H, C, N, O, F)")
        total += ATOMREF[e][k]
    return total * (HARTREE_EV if target != "Cv" else 1.0)


# -------------------------------------------------------------------------------------------- molecules
class _Molecule:
    """One molecule: elements [N], coordinates [N, 3] (Angstrom), QM9 index, properties in :data:`UNITS`."""

    __slots__ = ("elements", "coords", "index", "props", "source")

    def __init__(self, elements, coords, index: int, props: dict, source: str):
        self.elements, self.coords, self.index, self.props, self.source = elements, coords, index, props, source


def read_raw_folder(path: str | Path) -> list[_Molecule]:
    """The QM9 molecules of a raw ``.xyz`` file or a folder of them (sorted by QM9 index), properties
    converted to :data:`UNITS`. Raises :class:`InputError` for a folder without ``.xyz`` files, a file that
    is not QM9 extended XYZ (no ``gdb N`` + 15 properties line), or a malformed file."""
    from farfield.io.readers import read_xyz

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.xyz")) + sorted(path.glob("*.xyz.gz"))
    if not files:
        raise InputError(path, "no QM9 .xyz files (dsgdb9nsd_*.xyz) in this folder")
    out = []
    for f in files:
        frames = read_xyz(f)
        if len(frames) != 1:
            raise InputError(f, f"holds {len(frames)} XYZ frames; a QM9 file holds one molecule")
        s = frames[0]
        if "gdb_index" not in s.properties:
            raise InputError(f, "not a QM9 extended-XYZ file: line 2 must be 'gdb N' followed by the 15 properties "
                                f"{' '.join(RAW_TARGETS)}")
        props = {t: float(s.properties[t]) * _RAW_FACTOR[t] for t in RAW_TARGETS}
        _check_finite(props, f)
        out.append(_Molecule(np.asarray(s.element).astype(str), np.asarray(s.coords, dtype=np.float64),
                             int(s.properties["gdb_index"]), props, str(f)))
    out.sort(key=lambda m: m.index)
    return out


def _check_finite(props: dict, where) -> None:
    bad = [k for k, v in props.items() if not np.isfinite(v)]
    if bad:
        raise InputError(where, f"non-finite value(s) for {bad}")


def _ase_decode(raw, where: str):
    """ASE's encodings of a ``data`` / ``key_value_pairs`` column: binary (``ase.db.core.object_to_bytes``:
    int64 offset of the JSON part, the raw array bytes, then JSON) or JSON text (``ase.io.jsonio``)."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        return _ndarrays(json.loads(raw), None)
    if len(raw) < 8:
        raise InputError(where, "data blob too short for ASE's binary encoding")
    offset = int(np.frombuffer(raw[:8], "<i8")[0])
    if not 8 <= offset <= len(raw):
        try:                               # an older database storing JSON text as bytes
            return _ndarrays(json.loads(raw.decode()), None)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(where, "data blob is neither ASE's binary nor its JSON encoding") from None
    return _ndarrays(json.loads(raw[offset:].decode()), raw)


def _ndarrays(obj, raw: bytes | None):
    if isinstance(obj, list):
        return [_ndarrays(v, raw) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__ndarray__" in obj:
        shape, dtype, payload = obj["__ndarray__"]
        dtype = np.dtype(dtype).newbyteorder("<")
        if isinstance(payload, int):           # binary encoding: offset into the blob
            n = int(np.prod(shape)) if shape else 1
            return np.frombuffer(raw, dtype, count=n, offset=payload).reshape(shape).astype(dtype.newbyteorder("="))
        return np.asarray(payload, dtype=dtype).reshape(shape)
    return {k: _ndarrays(v, raw) for k, v in obj.items()}


def _blob(raw, dtype, shape, where: str) -> np.ndarray:
    if raw is None:
        raise InputError(where, "missing atoms (numbers / positions)")
    if isinstance(raw, str):
        return np.asarray(json.loads(raw), dtype=dtype).reshape(shape)
    a = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<"))
    try:
        return a.reshape(shape).astype(dtype)
    except ValueError:
        raise InputError(where, f"blob of {a.size} values does not fit shape {shape}") from None


def _normalise_unit(unit: str) -> str:
    """Lower case without spaces; repeated factors as powers (SchNetPack writes ``'a0 a0 a0'`` for Bohr^3)."""
    parts = unit.strip().lower().split()
    if len(parts) > 1 and len(set(parts)) == 1:
        return f"{parts[0]}^{len(parts)}"
    return "".join(parts)


def _unit_factor(target: str, unit: str, path) -> float:
    kind = _KIND[target]
    key = _normalise_unit(unit)
    table = {k.replace(" ", ""): v for k, v in _UNIT_FACTORS[kind].items()}
    if key not in table:
        raise InputError(path, f"unit {unit!r} of {target} is not one farfield converts ({kind}: "
                               f"{sorted(_UNIT_FACTORS[kind])})")
    return table[key]


def read_ase_db(path: str | Path, units: dict | None = None) -> list[_Molecule]:
    """The molecules of an ASE SQLite database in SchNetPack's QM9 layout, properties converted to
    :data:`UNITS` from the database's ``_property_unit_dict`` metadata (or ``units``: SchNetPack property name
    or our target name -> unit string, which takes precedence). Raises :class:`InputError` for a file that is
    not an ASE database, holds no rows, lacks properties or units."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    with open(path, "rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise InputError(path, "not an SQLite database (an ASE .db file)")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        if "systems" not in tables:
            raise InputError(path, "not an ASE database: no 'systems' table")
        meta = {}
        if "information" in tables:
            for name, value in con.execute("select name, value from information"):
                if name == "metadata":
                    meta = json.loads(value)
        rows = con.execute("select id, numbers, positions, key_value_pairs, data from systems order by id").fetchall()
    except sqlite3.DatabaseError as e:
        raise InputError(path, f"cannot read the database: {e}") from None
    finally:
        try:
            con.close()
        except UnboundLocalError:
            pass
    if not rows:
        raise InputError(path, "the database holds no molecules")
    given = {SCHNETPACK_NAMES.get(k, k): v for k, v in (meta.get("_property_unit_dict") or {}).items()}
    given.update({SCHNETPACK_NAMES.get(k, k): v for k, v in (units or {}).items()})
    from farfield.io.readers import normalise_element
    from rdkit import Chem
    table = Chem.GetPeriodicTable()
    out = []
    for rid, numbers, positions, kvp, data in rows:
        where = f"{path}[id={rid}]"
        z = _blob(numbers, np.int32, (-1,), where)
        xyz = _blob(positions, np.float64, (len(z), 3), where)
        kv = json.loads(kvp) if kvp else {}
        d = _ase_decode(data, where)
        props = {}
        for sp, t in SCHNETPACK_NAMES.items():
            v = d.get(sp, d.get(t, kv.get(sp, kv.get(t))))
            if v is None:
                raise InputError(where, f"property {sp!r} ({t}) is missing; the row holds {sorted(d) + sorted(kv)}")
            if t not in given:
                raise InputError(path, f"no unit for {sp!r} in the database metadata (_property_unit_dict); pass "
                                       "units={...}")
            props[t] = float(np.asarray(v, dtype=np.float64).reshape(-1)[0]) * _unit_factor(t, given[t], path)
        _check_finite(props, where)
        if not np.isfinite(xyz).all():
            raise InputError(where, "non-finite coordinates")
        index = int(kv.get("gdb_index", kv.get("index", rid)))
        elements = np.array([normalise_element(table.GetElementSymbol(int(a))) for a in z])
        out.append(_Molecule(elements, xyz, index, props, where))
    return out


# -------------------------------------------------------------------------------------------- splits
def random_split_sizes(n: int) -> tuple[int, int, int]:
    """(train, val, test) sizes of the 110,000 / 10,000 / rest protocol, scaled to ``n`` molecules when
    ``n`` < 130,831 (each part >= 1 when n >= 3)."""
    tr, va, total = PROTOCOL
    if n >= total:
        return tr, va, n - tr - va
    if n < 3:
        raise InputError("qm9", f"{n} molecule(s) cannot be split into train / val / test")
    n_va = max(1, int(round(n * va / total)))
    n_te = max(1, n - int(round(n * tr / total)) - n_va)
    return n - n_va - n_te, n_va, n_te


def atom3d_split(split_dir: str | Path) -> tuple[dict[int, int], set[int]]:
    """ATOM3D's SMP split: QM9 index -> 0/1/2 from ``ids_training.txt``, ``ids_validation.txt`` and
    ``ids_test.txt`` (``gdb_N`` per line), and the excluded QM9 indices (``indices_excluded.dat`` holds
    0-based indices: i -> gdb_(i+1))."""
    split_dir = Path(split_dir)
    which: dict[int, int] = {}
    for k, name in enumerate(_SPLIT_FILES):
        f = split_dir / name
        if not f.is_file():
            raise InputError(f, "ATOM3D SMP split file not found")
        for ln, line in enumerate(f.read_text().splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            m = re.fullmatch(r"gdb_(\d+)", line)
            if not m:
                raise InputError(f, f"line {ln}: expected 'gdb_N', found {line[:40]!r}")
            i = int(m.group(1))
            if i in which and which[i] != k:
                raise InputError(f, f"gdb_{i} is also in {_SPLIT_FILES[which[i]]}")
            which[i] = k
    return which, _excluded(split_dir / "indices_excluded.dat", required=False)


def _excluded(path: Path, required: bool = True) -> set[int]:
    path = Path(path)
    if not path.is_file():
        if required:
            raise InputError(path, "excluded-indices file not found")
        return set()
    out = set()
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.add(int(line.strip()) + 1)
            except ValueError:
                raise InputError(path, f"line {ln}: {line.strip()[:40]!r} is not an integer index") from None
    return out


def _assign_splits(mols: list[_Molecule], split: str, split_seed: int, split_dir, where) -> list[int] | None:
    if split == "none":
        return None
    if split == "random":
        n = len(mols)
        if n < 3:
            return None                    # too few to split: no split field (the data module refuses < 3)
        n_tr, n_va, _ = random_split_sizes(n)
        order = np.random.default_rng(split_seed).permutation(n)
        out = np.empty(n, dtype=np.int64)
        out[order[:n_tr]], out[order[n_tr:n_tr + n_va]], out[order[n_tr + n_va:]] = 0, 1, 2
        return out.tolist()
    if split_dir is None:
        raise ConfigError("split='atom3d' needs split_dir: the folder holding ATOM3D's ids_training.txt, "
                          "ids_validation.txt, ids_test.txt and indices_excluded.dat")
    which, _ = atom3d_split(split_dir)
    missing = [m.index for m in mols if m.index not in which]
    if missing:
        raise InputError(where, f"{len(missing)} molecule(s) are in none of ATOM3D's split lists (e.g. gdb_"
                                f"{missing[0]}); drop them with excluded=<indices_excluded.dat> or use split='random'")
    return [which[m.index] for m in mols]


# -------------------------------------------------------------------------------------------- graphs
#: the elements of ``baseline_composition``
COMPOSITION_ELEMENTS = ("H", "C", "N", "O", "F")


def _graphs(mols: list[_Molecule], names: list[str], *, hydrogens: bool, atomref: bool, elements, splits,
            dtype, ecfp: bool = True) -> list[Data]:
    from farfield.data.pipeline import Featuriser, FeaturiserConfig
    from farfield.features.fingerprints import ecfp_baseline, ecfp_counts_of_mol, mol_from_coordinates
    from farfield.io.structure import Structure

    feat = Featuriser(FeaturiserConfig(elements=elements, edges="radius:5.0", dtype=dtype))
    out, single_bonds = [], []
    for i, m in enumerate(mols):
        y = [m.props[t] - (atomref_energy(m.elements, t) if atomref else 0.0) for t in names]
        keep = np.ones(len(m.elements), bool) if hydrogens else np.char.upper(m.elements.astype(str)) != "H"
        s = Structure.from_arrays(m.coords[keep], m.elements[keep], source=m.source, name=f"gdb_{m.index}")
        g = feat.atom_graph(s)
        g[F.Y] = torch.tensor([y], dtype=feat.dtype)
        g[F.NAME] = f"gdb_{m.index}"
        g[F.GRAPH_KEY] = torch.tensor([m.index])
        if splits is not None:
            g[F.SPLIT] = torch.tensor([int(splits[i])])
        up = np.char.capitalize(m.elements.astype(str))
        g["baseline_composition"] = torch.tensor([[float((up == e).sum()) for e in COMPOSITION_ELEMENTS]],
                                                 dtype=feat.dtype)
        if ecfp:
            mol, orders = mol_from_coordinates(m.elements, m.coords, charge=0, where=f"gdb_{m.index} ({m.source})")
            if not orders:
                single_bonds.append(f"gdb_{m.index}")
            g["baseline_ecfp"] = ecfp_baseline(ecfp_counts_of_mol(mol))
        out.append(g)
    if single_bonds:
        import warnings
        warnings.warn(f"qm9: RDKit could not assign bond orders to {len(single_bonds)} molecule(s) (e.g. "
                      f"{', '.join(single_bonds[:3])}); their ECFP baseline features use single bonds", stacklevel=3)
    return out


def _options(options: dict, allowed: tuple[str, ...], loader: str) -> None:
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ConfigError(f"unknown {loader} option(s) {bad}; options: {sorted(allowed)}")


_QM9_OPTIONS = ("atomref", "split", "split_seed", "split_dir", "excluded", "elements", "units", "dtype", "ecfp")


def qm9(path: str | Path | None = None, *, hydrogens: bool = False, target=None, **options) -> list[Data]:
    """QM9 from raw ``dsgdb9nsd_*.xyz`` files (a folder or one file) or an ASE / SchNetPack database (``.db``).

    Args:
        path: the folder / file (required: farfield does not download QM9).
        hydrogens: keep hydrogen atoms as nodes (the usual QM9 setting; default False, heavy atoms only).
        target: one of :data:`TARGETS` (or ``A``, ``B``, ``C``), a list or comma-separated string of them, or
            ``'all'`` (the 12 standard targets); default ``U0``. ``y`` is [1, k].
        atomref: subtract the isolated-atom energies (:data:`ATOMREF`) from U0, U, H, G, Cv.
        split: ``'random'`` (default; seeded by ``split_seed``), ``'atom3d'`` (needs ``split_dir``) or
            ``'none'``.
        excluded: path of an ``indices_excluded.dat`` (0-based QM9 indices) whose molecules are dropped.
        elements: element vocabulary preset for ``x_s`` (default ``'qm9'``: H C N O F + other).
        units: for databases, property -> unit string overriding the database metadata.
        dtype: ``'float32'`` (default) or ``'float64'``.
        ecfp: add the ECFP reference-baseline features ``baseline_ecfp`` (default True; see the module docstring).

    Returns:
        a list of ``Data`` in the field layout of :mod:`farfield.data.fields` (see the module docstring).

    Raises:
        ConfigError: unknown target, option or split. InputError: missing / malformed files (named).
    """
    _options(options, _QM9_OPTIONS, "qm9")
    names = _targets(target, TARGETS + ("A", "B", "C"), qm9.default_target)
    if path is None:
        raise ConfigError("qm9 needs data.path: a folder of QM9 dsgdb9nsd_*.xyz files or an ASE/SchNetPack .db "
                          "file (farfield does not download QM9)")
    split = options.get("split", "random")
    if split not in SPLITS:
        raise ConfigError(f"qm9 split must be one of {SPLITS}, got {split!r}")
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found")
    if path.is_file() and path.suffix == ".db":
        mols = read_ase_db(path, options.get("units"))
    else:
        if options.get("units") is not None:
            raise ConfigError("qm9 option 'units' applies to databases only (raw files have fixed units)")
        mols = read_raw_folder(path)
    return _finish(mols, names, hydrogens, options, split, path)


def _finish(mols, names, hydrogens, options, split, where) -> list[Data]:
    if options.get("excluded") is not None:
        drop = _excluded(Path(options["excluded"]))
        mols = [m for m in mols if m.index not in drop]
        if not mols:
            raise InputError(where, "every molecule is in the excluded list")
    seen = {}
    for m in mols:
        if m.index in seen:
            raise InputError(where, f"gdb_{m.index} occurs twice ({seen[m.index]} and {m.source})")
        seen[m.index] = m.source
    seed = options.get("split_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"split_seed must be an integer >= 0, got {seed!r}")
    splits = _assign_splits(mols, split, seed, options.get("split_dir"), where)
    ecfp = options.get("ecfp", True)
    if not isinstance(ecfp, bool):
        raise ConfigError(f"option ecfp must be true or false, got {ecfp!r}")
    return _graphs(mols, names, hydrogens=hydrogens, atomref=bool(options.get("atomref", False)),
                   elements=options.get("elements", "qm9"), splits=splits, dtype=options.get("dtype", "float32"),
                   ecfp=ecfp)


qm9.default_target = "U0"
qm9.units = {t: UNITS[t] for t in TARGETS + ("A", "B", "C")}
#: the readout per target (``task.pooling=auto``): sum for the extensive properties (energies, ZPVE, Cv, alpha,
#: r2, mu; atomisation values), as SchNet (Schuett et al. 2018) and DimeNet (Gasteiger et al. 2020) pool QM9;
#: mean for the intensive orbital energies, as SchNetPack does (Schuett et al. 2019: "avg" for homo, lumo, gap).
#: Targets that disagree (``target=homo,U0``, ``all``) share one head: sum.
POOLING_BY_TARGET = {"homo": "mean", "lumo": "mean", "gap": "mean"}
_TASK = {"kind": "graph_regression", "num_outputs": 1, "pooling": "sum", "pooling_by_target": POOLING_BY_TARGET}
qm9.info = {"provides_edges": False, "task": dict(_TASK), "targets": list(TARGETS),
            "source": "Ramakrishnan et al. 2014"}


# -------------------------------------------------------------------------------------------- ATOM3D SMP
_GDB_ID = re.compile(r"(?:dsgdb9nsd_|\bgdb_?)0*(\d+)")


def _smp_index(item_id, where) -> int:
    m = _GDB_ID.search(str(item_id))
    if not m:
        raise InputError(where, f"id {str(item_id)[:60]!r} names no QM9 molecule (expected gdb_N or dsgdb9nsd_N)")
    return int(m.group(1))


def _smp_molecules(path: Path, split_of: int | None) -> list[tuple[_Molecule, int | None]]:
    from farfield.io.atom3d import Atom3DLMDB
    from farfield.io.readers import normalise_element

    ds = Atom3DLMDB(path)
    if len(ds) == 0:
        raise InputError(path, "the LMDB holds no items")
    out = []
    for i in range(len(ds)):
        item = ds[i]
        where = f"{path}[{i}]"
        for key in ("atoms", "labels"):
            if key not in item:
                raise InputError(where, f"SMP item lacks the field {key!r}; it has {sorted(item)}")
        atoms = item["atoms"]
        if not hasattr(atoms, "columns") or not {"x", "y", "z", "element"} <= set(atoms.columns) or len(atoms) == 0:
            raise InputError(where, "field 'atoms' is not a non-empty atom table with x, y, z, element")
        labels = item["labels"]
        if hasattr(labels, "to_numpy"):
            labels = labels.to_numpy().reshape(-1).tolist()
        try:
            labels = [float(v) for v in labels]
        except (TypeError, ValueError):
            raise InputError(where, "field 'labels' is not a list of numbers") from None
        if len(labels) < len(RAW_TARGETS):
            raise InputError(where, f"field 'labels' holds {len(labels)} values; ATOM3D SMP has at least "
                                    f"{len(RAW_TARGETS)} ({' '.join(ATOM3D_LABELS)})")
        props = {t: v * _RAW_FACTOR[t] for t, v in zip(ATOM3D_LABELS, labels)}
        _check_finite(props, where)
        elements = np.array([normalise_element(e) for e in atoms["element"].astype(str)])
        coords = atoms[["x", "y", "z"]].to_numpy(dtype=np.float64)
        if not np.isfinite(coords).all():
            raise InputError(where, "non-finite coordinates")
        index = _smp_index(item.get("id", ""), where)
        out.append((_Molecule(elements, coords, index, props, where), split_of))
    return out


_SMP_OPTIONS = ("atomref", "split", "split_seed", "split_dir", "excluded", "elements", "dtype", "ecfp")
_SPLIT_DIRS = (("train", "training"), ("val", "valid", "validation"), ("test",))


def _split_subdirs(path: Path) -> list[Path] | None:
    """``[train, val, test]`` LMDB folders under ``path`` (ATOM3D's ``split-by-.../data`` layout), or None."""
    for base in (path, path / "data"):
        found = []
        for names in _SPLIT_DIRS:
            d = next((base / n for n in names if (base / n / "data.mdb").is_file()), None)
            found.append(d)
        if all(found):
            return found
    return None


def smp(path: str | Path | None = None, *, hydrogens: bool = False, target=None, **options) -> list[Data]:
    """ATOM3D SMP (QM9) LMDBs: one LMDB (split ``'random'`` by default, or ``'atom3d'`` with ``split_dir``)
    or a folder with ``train`` / ``val`` / ``test`` LMDBs (ATOM3D's ``split-by-random/data`` layout; that split
    is used, ``split='official'``). Targets: :data:`ATOM3D_LABELS` names (the 12 standard ones, ``A``, ``B``,
    ``C`` and ATOM3D's ``*_atom`` atomisation values), converted to :data:`UNITS`; default ``U0``. Options as
    :func:`qm9`. Raises :class:`InputError` for an item missing ``atoms`` / ``labels`` or with too few labels."""
    _options(options, _SMP_OPTIONS, "smp")
    names = _targets(target, ATOM3D_LABELS, smp.default_target)
    if path is None:
        raise ConfigError("smp needs data.path: an ATOM3D SMP LMDB folder (farfield does not download it)")
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found")
    subdirs = _split_subdirs(path)
    if subdirs is not None:
        split = options.get("split", "official")
        if split != "official":
            raise ConfigError(f"{path} holds ATOM3D's train/val/test LMDBs: their split is used (split='official'), "
                              f"got split={split!r}")
        pairs = [p for k, d in enumerate(subdirs) for p in _smp_molecules(d, k)]
        out = _finish([m for m, _ in pairs], names, hydrogens, options, "none", path)
        split_of = {m.index: k for m, k in pairs}
        for g in out:
            g[F.SPLIT] = torch.tensor([split_of[int(g[F.GRAPH_KEY])]])
        return out
    split = options.get("split", "random")
    if split not in SPLITS:
        raise ConfigError(f"smp split must be one of {SPLITS} (or 'official' for a train/val/test folder), "
                          f"got {split!r}")
    mols = [m for m, _ in _smp_molecules(path, None)]
    return _finish(mols, names, hydrogens, options, split, path)


smp.default_target = "U0"
smp.units = dict(UNITS)
smp.info = {"provides_edges": False, "task": dict(_TASK), "targets": list(ATOM3D_LABELS),
            "source": "Townshend et al. 2021 (ATOM3D SMP)"}

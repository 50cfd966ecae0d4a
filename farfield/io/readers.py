"""Readers: files on disk -> :class:`~farfield.io.structure.Structure`.

=================================  ======================================================================
format (extensions, optional .gz)  reader
=================================  ======================================================================
PDB (.pdb .ent .pdb1)              gemmi (legacy files with text in columns 73-80 are retried with
                                   ``max_line_length=72``, which gemmi needs for them)
mmCIF (.cif .mmcif)                gemmi (author chain ids and residue numbers, as in the PDB format)
BinaryCIF (.bcif)                  biotite (gemmi does not read BinaryCIF)
SDF / MOL (.sdf .mol)              RDKit; :func:`read_molecules` returns every record
XYZ (.xyz)                         farfield's own parser; QM9's extended XYZ (15 targets on line 2, a
                                   Mulliken charge column, '*^' exponents) is recognised
ATOM3D LMDB (a directory)          :class:`farfield.io.atom3d.Atom3DLMDB`
=================================  ======================================================================

Every failure (missing file, unknown extension, empty or header-only file, a line the parser rejects,
NaN coordinates, duplicated atoms, a model that does not exist) raises
:class:`~farfield.errors.InputError`, whose message names the file and what is wrong.
"""
from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import numpy as np

from farfield.errors import InputError
from farfield.io.structure import ReadOptions, Structure, apply_options

__all__ = ["read_structure", "read_molecules", "read_xyz", "detect_format", "FORMATS", "QM9_TARGETS"]

FORMATS = {
    ".pdb": "pdb", ".ent": "pdb", ".pdb1": "pdb",
    ".cif": "mmcif", ".mmcif": "mmcif",
    ".bcif": "bcif",
    ".sdf": "sdf", ".mol": "sdf",
    ".xyz": "xyz",
}
QM9_TARGETS = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")

_TWO_LETTER = {"CL": "Cl", "BR": "Br", "SE": "Se", "FE": "Fe", "ZN": "Zn", "MG": "Mg", "MN": "Mn", "NA": "Na",
               "CA": "Ca", "CU": "Cu", "CO": "Co", "NI": "Ni", "CD": "Cd", "HG": "Hg", "LI": "Li", "AL": "Al",
               "SI": "Si", "PT": "Pt", "AU": "Au", "AG": "Ag", "PB": "Pb", "SR": "Sr", "BA": "Ba", "CS": "Cs",
               "RB": "Rb", "TL": "Tl", "GA": "Ga", "AS": "As", "SB": "Sb", "SN": "Sn", "MO": "Mo", "CR": "Cr",
               "YB": "Yb", "GD": "Gd", "TB": "Tb", "EU": "Eu", "LA": "La", "XE": "Xe", "KR": "Kr", "AR": "Ar",
               "NE": "Ne", "HE": "He", "BE": "Be", "TI": "Ti", "IR": "Ir", "OS": "Os", "RU": "Ru", "RH": "Rh",
               "PD": "Pd", "RE": "Re", "HO": "Ho", "ER": "Er", "SM": "Sm", "ND": "Nd", "PR": "Pr", "CE": "Ce"}


def normalise_element(sym: str) -> str:
    """'CL' / 'cl' / 'Cl' -> 'Cl'; '' -> 'X'."""
    s = sym.strip()
    if not s:
        return "X"
    if len(s) == 1:
        return s.upper()
    up = s.upper()
    return _TWO_LETTER.get(up, up[0] + up[1:].lower())


def detect_format(path: str | Path) -> tuple[str, bool]:
    """(format name, gzipped) from the file name; :class:`InputError` for an unknown extension."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext not in FORMATS:
        raise InputError(path, f"unknown structure format {ext or '(no extension)'!r}; known extensions: "
                               f"{sorted(FORMATS)} (optionally followed by .gz)")
    return FORMATS[ext], gz


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        if (path / "data.mdb").exists():
            raise InputError(path, "is an ATOM3D LMDB directory; open it with farfield.io.Atom3DLMDB")
        raise InputError(path, "is a directory, not a structure file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")


def _read_bytes(path: Path, gz: bool) -> bytes:
    try:
        data = path.read_bytes()
        if gz:
            data = gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise InputError(path, f"cannot read{' gzip' if gz else ''} file: {e}") from None
    if not data.strip():
        raise InputError(path, "file is empty" + (" after decompression" if gz else ""))
    return data


def read_structure(path: str | Path, options: ReadOptions | None = None, **kwargs) -> Structure:
    """Read one model of a structure or molecule file.

    Args:
        path: the file (format from its extension; see the module docstring).
        options: a :class:`ReadOptions`; keyword arguments (``model=2, altloc='first', waters=False``)
            are a shorthand that builds one.

    Returns:
        the selected model's atoms as a :class:`Structure`.

    Raises:
        InputError: the file is missing, empty, malformed, of an unknown format, or the selection leaves
            no atoms.
    """
    if options is None:
        options = ReadOptions(**kwargs)
    elif kwargs:
        options = ReadOptions(**{**options.to_dict(), **kwargs})
    path = Path(path)
    if not path.is_dir():  # a directory gets _check_file's specific message (e.g. an ATOM3D LMDB)
        fmt, gz = detect_format(path)
    _check_file(path)
    if fmt in ("pdb", "mmcif"):
        s = _read_gemmi(path, fmt, gz, options.model)
    elif fmt == "bcif":
        s = _read_bcif(path, gz, options.model)
    elif fmt == "sdf":
        mols = read_molecules(path)
        s = _pick_model(mols, options.model, path)
    else:
        s = _pick_model(read_xyz(path), options.model, path)
    return apply_options(s, options)


def _pick_model(models: list[Structure], model: int, path: Path) -> Structure:
    if model > len(models):
        raise InputError(path, f"model {model} requested but the file holds {len(models)} record(s)")
    return models[model - 1]


# --- PDB / mmCIF through gemmi -------------------------------------------------------------------
def _gemmi_parse(path: Path, fmt: str, gz: bool):
    import gemmi

    text = _read_bytes(path, gz).decode("utf-8", errors="replace")
    if fmt == "pdb":
        _check_pdb_coordinates(text, path)
        try:
            return gemmi.read_pdb_string(text)
        except (RuntimeError, ValueError) as first:
            # legacy PDB files keep an id and line number in columns 73-80; gemmi needs the limit to
            # ignore them (gemmi issue: "Wrong format for charge")
            try:
                return gemmi.read_pdb_string(text, max_line_length=72)
            except (RuntimeError, ValueError):
                raise InputError(path, f"malformed PDB file: {first}") from None
    try:
        doc = gemmi.cif.read_string(text)
        return gemmi.make_structure_from_block(doc.sole_block())
    except (RuntimeError, ValueError) as e:
        raise InputError(path, f"malformed mmCIF file: {e}") from None


#: a PDB coordinate field (F8.3 in columns 31-38, 39-46, 47-54): optional sign, digits, optional fraction
#: (nan / inf pass here and are refused later as non-finite coordinates, with that message)
_PDB_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+|(?i:nan|inf))\s*")


def _check_pdb_coordinates(text: str, path: Path) -> None:
    """Refuse ATOM/HETATM records whose x, y, z columns (31-54) are not plain numbers.

    gemmi reads fixed columns leniently: an overflowed ``********`` field becomes 0.0 and ``4.8xx``
    becomes 4.8, which would turn a garbled file into a wrong structure. The mmCIF reader already
    refuses such values."""
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.startswith(("ATOM  ", "HETATM")):
            continue
        if len(line.rstrip()) < 54:
            raise InputError(path, f"line {line_no}: {line[:6].strip()} record ends before its coordinate columns "
                                   f"31-54 ({line.rstrip()[30:]!r})")
        for axis, lo in (("x", 30), ("y", 38), ("z", 46)):
            field = line[lo:lo + 8]
            if not _PDB_NUMBER.fullmatch(field):
                raise InputError(path, f"line {line_no}: {axis} coordinate (columns {lo + 1}-{lo + 8}) "
                                       f"{field!r} is not a number")


def _read_gemmi(path: Path, fmt: str, gz: bool, model: int) -> Structure:
    st = _gemmi_parse(path, fmt, gz)
    n_models = len(st)
    if n_models == 0 or sum(m.count_atom_sites() for m in st) == 0:
        raise InputError(path, "contains no atom records (empty or header-only file)")
    if model > n_models:
        raise InputError(path, f"model {model} requested but the file holds {n_models} model(s)")
    m = st[model - 1]
    rows = []
    for ch in m:
        cname = ch.name
        for res in ch:
            rname, num, icode, het = res.name, res.seqid.num, res.seqid.icode.strip(), res.het_flag == "H"
            for a in res:
                p = a.pos
                el = a.element.name
                rows.append((p.x, p.y, p.z, el, a.name, rname, num, icode, cname, het,
                             a.altloc, a.occ, a.b_iso, a.charge))
    if not rows:
        raise InputError(path, f"model {model} contains no atoms")
    cols = list(zip(*rows))
    coords = np.array([cols[0], cols[1], cols[2]], dtype=np.float64).T
    element = np.array([normalise_element(e) if e != "X" else "X" for e in cols[3]])
    atom_name = np.array(cols[4])
    element = _infer_unknown_elements(element, atom_name)
    altloc = np.array([c if c not in ("\x00", " ") else "" for c in cols[10]])
    return Structure(
        coords=coords, element=element, atom_name=atom_name, res_name=np.array(cols[5]),
        res_seq=np.array(cols[6], dtype=np.int64), ins_code=np.array(cols[7]), chain_id=np.array(cols[8]),
        hetero=np.array(cols[9], dtype=bool), altloc=altloc, occupancy=np.array(cols[11], dtype=np.float64),
        b_factor=np.array(cols[12], dtype=np.float64), charge=np.array(cols[13], dtype=np.int64),
        source=str(path), name=path.name.split(".")[0], model=model, n_models=n_models,
    )


def _infer_unknown_elements(element: np.ndarray, atom_name: np.ndarray) -> np.ndarray:
    """Fill 'X' elements from the atom name (PDB convention: leading letters of the name)."""
    unknown = element == "X"
    if unknown.any():
        element = element.copy()
        for i in np.flatnonzero(unknown):
            letters = re.sub(r"[^A-Za-z]", "", atom_name[i])
            element[i] = letters[0].upper() if letters else "X"
    return element


# --- BinaryCIF through biotite -------------------------------------------------------------------
def _read_bcif(path: Path, gz: bool, model: int) -> Structure:
    import biotite.structure.io.pdbx as pdbx

    data = _read_bytes(path, gz)
    try:
        f = pdbx.BinaryCIFFile.read(io.BytesIO(data))
        n_models = pdbx.get_model_count(f)
    except Exception as e:  # biotite raises many types (msgpack, KeyError, ValueError) on bad input
        raise InputError(path, f"malformed BinaryCIF file: {type(e).__name__}: {e}") from None
    if n_models == 0:
        raise InputError(path, "contains no atom records")
    if model > n_models:
        raise InputError(path, f"model {model} requested but the file holds {n_models} model(s)")
    try:
        a = pdbx.get_structure(f, model=model, altloc="all", use_author_fields=True,
                               extra_fields=["occupancy", "b_factor", "charge"])
    except Exception as e:
        raise InputError(path, f"cannot read model {model} of BinaryCIF file: {type(e).__name__}: {e}") from None
    if a.array_length() == 0:
        raise InputError(path, f"model {model} contains no atoms")
    altloc = np.array([c if c not in (".", "?", " ") else "" for c in a.altloc_id.astype(str)])
    element = np.array([normalise_element(e) for e in a.element.astype(str)])
    return Structure(
        coords=a.coord.astype(np.float64), element=_infer_unknown_elements(element, a.atom_name.astype(str)),
        atom_name=a.atom_name.astype(str), res_name=a.res_name.astype(str), res_seq=a.res_id.astype(np.int64),
        ins_code=np.char.strip(a.ins_code.astype(str)), chain_id=a.chain_id.astype(str),
        hetero=a.hetero.astype(bool), altloc=altloc, occupancy=a.occupancy.astype(np.float64),
        b_factor=a.b_factor.astype(np.float64), charge=a.charge.astype(np.int64), source=str(path),
        name=path.name.split(".")[0], model=model, n_models=n_models,
    )


# --- small molecules ---------------------------------------------------------------------------
def read_molecules(path: str | Path) -> list[Structure]:
    """Every record of an SDF / MOL file as a :class:`Structure` (one residue 'LIG', with ``bonds``,
    ``bond_order`` and formal ``charge``; SD properties that parse as numbers go to ``properties``).
    Hydrogens present in the file are kept. Records RDKit cannot read raise :class:`InputError` naming
    the record."""
    from rdkit import Chem, RDLogger

    path = Path(path)
    fmt, gz = detect_format(path)
    if fmt != "sdf":
        raise InputError(path, "read_molecules reads SDF/MOL files")
    _check_file(path)
    data = _read_bytes(path, gz)
    RDLogger.DisableLog("rdApp.*")
    try:
        supplier = Chem.SDMolSupplier()
        supplier.SetData(data.decode("utf-8", errors="replace"), removeHs=False, sanitize=False)
        out = []
        for k, mol in enumerate(supplier):
            if mol is None:
                raise InputError(path, f"record {k + 1} cannot be parsed as a molecule (malformed MOL block)")
            try:
                Chem.SanitizeMol(mol)
            except Exception as e:  # RDKit raises its own exception classes
                raise InputError(path, f"record {k + 1}: chemically invalid molecule ({e})") from None
            if mol.GetNumConformers() == 0 or mol.GetNumAtoms() == 0:
                raise InputError(path, f"record {k + 1} has no atoms or no coordinates")
            out.append(_mol_to_structure(mol, path, k + 1))
    finally:
        RDLogger.EnableLog("rdApp.*")
    if not out:
        raise InputError(path, "contains no molecule records")
    for s in out:
        s.n_models = len(out)
    return out


def _mol_to_structure(mol, path: Path, index: int) -> Structure:
    conf = mol.GetConformer()
    coords = np.array(conf.GetPositions(), dtype=np.float64)
    element = [a.GetSymbol() for a in mol.GetAtoms()]
    bonds = np.array([[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in mol.GetBonds()], dtype=np.int64)
    order = np.array([b.GetBondTypeAsDouble() for b in mol.GetBonds()], dtype=np.float64)
    props = {}
    for k, v in mol.GetPropsAsDict().items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            props[k] = float(v)
    name = mol.GetProp("_Name") if mol.HasProp("_Name") and mol.GetProp("_Name").strip() else path.name.split(".")[0]
    return Structure.from_arrays(
        coords, element, res_name=["LIG"] * len(element), hetero=[True] * len(element),
        charge=[a.GetFormalCharge() for a in mol.GetAtoms()], source=str(path), name=name, model=index,
        properties=props, bonds=bonds.reshape(-1, 2), bond_order=order,
    )


def _xyz_float(tok: str, path: Path, line_no: int) -> float:
    t = tok.replace("*^", "e")  # QM9 writes Mathematica-style exponents: 1.2*^-6
    try:
        return float(t)
    except ValueError:
        raise InputError(path, f"line {line_no}: {tok!r} is not a number") from None


def _extxyz_cell(comment: str, path: Path, line_no: int):
    """The cell of an extended-XYZ comment line (``Lattice="ax ay az bx by bz cx cy cz"``, rows a, b, c) -> float64
    [3, 3], or None without one or with ``pbc="F F F"``. Partial periodicity is refused (not supported)."""
    import re
    m = re.search(r'Lattice\s*=\s*"([^"]*)"', comment)
    if m is None:
        return None
    vals = m.group(1).split()
    if len(vals) != 9:
        raise InputError(path, f"line {line_no}: Lattice needs 9 numbers (a, b, c), found {len(vals)}")
    cell = np.array([_xyz_float(v, path, line_no) for v in vals]).reshape(3, 3)
    p = re.search(r'pbc\s*=\s*"([^"]*)"', comment)
    flags = p.group(1).split() if p is not None else ["T", "T", "T"]
    periodic = [f.upper() in ("T", "TRUE", "1") for f in flags]
    if len(periodic) != 3:
        raise InputError(path, f"line {line_no}: pbc needs three flags, found {p.group(1)!r}")
    if not any(periodic):
        return None
    if not all(periodic):
        raise InputError(path, f"line {line_no}: pbc={p.group(1)!r}: only fully periodic cells (or none) are "
                               "supported")
    return cell


def read_xyz(path: str | Path) -> list[Structure]:
    """Read every frame of an XYZ file (standard, extended XYZ with ``Lattice="..."`` (-> ``Structure.cell``;
    ``pbc`` must be all true or all false), or QM9 extended XYZ).

    QM9 (``line 2 = 'gdb N' + 15 properties``): the 15 targets go to ``properties`` under
    :data:`QM9_TARGETS` (energies in Hartree, as in the file), the fifth atom column to
    ``properties['mulliken_charges']``, and the SMILES / InChI lines after the frequencies to
    ``properties['smiles']`` / ``['inchi']``.
    """
    path = Path(path)
    fmt, gz = detect_format(path)
    _check_file(path)
    lines = _read_bytes(path, gz).decode("utf-8", errors="replace").splitlines()
    frames: list[Structure] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        head = lines[i].strip()
        if not head.isdigit():
            if frames and frames[-1].properties.get("_qm9"):
                break  # QM9 trailer: frequencies, SMILES, InChI
            raise InputError(path, f"line {i + 1}: expected an atom count, found {head[:40]!r}")
        n = int(head)
        if n == 0:
            raise InputError(path, f"line {i + 1}: frame with zero atoms")
        if i + 2 + n > len(lines):
            raise InputError(path, f"truncated file: frame at line {i + 1} announces {n} atoms but the file "
                                   f"ends after {max(len(lines) - i - 2, 0)} atom line(s)")
        comment = lines[i + 1]
        props: dict = {}
        ctoks = comment.split()
        if len(ctoks) == 17 and ctoks[0] == "gdb":
            props = {name: _xyz_float(t, path, i + 2) for name, t in zip(QM9_TARGETS, ctoks[2:])}
            props["gdb_index"] = int(ctoks[1])
            props["_qm9"] = True
        cell = _extxyz_cell(comment, path, i + 2)
        els, xyz, q = [], [], []
        for k in range(n):
            ln = i + 2 + k
            toks = lines[ln].split()
            if len(toks) < 4:
                raise InputError(path, f"line {ln + 1}: expected 'element x y z', found {lines[ln].strip()[:60]!r}")
            els.append(normalise_element(toks[0]) if not toks[0].isdigit() else _element_from_z(int(toks[0])))
            xyz.append([_xyz_float(t, path, ln + 1) for t in toks[1:4]])
            if len(toks) >= 5:
                q.append(_xyz_float(toks[4], path, ln + 1))
        if props.get("_qm9") and len(q) == n:
            props["mulliken_charges"] = np.array(q)
        frames.append(Structure.from_arrays(np.array(xyz), els, source=str(path),
                                            name=(f"gdb_{props['gdb_index']}" if "gdb_index" in props
                                                  else path.name.split(".")[0]),
                                            model=len(frames) + 1, properties=props, cell=cell))
        i += 2 + n
    if not frames:
        raise InputError(path, "contains no XYZ frames")
    if frames[-1].properties.get("_qm9"):
        trailer = [ln.split() for ln in lines[i:] if ln.strip()]
        if len(trailer) >= 2:
            frames[-1].properties["smiles"] = trailer[1][0]
        if len(trailer) >= 3:
            frames[-1].properties["inchi"] = trailer[2][0]
    for f in frames:
        f.properties.pop("_qm9", None)
        f.n_models = len(frames)
        bad = ~np.isfinite(f.coords).all(axis=1)
        if bad.any():
            raise InputError(path, f"frame {f.model}: {int(bad.sum())} atom(s) have non-finite coordinates")
    return frames


def _element_from_z(z: int) -> str:
    from rdkit import Chem

    return Chem.GetPeriodicTable().GetElementSymbol(z)

"""The one in-memory structure type, and the options that select atoms from a file.

A :class:`Structure` is a flat table of atoms of **one model**, stored as NumPy arrays of equal length
``N`` (column-oriented, like biotite's ``AtomArray``, so that selections and features are vectorised):

=============  ==============  ================================================================
field          dtype / shape   meaning
=============  ==============  ================================================================
coords         float64 [N, 3]  Cartesian coordinates in Angstrom
element        str [N]         element symbol, capitalised ('C', 'Cl', 'Se'); 'X' if unknown
atom_name      str [N]         atom name ('CA', 'OXT'), stripped
res_name       str [N]         residue name ('ALA', 'HOH', 'LIG'); up to 5 characters (mmCIF)
res_seq        int64 [N]       author residue number (may be negative)
ins_code       str [N]         insertion code, '' when absent
chain_id       str [N]         author chain id, '' when absent
hetero         bool [N]        HETATM record (or the mmCIF equivalent)
altloc         str [N]         alternate-location label, '' when absent
occupancy      float64 [N]     occupancy (1.0 when the file leaves it out)
b_factor       float64 [N]     B-factor (pLDDT for AlphaFold models)
charge         int64 [N]       formal charge (0 when absent)
=============  ==============  ================================================================

plus metadata: ``source`` (the file it came from), ``name``, ``model`` (the selected model's 1-based
position in the file), ``n_models``, ``properties`` (scalar targets such as QM9's) and, for small
molecules, ``bonds`` ([B, 2] atom indices) and ``bond_order`` ([B]); periodic systems (crystals, solvated
boxes) carry ``cell`` (float64 [3, 3], rows are the lattice vectors a, b, c in Angstrom; periodic in all three
directions; None for molecules and proteins).

Selections (:class:`ReadOptions`) are applied by :func:`apply_options` in a fixed, documented order:
model -> altloc policy -> hydrogens -> waters -> hetero groups -> chains.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

from farfield._config import check_keys
from farfield.errors import ConfigError, InputError

__all__ = ["Structure", "ReadOptions", "apply_options", "WATER_NAMES", "ALTLOC_POLICIES"]

WATER_NAMES = frozenset({"HOH", "WAT", "H2O", "DOD", "D2O", "SOL", "TIP", "TIP3", "TIP4", "SPC", "OH2"})
ALTLOC_POLICIES = ("occupancy", "first", "all")
_BLANK_ALTLOCS = ("", " ", ".", "?", "\x00")

_ATOM_FIELDS = (
    "coords", "element", "atom_name", "res_name", "res_seq", "ins_code", "chain_id", "hetero", "altloc",
    "occupancy", "b_factor", "charge",
)


@dataclass(frozen=True)
class ReadOptions:
    """Which atoms of a file become the :class:`Structure`.

    Attributes:
        model: 1-based position of the model in the file (1 = first model; this is the position, not the
            MODEL serial number, though the two agree for PDB files numbered from 1).
        altloc: alternate-location policy. ``'occupancy'`` (default): per residue (chain, number,
            insertion code), keep the altloc label with the highest *mean* occupancy over its atoms,
            ties going to the label that appears first; atoms without a label are always kept.
            ``'first'``: keep the first label that appears in each residue. ``'all'``: keep every atom.
        hydrogens: keep hydrogen (and deuterium) atoms.
        waters: keep water molecules (residue names in :data:`WATER_NAMES`).
        hetero: keep hetero groups (HETATM records that are not water: ligands, ions, modified residues
            written as HETATM such as MSE are kept as hetero atoms unless this is False).
        chains: keep only these author chain ids (None = all).
    """

    model: int = 1
    altloc: Literal["occupancy", "first", "all"] = "occupancy"
    hydrogens: bool = True
    waters: bool = True
    hetero: bool = True
    chains: tuple[str, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.model, (int, np.integer)) or isinstance(self.model, bool) or self.model < 1:
            raise ConfigError(f"ReadOptions.model must be an integer >= 1 (1 = first model), got {self.model!r}")
        if self.altloc not in ALTLOC_POLICIES:
            raise ConfigError(f"ReadOptions.altloc must be one of {ALTLOC_POLICIES}, got {self.altloc!r}")
        if self.chains is not None:
            if isinstance(self.chains, str):
                object.__setattr__(self, "chains", tuple(c for c in self.chains.split(",") if c))
            else:
                object.__setattr__(self, "chains", tuple(str(c) for c in self.chains))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["chains"] = list(self.chains) if self.chains is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ReadOptions":
        check_keys(cls, d, "ReadOptions")
        d = dict(d)
        if d.get("chains") is not None:
            d["chains"] = tuple(d["chains"])
        return cls(**d)


@dataclass
class Structure:
    """Atoms of one model of a structure or molecule (see the module docstring for the fields)."""

    coords: np.ndarray
    element: np.ndarray
    atom_name: np.ndarray
    res_name: np.ndarray
    res_seq: np.ndarray
    ins_code: np.ndarray
    chain_id: np.ndarray
    hetero: np.ndarray
    altloc: np.ndarray
    occupancy: np.ndarray
    b_factor: np.ndarray
    charge: np.ndarray
    source: str = "<memory>"
    name: str = ""
    model: int = 1
    n_models: int = 1
    properties: dict = field(default_factory=dict)
    bonds: np.ndarray | None = None
    bond_order: np.ndarray | None = None
    cell: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.coords)
        if self.cell is not None:
            cell = np.asarray(self.cell, dtype=np.float64)
            if cell.shape != (3, 3) or not np.isfinite(cell).all():
                raise InputError(self.source, f"cell must be a finite 3 x 3 matrix (rows = lattice vectors), got "
                                              f"shape {cell.shape}")
            if abs(np.linalg.det(cell)) < 1e-6 * max(np.prod(np.linalg.norm(cell, axis=1)), 1e-300):
                raise InputError(self.source, "cell is singular (its lattice vectors are coplanar)")
            self.cell = cell
        self.coords = np.ascontiguousarray(np.asarray(self.coords, dtype=np.float64).reshape(n, 3))
        for name in _ATOM_FIELDS[1:]:
            arr = np.asarray(getattr(self, name))
            if arr.shape != (n,):
                raise ValueError(f"Structure.{name} has shape {arr.shape}, expected ({n},)")
            setattr(self, name, arr)
        self.res_seq = self.res_seq.astype(np.int64)
        self.hetero = self.hetero.astype(bool)
        self.occupancy = self.occupancy.astype(np.float64)
        self.b_factor = self.b_factor.astype(np.float64)
        self.charge = self.charge.astype(np.int64)

    @classmethod
    def from_arrays(cls, coords, element, *, atom_name=None, res_name=None, res_seq=None, ins_code=None,
                    chain_id=None, hetero=None, altloc=None, occupancy=None, b_factor=None, charge=None,
                    **meta) -> "Structure":
        """Build a structure from coordinates and elements, filling every other field with its default
        (one residue 'UNL' numbered 1 in chain '', not hetero, occupancy 1, B 0, charge 0)."""
        n = len(coords)
        element = np.asarray(element, dtype=object).astype(str)

        def fill(v, default, dtype=None):
            return np.asarray(v if v is not None else [default] * n, dtype=dtype)

        return cls(
            coords=np.asarray(coords, dtype=np.float64).reshape(n, 3),
            element=element,
            atom_name=fill(atom_name, "", str) if atom_name is not None else _numbered_names(element),
            res_name=fill(res_name, "UNL", str),
            res_seq=fill(res_seq, 1, np.int64),
            ins_code=fill(ins_code, "", str),
            chain_id=fill(chain_id, "", str),
            hetero=fill(hetero, False, bool),
            altloc=fill(altloc, "", str),
            occupancy=fill(occupancy, 1.0, np.float64),
            b_factor=fill(b_factor, 0.0, np.float64),
            charge=fill(charge, 0, np.int64),
            **meta,
        )

    def __len__(self) -> int:
        return len(self.coords)

    def __repr__(self) -> str:
        return (f"Structure(name={self.name!r}, atoms={len(self)}, residues={self.n_residues}, "
                f"chains={list(self.chains)}, model={self.model}/{self.n_models}, source={self.source!r})")

    # --- derived views -------------------------------------------------------------------------
    @property
    def chains(self) -> list[str]:
        """Chain ids in order of first appearance."""
        _, first = np.unique(self.chain_id, return_index=True)
        return [str(self.chain_id[i]) for i in sorted(first)]

    @property
    def is_hydrogen(self) -> np.ndarray:
        return np.isin(self.element, ("H", "D"))

    @property
    def is_water(self) -> np.ndarray:
        return np.isin(self.res_name, list(WATER_NAMES))

    def residue_index(self) -> np.ndarray:
        """[N] int64: index of each atom's residue, residues being maximal runs of consecutive atoms with
        the same (chain, number, insertion code, name)."""
        n = len(self)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        change = np.zeros(n, dtype=bool)
        change[0] = True
        for arr in (self.chain_id, self.res_seq, self.ins_code, self.res_name):
            change[1:] |= arr[1:] != arr[:-1]
        return np.cumsum(change) - 1

    @property
    def n_residues(self) -> int:
        return int(self.residue_index()[-1]) + 1 if len(self) else 0

    def select(self, mask: np.ndarray) -> "Structure":
        """A new structure with the atoms where ``mask`` (bool [N] or index array) holds. Bonds whose
        two atoms both survive are kept and renumbered."""
        mask = np.asarray(mask)
        if mask.dtype != bool:
            m = np.zeros(len(self), dtype=bool)
            m[mask] = True
            mask = m
        kw = {name: getattr(self, name)[mask] for name in _ATOM_FIELDS}
        bonds = bond_order = None
        if self.bonds is not None:
            new_index = np.cumsum(mask) - 1
            keep = mask[self.bonds].all(axis=1) if len(self.bonds) else np.zeros(0, dtype=bool)
            bonds = new_index[self.bonds[keep]]
            bond_order = self.bond_order[keep] if self.bond_order is not None else None
        return replace(self, **kw, bonds=bonds, bond_order=bond_order, properties=dict(self.properties))


def _numbered_names(element: np.ndarray) -> np.ndarray:
    """Unique atom names 'C1', 'C2', 'H1', ... in order of appearance of each element."""
    counts: dict[str, int] = {}
    out = []
    for e in element:
        counts[e] = counts.get(e, 0) + 1
        out.append(f"{e}{counts[e]}")
    return np.array(out, dtype=str)


def _select_altlocs(s: Structure, policy: str) -> np.ndarray:
    """Bool mask of the atoms kept by an altloc policy (see :class:`ReadOptions`)."""
    n = len(s)
    labelled = ~np.isin(s.altloc, _BLANK_ALTLOCS)
    if policy == "all" or not labelled.any():
        return np.ones(n, dtype=bool)
    # residue key without the residue name: altlocs may change the residue type (microheterogeneity)
    key = np.char.add(np.char.add(s.chain_id.astype(str), "|"),
                      np.char.add(s.res_seq.astype(str), np.char.add("|", s.ins_code.astype(str))))
    idx = np.flatnonzero(labelled)
    rkey, rinv = np.unique(key[idx], return_inverse=True)
    lab, linv = np.unique(s.altloc[idx], return_inverse=True)
    n_lab = len(lab)
    pair = rinv * n_lab + linv                                   # (residue, label) id per labelled atom
    n_pair = len(rkey) * n_lab
    count = np.bincount(pair, minlength=n_pair)
    first_pos = np.full(n_pair, np.iinfo(np.int64).max)
    np.minimum.at(first_pos, pair, np.arange(len(idx)))
    if policy == "first":
        score = -first_pos.astype(np.float64)
    else:
        occ_sum = np.bincount(pair, weights=s.occupancy[idx], minlength=n_pair)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, occ_sum / np.maximum(count, 1), -np.inf)
        # highest mean occupancy; ties -> first appearing label (subtract a tiny rank term)
        rank = np.argsort(np.argsort(first_pos))
        score = np.where(count > 0, mean - 1e-9 * rank / max(len(rank), 1), -np.inf)
    score = np.where(count > 0, score, -np.inf).reshape(len(rkey), n_lab)
    chosen = score.argmax(axis=1)                                 # [residues]
    keep = np.ones(n, dtype=bool)
    keep[idx] = linv == chosen[rinv]
    return keep


def apply_options(s: Structure, options: ReadOptions) -> Structure:
    """Apply the altloc, hydrogen, water, hetero and chain selections of ``options`` (model selection is
    the reader's job). Raises :class:`InputError` when no atom is left, naming the option responsible,
    and when the kept atoms contain duplicates or non-finite coordinates."""
    keep = _select_altlocs(s, options.altloc)
    steps = [("altloc", keep.copy())]
    if not options.hydrogens:
        keep &= ~s.is_hydrogen
        steps.append(("hydrogens=False", keep.copy()))
    if not options.waters:
        keep &= ~s.is_water
        steps.append(("waters=False", keep.copy()))
    if not options.hetero:
        keep &= ~(s.hetero & ~s.is_water)
        steps.append(("hetero=False", keep.copy()))
    if options.chains is not None:
        missing = sorted(set(options.chains) - set(s.chain_id.tolist()))
        if missing:
            raise InputError(s.source, f"chain(s) {missing} not found; chains present: {s.chains}")
        keep &= np.isin(s.chain_id, list(options.chains))
        steps.append((f"chains={list(options.chains)}", keep.copy()))
    for label, m in steps:
        if len(s) and not m.any():
            raise InputError(s.source, f"no atoms left after selecting {label}")
    out = s.select(keep)
    check_atoms(out)
    return out


def check_atoms(s: Structure) -> None:
    """Raise :class:`InputError` if ``s`` is empty, has non-finite coordinates, or holds the same atom
    (chain, residue number, insertion code, residue name, atom name, altloc) twice."""
    if len(s) == 0:
        raise InputError(s.source, "contains no atoms" + (f" in model {s.model}" if s.n_models > 1 else ""))
    bad = ~np.isfinite(s.coords).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(s.source, f"{int(bad.sum())} atom(s) have non-finite (NaN/Inf) coordinates, first: "
                                   f"{_atom_label(s, i)}")
    ident = np.char.add(np.char.add(np.char.add(s.chain_id.astype(str), "/"), s.res_name.astype(str)),
                        np.char.add(np.char.add(" ", s.res_seq.astype(str)),
                                    np.char.add(np.char.add(s.ins_code.astype(str), "/"),
                                                np.char.add(s.atom_name.astype(str),
                                                            np.char.add(":", s.altloc.astype(str))))))
    if not np.any(s.atom_name == ""):
        uniq, counts = np.unique(ident, return_counts=True)
        if (counts > 1).any():
            dups = uniq[counts > 1]
            raise InputError(s.source, f"{len(dups)} duplicated atom(s) in model {s.model} (same chain, residue "
                                       f"and atom name), e.g. {dups[0]!s}; fix the file or choose another model")


def _atom_label(s: Structure, i: int) -> str:
    return f"{s.chain_id[i]}/{s.res_name[i]} {s.res_seq[i]}{s.ins_code[i]}/{s.atom_name[i]}"

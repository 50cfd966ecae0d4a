"""Residue-level view of a protein structure: backbone atoms, residue types, chain breaks.

:class:`ResidueView` holds ``L`` amino-acid residues (those with a carbon 'CA' and either a known
amino-acid name, incl. common modified residues such as MSE, or both N and C atoms):

==============  =================  =========================================================
field           shape              meaning
==============  =================  =========================================================
backbone        float64 [L, 4, 3]  N, CA, C, O coordinates; NaN where the atom is missing
backbone_mask   bool [L, 4]        which of N, CA, C, O are present (CA always is)
cb              float64 [L, 3]     virtual C-beta from N, CA, C (ideal geometry, as in
                                   trRosetta / ProteinMPNN); NaN where N or C is missing
res_type        int64 [L]          index into :data:`AMINO_ACIDS`; 20 = unknown
res_name        str [L]            residue name as in the file
chain_id        str [L]            author chain id
res_seq         int64 [L]          author residue number
ins_code        str [L]            insertion code
chain_index     int64 [L]          0-based chain number in order of appearance
segment_index   int64 [L]          0-based contiguous segment: increments at every chain change
                                   and every chain break
chain_break     bool [L]           True where residue i is not peptide-bonded to residue i-1 of
                                   the same chain (residue i starts a new segment): see below
atom_residue    int64 [N]          for each atom of the source structure, its residue's
                                   index in this view, or -1
==============  =================  =========================================================

Chain breaks follow the peptide bond, as DSSP does (Kabsch & Sander, Biopolymers 1983: residues i-1
and i are bonded when C(i-1)-N(i) is at most 2.5 A): residue i continues the segment of i-1 when
C(i-1)-N(i) <= :data:`PEPTIDE_BOND_DISTANCE`. A CA-CA cutoff alone misfires in deposited structures:
bonded neighbours of 4HHB (e.g. chain B 79/80, D 48) are 4.22-4.26 A apart (CA-CA) with ordinary C-N
bonds of 1.2-1.5 A. Only where C(i-1) or N(i) is missing does CA(i-1)-CA(i) >
:data:`CHAIN_BREAK_DISTANCE` decide (consecutive CA are 3.8 A apart, 2.9 A around a cis peptide).

Missing backbone atoms are explicit: coordinates are NaN and the mask is False; featurisers turn
quantities that need them (dihedrals, side-chain direction) into zeros with a mask, never NaN.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farfield.errors import InputError
from farfield.io.structure import Structure

__all__ = ["ResidueView", "AMINO_ACIDS", "MODIFIED_RESIDUES", "CHAIN_BREAK_DISTANCE", "PEPTIDE_BOND_DISTANCE",
           "virtual_cb", "chain_breaks"]

AMINO_ACIDS = ("ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
               "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL")
ONE_LETTER = "ARNDCQEGHILKMFPSTWYV"
#: modified residues mapped to their parent amino acid (the most common ones in the PDB)
MODIFIED_RESIDUES = {"MSE": "MET", "SEP": "SER", "TPO": "THR", "PTR": "TYR", "HYP": "PRO", "MLY": "LYS",
                     "CSO": "CYS", "CME": "CYS", "KCX": "LYS", "LLP": "LYS", "CSD": "CYS", "PCA": "GLU",
                     "SEC": "CYS", "PYL": "LYS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HIE": "HIS",
                     "HID": "HIS", "HIP": "HIS", "CYX": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS"}
#: Angstrom; the largest C(i-1)-N(i) distance of a peptide bond (DSSP's criterion, Kabsch & Sander 1983)
PEPTIDE_BOND_DISTANCE = 2.5
#: Angstrom; CA(i-1)-CA(i) cutoff, used only where C(i-1) or N(i) is missing (consecutive CA are 3.8 A
#: apart, 2.9 A around a cis peptide)
CHAIN_BREAK_DISTANCE = 4.2
_BACKBONE = ("N", "CA", "C", "O")
_AA_INDEX = {name: i for i, name in enumerate(AMINO_ACIDS)}
_AA_INDEX.update({k: _AA_INDEX[v] for k, v in MODIFIED_RESIDUES.items()})


def virtual_cb(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Ideal C-beta position from backbone N, CA, C ([..., 3] each).

    CB = -0.58273431 a + 0.56802827 b - 0.54067466 c' + CA with b = CA - N, c' = C - CA, a = b x c'
    (the constants of trRosetta / ProteinMPNN).
    """
    b = ca - n
    cc = c - ca
    a = np.cross(b, cc)
    return -0.58273431 * a + 0.56802827 * b - 0.54067466 * cc + ca


def chain_breaks(backbone: np.ndarray, chain_index: np.ndarray) -> np.ndarray:
    """[L] bool: True where residue i (of ``backbone`` [L, 4, 3], N/CA/C/O, NaN where missing) is in the
    same chain as residue i-1 but not peptide-bonded to it.

    Bonded means C(i-1)-N(i) <= :data:`PEPTIDE_BOND_DISTANCE` (DSSP's rule, Kabsch & Sander 1983); when
    C(i-1) or N(i) is missing, CA(i-1)-CA(i) <= :data:`CHAIN_BREAK_DISTANCE` instead (CA is always
    present in a :class:`ResidueView`)."""
    L = len(backbone)
    gap = np.zeros(L, dtype=bool)
    if L < 2:
        return gap
    cn = np.linalg.norm(backbone[1:, 0] - backbone[:-1, 2], axis=1)     # NaN where C or N is missing
    ca = np.linalg.norm(backbone[1:, 1] - backbone[:-1, 1], axis=1)
    with np.errstate(invalid="ignore"):
        broken = np.where(np.isnan(cn), ~(ca <= CHAIN_BREAK_DISTANCE), cn > PEPTIDE_BOND_DISTANCE)
    gap[1:] = broken & (chain_index[1:] == chain_index[:-1])
    return gap


@dataclass
class ResidueView:
    """Per-residue backbone view of a :class:`Structure` (fields in the module docstring)."""

    backbone: np.ndarray
    backbone_mask: np.ndarray
    cb: np.ndarray
    res_type: np.ndarray
    res_name: np.ndarray
    chain_id: np.ndarray
    res_seq: np.ndarray
    ins_code: np.ndarray
    chain_index: np.ndarray
    segment_index: np.ndarray
    chain_break: np.ndarray
    atom_residue: np.ndarray
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.res_type)

    @property
    def ca(self) -> np.ndarray:
        return self.backbone[:, 1]

    @property
    def sequence(self) -> str:
        return "".join(ONE_LETTER[t] if t < 20 else "X" for t in self.res_type)

    @classmethod
    def from_structure(cls, s: Structure) -> "ResidueView":
        """Group atoms into residues and pick the amino acids; raises :class:`InputError` if none."""
        rid = s.residue_index()
        n_res = int(rid[-1]) + 1
        first = np.searchsorted(rid, np.arange(n_res))
        names = s.res_name[first]
        is_bb = {k: (s.atom_name == k) for k in _BACKBONE}
        has = {}
        for k in _BACKBONE:
            m = is_bb[k] if k != "CA" else (is_bb[k] & (s.element == "C"))
            has[k] = np.zeros(n_res, dtype=bool)
            has[k][rid[m]] = True
        known = np.array([nm in _AA_INDEX for nm in names])
        water = np.isin(names, ["HOH", "WAT", "DOD"])
        is_aa = has["CA"] & ~water & (known | (has["N"] & has["C"]))
        if not is_aa.any():
            raise InputError(s.source, "contains no amino-acid residues (no residue with a CA atom and a "
                                       "backbone); use the atom-level graph instead")
        aa_ids = np.flatnonzero(is_aa)
        new_index = np.full(n_res, -1, dtype=np.int64)
        new_index[aa_ids] = np.arange(len(aa_ids))
        L = len(aa_ids)
        backbone = np.full((L, 4, 3), np.nan)
        mask = np.zeros((L, 4), dtype=bool)
        for j, k in enumerate(_BACKBONE):
            m = is_bb[k] & is_aa[rid]
            if k == "CA":
                m &= s.element == "C"
            atoms = np.flatnonzero(m)
            r = new_index[rid[atoms]]
            # first occurrence per residue (altlocs were resolved upstream; 'all' keeps the first)
            r_unique, pos = np.unique(r, return_index=True)
            backbone[r_unique, j] = s.coords[atoms[pos]]
            mask[r_unique, j] = True
        chain = s.chain_id[first][aa_ids]
        _, chain_first = np.unique(chain, return_index=True)
        order = {c: i for i, c in enumerate(chain[np.sort(chain_first)])}
        chain_index = np.array([order[c] for c in chain], dtype=np.int64)
        gap = chain_breaks(backbone, chain_index)
        new_segment = gap.copy()
        new_segment[1:] |= chain_index[1:] != chain_index[:-1]
        segment = np.cumsum(new_segment)
        segment -= segment[0] if L else 0
        with np.errstate(invalid="ignore"):
            cb = virtual_cb(backbone[:, 0], backbone[:, 1], backbone[:, 2])
        res_type = np.array([_AA_INDEX.get(nm, 20) for nm in names[aa_ids]], dtype=np.int64)
        return cls(backbone=backbone, backbone_mask=mask, cb=cb, res_type=res_type, res_name=names[aa_ids],
                   chain_id=chain, res_seq=s.res_seq[first][aa_ids], ins_code=s.ins_code[first][aa_ids],
                   chain_index=chain_index, segment_index=segment.astype(np.int64), chain_break=gap,
                   atom_residue=new_index[rid], source=s.source)

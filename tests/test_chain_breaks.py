"""Chain breaks of :class:`farfield.io.ResidueView`: a residue continues its predecessor's segment when the
two are joined by a peptide bond, C(i-1)-N(i) <= 2.5 A (the criterion of DSSP, Kabsch & Sander 1983); the
CA-CA distance is only the fallback where the C or N atom is missing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from farfield.features import dihedral_features, orientation_vectors
from farfield.io import ResidueView, read_structure
from farfield.io.residues import CHAIN_BREAK_DISTANCE, PEPTIDE_BOND_DISTANCE
from farfield.io.structure import Structure


def _keys(rv, idx):
    return {(str(rv.chain_id[i]), int(rv.res_seq[i])) for i in idx}


def test_no_false_breaks_in_4hhb(structures):
    """Hemoglobin (4HHB) has peptide-bonded neighbours 4.22-4.26 A apart (CA-CA), above the 4.2 A CA-CA
    cutoff, with ordinary C-N bonds (1.19-1.46 A): none of them is a break, and 4HHB has no break at all."""
    rv = ResidueView.from_structure(read_structure(structures / "4hhb.pdb"))
    ca_gap = {(c, r) for c, r in [("B", 79), ("B", 80), ("C", 114), ("D", 7), ("D", 48)]}
    where = {(str(c), int(r)): i for i, (c, r) in enumerate(zip(rv.chain_id, rv.res_seq))}
    for key in ca_gap:
        i = where[key]
        assert np.linalg.norm(rv.ca[i] - rv.ca[i - 1]) > CHAIN_BREAK_DISTANCE      # the old rule's false break
        assert np.linalg.norm(rv.backbone[i, 0] - rv.backbone[i - 1, 2]) < 1.5    # but a peptide bond
        assert not rv.chain_break[i], key
    assert not rv.chain_break.any()
    assert rv.segment_index[-1] == rv.chain_index.max()                          # one segment per chain
    # the backbone dihedrals and CA directions at those residues are computed, not zeroed
    seg = torch.from_numpy(rv.segment_index)
    f = dihedral_features(torch.from_numpy(rv.backbone), seg)
    o = orientation_vectors(torch.from_numpy(rv.ca), seg)
    idx = np.array(sorted(where[k] for k in ca_gap))
    assert torch.allclose(f[idx, 0] ** 2 + f[idx, 1] ** 2, torch.ones(len(idx), dtype=f.dtype))   # phi
    assert torch.allclose(o[idx, 1].norm(dim=-1), torch.ones(len(idx), dtype=o.dtype))              # to i-1


def test_real_gaps_in_2xhe_still_break(structures):
    """2XHE has three unmodelled stretches (A 510-560, B 16-38, B 193-209): exactly these are breaks."""
    rv = ResidueView.from_structure(read_structure(structures / "2XHE.pdb"))
    i = np.flatnonzero(rv.chain_break)
    assert _keys(rv, i) == {("A", 561), ("B", 39), ("B", 210)}
    assert _keys(rv, i - 1) == {("A", 509), ("B", 15), ("B", 192)}
    cn = np.linalg.norm(rv.backbone[i, 0] - rv.backbone[i - 1, 2], axis=1)
    assert (cn > PEPTIDE_BOND_DISTANCE).all()
    assert rv.segment_index[-1] == rv.chain_break.sum() + rv.chain_index.max()


def _chain(n_res: int, stretch_at: int | None = None, stretch: float = 0.0, drop: tuple[int, str] | None = None):
    """A straight synthetic chain of ``n_res`` glycine-like residues (N, CA, C, O); residue ``stretch_at`` and
    all after it are moved ``stretch`` A along x (lengthening one C-N bond); ``drop`` removes one atom."""
    offsets = {"N": (0.0, 0.0, 0.0), "CA": (1.46, 0.0, 0.0), "C": (2.0, 1.4, 0.0), "O": (1.6, 2.5, 0.0)}
    rise = 3.33                                   # C(i-1) -> N(i) = |(3.33, 0) - (2.0, 1.4)| = 1.93 A
    coords, names, seq = [], [], []
    for r in range(n_res):
        shift = r * rise + (stretch if stretch_at is not None and r >= stretch_at else 0.0)
        for a, (x, y, z) in offsets.items():
            if drop == (r, a):
                continue
            coords.append((x + shift, y, z))
            names.append(a)
            seq.append(r + 1)
    n = len(coords)
    return Structure(coords=np.asarray(coords, dtype=np.float64), element=np.array([a[0] for a in names]),
                     atom_name=np.array(names), res_name=np.array(["GLY"] * n), res_seq=np.array(seq),
                     ins_code=np.array([""] * n), chain_id=np.array(["A"] * n), hetero=np.zeros(n, dtype=bool),
                     altloc=np.array([""] * n), occupancy=np.ones(n), b_factor=np.zeros(n),
                     charge=np.zeros(n, dtype=np.int64), source="synthetic")


def test_stretched_peptide_bond_is_a_break():
    rv = ResidueView.from_structure(_chain(5))
    cn = np.linalg.norm(rv.backbone[1:, 0] - rv.backbone[:-1, 2], axis=1)
    assert np.allclose(cn, 1.93, atol=0.01) and not rv.chain_break.any()
    # stretched: C(2)-N(3) is 2.55 A (> 2.5) although CA-CA stays below 4.2 A (4.13 A) -> a break
    s = _chain(5, stretch_at=3, stretch=0.8)
    rv = ResidueView.from_structure(s)
    d_cn = np.linalg.norm(rv.backbone[3, 0] - rv.backbone[2, 2])
    d_ca = np.linalg.norm(rv.ca[3] - rv.ca[2])
    assert d_cn > PEPTIDE_BOND_DISTANCE and d_ca < CHAIN_BREAK_DISTANCE
    assert rv.chain_break.tolist() == [False, False, False, True, False]
    assert rv.segment_index.tolist() == [0, 0, 0, 1, 1]
    # just below the limit: still bonded
    rv = ResidueView.from_structure(_chain(5, stretch_at=3, stretch=0.55))
    assert np.linalg.norm(rv.backbone[3, 0] - rv.backbone[2, 2]) < PEPTIDE_BOND_DISTANCE
    assert not rv.chain_break.any()


@pytest.mark.parametrize("atom", ["C", "N"])
def test_missing_c_or_n_falls_back_to_ca_ca(atom):
    # C of residue 3 (or N of residue 4) missing: the CA-CA rule decides, 3.33 A -> bonded; 3.33 + 1.0 -> break
    r = 2 if atom == "C" else 3
    rv = ResidueView.from_structure(_chain(5, drop=(r, atom)))
    assert not rv.backbone_mask[r, 2 if atom == "C" else 0]
    assert not rv.chain_break.any()
    rv = ResidueView.from_structure(_chain(5, stretch_at=3, stretch=1.0, drop=(r, atom)))
    assert np.linalg.norm(rv.ca[3] - rv.ca[2]) > CHAIN_BREAK_DISTANCE
    assert rv.chain_break.tolist() == [False, False, False, True, False]

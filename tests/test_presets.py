"""Residue feature presets (GVP-GNN and ProteinWorkshop-style schemes): shapes, definitions checked against
direct formulas on real atoms, masks for missing atoms, and the stated behaviour under rotations and
reflections (float64)."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from farfield.data import Featuriser, FeaturiserConfig
from farfield.errors import ConfigError
from farfield.features.residues import PRESETS, RESIDUE_FEATURE_PRESETS, SEQ_ENCODING_DIM, sequence_offset_encoding
from farfield.io import read_structure

WIDTHS = {"gvp": (27, 3), "parity_even": (24, 3), "ca": (21, 0), "ca_seq": (37, 0), "ca_angles": (47, 0),
          "ca_bb": (47, 3), "ca_sc": (59, 3)}
E3 = {"parity_even", "ca", "ca_seq"}


def _featurise(s, preset, dtype="float64"):
    return Featuriser(FeaturiserConfig(level="residue", edges="knn:8", preset=preset, dtype=dtype))(s)


def _pdb_atoms(path, resnum):
    """{atom name: xyz} of residue ``resnum`` of chain A, parsed from the PDB text directly (columns of the
    PDB format), independently of farfield's readers."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("ATOM") and line[21] == "A" and int(line[22:26]) == resnum and line[16] in " A":
            out.setdefault(line[12:16].strip(), np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])]))
    return out


def _torsion(p0, p1, p2, p3):
    """Dihedral angle by projection onto the plane normal to the central bond (a different formula from
    farfield's cross-product / atan2 one)."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - b0.dot(b1) * b1
    w = b2 - b2.dot(b1) * b1
    return math.atan2(np.cross(b1, v).dot(w), v.dot(w))


def test_registry_lists_every_preset_with_parity_and_symmetry():
    assert RESIDUE_FEATURE_PRESETS is PRESETS
    assert set(WIDTHS) <= set(PRESETS)
    for name, p in PRESETS.items():
        text = str(p)
        assert text.startswith(name) and f"x_s [L, {WIDTHS[name][0]}]" in text and f"Symmetry {p.symmetry}" in text
        assert p.symmetry == ("E(3)" if name in E3 else "SE(3)"), name
        assert all(par in ("even", "odd") for _, _, par in p.scalars)
        assert all(par in ("polar", "chiral") for _, par in p.vectors)
    assert "sin chi1 (1, odd)" in str(PRESETS["ca_sc"]) and "cos chi1 (1, even)" in str(PRESETS["ca_sc"])
    assert "side-chain direction (chiral)" in str(PRESETS["ca_bb"])
    assert "sin kappa (1, even)" in str(PRESETS["ca_angles"]) and "sin alpha (1, odd)" in str(PRESETS["ca_angles"])


def test_config_accepts_preset_names_and_rejects_unknown_ones():
    cfg = FeaturiserConfig(level="residue", preset="ca_sc")
    assert cfg.residue_preset == "ca_sc" and FeaturiserConfig.from_dict(cfg.to_dict()) == cfg
    assert FeaturiserConfig(residue_features="ca").residue_preset == "ca"
    assert FeaturiserConfig(preset="ca", residue_features="ca").residue_preset == "ca"
    assert "preset" not in FeaturiserConfig().to_dict()          # keys of older configurations do not change
    assert cfg.key() != FeaturiserConfig(level="residue", preset="ca_bb").key()
    with pytest.raises(ConfigError, match=r"preset must be one of .*'ca_angles'.*'ca_sc'.*got 'ca_full'"):
        FeaturiserConfig(level="residue", preset="ca_full")
    with pytest.raises(ConfigError, match="disagree"):
        FeaturiserConfig(level="residue", preset="ca", residue_features="parity_even")


def test_shapes_per_preset(structures):
    s = read_structure(structures / "1l2y.pdb")
    for name, (fs, fv) in WIDTHS.items():
        d = _featurise(s, name, "float32")
        assert d.x_s.shape == (20, fs) and d.x_s.dtype == torch.float32, name
        assert torch.isfinite(d.x_s).all()
        if fv:
            assert d.x_v.shape == (20, fv, 3) and torch.isfinite(d.x_v).all()
        else:
            assert "x_v" not in d
        assert PRESETS[name].num_scalars == fs and PRESETS[name].num_vectors == fv


def test_sequence_position_encoding_restarts_per_chain(structures):
    d = _featurise(read_structure(structures / "4hhb.pdb"), "ca_seq")
    pe = d.x_s[:, 21:21 + SEQ_ENCODING_DIM]
    assert torch.allclose(pe, sequence_offset_encoding(d.seq_index, SEQ_ENCODING_DIM, dtype=torch.float64))
    starts = torch.nonzero(torch.diff(d.chain_index)).flatten() + 1
    assert len(starts) == 3
    first = torch.tensor([1.0] * 8 + [0.0] * 8, dtype=torch.float64)        # position 0: cos 1, sin 0
    assert all(torch.equal(pe[i], first) for i in [0, *starts.tolist()])


def test_virtual_angles_and_dihedrals_match_direct_formulas(structures):
    path = structures / "1l2y.pdb"
    d = _featurise(read_structure(path), "ca_angles")
    ca = {r: _pdb_atoms(path, r)["CA"] for r in range(1, 21)}
    for i in (2, 5, 12):                       # 0-based residue index; PDB numbers start at 1
        u, w = ca[i] - ca[i + 1], ca[i + 2] - ca[i + 1]
        kappa = math.acos(u.dot(w) / np.linalg.norm(u) / np.linalg.norm(w))
        alpha = _torsion(ca[i], ca[i + 1], ca[i + 2], ca[i + 3])
        row = d.x_s[i, 43:47].tolist()
        assert row == pytest.approx([math.cos(kappa), math.sin(kappa), math.cos(alpha), math.sin(alpha)], abs=1e-9)
        a, b = _pdb_atoms(path, i), _pdb_atoms(path, i + 1)
        phi = _torsion(a["C"], b["N"], b["CA"], b["C"])
        assert d.x_s[i, 37:39].tolist() == pytest.approx([math.cos(phi), math.sin(phi)], abs=1e-9)
    # alpha helix (Trp-cage residues 2-8): virtual torsion near +50 degrees, kappa near 90 degrees
    assert 30 < math.degrees(math.atan2(d.x_s[3, 46], d.x_s[3, 45])) < 70
    assert 80 < math.degrees(math.atan2(d.x_s[3, 44], d.x_s[3, 43])) < 100
    # undefined at the chain ends: kappa at residues 0 and L-1, alpha at 0, L-2 and L-1
    assert (d.x_s[[0, 19], 43:45] == 0).all() and (d.x_s[[0, 18, 19], 45:47] == 0).all()


def test_chi_angles_match_hand_computation(structures):
    """Trp-cage (1L2Y) NLYIQWLKDGGPSSGRPPPS: chi1-2 of Trp6, chi1-4 of Lys8, chi1 of Ile4 (CG1), none for Gly."""
    path = structures / "1l2y.pdb"
    d = _featurise(read_structure(path), "ca_sc")
    chi, mask = d.x_s[:, 47:55].reshape(20, 4, 2), d.x_s[:, 55:59]
    cases = {6: [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")],
             8: [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "CE"), ("CG", "CD", "CE", "NZ")],
             4: [("N", "CA", "CB", "CG1"), ("CA", "CB", "CG1", "CD1")]}
    for resnum, torsions in cases.items():
        atoms = _pdb_atoms(path, resnum)
        i = resnum - 1
        for k, names in enumerate(torsions):
            t = _torsion(*(atoms[n] for n in names))
            assert chi[i, k].tolist() == pytest.approx([math.cos(t), math.sin(t)], abs=1e-9), (resnum, k)
        assert mask[i].tolist() == [1.0] * len(torsions) + [0.0] * (4 - len(torsions))
        assert (chi[i, len(torsions):] == 0).all()
    assert (mask[9] == 0).all() and (chi[9] == 0).all()                       # Gly10


def test_missing_sidechain_atoms_are_masked(structures):
    s = read_structure(structures / "1l2y.pdb")
    full = _featurise(s, "ca_sc").x_s
    drop = ((s.res_seq == 6) & (s.atom_name == "CG")) | ((s.res_seq == 8) & (s.atom_name == "CD"))
    x = _featurise(s.select(~drop), "ca_sc").x_s
    chi, mask = x[:, 47:55].reshape(20, 4, 2), x[:, 55:59]
    assert mask[5].tolist() == [0, 0, 0, 0] and (chi[5] == 0).all()           # Trp6 without CG: no chi1, chi2
    assert mask[7].tolist() == [1, 0, 0, 0] and (chi[7, 1:] == 0).all()        # Lys8 without CD: chi1 only
    assert torch.equal(chi[7, 0], full[7, 47:49])
    others = torch.ones(20, dtype=torch.bool)
    others[[5, 7]] = False
    assert torch.equal(x[others], full[others])
    assert torch.isfinite(x).all()


def _random_rotation(seed, det=1.0):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q


def test_scalars_rotation_invariant_vectors_equivariant_float64(structures):
    s = read_structure(structures / "1l2y.pdb")
    Q = _random_rotation(0)
    rotated = replace(s, coords=s.coords @ Q.numpy().T + np.array([3.0, -7.0, 11.0]))
    for name in PRESETS:
        a, b = _featurise(s, name), _featurise(rotated, name)
        assert torch.allclose(a.x_s, b.x_s, atol=1e-9, rtol=0), name
        if "x_v" in a:
            assert torch.allclose(b.x_v, a.x_v @ Q.T, atol=1e-9, rtol=0), name


def test_reflection_flips_exactly_the_odd_scalars_and_chiral_vectors(structures):
    """The parities listed in PRESETS hold column by column under a mirror image (det Q = -1)."""
    s = read_structure(structures / "1l2y.pdb")
    Q = _random_rotation(1, det=-1.0)
    mirrored = replace(s, coords=s.coords @ Q.numpy().T)
    for name, p in PRESETS.items():
        a, b = _featurise(s, name), _featurise(mirrored, name)
        odd = torch.tensor([par == "odd" for _, w, par in p.scalars for _ in range(w)])
        assert torch.allclose(b.x_s[:, ~odd], a.x_s[:, ~odd], atol=1e-9, rtol=0), name
        assert torch.allclose(b.x_s[:, odd], -a.x_s[:, odd], atol=1e-9, rtol=0), name
        if odd.any():
            assert a.x_s[:, odd].abs().max() > 0.5          # the odd columns are not trivially zero
        for c, (_, par) in enumerate(p.vectors):
            same = torch.allclose(b.x_v[:, c], a.x_v[:, c] @ Q.T, atol=1e-9, rtol=0)
            assert same == (par == "polar"), (name, c, par)


def test_backbone_runs_on_presets_without_vectors(structures):
    from torch_geometric.data import Batch

    from farfield.models import InputSpec, build_backbone

    d = Batch.from_data_list([_featurise(read_structure(structures / "1l2y.pdb"), "ca_seq", "float32")])
    spec = InputSpec.from_data(d)
    assert (spec.node_s, spec.node_v) == (37, 0)
    torch.manual_seed(0)
    out = build_backbone("gvp", spec, cutoff=20.0)(d)
    assert out.s.shape[0] == 20 and torch.isfinite(out.s).all()

import math

import numpy as np
import pytest
import torch

from farfield.errors import ConfigError
from farfield.features import (BesselRBF, CosineEnvelope, ElementVocabulary, GaussianRBF, PolynomialEnvelope,
                               dihedral_features, orientation_vectors, residue_one_hot, sequence_offset_encoding,
                               sidechain_direction)
from farfield.io import ResidueView, read_structure


def test_element_vocabulary_atom3d_preset():
    v = ElementVocabulary.preset("atom3d")
    assert v.size == 9
    idx = v.index(["H", "C", "N", "O", "F", "S", "CL", "P", "Se", "Fe"]).tolist()
    assert idx == [0, 1, 2, 3, 4, 5, 6, 7, 8, 8]
    oh = v.one_hot(["C", "Zn"])
    assert oh.shape == (2, 9) and oh[0, 1] == 1 and oh[1, 8] == 1
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        ElementVocabulary(("C",), other=False).index(["N"])
    with pytest.raises(ConfigError, match="unknown element vocabulary"):
        ElementVocabulary.preset("nope")


def _helix_dihedrals(structures):
    rv = ResidueView.from_structure(read_structure(structures / "1l2y.pdb"))
    bb = torch.from_numpy(rv.backbone)
    return rv, dihedral_features(bb, torch.from_numpy(rv.segment_index))


def test_dihedrals_match_gemmi(structures):
    import gemmi

    rv, f = _helix_dihedrals(structures)
    st = gemmi.read_structure(str(structures / "1l2y.pdb"))
    ch = st[0]["A"]
    for i in range(1, len(rv) - 1):
        phi, psi = gemmi.calculate_phi_psi(ch[i - 1], ch[i], ch[i + 1])
        assert math.isclose(math.atan2(f[i, 1], f[i, 0]), phi, abs_tol=1e-6)
        assert math.isclose(math.atan2(f[i, 3], f[i, 2]), psi, abs_tol=1e-6)
        omega = gemmi.calculate_omega(ch[i], ch[i + 1])
        assert math.isclose(math.cos(omega), f[i, 4], abs_tol=1e-6)
    # chain ends: phi undefined at the first residue, psi/omega at the last
    assert (f[0, :2] == 0).all() and (f[-1, 2:] == 0).all()
    assert torch.allclose(f[1:, 0] ** 2 + f[1:, 1] ** 2, torch.ones(len(rv) - 1, dtype=f.dtype))


def test_features_do_not_cross_chain_breaks(structures):
    rv = ResidueView.from_structure(read_structure(structures / "2XHE.pdb"))
    bb = torch.from_numpy(rv.backbone)
    seg = torch.from_numpy(rv.segment_index)
    f = dihedral_features(bb, seg)
    o = orientation_vectors(bb[:, 1], seg)
    i = np.flatnonzero(rv.chain_break)
    assert (f[i, :2] == 0).all() and (f[i - 1, 2:] == 0).all()
    assert (o[i, 1] == 0).all() and (o[i - 1, 0] == 0).all()
    assert torch.isfinite(f).all() and torch.isfinite(o).all()
    starts = np.flatnonzero(rv.segment_index[1:] != rv.segment_index[:-1]) + 1
    inner = np.setdiff1d(np.arange(1, len(rv) - 1), np.r_[starts, starts - 1])
    assert torch.allclose(o[inner].norm(dim=-1), torch.ones(len(inner), 2, dtype=o.dtype))


def test_missing_backbone_atoms_give_zeros_not_nan(data_dir):
    rv = ResidueView.from_structure(read_structure(data_dir / "structures/tricky/gemmi_1lzh.pdb.gz"))
    bb = torch.from_numpy(rv.backbone)
    assert (dihedral_features(bb, torch.from_numpy(rv.segment_index)) == 0).all()
    assert (sidechain_direction(bb) == 0).all()


def test_sidechain_direction_points_towards_cb(structures):
    s = read_structure(structures / "1aki.pdb")
    rv = ResidueView.from_structure(s)
    v = sidechain_direction(torch.from_numpy(rv.backbone)).numpy()
    cb_dir = rv.cb - rv.ca
    cb_dir /= np.linalg.norm(cb_dir, axis=1, keepdims=True)
    assert np.median((v * cb_dir).sum(1)) > 0.9
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-9)


def test_residue_one_hot_and_offsets():
    oh = residue_one_hot(torch.tensor([0, 19, 20]))
    assert oh.shape == (3, 21) and oh.sum() == 3 and oh[2, 20] == 1
    enc = sequence_offset_encoding(torch.tensor([0, 3, -3, 5]), 16, torch.tensor([True, True, True, False]))
    assert enc.shape == (4, 16)
    assert torch.allclose(enc[0, :8], torch.ones(8)) and (enc[0, 8:] == 0).all()
    assert torch.allclose(enc[1, :8], enc[2, :8]) and torch.allclose(enc[1, 8:], -enc[2, 8:])
    assert (enc[3] == 0).all()  # different chains


# --- parity: which residue features survive a mirror image -------------------------------------------
def _mirrored(s):
    from dataclasses import replace

    return replace(s, coords=s.coords * np.array([-1.0, 1.0, 1.0]))


def test_sin_dihedrals_and_sidechain_are_chiral_cos_and_bisector_are_not(structures):
    from farfield.features.residues import RESIDUE_FEATURE_PRESETS, residue_node_features

    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    s = read_structure(structures / "1l2y.pdb")
    rv, rm = ResidueView.from_structure(s), ResidueView.from_structure(_mirrored(s))
    args = [(torch.from_numpy(v.res_type), torch.from_numpy(v.backbone), torch.from_numpy(v.segment_index))
            for v in (rv, rm)]
    for preset, chiral in (("gvp", True), ("parity_even", False)):
        (xs, xv), (ms, mv) = (residue_node_features(*a, preset=preset) for a in args)
        assert xs.shape[1] == sum(w for _, w, _ in RESIDUE_FEATURE_PRESETS[preset].scalars)
        assert RESIDUE_FEATURE_PRESETS[preset].symmetry == ("SE(3)" if chiral else "E(3)")
        if chiral:
            dih, mdih = xs[:, 21:], ms[:, 21:]
            assert torch.allclose(mdih[:, 0::2], dih[:, 0::2], atol=1e-12)      # cos: even
            assert torch.allclose(mdih[:, 1::2], -dih[:, 1::2], atol=1e-12)     # sin: odd
            assert (mdih - dih).abs().max() > 1.0
            assert torch.allclose(mv[:, :2], xv[:, :2] @ M, atol=1e-12)          # CA directions: polar
            assert not torch.allclose(mv[:, 2], xv[:, 2] @ M, atol=1e-3)         # side chain: chiral
        else:
            assert torch.allclose(ms, xs, atol=1e-12)
            assert torch.allclose(mv, xv @ M, atol=1e-12)


def test_featuriser_declares_its_symmetry():
    from farfield.data import Featuriser, FeaturiserConfig

    assert Featuriser(FeaturiserConfig(level="atom")).symmetry == "E(3)"
    gvp = Featuriser(FeaturiserConfig(level="residue", edges="knn:10"))
    assert gvp.symmetry == "SE(3)" and "sin phi (x_s)" in gvp.chiral_features
    even = Featuriser(FeaturiserConfig(level="residue", edges="knn:10", residue_features="parity_even"))
    assert even.symmetry == "E(3)" and even.chiral_features == ()
    with pytest.raises(ConfigError, match="residue_features must be one of"):
        FeaturiserConfig(residue_features="cos")


def test_mirrored_peptide_changes_gvp_output_unless_features_are_parity_even():
    """GVP claims E(3), yet the default residue features make the pipeline chiral."""
    from torch_geometric.data import Batch

    from farfield.data import Featuriser, FeaturiserConfig
    from farfield.io import example_path
    from farfield.models import InputSpec, build_backbone

    s = read_structure(example_path())
    for preset, changes in (("gvp", True), ("parity_even", False)):
        f = Featuriser(FeaturiserConfig(level="residue", edges="knn:16", dtype="float64", residue_features=preset))
        a, b = Batch.from_data_list([f(s)]), Batch.from_data_list([f(_mirrored(s))])
        torch.manual_seed(0)
        model = build_backbone("gvp", InputSpec.from_data(a), cutoff=100.0).double().eval()
        with torch.no_grad():
            diff = float((model(a).s - model(b).s).abs().max())
        assert (diff > 0.1) if changes else (diff < 1e-9), (preset, diff)


# --- radial bases: behaviour beyond the cutoff is explicit, for every basis ---------------------
CUT = 5.0
D = torch.tensor([0.0, 1.0, 4.9, 5.0, 7.0, 30.0], dtype=torch.float64)


@pytest.mark.parametrize("make", [lambda **k: GaussianRBF(CUT, 8, **k), lambda **k: BesselRBF(CUT, 8, **k)])
def test_beyond_error_is_default_and_names_the_problem(make):
    basis = make()
    assert basis.beyond == "error"
    with pytest.raises(ConfigError, match=r"2 of 6 distances exceed the cutoff \(max 30\)"):
        basis(D)
    out = basis(D[:4])
    assert out.shape == (4, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("make", [lambda **k: GaussianRBF(CUT, 8, **k), lambda **k: BesselRBF(CUT, 8, **k)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_beyond_error_tolerates_round_off_at_the_cutoff_but_not_longer_edges(make, dtype):
    # an edge at the cutoff rotated into a canonical frame in float32 comes out a few ulps long: the same edge
    basis = make()
    d_cut = torch.tensor([CUT], dtype=dtype)
    ulps = torch.nextafter(torch.nextafter(d_cut, d_cut + 1), d_cut + 1)              # 2 ulps past the cutoff
    assert float(ulps) > CUT
    assert torch.equal(basis(ulps), basis(d_cut))                                     # treated as at the cutoff
    with pytest.raises(ConfigError, match="exceed the cutoff"):
        basis(torch.tensor([CUT * (1 + 1e-3)], dtype=dtype))                          # a genuinely longer edge


@pytest.mark.parametrize("make", [lambda **k: GaussianRBF(CUT, 8, **k), lambda **k: BesselRBF(CUT, 8, **k)])
@pytest.mark.parametrize("envelope", [None, CosineEnvelope(CUT), PolynomialEnvelope(CUT)])
def test_beyond_zero_gives_exact_zeros(make, envelope):
    out = make(envelope=envelope, beyond="zero")(D)
    assert (out[4:] == 0).all()
    assert (out[1:3].abs().sum(-1) > 0).all()


def test_beyond_clamp_treats_far_edges_as_at_the_cutoff_gaussian():
    g = GaussianRBF(CUT, 8, beyond="clamp")
    out = g(D)
    assert torch.equal(out[4], out[3]) and torch.equal(out[5], out[3])
    assert out[5].abs().sum() > 0.5  # not silently zero: the last Gaussian sits at the cutoff


def test_clamp_refused_where_it_would_silently_zero():
    with pytest.raises(ConfigError, match="vanishes at d = c"):
        BesselRBF(CUT, 8, beyond="clamp")
    with pytest.raises(ConfigError, match="with an envelope gives long edges weight 0"):
        GaussianRBF(CUT, 8, envelope=CosineEnvelope(CUT), beyond="clamp")
    with pytest.raises(ConfigError, match="differs from the basis cutoff"):
        GaussianRBF(CUT, 8, envelope=CosineEnvelope(4.0))


def test_envelopes_clamped_beyond_cutoff():
    # the unclamped cosine is periodic: at d = 2c it would be 1 again
    assert CosineEnvelope(CUT)(torch.tensor([2 * CUT])).item() == 0.0
    assert PolynomialEnvelope(CUT)(torch.tensor([1.5 * CUT])).item() == 0.0
    d = torch.linspace(0, CUT, 50, dtype=torch.float64)
    for env in (CosineEnvelope(CUT), PolynomialEnvelope(CUT)):
        u = env(d)
        assert u[0] == pytest.approx(1.0) and u[-1] == pytest.approx(0.0, abs=1e-12)
        assert (u[1:] <= u[:-1] + 1e-12).all()


def test_bessel_values_and_limit_at_zero():
    b = BesselRBF(CUT, 3, beyond="zero")
    d = torch.tensor([1e-12, 2.0], dtype=torch.float64)
    out = b(d)
    n = torch.arange(1, 4, dtype=torch.float64)
    assert torch.allclose(out[0], math.sqrt(2 / CUT) * n * math.pi / CUT)
    assert torch.allclose(out[1], math.sqrt(2 / CUT) * torch.sin(n * math.pi * 2.0 / CUT) / 2.0)
    d.requires_grad_(True)
    b(d).sum().backward()
    assert torch.isfinite(d.grad).all()


def test_gaussian_exponent_clamp_changes_nothing_beyond_float_precision():
    g = GaussianRBF(CUT, 50, beyond="zero")
    d = torch.linspace(0, CUT, 201, dtype=torch.float64)
    exact = torch.exp(-(((d.unsqueeze(-1) - g.centres) / g.width) ** 2))
    assert float((g(d) - exact).abs().max()) <= 2e-35


def test_edge_features_split_basis_and_envelope_weight():
    env = CosineEnvelope(CUT)
    g = GaussianRBF(CUT, 8, envelope=env)
    feats, w = g.edge_features(D[:4])
    assert torch.equal(w, env(D[:4]))
    assert torch.allclose(feats * w.unsqueeze(-1), g(D[:4]))
    assert GaussianRBF(CUT, 8).edge_features(D[:4])[1] is None


def test_range_check_under_compile_poisons_instead_of_syncing(monkeypatch):
    g = GaussianRBF(CUT, 8)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    out = g(D)
    assert torch.isnan(out[4:]).all() and torch.isfinite(out[:4]).all()


def test_two_range_radial_blocks_and_weights():
    from farfield.features.radial import TwoRangeRadial
    local = GaussianRBF(CUT, 8, envelope=CosineEnvelope(CUT))
    tr = TwoRangeRadial(local, GaussianRBF(31.0, 6))
    et = torch.tensor([0, 0, 0, 0, 1, 1])
    d = torch.tensor([0.0, 1.0, 4.9, 5.0, 7.0, 30.0], dtype=torch.float64)
    f, w = tr.edge_features(d, et)
    assert f.shape == (6, 14) and tr.num_basis == 14
    lf, lw = local.edge_features(d[:4])
    assert torch.equal(f[:4, :8], lf) and torch.equal(w[:4], lw) and (f[:4, 8:] == 0).all()
    assert (f[4:, :8] == 0).all() and (w[4:] == 1).all()
    with pytest.raises(ConfigError, match="exceed the cutoff"):       # local edges keep the local policy
        tr.edge_features(d, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ConfigError, match="edge_type"):
        tr.edge_features(d, None)


def test_virtual_angles_and_chi_features_stop_at_chain_breaks_and_gaps(structures):
    from farfield.features.residues import chi_atom_coords, sidechain_torsion_features, virtual_angle_features

    s = read_structure(structures / "2XHE.pdb")
    rv = ResidueView.from_structure(s)
    seg = torch.from_numpy(rv.segment_index)
    va = virtual_angle_features(torch.from_numpy(rv.ca), seg)
    i = np.flatnonzero(rv.chain_break)
    assert len(i) and (va[i, :2] == 0).all() and (va[i - 1, :2] == 0).all()      # kappa needs i-1, i, i+1
    assert (va[i, 2:] == 0).all() and (va[i - 2, 2:] == 0).all()                  # alpha needs i-1 .. i+2
    assert torch.isfinite(va).all()
    inner = np.flatnonzero((rv.segment_index[2:] == rv.segment_index[:-2])) + 1
    assert torch.allclose(va[inner, 0] ** 2 + va[inner, 1] ** 2, torch.ones(len(inner), dtype=va.dtype))
    chi = sidechain_torsion_features(torch.from_numpy(chi_atom_coords(s, rv)))
    assert chi.shape == (len(rv), 12) and torch.isfinite(chi).all()
    gly = torch.from_numpy(rv.res_type == 7)
    assert (chi[gly] == 0).all()
    on = chi[:, 8:] == 1
    assert torch.allclose(chi[:, 0:8:2][on] ** 2 + chi[:, 1:8:2][on] ** 2, torch.ones(int(on.sum()), dtype=chi.dtype))

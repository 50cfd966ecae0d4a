import gzip

import numpy as np
import pytest

from farfield.errors import ConfigError, InputError
from farfield.io import ReadOptions, ResidueView, read_molecules, read_structure, read_xyz
from farfield.io.structure import Structure


def test_1aki_same_atoms_in_pdb_cif_bcif(structures):
    ss = [read_structure(structures / f"1aki.{ext}") for ext in ("pdb", "cif", "bcif")]
    assert [len(s) for s in ss] == [1079, 1079, 1079]
    ref = ss[0]
    for s in ss[1:]:
        np.testing.assert_allclose(s.coords, ref.coords, atol=1e-3)
        assert (s.element == ref.element).all()
        assert (s.atom_name == ref.atom_name).all()
        assert (s.res_seq == ref.res_seq).all()
        assert (s.chain_id == ref.chain_id).all()
        assert (s.hetero == ref.hetero).all()
    assert ref.is_water.sum() == 78
    assert len(read_structure(structures / "1aki.pdb", waters=False)) == 1001


def test_nmr_model_selection(structures):
    s1 = read_structure(structures / "1l2y.pdb")
    s2 = read_structure(structures / "1l2y.pdb", model=2)
    assert s1.n_models == 38 and s1.model == 1 and s2.model == 2
    assert len(s1) == len(s2) == 304
    assert not np.allclose(s1.coords, s2.coords)
    b2 = read_structure(structures / "1l2y.bcif", model=2)
    np.testing.assert_allclose(b2.coords, s2.coords, atol=1e-3)
    with pytest.raises(InputError, match="model 39 requested but the file holds 38"):
        read_structure(structures / "1l2y.pdb", model=39)


def test_varying_atom_counts_between_models(structures):
    counts = {len(read_structure(structures / "2axd.pdb", model=m)) for m in (1, 2, 3, 12)}
    assert len(counts) > 1


def test_altloc_policies(structures):
    all_ = read_structure(structures / "4i39.cif", altloc="all")
    first = read_structure(structures / "4i39.cif", altloc="first")
    occ = read_structure(structures / "4i39.cif")
    assert len(all_) == 1974 and len(first) == 987 and len(occ) == 987
    # 3o5r: per-residue choice by mean occupancy; no residue keeps two labels
    s = read_structure(structures / "3o5r.pdb")
    labelled = s.altloc != ""
    keys = {(c, r, i) for c, r, i in zip(s.chain_id[labelled], s.res_seq[labelled], s.ins_code[labelled])}
    for k in keys:
        m = labelled & (s.chain_id == k[0]) & (s.res_seq == k[1]) & (s.ins_code == k[2])
        assert len(set(s.altloc[m])) == 1
    full = read_structure(structures / "3o5r.pdb", altloc="all")
    assert len(full) > len(s)


def test_altloc_highest_occupancy_wins_even_when_residue_name_changes(data_dir):
    # biotite edge case: SER altlocs A/B at 0.2 each, PRO altloc C at 0.6 on the same residue number
    s = read_structure(data_dir / "structures/tricky/biotite_altloc.cif")
    r22 = s.res_seq == 22
    assert set(s.res_name[r22]) == {"PRO"} and set(s.altloc[r22]) == {"C"}
    f = read_structure(data_dir / "structures/tricky/biotite_altloc.cif", altloc="first")
    assert set(f.res_name[f.res_seq == 22]) == {"SER"}


def test_altloc_tie_goes_to_first_label():
    s = Structure.from_arrays(np.arange(12, dtype=float).reshape(4, 3), ["C"] * 4, atom_name=["CA", "CA", "CB", "CB"],
                              altloc=["B", "A", "B", "A"], occupancy=[0.5] * 4)
    from farfield.io import apply_options
    out = apply_options(s, ReadOptions())
    assert list(out.altloc) == ["B", "B"]


def test_insertion_codes_and_negative_numbers(structures):
    s = read_structure(structures / "1dix.pdb")
    assert (s.ins_code != "").any()
    rv = ResidueView.from_structure(s)
    assert len(rv) == 208
    assert (rv.ins_code != "").sum() > 0
    neg = read_structure(structures / "1o1z.cif")
    assert (neg.res_seq < 0).any()


def test_gzip_and_ca_only(data_dir):
    s = read_structure(data_dir / "structures/1pfe.cif.gz")
    assert len(s) > 0
    ca = read_structure(data_dir / "structures/tricky/gemmi_1lzh.pdb.gz")
    assert len(ca) == 258 and set(ca.atom_name) == {"CA"}
    rv = ResidueView.from_structure(ca)
    assert len(rv) == 258
    assert rv.backbone_mask[:, 1].all() and not rv.backbone_mask[:, [0, 2, 3]].any()
    assert np.isnan(rv.cb).all()


def test_gz_roundtrip_equals_plain(tmp_path, structures):
    gz = tmp_path / "1aki.pdb.gz"
    gz.write_bytes(gzip.compress((structures / "1aki.pdb").read_bytes()))
    np.testing.assert_array_equal(read_structure(gz).coords, read_structure(structures / "1aki.pdb").coords)


def test_mse_and_hydrogen_options(structures):
    s = read_structure(structures / "1A8O.pdb")
    rv = ResidueView.from_structure(s)
    assert "MSE" in set(rv.res_name) and rv.res_type[rv.res_name == "MSE"][0] == 12  # MET
    h = read_structure(structures / "1l2y.pdb")
    noh = read_structure(structures / "1l2y.pdb", hydrogens=False)
    assert h.is_hydrogen.sum() > 0 and noh.is_hydrogen.sum() == 0 and len(noh) < len(h)
    het = read_structure(structures / "4hhb.pdb", hetero=False, waters=False)
    assert not het.hetero.any()
    a = read_structure(structures / "4hhb.pdb", chains="A,C")
    assert set(a.chain_id) == {"A", "C"}


def test_chain_breaks(structures):
    rv = ResidueView.from_structure(read_structure(structures / "2XHE.pdb"))
    assert rv.chain_break.any()
    i = np.flatnonzero(rv.chain_break)
    # a break is a missing peptide bond: C(i-1)-N(i) > 2.5 A (all backbone atoms are present here)
    assert rv.backbone_mask[i, 0].all() and rv.backbone_mask[i - 1, 2].all()
    assert (np.linalg.norm(rv.backbone[i, 0] - rv.backbone[i - 1, 2], axis=1) > 2.5).all()
    assert (rv.chain_index[i] == rv.chain_index[i - 1]).all()
    # segments increase at every break and every chain change
    assert rv.segment_index[-1] == rv.chain_break.sum() + rv.chain_index.max()


def test_virtual_cb_close_to_real_cb(structures):
    s = read_structure(structures / "1aki.pdb")
    rv = ResidueView.from_structure(s)
    cb = s.coords[(s.atom_name == "CB")]
    has_cb = np.array([r != "GLY" for r in rv.res_name])
    d = np.linalg.norm(rv.cb[has_cb] - cb, axis=1)
    assert np.median(d) < 0.2 and d.max() < 0.6  # ideal geometry vs refined CB


def test_rna_has_no_residue_view(structures):
    s = read_structure(structures / "4gxy.cif")
    with pytest.raises(InputError, match="no amino-acid residues"):
        ResidueView.from_structure(s)


TRICKY_EXPECTED = {
    # file: expected atom count, or the error message fragment
    "biopython_1SSU_mod.pdb": 2,
    "biopython_a_structure.pdb": "duplicated atom",
    "biopython_occupancy.pdb": 3,
    "biotite_altloc.cif": 14,
    "biotite_hetatm.pdb": 5,
    "biotite_res_ids.cif": 251,
    "gemmi_1lzh.pdb.gz": 258,
    "gemmi_5moo_header.pdb": "no atom records",
    "gemmi_pdb1gdr.ent": 105,
}


def test_every_tricky_file_is_sensible_or_a_clear_error(data_dir):
    tricky = data_dir / "structures/tricky"
    assert sorted(p.name for p in tricky.iterdir()) == sorted(TRICKY_EXPECTED)
    for name, expected in TRICKY_EXPECTED.items():
        if isinstance(expected, int):
            s = read_structure(tricky / name)
            assert len(s) == expected, name
            assert np.isfinite(s.coords).all()
            assert (s.element != "X").all(), name
        else:
            with pytest.raises(InputError) as e:
                read_structure(tricky / name)
            assert expected in str(e.value) and name in str(e.value)


def test_bad_inputs_name_the_file(tmp_path):
    cases = {
        "empty.pdb": b"",
        "blank.cif": b"   \n\n",
        "truncated.pdb": b"ATOM      1  N   ALA A   1      1.0",
        "garbage.cif": b"this is not a cif file\n",
        "bad.bcif": b"\x00\x01\x02 not msgpack",
        "bad.sdf": b"not a molfile\n\n\n",
        "bad.xyz": b"3\ncomment\nC 0 0 0\n",
        "nan.xyz": b"1\n\nC nan 0 0\n",
        "badnum.xyz": b"1\n\nC 0 x 0\n",
        "bad.pdb.gz": b"not gzip",
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(InputError) as e:
            read_structure(p)
        assert str(p) in str(e.value), name
    with pytest.raises(InputError, match="file not found"):
        read_structure(tmp_path / "missing.pdb")
    with pytest.raises(InputError, match="unknown structure format"):
        read_structure(tmp_path / "x.docx")
    (tmp_path / "x.dat").write_text("1")
    with pytest.raises(InputError, match="unknown structure format"):
        read_structure(tmp_path / "x.dat")
    with pytest.raises(InputError, match=r"chain\(s\) \['Z'\] not found"):
        read_structure(_write_pdb(tmp_path), chains=["Z"])


def test_nan_coordinates_rejected(tmp_path):
    p = _write_pdb(tmp_path)
    text = p.read_text().replace("   1.000   2.000   3.000", "     nan     nan     nan")
    p.write_text(text)
    with pytest.raises(InputError, match="non-finite"):
        read_structure(p)


def _write_pdb(tmp_path):
    p = tmp_path / "mini.pdb"
    p.write_text("ATOM      1  CA  ALA A   1       1.000   2.000   3.000  1.00  0.00           C\n"
                 "ATOM      2  CA  GLY A   2       4.000   2.000   3.000  1.00  0.00           C\nEND\n")
    return p


def test_read_options_validation():
    with pytest.raises(ConfigError, match="altloc must be one of"):
        ReadOptions(altloc="best")
    with pytest.raises(ConfigError, match="model must be an integer >= 1"):
        ReadOptions(model=0)
    with pytest.raises(ConfigError, match="unknown ReadOptions key"):
        ReadOptions.from_dict({"modle": 1})
    assert ReadOptions.from_dict(ReadOptions(chains=("A",)).to_dict()) == ReadOptions(chains=("A",))


def test_qm9_xyz_targets(data_dir):
    [m] = read_xyz(data_dir / "atom3d/qm9_xyz_gdb/dsgdb9nsd_000005.xyz")
    assert list(m.element) == ["C", "N", "H"]
    assert m.properties["U0"] == pytest.approx(-93.411888)
    assert m.properties["gdb_index"] == 5 and len(m.properties["mulliken_charges"]) == 3
    [m212] = read_xyz(data_dir / "atom3d/qm9_xyz_gdb/dsgdb9nsd_000212.xyz")
    assert len(m212) == 13 and m212.coords[0, 0] == pytest.approx(2.1997e-6)
    assert m212.properties["smiles"] == "CN1C=CC=C1"


def test_qm9_mathematica_exponents(tmp_path, data_dir):
    text = (data_dir / "atom3d/qm9_xyz_gdb/dsgdb9nsd_000212.xyz").read_text().replace("2.1997E-6", "2.1997*^-6")
    (tmp_path / "m.xyz").write_text(text)
    [m] = read_xyz(tmp_path / "m.xyz")
    assert m.coords[0, 0] == pytest.approx(2.1997e-6)
    assert m.properties["U0"] == pytest.approx(-249.387499)


def test_multi_frame_plain_xyz(tmp_path):
    (tmp_path / "t.xyz").write_text("2\nframe a\nO 0 0 0\nH 0 0 0.96\n2\nframe b\nO 0 0 0\nH 0 0 1.0\n")
    frames = read_xyz(tmp_path / "t.xyz")
    assert len(frames) == 2 and frames[1].coords[1, 2] == 1.0
    assert len(read_structure(tmp_path / "t.xyz", model=2)) == 2


def test_sdf_molecules(data_dir):
    for p in sorted((data_dir / "molecules").glob("*.sdf")) + sorted((data_dir / "atom3d/ligands_sdf").glob("*.sdf")):
        mols = read_molecules(p)
        assert len(mols) >= 1
        m = mols[0]
        assert len(m) > 0 and m.bonds is not None and m.bonds.max() < len(m)
        assert np.isfinite(m.coords).all()
    tyr = read_molecules(data_dir / "molecules/TYR.sdf")[0]
    assert (tyr.element == "H").sum() > 0  # hydrogens in the file are kept


@pytest.mark.parametrize("bad, axis", [("********", "x"), ("   4.8xx", "x"), ("        ", "x"), ("  1.0e+3", "x"),
                                       ("   2-000", "y"), ("   3.0.0", "z")])
@pytest.mark.parametrize("gz", [False, True])
def test_garbled_pdb_coordinates_are_refused_with_file_and_line(tmp_path, bad, axis, gz):
    import gzip

    line = "ATOM      2  CA  GLY A   2       4.000   2.000   3.000  1.00  0.00           C"
    col = {"x": 30, "y": 38, "z": 46}[axis]
    garbled = line[:col] + bad + line[col + 8:]
    text = ("REMARK   1 test\n"
            "ATOM      1  CA  ALA A   1       1.000   2.000   3.000  1.00  0.00           C\n"
            + garbled + "\nEND\n")
    p = tmp_path / ("garbled.pdb.gz" if gz else "garbled.pdb")
    p.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    with pytest.raises(InputError, match=rf"line 3: {axis} coordinate \(columns {col + 1}-{col + 8}\)") as e:
        read_structure(p)
    assert str(p) in str(e.value)


def test_short_atom_record_is_refused(tmp_path):
    p = tmp_path / "short.pdb"
    p.write_text("ATOM      1  CA  ALA A   1       1.000   2.000\nEND\n")
    with pytest.raises(InputError, match="line 1: ATOM record ends before its coordinate columns"):
        read_structure(p)

import numpy as np
import pandas as pd
import pytest

from farfield.errors import InputError
from farfield.io import Atom3DLMDB, read_structure, structure_to_dataframe, write_atom3d_lmdb

def _identity_order(s):
    return np.lexsort((s.altloc, s.atom_name, s.ins_code, s.res_seq, s.chain_id))


SETS = ("tests_test_data_lmdb", "example_with_label", "old_format_no_types")


@pytest.mark.parametrize("name", SETS)
def test_lmdb_round_trip_against_source_pdb(data_dir, name):
    ds = Atom3DLMDB(data_dir / "atom3d/lmdb" / name)
    assert len(ds) == 4 and ds.ids == ["11as.pdb", "117e.pdb", "2olx.pdb", "103l.pdb"]
    item = ds[0]
    assert isinstance(item["atoms"], pd.DataFrame) and len(item["atoms"]) == 5220
    sources = {"11as.pdb": "11as.pdb", "117e.pdb": "117e.pdb", "103l.pdb": "103l.pdb",
               "2olx.pdb": "2olx_assembly_3models.pdb"}
    for i, item_id in enumerate(ds.ids):
        pdb = data_dir / "atom3d/pdb" / sources[item_id]
        for model in range(1, (3 if item_id == "2olx.pdb" else 1) + 1):
            a = ds.structure(i, model=model, altloc="all")
            b = read_structure(pdb, model=model, altloc="all")
            assert len(a) == len(b), (item_id, model)
            # atom3d (Biopython) and gemmi order hetero records within chains differently: compare by identity
            oa, ob = _identity_order(a), _identity_order(b)
            np.testing.assert_allclose(a.coords[oa], b.coords[ob], atol=1e-3)
            assert (a.element[oa] == b.element[ob]).all() and (a.atom_name[oa] == b.atom_name[ob]).all()
            assert (a.hetero[oa] == b.hetero[ob]).all() and (a.res_seq[oa] == b.res_seq[ob]).all()
    assert ds.structure(2).n_models == 3 and len(ds.structure(2)) == 35
    assert len(ds[ds.index_of("103l.pdb")]["atoms"]) == 1404
    if name == "example_with_label":
        assert ds[0]["label"] == 0


@pytest.mark.parametrize("fmt", ["json", "msgpack", "pkl"])
def test_write_then_read_all_serialisations(tmp_path, data_dir, fmt):
    s = read_structure(data_dir / "structures/1aki.pdb")
    df = structure_to_dataframe(s)
    items = [{"id": "1aki", "atoms": df, "scores": {"neglog_aff": 6.5}},
             {"id": "1aki_b", "atoms": df.iloc[:10], "label": "1"}]
    assert write_atom3d_lmdb(items, tmp_path / fmt, fmt, with_types=fmt != "pkl") == 2
    ds = Atom3DLMDB(tmp_path / fmt, allow_pickle=fmt == "pkl")      # pickle needs the opt-in
    assert ds.serialization_format == fmt and len(ds) == 2 and ds.ids == ["1aki", "1aki_b"]
    back = ds.structure(0)
    np.testing.assert_allclose(back.coords, s.coords)
    assert (back.element == s.element).all() and (back.hetero == s.hetero).all()
    assert (back.is_water == s.is_water).all()
    assert ds[0]["scores"] == {"neglog_aff": 6.5} and len(ds[1]["atoms"]) == 10


def test_lmdb_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        Atom3DLMDB(tmp_path / "nope")
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError, match="no data.mdb"):
        Atom3DLMDB(tmp_path / "dir")
    write_atom3d_lmdb([{"id": "x", "atoms": pd.DataFrame({"x": [0.0], "y": [0.0], "z": [0.0], "element": ["C"]})}],
                      tmp_path / "ok")
    ds = Atom3DLMDB(tmp_path / "ok")
    with pytest.raises(InputError, match="no atom table 'atoms_protein'"):
        ds.structure(0, field="atoms_protein")
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(InputError, match="ATOM3D LMDB"):
        read_structure(tmp_path / "ok")

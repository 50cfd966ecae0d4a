"""QM9 loaders (farfield.datasets.qm9): raw XYZ files, the SchNetPack ASE database, ATOM3D SMP LMDBs, units,
atom references, splits, bad input, and one training epoch on each source.

Real files come from FARFIELD_TEST_DATA (atom3d/qm9_xyz_gdb, qm9/schnetpack_test_qm9.db, atom3d/smp_splits;
skipped with a reason when absent, failed under CI=true); everything else is written to tmp_path."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import missing_data
from farfield.datasets import DATASETS, dataset_info, target_units
from farfield.datasets import qm9 as Q
from farfield.errors import ConfigError, InputError
from farfield.io.atom3d import write_atom3d_lmdb
from tests.conftest import data_root

HA = 27.211386246
HCN = dict(mu=2.8937, alpha=12.99, homo=-0.3604, lumo=0.0191, gap=0.3796, r2=48.7476, zpve=0.016601,
           U0=-93.411888, U=-93.40937, H=-93.408425, G=-93.431246, Cv=6.278)      # gdb_5, raw file units


def _need(p: Path) -> Path:
    if not p.exists():
        missing_data(f"QM9 test data {p} is missing (set FARFIELD_TEST_DATA)")
    return p


@pytest.fixture(scope="module")
def raw_dir() -> Path:
    return _need(data_root() / "atom3d" / "qm9_xyz_gdb")


@pytest.fixture(scope="module")
def db() -> Path:
    return _need(data_root() / "qm9" / "schnetpack_test_qm9.db")


@pytest.fixture(scope="module")
def split_dir() -> Path:
    return _need(data_root() / "atom3d" / "smp_splits")


def _raw_value(name: str) -> float:
    return HCN[name] * (HA if name in ("homo", "lumo", "gap", "zpve", "U0", "U", "H", "G") else 1.0)


# ------------------------------------------------------------------------------------------------ raw files
def test_raw_files_targets_units_and_atoms(raw_dir):
    gs = DATASETS["qm9"](raw_dir, hydrogens=True, target="all")
    assert [g.name for g in gs] == ["gdb_5", "gdb_212", "gdb_1458"]
    g = gs[0]
    assert g.y.shape == (1, 12) and g.x_s.shape == (3, 6) and g.pos.shape == (3, 3)
    expect = torch.tensor([[_raw_value(t) for t in Q.TARGETS]])
    assert torch.allclose(g.y.double(), expect.double(), rtol=1e-6)
    assert torch.allclose(g.pos[0].double(), torch.tensor([-0.0133239314, 1.1324657151, 0.0082758861]).double())
    assert g.x_s.argmax(1).tolist() == [1, 2, 0]              # C, N, H over (H, C, N, O, F, other)
    assert int(g.graph_key) == 5
    # heavy atoms only by default; one target by default (U0, eV)
    heavy = DATASETS["qm9"](raw_dir)
    assert heavy[0].num_nodes == 2 and heavy[0].y.shape == (1, 1)
    assert heavy[0].y.item() == pytest.approx(HCN["U0"] * HA, rel=1e-6)
    # 'E-6' notation in gdb_212 parsed
    assert gs[1].pos[0, 0].item() == pytest.approx(2.1997e-6, rel=1e-4)


def test_mathematica_exponents_are_read(raw_dir, tmp_path):
    text = (raw_dir / "dsgdb9nsd_000212.xyz").read_text().replace("2.1997E-6", "2.1997*^-6")
    assert "*^-6" in text
    (tmp_path / "dsgdb9nsd_000212.xyz").write_text(text)
    g = DATASETS["qm9"](tmp_path, hydrogens=True, target="mu")[0]
    assert g.pos[0, 0].item() == pytest.approx(2.1997e-6, rel=1e-4) and g.y.item() == pytest.approx(2.0318)


def test_loader_attributes():
    q = DATASETS["qm9"]
    assert q.default_target == "U0" and q.units["gap"] == "eV" and q.units["alpha"] == "a0^3"
    assert q.units["Cv"] == "cal/(mol K)" and set(Q.TARGETS) <= set(q.units)
    assert dataset_info("qm9")["task"] == {"kind": "graph_regression", "num_outputs": 1, "pooling": "sum",
                                           "pooling_by_target": {"homo": "mean", "lumo": "mean", "gap": "mean"}}
    assert target_units("qm9", "homo") == "eV" and target_units("smp") == "eV"


# ------------------------------------------------------------------------------------------------ database
def test_database_matches_raw_file_and_converts_units(db, raw_dir):
    gs = DATASETS["qm9"](db, hydrogens=True, target="all")
    assert len(gs) == 20 and [g.name for g in gs[:3]] == ["gdb_1", "gdb_2", "gdb_3"]
    raw = DATASETS["qm9"](raw_dir, hydrogens=True, target="all")[0]
    assert gs[4].name == "gdb_5"
    assert torch.allclose(gs[4].y.double(), raw.y.double(), rtol=1e-6)       # Hartree in the db -> eV as raw
    assert torch.allclose(gs[4].pos, raw.pos, atol=1e-6)
    assert gs[0].x_s.argmax(1).tolist() == [1, 0, 0, 0, 0]                   # methane


def test_database_units_come_from_its_metadata(db, tmp_path):
    copy = tmp_path / "ev.db"
    shutil.copy(db, copy)
    con = sqlite3.connect(copy)
    meta = json.loads(con.execute("select value from information where name='metadata'").fetchone()[0])
    meta["_property_unit_dict"]["energy_U0"] = "eV"
    meta["_property_unit_dict"]["dipole_moment"] = "e*Ang"
    con.execute("update information set value=? where name='metadata'", (json.dumps(meta),))
    con.commit()
    con.close()
    ref = DATASETS["qm9"](db, target=["U0", "mu"])[4].y.double()
    got = DATASETS["qm9"](copy, target=["U0", "mu"])[4].y.double()
    assert got[0, 0].item() == pytest.approx(ref[0, 0].item() / HA, rel=1e-6)
    assert got[0, 1].item() == pytest.approx(ref[0, 1].item() / 0.20819434, rel=1e-6)
    # the units option overrides the metadata
    over = DATASETS["qm9"](copy, target="U0", units={"energy_U0": "Ha"})[4].y.double()
    assert over.item() == pytest.approx(ref[0, 0].item(), rel=1e-6)
    meta["_property_unit_dict"]["energy_U0"] = "furlong"
    con = sqlite3.connect(copy)
    con.execute("update information set value=? where name='metadata'", (json.dumps(meta),))
    con.commit()
    con.close()
    with pytest.raises(InputError, match="unit 'furlong' of U0"):
        DATASETS["qm9"](copy)


# ------------------------------------------------------------------------------------------------ atomref
def test_atomref_gives_atomisation_energies(db, raw_dir):
    ref = Q.ATOMREF
    for path in (raw_dir, db):
        g = [x for x in DATASETS["qm9"](path, target=["U0", "G", "Cv", "gap"], atomref=True) if x.name == "gdb_5"][0]
        u0 = (HCN["U0"] - ref["H"][0] - ref["C"][0] - ref["N"][0]) * HA
        g0 = (HCN["G"] - ref["H"][3] - ref["C"][3] - ref["N"][3]) * HA
        assert g.y[0, 0].item() == pytest.approx(u0, rel=1e-5) and -14 < u0 < -12      # HCN: about -13.1 eV
        assert g.y[0, 1].item() == pytest.approx(g0, rel=1e-5)
        assert g.y[0, 2].item() == pytest.approx(HCN["Cv"] - 3 * 2.981, rel=1e-5)
        assert g.y[0, 3].item() == pytest.approx(HCN["gap"] * HA, rel=1e-6)           # no reference: unchanged
    assert Q.atomref_energy(["H", "H"], "U0") == pytest.approx(2 * -0.500273 * HA)
    with pytest.raises(InputError, match="no QM9 atom reference"):
        Q.atomref_energy(["S"], "U0")


def test_atomref_table_matches_the_database_metadata(db):
    """The published table in the code equals the atom references SchNetPack stored with the database."""
    con = sqlite3.connect(db)
    meta = json.loads(con.execute("select value from information where name='metadata'").fetchone()[0])
    con.close()
    z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
    for k, key in enumerate(("energy_U0", "energy_U", "enthalpy_H", "free_energy", "heat_capacity")):
        for el, row in Q.ATOMREF.items():
            assert row[k] == pytest.approx(meta["atomrefs"][key][z[el]], abs=1e-9), (el, key)


# ------------------------------------------------------------------------------------------------ splits
def test_random_split_protocol_and_seed(db):
    assert Q.random_split_sizes(130_831) == (110_000, 10_000, 10_831)
    assert Q.random_split_sizes(133_885) == (110_000, 10_000, 13_885)
    assert Q.random_split_sizes(20) == (17, 2, 1) and Q.random_split_sizes(3) == (1, 1, 1)
    a = [int(g.split) for g in DATASETS["qm9"](db, split_seed=1)]
    b = [int(g.split) for g in DATASETS["qm9"](db, split_seed=1)]
    c = [int(g.split) for g in DATASETS["qm9"](db, split_seed=2)]
    assert a == b and a != c and sorted(a) == [0] * 17 + [1] * 2 + [2]
    assert not hasattr(DATASETS["qm9"](db, split="none")[0], "split") or \
        DATASETS["qm9"](db, split="none")[0].get("split") is None


def test_atom3d_split_lists(db, split_dir, raw_dir):
    which, excluded = Q.atom3d_split(split_dir)
    assert len(which) == 103_547 + 12_943 + 12_943 and len(excluded) == 4_452
    assert 59 in excluded and 59 not in which and not (set(which) & excluded)      # 0-based 58 -> gdb_59
    gs = DATASETS["qm9"](db, split="atom3d", split_dir=split_dir)
    assert [int(g.split) for g in gs] == [2] + [0] * 19                             # gdb_1 is a test molecule
    raw = DATASETS["qm9"](raw_dir, split="atom3d", split_dir=split_dir)
    assert [int(g.split) for g in raw] == [0, 0, 2]
    with pytest.raises(ConfigError, match="split_dir"):
        DATASETS["qm9"](db, split="atom3d")


def test_excluded_molecules_are_dropped(db, tmp_path):
    f = tmp_path / "indices_excluded.dat"
    f.write_text("0\n4\n")                                  # gdb_1 and gdb_5
    names = [g.name for g in DATASETS["qm9"](db, excluded=f)]
    assert len(names) == 18 and "gdb_1" not in names and "gdb_5" not in names


# ------------------------------------------------------------------------------------------------ bad input
def _xyz(tmp_path, text, name="dsgdb9nsd_000001.xyz"):
    d = tmp_path / "raw"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text)
    return d


def test_malformed_xyz_files_are_named(raw_dir, tmp_path):
    good = (raw_dir / "dsgdb9nsd_000005.xyz").read_text().splitlines()
    bad_count = "\n".join(["5"] + good[1:])                 # announces 5 atoms, 3 atom lines + trailer
    with pytest.raises(InputError, match=r"dsgdb9nsd_000001\.xyz.*(expected 'element x y z'|not a number)"):
        DATASETS["qm9"](_xyz(tmp_path, bad_count))
    not_number = "\n".join(good[:2] + [good[2].replace("1.1324657151", "1.13x")] + good[3:])
    with pytest.raises(InputError, match="'1.13x' is not a number"):
        DATASETS["qm9"](_xyz(tmp_path, not_number))
    bad_prop = "\n".join([good[0], good[1].replace("-93.411888", "abc")] + good[2:])
    with pytest.raises(InputError, match="'abc' is not a number"):
        DATASETS["qm9"](_xyz(tmp_path, bad_prop))
    with pytest.raises(InputError, match="expected an atom count"):
        DATASETS["qm9"](_xyz(tmp_path, "three\n" + "\n".join(good[1:])))
    with pytest.raises(InputError, match="not a QM9 extended-XYZ file"):
        DATASETS["qm9"](_xyz(tmp_path, "1\nmethane-ish\nC 0 0 0\n"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no QM9 .xyz files"):
        DATASETS["qm9"](empty)


def test_bad_databases(tmp_path):
    empty = tmp_path / "empty.db"
    con = sqlite3.connect(empty)
    con.execute("create table systems (id integer primary key, numbers blob, positions blob, "
                "key_value_pairs text, data blob)")
    con.execute("create table information (name text, value text)")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="holds no molecules"):
        DATASETS["qm9"](empty)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x)").connection.close()
    with pytest.raises(InputError, match="no 'systems' table"):
        DATASETS["qm9"](other)
    text = tmp_path / "text.db"
    text.write_text("not a database")
    with pytest.raises(InputError, match="not an SQLite database"):
        DATASETS["qm9"](text)


def test_unknown_target_and_options(db):
    with pytest.raises(ConfigError, match=r"unknown QM9 target\(s\) \['U0x'\]; valid names: \['mu', 'alpha'"):
        DATASETS["qm9"](db, target="U0x")
    with pytest.raises(ConfigError, match="unknown qm9 option"):
        DATASETS["qm9"](db, atomrefs=True)
    with pytest.raises(ConfigError, match="split must be one of"):
        DATASETS["qm9"](db, split="scaffold")
    with pytest.raises(ConfigError, match="needs data.path"):
        DATASETS["qm9"]()
    with pytest.raises(ConfigError, match="valid names"):
        DATASETS["smp"](db.parent, target="gapp")


# ------------------------------------------------------------------------------------------------ ATOM3D SMP
def _smp_items(raw_dir, ids=None):
    """ATOM3D SMP items (atoms table, 20 labels in raw units, bonds) written from the raw files."""
    from farfield.io.readers import read_xyz
    from farfield.io.atom3d import structure_to_dataframe

    items = []
    for f in sorted(raw_dir.glob("*.xyz")):
        s = read_xyz(f)[0]
        labels = [float(s.properties[t]) for t in Q.RAW_TARGETS]
        els = list(s.element)
        # atomisation energies in kcal/mol, as in MoleculeNet's QM9 table that ATOM3D copies
        labels += [(labels[10 + k] - sum(Q.ATOMREF[e][k] for e in els)) * Q.HARTREE_EV / Q.KCALMOL_EV
                   for k in range(4)]
        labels += [labels[14] - sum(Q.ATOMREF[e][4] for e in els)]
        bonds = pd.DataFrame({"atom1": [0], "atom2": [1], "type": [1.0]})
        items.append({"atoms": structure_to_dataframe(s), "labels": labels, "bonds": bonds,
                      "id": f.name if ids is None else ids(f)})
    return items


def test_smp_lmdb_matches_raw_loader(raw_dir, tmp_path):
    write_atom3d_lmdb(_smp_items(raw_dir), tmp_path / "all")
    names = list(Q.TARGETS)
    smp = DATASETS["smp"](tmp_path / "all", hydrogens=True, target=names)
    raw = DATASETS["qm9"](raw_dir, hydrogens=True, target=names)
    assert [g.name for g in smp] == [g.name for g in raw]
    for a, b in zip(smp, raw):
        assert torch.allclose(a.y.double(), b.y.double(), rtol=1e-6) and torch.allclose(a.pos, b.pos)
    atom = DATASETS["smp"](tmp_path / "all", target=["U0_atom", "Cv_atom"])
    ref = DATASETS["qm9"](raw_dir, target=["U0", "Cv"], atomref=True)
    assert torch.allclose(atom[0].y.double(), ref[0].y.double(), rtol=1e-5)
    assert DATASETS["smp"].units["U0_atom"] == "eV" and DATASETS["smp"].default_target == "U0"


def test_smp_split_folders(raw_dir, tmp_path):
    items = _smp_items(raw_dir, ids=lambda f: str(("gdb_" + str(int(f.stem.split("_")[1])), f.name)))
    root = tmp_path / "split-by-random" / "data"
    for name, item in zip(("train", "val", "test"), items):
        write_atom3d_lmdb([item], root / name, serialization_format="msgpack")
    gs = DATASETS["smp"](tmp_path / "split-by-random")
    assert [(g.name, int(g.split)) for g in gs] == [("gdb_5", 0), ("gdb_212", 1), ("gdb_1458", 2)]
    with pytest.raises(ConfigError, match="split='official'"):
        DATASETS["smp"](tmp_path / "split-by-random", split="random")


def test_smp_bad_items(raw_dir, tmp_path):
    items = _smp_items(raw_dir)
    del items[1]["labels"]
    write_atom3d_lmdb(items, tmp_path / "nolabels")
    with pytest.raises(InputError, match=r"nolabels\[1\]: SMP item lacks the field 'labels'"):
        DATASETS["smp"](tmp_path / "nolabels")
    items = _smp_items(raw_dir)
    items[0]["labels"] = items[0]["labels"][:5]
    write_atom3d_lmdb(items, tmp_path / "short")
    with pytest.raises(InputError, match="holds 5 values"):
        DATASETS["smp"](tmp_path / "short")
    items = _smp_items(raw_dir, ids=lambda f: "molecule")
    write_atom3d_lmdb(items, tmp_path / "noid")
    with pytest.raises(InputError, match="names no QM9 molecule"):
        DATASETS["smp"](tmp_path / "noid")
    write_atom3d_lmdb([], tmp_path / "empty")
    with pytest.raises(InputError, match="holds no items"):
        DATASETS["smp"](tmp_path / "empty")


# ------------------------------------------------------------------------------------------------ training
def _train(tmp_path, name, dataset, path, options=None, target=None, standardize=True):
    from farfield.train.config import TrainConfig, apply_overrides
    from farfield.train.run import train

    cfg = apply_overrides(TrainConfig(), [
        f"data.dataset={dataset}", f"data.path={path}", "data.hydrogens=true", "data.batch_size=4",
        "model.backbone_options={hidden: 8, num_layers: 1}", "optim.epochs=1", "run.progress=false",
        "task.kind=graph_regression", "task.num_outputs=1", f"task.standardize={str(standardize).lower()}",
        f"run.out={tmp_path / name}"])
    if options or target:
        d = cfg.to_dict()
        d["data"]["options"] = options or {}
        d["data"]["target"] = target
        cfg = TrainConfig.from_dict(d)
    m = train(cfg, quiet=True)
    assert (tmp_path / name / "metrics.json").is_file()
    return m


def test_one_epoch_on_raw_files_database_and_smp(raw_dir, db, tmp_path):
    # 3 molecules split 1 / 1 / 1: the std of one training target is undefined, so no standardisation there
    for m in (_train(tmp_path, "raw", "qm9", raw_dir, {"atomref": True}, standardize=False),
              _train(tmp_path, "db", "qm9", db, target="gap")):
        assert any(k.startswith("test/") and np.isfinite(v) for k, v in m.items() if isinstance(v, float))
    write_atom3d_lmdb(_smp_items(raw_dir), tmp_path / "smp")
    m = _train(tmp_path, "smp", "smp", tmp_path / "smp", target="U0_atom", standardize=False)
    assert any(k.startswith("val/") for k in m)


def test_schnetpack_repeated_unit_factors():
    """SchNetPack 2.x writes the polarisability in 'a0 a0 a0' and the spatial extent in 'a0 a0'."""
    assert Q._unit_factor("alpha", "a0 a0 a0", "db") == 1.0 and Q._unit_factor("r2", "a0 a0", "db") == 1.0
    assert Q._unit_factor("alpha", "Bohr Bohr Bohr", "db") == 1.0
    assert Q._unit_factor("U0", "Ha", "db") == pytest.approx(Q.HARTREE_EV)
    with pytest.raises(InputError, match="a0 a0 a0 a0"):
        Q._unit_factor("alpha", "a0 a0 a0 a0", "db")

"""ATOM3D protein tasks (farfield.datasets.atom3d_tasks): PSR, RSR, MSP and LBA read from tiny LMDBs written in
tmp_path (ATOM3D's item layouts) from real structures in FARFIELD_TEST_DATA (structures/1l2y.pdb - 38 NMR models
used as decoys -, atom3d/pdb/2olx_assembly_3models.pdb, atom3d/pdb/103l.pdb, atom3d/ligands_sdf); skipped with a
reason when the folder is absent, failed under CI=true."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import missing_data
from farfield.datasets import DATASETS, dataset_info
from farfield.datasets import atom3d_tasks as T
from farfield.errors import ConfigError, InputError
from farfield.io.atom3d import structure_to_dataframe, write_atom3d_lmdb
from farfield.io.readers import read_molecules, read_structure
from farfield.io.structure import ReadOptions
from tests.conftest import data_root

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data() -> Path:
    d = data_root()
    need = [d / "structures" / "1l2y.pdb", d / "atom3d" / "pdb" / "103l.pdb", d / "atom3d" / "ligands_sdf"]
    if not all(p.exists() for p in need):
        missing_data(f"ATOM3D test structures are missing under {d} (set FARFIELD_TEST_DATA)")
    return d


@functools.lru_cache(maxsize=None)
def _read(path, model: int = 1):
    return read_structure(path, ReadOptions(model=model))


def _df(path, model: int = 1) -> pd.DataFrame:
    return structure_to_dataframe(_read(path, model))


# ------------------------------------------------------------------------------------------------ PSR
def _psr_items(data):
    """Decoys: 1L2Y NMR models 1-6 and 2OLX assembly models 1-3, with made-up GDT_TS / RMSD scores."""
    items = []
    for target, path, models in (("1L2Y", data / "structures" / "1l2y.pdb", range(1, 7)),
                                 ("2OLX", data / "atom3d" / "pdb" / "2olx_assembly_3models.pdb", range(1, 4))):
        for m in models:
            scores = {"gdt_ts": 1.0 - 0.1 * m, "rmsd": 0.5 * m}
            if m == 2:       # a pandas Series stored as its split dict, as atom3d's json serialiser writes one
                scores = {"name": "scores", "index": list(scores), "data": list(scores.values())}
            items.append({"atoms": _df(path, model=m), "scores": scores, "id": str((target, f"{target}_m{m}"))})
    return items


def _write_splits(root: Path, parts, fmt="json"):
    for name, items in zip(("train", "val", "test"), parts):
        write_atom3d_lmdb(items, root / name, serialization_format=fmt)


def test_psr_items_labels_groups_and_splits(data, tmp_path):
    items = _psr_items(data)
    write_atom3d_lmdb(items, tmp_path / "all")
    gs = DATASETS["psr"](tmp_path / "all")
    assert len(gs) == 9 and gs[0].name == "('1L2Y', '1L2Y_m1')"
    groups = [int(g.group) for g in gs]
    assert groups == [T.group_id("1L2Y")] * 6 + [T.group_id("2OLX")] * 3 and groups[0] != groups[-1]
    assert [round(g.y.item(), 4) for g in gs[:3]] == [0.9, 0.8, 0.7]
    assert all(g.y.shape == (1, 1) and g.get("split") is None for g in gs)
    heavy = read_structure(data / "structures" / "1l2y.pdb", ReadOptions(hydrogens=False))
    assert gs[0].num_nodes == len(heavy) and gs[0].x_s.shape == (len(heavy), 9)
    assert DATASETS["psr"](tmp_path / "all", hydrogens=True)[0].num_nodes == 304
    assert torch.allclose(gs[0].pos.double(), torch.from_numpy(heavy.coords), atol=1e-4)
    rmsd = DATASETS["psr"](tmp_path / "all", target="rmsd")
    assert rmsd[1].y.item() == pytest.approx(1.0)
    info = dataset_info("psr")
    assert info["task"] == {"kind": "graph_regression", "num_outputs": 1, "pooling": "mean"}
    assert DATASETS["psr"].default_target == "gdt_ts"
    # official split from ATOM3D's split-by-year/data/{train,val,test}
    _write_splits(tmp_path / "psr" / "split-by-year" / "data", (items[:4] + items[6:7], items[4:5] + items[7:8],
                                                               items[5:6] + items[8:]), fmt="msgpack")
    gs = DATASETS["psr"](tmp_path / "psr")
    assert [int(g.split) for g in gs] == [0] * 5 + [1] * 2 + [2] * 2
    assert len({int(g.group) for g in gs}) == 2
    assert all(g.get("split") is None for g in DATASETS["psr"](tmp_path / "psr", split="none"))
    assert len(DATASETS["psr"](tmp_path / "psr", limit=3)) == 3


def test_psr_per_target_spearman_is_computable(data, tmp_path):
    from scipy.stats import spearmanr

    write_atom3d_lmdb(_psr_items(data), tmp_path / "all")
    gs = DATASETS["psr"](tmp_path / "all")
    y = np.array([g.y.item() for g in gs])
    groups = np.array([int(g.group) for g in gs])
    pred = -np.array([g.pos.std().item() for g in gs])       # any prediction; the grouping is what we check
    per = [spearmanr(y[groups == k], pred[groups == k])[0] for k in np.unique(groups)]
    assert len(per) == 2 and all(np.isfinite(per))


def test_rsr_uses_rms(data, tmp_path):
    items = [{"atoms": it["atoms"], "scores": {"rms": 2.0 + k}, "id": it["id"]}
             for k, it in enumerate(_psr_items(data))]
    write_atom3d_lmdb(items, tmp_path / "rsr")
    gs = DATASETS["rsr"](tmp_path / "rsr")
    assert gs[3].y.item() == pytest.approx(5.0) and DATASETS["rsr"].default_target == "rms"


def test_psr_bad_items(data, tmp_path):
    items = _psr_items(data)[:3]
    del items[1]["scores"]
    write_atom3d_lmdb(items, tmp_path / "noscores")
    with pytest.raises(InputError, match=r"noscores\[1\]: PSR item lacks field\(s\) \['scores'\]"):
        DATASETS["psr"](tmp_path / "noscores")
    items = _psr_items(data)[:3]
    write_atom3d_lmdb(items, tmp_path / "ok")
    with pytest.raises(ConfigError, match=r"unknown psr target 'gdt'; valid names .*\['gdt_ts', 'rmsd'\]"):
        DATASETS["psr"](tmp_path / "ok", target="gdt")
    with pytest.raises(ConfigError, match="unknown psr option"):
        DATASETS["psr"](tmp_path / "ok", radius=3)
    items[0]["id"] = "decoy_without_target"
    write_atom3d_lmdb(items, tmp_path / "badid")
    with pytest.raises(InputError, match="does not name its target"):
        DATASETS["psr"](tmp_path / "badid")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="no ATOM3D PSR LMDB here"):
        DATASETS["psr"](tmp_path / "nothing")
    with pytest.raises(ConfigError, match="needs data.path"):
        DATASETS["psr"]()


def test_cached_lazy_store_matches_the_list(data, tmp_path, monkeypatch):
    from farfield.datasets.cache import ShardedGraphStore

    monkeypatch.setenv("FARFIELD_CACHE", str(tmp_path / "cache"))
    items = _psr_items(data)
    _write_splits(tmp_path / "psr", (items[:5], items[5:7], items[7:]))
    ref = DATASETS["psr"](tmp_path / "psr")
    store = DATASETS["psr"](tmp_path / "psr", cache=True, workers=2)
    assert isinstance(store, ShardedGraphStore) and len(store) == len(ref) == 9
    assert store.index["split"].tolist() == [int(g.split) for g in ref]
    assert store.index["group"].tolist() == [int(g.group) for g in ref]
    assert store.index["num_nodes"].tolist() == [g.num_nodes for g in ref]
    for a, b in zip(store, ref):
        assert a.name == b.name and torch.equal(a.pos, b.pos) and torch.equal(a.x_s, b.x_s) and torch.equal(a.y, b.y)
    folder = store.folder if hasattr(store, "folder") else None
    again = DATASETS["psr"](tmp_path / "psr", cache=True)               # reused, not rebuilt
    assert len(again) == 9 and (folder is None or again.folder == folder)
    assert len(DATASETS["psr"](tmp_path / "psr", cache=True, target="rmsd")) == 9    # another key
    # an error in a worker process comes back as an InputError naming the item
    bad = _psr_items(data)[:4]
    bad[3]["scores"] = {"gdt_ts": float("nan")}
    write_atom3d_lmdb(bad, tmp_path / "bad")
    with pytest.raises(InputError, match=r"bad\[3\]: score 'gdt_ts' is not finite"):
        DATASETS["psr"](tmp_path / "bad", cache=True, workers=2)
    with pytest.raises(ConfigError, match="workers must be an integer"):
        DATASETS["psr"](tmp_path / "psr", cache=True, workers=0)


# ------------------------------------------------------------------------------------------------ MSP
def _mutant(df: pd.DataFrame, chain: str, resnum: int) -> pd.DataFrame:
    """The residue truncated to alanine (side chain beyond CB removed, renamed ALA)."""
    sel = (df["chain"] == chain) & (df["residue"] == resnum)
    keep = ~sel | df["name"].isin(["N", "CA", "C", "O", "CB", "H", "HA", "HB1", "HB2", "HB3"])
    out = df[keep].reset_index(drop=True)
    out.loc[(out["chain"] == chain) & (out["residue"] == resnum), "resname"] = "ALA"
    return out


def _msp_items(data, n=6):
    items = []
    for m in range(1, n + 1):
        orig = _df(data / "structures" / "1l2y.pdb", model=m)
        items.append({"original_atoms": orig, "mutated_atoms": _mutant(orig, "A", 3), "label": str(m % 2),
                      "id": "1L2Y_A_B_YA3A"})
    return items


def test_msp_pairs_components_and_environment(data, tmp_path):
    items = _msp_items(data)
    write_atom3d_lmdb(items, tmp_path / "all")
    full = DATASETS["msp"](tmp_path / "all", radius=None)
    heavy = read_structure(data / "structures" / "1l2y.pdb", ReadOptions(hydrogens=False))
    g = full[0]
    n_orig = len(heavy)
    assert int((g.component == 0).sum()) == n_orig
    n_mut = int((g.component == 1).sum())
    assert n_mut == n_orig - 7 and g.num_nodes == n_orig + n_mut
    assert g.component.dtype == torch.long and g.component[:n_orig].eq(0).all() and g.component[n_orig:].eq(1).all()
    assert g.y.tolist() == [[1.0]] and full[1].y.tolist() == [[0.0]]
    assert g.x_s.shape == (g.num_nodes, 9) and int(g.chain_index.max()) == 1      # the parts never share a chain
    info = dataset_info("msp")
    assert info["pair"] is True and info["task"] == {"kind": "binary", "num_outputs": 1, "pooling": "mean"}
    # environment: atoms within 6 A of the CA of residue A3 (ATOM3D's EnvironmentSelection), in both structures
    env = DATASETS["msp"](tmp_path / "all")[0]
    ca = heavy.coords[(heavy.res_seq == 3) & (heavy.atom_name == "CA")][0]
    d_all = np.linalg.norm(heavy.coords - ca, axis=1)
    assert int((env.component == 0).sum()) == int((d_all <= 6.0).sum()) < n_orig
    assert (torch.linalg.norm(env.pos.double() - torch.from_numpy(ca), dim=1) <= 6.0 + 1e-4).all()
    wide = DATASETS["msp"](tmp_path / "all", radius=12.0)[0]
    assert env.num_nodes < wide.num_nodes < g.num_nodes


def test_msp_splits_and_bad_items(data, tmp_path):
    items = _msp_items(data)
    _write_splits(tmp_path / "msp" / "split-by-sequence-identity-30" / "data", (items[:4], items[4:5], items[5:]))
    gs = DATASETS["msp"](tmp_path / "msp")
    assert [int(g.split) for g in gs] == [0, 0, 0, 0, 1, 2]
    bad = _msp_items(data, 2)
    bad[0]["label"] = "maybe"
    write_atom3d_lmdb(bad, tmp_path / "badlabel")
    with pytest.raises(InputError, match="label 'maybe' is not 0 or 1"):
        DATASETS["msp"](tmp_path / "badlabel")
    bad = _msp_items(data, 2)
    del bad[1]["mutated_atoms"]
    write_atom3d_lmdb(bad, tmp_path / "nomut")
    with pytest.raises(InputError, match=r"MSP item lacks field\(s\) \['mutated_atoms'\]"):
        DATASETS["msp"](tmp_path / "nomut")
    bad = _msp_items(data, 1)
    bad[0]["id"] = "1L2Y_A_B_A99"
    write_atom3d_lmdb(bad, tmp_path / "badid")
    with pytest.raises(InputError, match="does not end in a mutation"):
        DATASETS["msp"](tmp_path / "badid")
    bad[0]["id"] = "1L2Y_A_B_YA99A"
    write_atom3d_lmdb(bad, tmp_path / "nores")
    with pytest.raises(InputError, match="mutated residue A99 has no CA"):
        DATASETS["msp"](tmp_path / "nores")
    with pytest.raises(ConfigError, match="radius must be a positive"):
        DATASETS["msp"](tmp_path / "msp", radius=-1)
    assert T.parse_mutation("1ABC_A_B_LA22P") == ("A", 22, "L", "P")


# ------------------------------------------------------------------------------------------------ LBA
def _lba_items(data, n=6, aff0=5.0):
    """Pocket: the 103L residues within 8 A of residue 99's CA; ligand: an LBA ligand moved onto that CA."""
    prot = read_structure(data / "atom3d" / "pdb" / "103l.pdb", ReadOptions(waters=False, hetero=False))
    ca = prot.coords[(prot.res_seq == 99) & (prot.atom_name == "CA")][0]
    near = np.linalg.norm(prot.coords - ca, axis=1) <= 8.0
    residues = {(c, r) for c, r in zip(prot.chain_id[near], prot.res_seq[near])}
    pocket = prot.select(np.array([(c, r) in residues for c, r in zip(prot.chain_id, prot.res_seq)]))
    ligands = sorted((data / "atom3d" / "ligands_sdf").glob("*.sdf"))
    items = []
    for k in range(n):
        lig = read_molecules(ligands[k % len(ligands)])[0]
        lig = lig.select(np.ones(len(lig), bool))
        lig.coords[:] = lig.coords - lig.coords.mean(0) + ca
        items.append({"atoms_protein": structure_to_dataframe(prot), "atoms_pocket": structure_to_dataframe(pocket),
                      "atoms_ligand": structure_to_dataframe(lig, ensemble=ligands[k % len(ligands)].stem),
                      "scores": {"neglog_aff": aff0 + k}, "id": f"{ligands[k % len(ligands)].stem[:4]}_{k}"})
    return items, int((pocket.element != "H").sum()), prot


def test_lba_pocket_ligand_graph_and_identity_splits(data, tmp_path):
    items, n_pocket, prot = _lba_items(data)
    root = tmp_path / "lba"
    _write_splits(root / "split-by-sequence-identity-30" / "data", (items[:4], items[4:5], items[5:]))
    _write_splits(root / "split-by-sequence-identity-60" / "data", (items[:2], items[2:4], items[4:]))
    gs = DATASETS["lba"](root)
    assert [int(g.split) for g in gs] == [0, 0, 0, 0, 1, 2]
    assert [int(g.split) for g in DATASETS["lba"](root, identity=60)] == [0, 0, 1, 1, 2, 2]
    g = gs[0]
    lig = read_molecules(sorted((data / "atom3d" / "ligands_sdf").glob("*.sdf"))[0])[0]
    n_lig = int((lig.element != "H").sum())
    assert g.num_nodes == n_pocket + n_lig and n_pocket < len(prot)
    assert g.x_s.shape == (g.num_nodes, 10)
    assert g.x_s[:, -1].tolist() == [0.0] * n_pocket + [1.0] * n_lig       # ligand flag, last column
    assert g.x_s[:, :9].sum(1).eq(1).all()
    assert g.y.tolist() == [[5.0]] and gs[3].y.item() == pytest.approx(8.0)
    full = DATASETS["lba"](root, protein="full")[0]
    assert full.num_nodes == int((prot.element != "H").sum()) + n_lig
    assert dataset_info("lba")["task"] == {"kind": "graph_regression", "num_outputs": 1, "pooling": "mean"}
    with pytest.raises(ConfigError, match="identity must be 30 or 60"):
        DATASETS["lba"](root, identity=40)
    with pytest.raises(ConfigError, match=r"unknown lba target 'kd'; valid names: \['neglog_aff'\]"):
        DATASETS["lba"](root, target="kd")


def test_lba_bad_items(data, tmp_path):
    items, _, _ = _lba_items(data, 2)
    del items[1]["atoms_ligand"]
    write_atom3d_lmdb(items, tmp_path / "nolig")
    with pytest.raises(InputError, match=r"LBA item lacks field\(s\) \['atoms_ligand'\]"):
        DATASETS["lba"](tmp_path / "nolig")
    items, _, _ = _lba_items(data, 1)
    items[0]["scores"] = {"neglog_aff": float("nan")}
    write_atom3d_lmdb(items, tmp_path / "nan")
    with pytest.raises(InputError, match="lacks a finite 'neglog_aff'"):
        DATASETS["lba"](tmp_path / "nan")
    items, _, _ = _lba_items(data, 1)
    items[0]["atoms_pocket"] = items[0]["atoms_pocket"].iloc[:0]
    write_atom3d_lmdb(items, tmp_path / "empty")
    with pytest.raises(InputError, match="atom table is empty"):
        DATASETS["lba"](tmp_path / "empty")


# ------------------------------------------------------------------------------------------------ training
def _train(tmp_path, name, dataset, path, kind="graph_regression", options=None):
    from farfield.train.config import TrainConfig, apply_overrides
    from farfield.train.run import train

    cfg = apply_overrides(TrainConfig(), [
        f"data.dataset={dataset}", f"data.path={path}", "data.batch_size=4", "data.edges=radius:4.5",
        "model.backbone_options={hidden: 8, num_layers: 1}", "optim.epochs=1", "run.progress=false",
        f"task.kind={kind}", "task.num_outputs=1", f"run.out={tmp_path / name}"])
    if options:
        d = cfg.to_dict()
        d["data"]["options"] = options
        cfg = TrainConfig.from_dict(d)
    m = train(cfg, quiet=True)
    assert (tmp_path / name / "metrics.json").is_file()
    return m


def test_one_epoch_psr_and_lba(data, tmp_path, monkeypatch):
    monkeypatch.setenv("FARFIELD_CACHE", str(tmp_path / "cache"))
    items = _psr_items(data)
    _write_splits(tmp_path / "psr", (items[:4] + items[6:7], items[4:5] + items[7:8], items[5:6] + items[8:]))
    m = _train(tmp_path, "psr_run", "psr", tmp_path / "psr", options={"cache": True})     # the lazy store
    assert any(k.startswith("test/") for k in m)
    items, _, _ = _lba_items(data)
    _write_splits(tmp_path / "lba", (items[:4], items[4:5], items[5:]))
    m = _train(tmp_path, "lba_run", "lba", tmp_path / "lba")
    assert any(k.startswith("test/") for k in m)


def test_one_epoch_msp(data, tmp_path):
    items = _msp_items(data)
    _write_splits(tmp_path / "msp", (items[:4], items[4:5], items[5:]))
    m = _train(tmp_path, "msp_run", "msp", tmp_path / "msp", kind="binary")
    assert any(k.startswith("test/") for k in m)

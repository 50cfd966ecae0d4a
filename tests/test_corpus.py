"""The ``corpus`` dataset: unlabelled folders of structures and Foldcomp databases featurised once into a sharded
store (names, chains, filters, pLDDT, hash splits, the cache, streaming with bounded memory)."""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import sys
import warnings

import numpy as np
import pytest
import torch

from farfield.data.pipeline import Featuriser, FeaturiserConfig
from farfield.datasets import DATASETS, dataset_info
from farfield.datasets import corpus as C
from farfield.datasets.cache import ShardedGraphStore
from farfield.datasets.structures import load_chain
from farfield.errors import ConfigError, InputError
from farfield.io.residues import ResidueView

AF = "AF-P04629_alphafold_v2.pdb"
FILES = ["1A8O.pdb", "1aki.cif", "4hhb.pdb", "1pfe.cif.gz", AF]
MALFORMED = ["gemmi_5moo_header.pdb", "biopython_a_structure.pdb"]       # header only; a duplicated atom


def _folder(tmp_path, structures, files=FILES, malformed=True):
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    for f in files:
        shutil.copy(structures / f, src / f)
    shutil.copy(structures / "1l2y.bcif", src / "nested" / "1l2y.bcif")
    if malformed:
        for f in MALFORMED:
            shutil.copy(structures / "tricky" / f, src / f)
        (src / "broken.cif").write_text("data_x\n_atom_site.id 1\nthis is not mmCIF\n")
    return src


def _build(src, tmp_path, workers=1, cache="cache", **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return C.build_corpus(src, C.CorpusConfig(**options), cache=tmp_path / cache, progress=False,
                              workers=workers)


def _gemmi_ca_b(path, chain="A"):
    """Per-residue CA B-factors of ``chain``, read with gemmi directly (not through farfield's readers)."""
    import gemmi

    st = gemmi.read_structure(str(path))
    return np.array([r["CA"][0].b_iso for r in st[0][chain] if r.find_atom("CA", "*") is not None])


def test_folder_corpus_builds_like_the_folder_dataset(tmp_path, structures):
    src = _folder(tmp_path, structures)
    with pytest.warns(UserWarning, match=r"unreadable: 3 \(") as rec:
        store = C.build_corpus(src, cache=tmp_path / "cache", progress=False)
    msg = str(rec[0].message)
    assert "gemmi_5moo_header" in msg and "broken" in msg and "biopython_a_structure" in msg
    expect = {"1A8O:A", "1aki:A", "4hhb:A", "4hhb:B", "4hhb:C", "4hhb:D", "1pfe:B", "AF-P04629_alphafold_v2:A",
              "1l2y:A"}
    assert sorted(store.names) == sorted(expect)
    # 1pfe's chain A holds no amino acid: left out with its reason, as are the malformed files
    skipped = store.manifest["skipped"]
    assert "1pfe:A: no amino-acid residues" in skipped
    assert sum(s.startswith(("broken: unreadable", "gemmi_5moo_header: unreadable")) for s in skipped) == 2
    assert set(store.index) >= {"num_nodes", "split", "has_plddt"}
    assert store.index["has_plddt"].tolist() == [n.startswith("AF-") for n in store.names]
    feat = Featuriser(FeaturiserConfig(level="residue", preset="gvp"))
    for i, name in enumerate(store.names):
        g = store[i]
        assert g.name == name and "y" not in g and "edge_index" not in g
        assert g.split.tolist() == [C.split_of(name)] and g.split.dtype == torch.long
        assert int(store.index["num_nodes"][i]) == g.num_nodes
        if name in ("4hhb:C", "1aki:A"):         # the very graph the folder dataset makes, plus segments
            stem, chain = name.split(":")
            s = load_chain(src / ("4hhb.pdb" if stem == "4hhb" else "1aki.cif"), chain)
            ref = feat.residue_graph(s)
            assert g.num_nodes == ref.num_nodes
            for k in ref.keys():
                if torch.is_tensor(ref[k]):
                    assert torch.equal(g[k], ref[k]), k
            assert g.segment.tolist() == ResidueView.from_structure(s).segment_index.tolist()
            assert g.segment.dtype == torch.long and "plddt" not in g and not bool(g.has_plddt)


def test_chain_selection(tmp_path, structures):
    src = _folder(tmp_path, structures, malformed=False)
    whole = _build(src, tmp_path, chains="all")
    assert sorted(whole.names) == sorted(["1A8O", "1aki", "4hhb", "1pfe", "AF-P04629_alphafold_v2", "1l2y"])
    assert whole[whole.names.index("4hhb")].chain_index.unique().tolist() == [0, 1, 2, 3]
    picked = _build(src, tmp_path, chains="B,D")
    assert sorted(picked.names) == ["1pfe:B", "4hhb:B", "4hhb:D"]
    assert any(s.startswith("1aki: no chain selected") for s in picked.manifest["skipped"])


def test_length_filters(tmp_path, structures):
    src = _folder(tmp_path, structures, malformed=False)
    store = _build(src, tmp_path, min_length=60, max_length=200)
    assert sorted(store.names) == ["1A8O:A", "1aki:A", "4hhb:A", "4hhb:B", "4hhb:C", "4hhb:D"]
    reasons = {s.split(": ", 1)[1].split(" (")[0] for s in store.manifest["skipped"]}
    assert {"shorter than min_length", "longer than max_length"} <= reasons
    assert "1l2y:A: shorter than min_length (20 < 60)" in store.manifest["skipped"]


def test_plddt_from_alphafold_files(tmp_path, structures):
    src = tmp_path / "af"
    src.mkdir()
    shutil.copy(structures / AF, src / AF)
    shutil.copy(structures / "1aki.pdb", src / "1aki.pdb")
    # a model recognised by its header, not its name (plain and gzipped)
    shutil.copy(structures / AF, src / "model.pdb")
    (src / "model2.pdb.gz").write_bytes(gzip.compress((structures / AF).read_bytes()))
    b = _gemmi_ca_b(structures / AF)
    store = _build(src, tmp_path)
    assert store.index["has_plddt"].tolist() == [0, 1, 1, 1]          # 1aki, AF, model, model2 (sorted)
    for i in (1, 2, 3):
        g = store[i]
        assert g.plddt.dtype == torch.float32 and bool(g.has_plddt)
        assert np.allclose(g.plddt.numpy(), b, atol=1e-4)
    mean = float(b.mean())
    kept = _build(src, tmp_path, min_plddt=mean - 1)
    assert sorted(kept.names) == ["AF-P04629_alphafold_v2:A", "model2:A", "model:A"]
    assert any(s.startswith("1aki:A: no pLDDT") for s in kept.manifest["skipped"])
    with pytest.raises(InputError, match="no usable item.*mean pLDDT below min_plddt: 3") as e:
        _build(src, tmp_path, min_plddt=mean + 1)
    assert str(src) in str(e.value) and "no pLDDT: 1" in str(e.value)
    forced = _build(src, tmp_path, plddt=True)                    # every B-factor read as pLDDT
    assert forced.index["has_plddt"].tolist() == [1, 1, 1, 1]
    assert "plddt" not in _build(src, tmp_path, plddt=False, chains="all")[1]


def _split_by_formula(name, seed, fractions):
    u = int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest(), 16) / 2 ** 256
    return int(np.searchsorted(np.cumsum(fractions), u, side="right"))


def test_hash_split_is_stable_when_files_are_added(tmp_path, structures):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(30):
        shutil.copy(structures / "1l2y.pdb", src / f"p{i:02d}.pdb")
    fractions = (0.5, 0.25, 0.25)
    first = _build(src, tmp_path, split=fractions, split_seed=7, chains="all")
    split = dict(zip(first.names, first.index["split"].tolist()))
    assert split == {n: _split_by_formula(n, 7, fractions) for n in first.names}
    assert set(split.values()) == {0, 1, 2}
    for i in range(30, 45):
        shutil.copy(structures / "1l2y.pdb", src / f"p{i:02d}.pdb")
    second = _build(src, tmp_path, split=fractions, split_seed=7, chains="all")
    assert len(second) == 45 and second.folder != first.folder
    again = dict(zip(second.names, second.index["split"].tolist()))
    assert {n: again[n] for n in split} == split
    other_seed = _build(src, tmp_path, split=fractions, split_seed=8, chains="all")
    assert other_seed.index["split"].tolist() != second.index["split"].tolist()


def test_cache_reuse_and_invalidation(tmp_path, structures, monkeypatch):
    src = _folder(tmp_path, structures, files=["1aki.cif", "1A8O.pdb"], malformed=False)
    first = _build(src, tmp_path)

    def no_featurising(*a, **k):
        raise AssertionError("the cached corpus was featurised again")

    with monkeypatch.context() as m:
        m.setattr(C, "_featurise", no_featurising)
        second = _build(src, tmp_path)
    assert second.folder == first.folder and second.names == first.names
    assert torch.equal(second[0].x_s, first[0].x_s)
    os.utime(src / "1aki.cif", ns=(1, 1))                        # a changed source file: a new entry
    assert _build(src, tmp_path).folder != first.folder
    assert _build(src, tmp_path, preset="ca").folder != first.folder


def test_a_corpus_larger_than_memory_streams_shard_by_shard(tmp_path, structures):
    src = _folder(tmp_path, structures, malformed=False)
    store = _build(src, tmp_path, shard_size=2)
    n_shards = len(store.manifest["shards"])
    assert n_shards == (len(store) + 1) // 2 >= 4
    lazy = ShardedGraphStore(store.folder, cached_shards=1)
    nodes = [g.num_nodes for g in lazy]
    assert lazy.loads == n_shards and len(lazy._lru) == 1
    assert nodes == lazy.index["num_nodes"].tolist()
    # two worker processes: the same graphs in the same order
    par = _build(src, tmp_path, workers=2, cache="cache2", shard_size=2)
    assert par.names == store.names and par.manifest["skipped"] == store.manifest["skipped"]
    assert all(torch.equal(a.x_s, b.x_s) and torch.equal(a.segment, b.segment) for a, b in zip(par, store))


def test_loader_registration_and_options(tmp_path, structures, isolated_cache):
    src = _folder(tmp_path, structures, files=["4hhb.pdb"], malformed=False)
    assert DATASETS["corpus"].resolve() is C.corpus
    info = dataset_info("corpus")
    assert info["unlabelled"] and not info["provides_edges"] and info["version"] == C.FEATURES_VERSION
    assert C.corpus.units == {} and C.corpus.default_target is None
    store = DATASETS["corpus"](str(src), chains="A,C", preset="ca", progress=False)
    assert store.names == ["4hhb:A", "4hhb:C", "1l2y:A"] and store[0].x_s.shape[1] == 21 and "x_v" not in store[0]
    with pytest.raises(ConfigError, match="no labels"):
        C.corpus(str(src), target="y")
    with pytest.raises(ConfigError, match="min_lenght"):
        C.corpus(str(src), min_lenght=3)
    with pytest.raises(ConfigError, match="data.path"):
        C.corpus()


@pytest.mark.parametrize("option,value", [
    ("preset", "nope"), ("chains", []), ("chains", "A,,B"), ("min_length", 0), ("max_length", -1),
    ("max_length", 5), ("min_plddt", 101), ("min_plddt", "high"), ("plddt", "yes"), ("split", (0.5, 0.5)),
    ("split", (0.9, 0.2, -0.1)), ("split_seed", 1.5), ("shard_size", 0), ("dtype", "float16"),
])
def test_config_errors_name_the_option(option, value):
    kw = {option: value, **({"min_length": 10} if option == "max_length" and value == 5 else {})}
    with pytest.raises(ConfigError, match=option):
        C.CorpusConfig(**kw)


def test_unusable_sources(tmp_path, structures):
    with pytest.raises(InputError, match="not found"):
        C.build_corpus(tmp_path / "missing", cache=tmp_path / "cache", progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no structures here")
    with pytest.raises(InputError, match="holds no structure file"):
        C.build_corpus(tmp_path / "empty", cache=tmp_path / "cache", progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in MALFORMED:
        shutil.copy(structures / "tricky" / f, bad / f)
    with pytest.raises(InputError, match=r"no usable item; unreadable: 2") as e:
        _build(bad, tmp_path)
    assert str(bad) in str(e.value)
    with pytest.raises(InputError, match="no usable item"):         # the cached, empty entry says so too
        _build(bad, tmp_path)


def test_foldcomp_needs_the_package(tmp_path, monkeypatch):
    db = tmp_path / "db"
    for suffix in ("", ".index", ".lookup", ".dbtype"):
        (tmp_path / f"db{suffix}").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "foldcomp", None)          # import foldcomp -> ImportError
    with pytest.raises(ConfigError, match="pip install foldcomp"):
        C.build_corpus(db, cache=tmp_path / "cache", progress=False)


# -- Foldcomp ---------------------------------------------------------------------------------------------------
def _write_foldcomp_db(db, entries, lookup=True):
    """An MMseqs2-style database as Foldcomp writes it: entries each followed by a NUL byte, ``key offset length``
    in DB.index (length with the NUL), ``key name 0`` in DB.lookup; keys written out of order on purpose."""
    keys = [3 * (len(entries) - k) for k in range(len(entries))]
    offset = 0
    with open(db, "wb") as data, open(f"{db}.index", "w") as index:
        for key, (_, blob) in zip(keys, entries):
            data.write(blob + b"\0")
            index.write(f"{key}\t{offset}\t{len(blob) + 1}\n")
            offset += len(blob) + 1
    if lookup:
        with open(f"{db}.lookup", "w") as f:
            for key, (name, _) in zip(keys, entries):
                f.write(f"{key}\t{name}\t0\n")
    with open(f"{db}.dbtype", "wb") as f:
        f.write(struct.pack("<i", 12))                          # MMseqs2's generic database type


def test_foldcomp_round_trip(tmp_path, structures):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        import foldcomp                                          # CI installs the test extra: it must be there
    else:
        foldcomp = pytest.importorskip("foldcomp", reason="foldcomp is not installed (pip install foldcomp, or the "
                                                          "test extra)")
    originals = {}
    entries = []
    # complete chains (Foldcomp rebuilds a chain from its angles with ideal bond lengths, so an experimental chain
    # with gaps or strained geometry, e.g. 4hhb's, comes back further off)
    for f in ("1aki.pdb", AF, "1k6p.pdb"):
        text = (structures / f).read_text()
        for chain_text in foldcomp.split_pdb_by_chain(text):     # Foldcomp compresses single chains
            chain = chain_text[21]
            name = f"{f.split('.')[0]}_{chain}"
            entries.append((name, foldcomp.compress(f"title-{name}", chain_text)))
            originals[name] = (structures / f, chain)
    (tmp_path / "fc").mkdir()
    db = tmp_path / "fc" / "db"
    _write_foldcomp_db(db, entries)
    store = _build(db, tmp_path, workers=2, chains="all")         # each worker process opens the database
    assert sorted(store.names) == sorted(originals)
    assert store.index["has_plddt"].all()                   # a Foldcomp database carries pLDDT (auto)
    for g in store:
        path, chain = originals[g.name]
        ref = ResidueView.from_structure(load_chain(path, chain))
        ca = g.pos.double().numpy()
        assert ca.shape == ref.ca.shape
        d = np.linalg.norm(ca - ref.ca, axis=1)
        # Foldcomp: backbone within ~0.1 A RMSD of the original (Kim et al. 2023; measured here 0.05-0.09 A);
        # errors grow along the chain between anchor residues (0.34 A at most here)
        assert np.sqrt((d ** 2).mean()) < 0.12 and d.max() < 0.5, (g.name, d.max())
        b = _gemmi_ca_b(path, chain)
        # B-factors / pLDDT are stored in 8 bits over the chain's range, written back with two decimals
        step = (b.max() - b.min()) / 255
        assert np.abs(g.plddt.numpy() - b).max() <= step / 2 + 0.006, g.name
    # the database given as its folder, and without a lookup file: names stored in the entries
    (tmp_path / "nolookup").mkdir()
    _write_foldcomp_db(tmp_path / "nolookup" / "db", entries[:2], lookup=False)
    plain = _build(tmp_path / "nolookup", tmp_path)
    assert sorted(plain.names) == sorted(f"title-{n}:A" for n, _ in entries[:2])

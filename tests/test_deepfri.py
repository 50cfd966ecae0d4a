"""DeepFRI EC / GO loaders: the real annotation and split files, malformed input, missing structures, graphs
and labels of tiny DeepFRI-format sets built from sample structures, the identity cut-offs, the cache, and a
one-epoch training run."""
from __future__ import annotations

import gzip
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from farfield.datasets import DATASETS, dataset_info
from farfield.datasets import deepfri as D
from farfield.errors import ConfigError, InputError

EC_CLASSES = ["1.1.1.1", "2.7.11.1", "3.2.1.17", "4.6.1.-"]
SPLITS = {"train": ["1S3P-A", "4HHB-A", "4HHB-B", "1ORC-A"], "valid": ["1AKI-A", "2W83-E"],
          "test": ["4HHB-C", "4HHB-D"]}
EC_LABELS = {"1S3P-A": "1.1.1.1", "4HHB-A": "2.7.11.1,3.2.1.17", "4HHB-B": "2.7.11.1", "1ORC-A": "4.6.1.-",
             "1AKI-A": "3.2.1.17", "2W83-E": "1.1.1.1,4.6.1.-", "4HHB-C": "2.7.11.1", "4HHB-D": "3.2.1.17",
             "9ZZZ-A": "1.1.1.1"}
IDENTITY = {"4HHB-C": "1,1,1,1,1", "4HHB-D": "0,0,0,1,1"}


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def nrpdb(data_dir) -> Path:
    return data_dir / "function" / "deepfri_nrPDB"


@pytest.fixture(scope="module")
def sample_structures(data_dir, tmp_path_factory) -> Path:
    """Sample PDB files under the names users have: chain files, upper / lower case, gzip, archive name."""
    out = tmp_path_factory.mktemp("structures")
    ex, st = data_dir / "function" / "deepfri_examples", data_dir / "structures"
    shutil.copyfile(ex / "1S3P-A.pdb", out / "1S3P-A.pdb")
    shutil.copyfile(ex / "2W83-E.pdb", out / "2w83_E.pdb")
    (out / "1AKI.cif.gz").write_bytes(gzip.compress((st / "1aki.cif").read_bytes()))
    shutil.copyfile(st / "4hhb.pdb", out / "pdb4hhb.ent")
    shutil.copyfile(st / "1orc.pdb", out / "1ORC.pdb")
    return out


def _write_set(folder: Path, labels=EC_LABELS, splits=SPLITS, identity=IDENTITY, prefix="nrPDB-EC_tiny",
               classes=EC_CLASSES, extra_lines=()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{c}\t{v}" for c, v in labels.items()]
    text = "### EC-numbers\n" + "\t".join(classes) + "\n### PDB-chain\tEC-numbers\n" + "\n".join([*rows, *extra_lines])
    (folder / f"{prefix}_annot.tsv").write_text(text + "\n")
    for name, ids in splits.items():
        (folder / f"{prefix}_{name}.txt").write_text("\n".join(ids) + "\n")
    csv = ["PDB-chain,<30%,<40%,<50%,<70%,<95%"] + [f"{c},{identity.get(c, '0,0,0,0,1')}" for c in splits["test"]]
    (folder / f"{prefix}_test.csv").write_text("\n".join(csv) + "\n")
    return folder


def _write_go(folder: Path) -> Path:
    terms = {"molecular_function": ["GO:0001", "GO:0002"], "biological_process": ["GO:0100", "GO:0200", "GO:0300"],
             "cellular_component": ["GO:0900"]}
    lines = []
    for ont, ts in terms.items():
        lines += [f"### GO-terms ({ont})", "\t".join(ts),
                  f"### GO-names ({ont})", "\t".join(f"name of {t}" for t in ts)]
    lines.append("### PDB-chain\tGO-terms (molecular_function)\tGO-terms (biological_process)\t"
                 "GO-terms (cellular_component)")
    bp = {"1S3P-A": "GO:0100,GO:0300", "4HHB-A": "GO:0200", "4HHB-B": "", "1ORC-A": "GO:0100", "1AKI-A": "GO:0300",
          "2W83-E": "GO:0200", "4HHB-C": "GO:0100", "4HHB-D": ""}
    for c in bp:
        lines.append(f"{c}\tGO:0001\t{bp[c]}\tGO:0900")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nrPDB-GO_tiny_annot.tsv").write_text("\n".join(lines) + "\n")
    for name, ids in SPLITS.items():
        (folder / f"nrPDB-GO_tiny_{name}.txt").write_text("\n".join(ids) + "\n")
    (folder / "nrPDB-GO_tiny_test.csv").write_text("PDB-chain,<30%,<40%,<50%,<70%,<95%\n4HHB-C,0,1,1,1,1\n"
                                                   "4HHB-D,0,0,0,0,1\n")
    return folder


def _labels(g) -> list[int]:
    return torch.nonzero(g.y[0]).ravel().tolist()


# ------------------------------------------------------------------------------------------------ real files
def test_real_ec_annotation_and_splits(nrpdb):
    classes, annot = D.read_annotations(nrpdb / "nrPDB-EC_2020.04_annot.tsv", "ec")
    assert len(classes) == 538 and len(annot) == 19201
    assert annot["1DIX-A"] == [classes.index("4.6.1.-")]
    assert all(annot[c] for c in annot)                                  # every EC chain has a class
    sizes = {}
    for name in ("train", "valid", "test"):
        ids = D.read_split(nrpdb / f"nrPDB-EC_2020.04_{name}.txt")
        sizes[name] = len(ids)
        assert all(c in annot for c in ids)                              # every listed chain is annotated
    assert sizes == {"train": 15551, "valid": 1729, "test": 1919}
    ident = D.read_identity(nrpdb / "nrPDB-EC_2020.04_test.csv")
    test = D.read_split(nrpdb / "nrPDB-EC_2020.04_test.txt")
    assert set(ident) == set(test)
    counts = np.stack(list(ident.values())).sum(0)                       # chains below each cut-off
    assert (np.diff(counts) >= 0).all() and counts[0] > 0 and counts[-1] == len(test)
    assert ident["1NW6-A"].tolist() == [True] * 5 and ident["2FOR-A"].tolist() == [False, False, True, True, True]
    go = D.read_identity(nrpdb / "nrPDB-GO_2019.06.18_test.csv")
    assert len(go) == 3416 and go["3ONG-B"].tolist() == [False, True, True, True, True]
    assert D.IDENTITY_CUTOFFS == (0.3, 0.4, 0.5, 0.7, 0.95)


def test_real_ec_with_the_sample_structures(nrpdb, data_dir):
    """Two EC chains of the real lists have a structure among the samples (1DIX-A train, 1O1Z-A valid); the
    other 19,197 are reported in one warning and left out."""
    with pytest.warns(UserWarning) as rec:
        seq = DATASETS["ec"](str(nrpdb), structures=str(data_dir / "structures"), workers=1, progress=False)
    msg = " ".join(str(r.message) for r in rec)
    assert "19197 of 19199 chains have no structure file" in msg and "1R9W-A" in msg and "structures:" in msg
    assert len(seq) == 2 and seq.index["split"].tolist() == [0, 1] and seq.names == ["1DIX-A", "1O1Z-A"]
    classes, _ = D.read_annotations(nrpdb / "nrPDB-EC_2020.04_annot.tsv", "ec")
    g0, g1 = seq[0], seq[1]
    assert g0.y.shape == (1, 538) and _labels(g0) == [classes.index("4.6.1.-")]
    assert _labels(g1) == [classes.index("3.1.4.-")]
    assert dataset_info("ec")["task"] == {"kind": "multilabel", "num_outputs": 538, "monitor": "fmax",
                                          "pooling": "mean"}
    # no GO annotation TSV ships with the test data: a clear message says where to get it
    with pytest.raises(InputError, match="no DeepFRI GO annotation file.*DeepFRI"):
        DATASETS["go-mf"](str(nrpdb))


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad, match", [
    ("1ABC-A\t1.1.1.1\textra", "line 6: expected"),
    ("1ABC_A 1.1.1.1", "line 6: expected"),
    ("1ABC-A\t9.9.9.9", r"line 6: '9.9.9.9' is not one of the 4 classes"),
])
def test_malformed_annotation_line_names_file_and_line(tmp_path, bad, match):
    labels = {"4HHB-A": "1.1.1.1", "4HHB-B": "2.7.11.1"}
    f = _write_set(tmp_path / "d", labels=labels, extra_lines=[bad],
                   splits={"train": ["4HHB-A"], "valid": ["4HHB-B"], "test": []})
    with pytest.raises(InputError, match=match) as e:
        D.read_annotations(f / "nrPDB-EC_tiny_annot.tsv", "ec")
    assert "nrPDB-EC_tiny_annot.tsv" in str(e.value)


def test_other_bad_files(tmp_path, sample_structures):
    f = _write_set(tmp_path / "d")
    annot = f / "nrPDB-EC_tiny_annot.tsv"
    annot.write_text(annot.read_text().replace("### EC-numbers", "### something"))
    with pytest.raises(InputError, match="no '### EC-numbers' header"):
        D.read_annotations(annot, "ec")
    f = _write_set(tmp_path / "e", splits={**SPLITS, "test": ["4HHB-C", "5XYZ-A"]})
    with pytest.raises(InputError, match=r"_test.txt: 1 listed chain\(s\) are not in nrPDB-EC_tiny_annot.tsv: 5XYZ-A"):
        DATASETS["ec"](str(f), structures=str(sample_structures))
    f = _write_set(tmp_path / "g")
    (f / "nrPDB-EC_tiny_test.csv").write_text("PDB-chain,<30%,<40%,<50%,<70%,<95%\n4HHB-C,0,1,2,1,1\n")
    with pytest.raises(InputError, match="line 2: expected"):
        D.read_identity(f / "nrPDB-EC_tiny_test.csv")
    (f / "nrPDB-EC_tiny_valid.txt").unlink()
    with pytest.raises(InputError, match="missing DeepFRI file"):
        DATASETS["ec"](str(f))
    f = _write_set(tmp_path / "h")
    with pytest.raises(ConfigError, match="unknown ec option"):
        DATASETS["ec"](str(f), structurs=str(sample_structures))
    with pytest.raises(ConfigError, match="test_identity must be one of"):
        DATASETS["ec"](str(f), structures=str(sample_structures), test_identity=0.6)
    with pytest.raises(ConfigError, match="preset"):
        DATASETS["ec"](str(f), structures=str(sample_structures), preset="nope", workers=1, progress=False)


def test_missing_structures_message(tmp_path, sample_structures):
    f = _write_set(tmp_path / "d", splits={**SPLITS, "test": ["4HHB-C", "9ZZZ-A"]})
    with pytest.warns(UserWarning, match=r"1 of 8 chains have no structure file and are left out \(first: 9ZZZ-A\)"):
        seq = DATASETS["ec"](str(f), structures=str(sample_structures), workers=1, progress=False)
    assert "9ZZZ-A" not in seq.names and len(seq) == 7
    with pytest.raises(InputError, match="none of the 8 listed chains has a structure file.*structures: <folder>"):
        DATASETS["ec"](str(f), structures=str(tmp_path), workers=1, progress=False)


# ------------------------------------------------------------------------------------------------ graphs
def test_tiny_ec_graphs_labels_and_fields(tmp_path, sample_structures, monkeypatch):
    f = _write_set(tmp_path / "d")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                   # every chain has a structure
        seq = DATASETS["ec"](str(f), structures=str(sample_structures), workers=2, progress=False)
    order = SPLITS["train"] + SPLITS["valid"] + SPLITS["test"]
    assert seq.names == order and seq.index["split"].tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    from farfield.io import ResidueView, read_structure
    for i, name in enumerate(order):
        g = seq[i]
        want = [EC_CLASSES.index(c) for c in EC_LABELS[name].split(",")]
        assert g.y.shape == (1, 4) and _labels(g) == sorted(want) and g.name == name
        assert g.edge_index is None and g.x_s.shape[0] == g.num_nodes == seq.index["num_nodes"][i]
        assert int(g.graph_key) == i
        comp = g.baseline_composition
        assert comp.shape == (1, 20) and float(comp.sum()) == pytest.approx(1.0)
        assert torch.allclose(comp[0], torch.bincount(g.res_type[g.res_type < 20], minlength=20).float()
                              / int((g.res_type < 20).sum()))
        assert (torch.diff(g.seqres_index) > 0).all()
    assert seq[6].identity.tolist() == [[True] * 5] and seq[7].identity.tolist() == [[False] * 3 + [True] * 2]
    assert not seq[0].identity.any()
    # residue counts of the chains, from the files themselves
    assert seq[0].num_nodes == 109 and seq[5].num_nodes == 162
    hb = read_structure(sample_structures / "pdb4hhb.ent", chains=("B",), waters=False, hetero=False)
    assert seq[2].num_nodes == len(ResidueView.from_structure(hb))
    # seqres_index: 4HHB has SEQRES records (numbered from 1): the index is the author number - 1
    rv = ResidueView.from_structure(read_structure(sample_structures / "pdb4hhb.ent", chains=("A",), waters=False))
    assert seq[1].seqres_index.tolist() == (rv.res_seq - 1).tolist()
    # the cache: a second load featurises nothing
    def boom(*a, **k):
        raise AssertionError("featurised again")
    monkeypatch.setattr(D, "_featurise", boom)
    again = DATASETS["ec"](str(f), structures=str(sample_structures), workers=1, progress=False)
    assert again.names == order and torch.equal(again[3].x_s, seq[3].x_s)
    monkeypatch.undo()
    # test_identity keeps only the test chains below the cut-off
    low = DATASETS["ec"](str(f), structures=str(sample_structures), test_identity=0.3, progress=False)
    assert low.names == order[:7] and low.index["split"].tolist() == [0, 0, 0, 0, 1, 1, 2]


def test_seqres_index_across_an_unresolved_loop(tmp_path, sample_structures):
    """Residues 30-34 of 4HHB chain A removed: nodes skip them, seqres_index keeps the SEQRES positions;
    without SEQRES records (1S3P-A) the author numbering does the same."""
    lines = (sample_structures / "pdb4hhb.ent").read_text().splitlines()
    keep = [ln for ln in lines if not (ln.startswith("ATOM") and ln[21] == "A" and 30 <= int(ln[22:26]) <= 34)]
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "4HHB.pdb").write_text("\n".join(keep) + "\n")
    ln1 = (sample_structures / "1S3P-A.pdb").read_text().splitlines()
    (folder / "1S3P-A.pdb").write_text("\n".join(ln for ln in ln1 if not (ln.startswith("ATOM")
                                                                         and 50 <= int(ln[22:26]) <= 51)) + "\n")
    f = _write_set(tmp_path / "d", splits={"train": ["4HHB-A"], "valid": ["1S3P-A"], "test": []},
                   labels={"4HHB-A": "1.1.1.1", "1S3P-A": "2.7.11.1"})
    seq = DATASETS["ec"](str(f), structures=str(folder), workers=1, progress=False, cache=False)
    a, s = seq
    assert a.num_nodes == 136 and a.seqres_index[:29].tolist() == list(range(29))
    # seq_index follows SEQRES, so sequence offsets across the unresolved loop count its residues
    assert a.seqres_index[29].item() == 34 and int(a.seq_index[29]) == 34
    assert torch.equal(a.seq_index, a.seqres_index)
    assert s.num_nodes == 107 and s.seqres_index[48:50].tolist() == [48, 51]


def test_go_ontologies_and_presets(tmp_path, sample_structures):
    f = _write_go(tmp_path / "go")
    bp = DATASETS["go-bp"](str(f), structures=str(sample_structures), workers=1, progress=False)
    assert bp[0].y.tolist() == [[1.0, 0.0, 1.0]] and bp[2].y.tolist() == [[0.0, 0.0, 0.0]]  # empty column
    mf = DATASETS["go-mf"](str(f), structures=str(sample_structures), workers=1, progress=False,
                           test_identity=0.4)
    assert mf[0].y.tolist() == [[1.0, 0.0]] and mf.names == bp.names[:7]
    cc = DATASETS["go-cc"](str(f), structures=str(sample_structures), workers=1, progress=False, preset="ca")
    assert cc[0].y.tolist() == [[1.0]] and cc[0].x_s.shape[1] != bp[0].x_s.shape[1]
    assert dataset_info("go-mf")["task"]["num_outputs"] == 489
    with pytest.raises(ConfigError, match="single target"):
        DATASETS["go-cc"](str(f), target="energy")


def test_missing_structures_are_downloaded(tmp_path, sample_structures, data_dir, monkeypatch):
    """Online, chains without a local file are fetched by PDB ID (here from a local server on 127.0.0.1)."""
    import http.server
    import threading
    from functools import partial

    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(data_dir / "structures" / "1aki.cif", served / "1AKI.cif")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        f = _write_set(tmp_path / "d", splits={"train": ["4HHB-A"], "valid": ["1AKI-A"], "test": ["3NOP-A"]},
                       labels={"4HHB-A": "1.1.1.1", "1AKI-A": "3.2.1.17", "3NOP-A": "1.1.1.1"})
        local = tmp_path / "local"
        local.mkdir()
        shutil.copyfile(sample_structures / "pdb4hhb.ent", local / "4hhb.pdb")
        base = f"http://127.0.0.1:{httpd.server_address[1]}/{{ID}}.cif"
        with pytest.raises(ConfigError, match="fmt must be one of"):
            DATASETS["ec"](str(f), structures=str(local), download=True, base_url=base, fmt="mmtf")
        with pytest.raises(InputError, match="missing and offline"):                # FARFIELD_OFFLINE=1 wins
            DATASETS["ec"](str(f), structures=str(local), download=True, base_url=base)
        monkeypatch.setenv("FARFIELD_OFFLINE", "0")
        with pytest.warns(UserWarning) as rec:
            seq = DATASETS["ec"](str(f), structures=str(local), base_url=base, workers=1, progress=False)
        msg = " ".join(str(r.message) for r in rec)
        assert len(rec) == 1                                                          # one warning, all reasons
        assert "3NOP" in msg and "HTTP 404" in msg and "1 of 3 chains have no structure file" in msg
        assert seq.names == ["4HHB-A", "1AKI-A"] and _labels(seq[1]) == [2]
        assert (tmp_path / "cache" / "pdb" / "1aki.cif").is_file()                   # the download cache
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_one_epoch_training_on_a_tiny_ec_set(tmp_path, sample_structures, nrpdb):
    """``farfield train data.dataset=ec`` end to end on 8 chains labelled with real EC classes (the real
    538-class header, so the task comes from the loader's info: multilabel, 538 outputs, monitored by Fmax)."""
    from farfield.cli.main import main
    classes, _ = D.read_annotations(nrpdb / "nrPDB-EC_2020.04_annot.tsv", "ec")
    labels = {c: classes[(7 * k) % 538] + "," + classes[(7 * k + 1) % 538] for k, c in
              enumerate(SPLITS["train"] + SPLITS["valid"] + SPLITS["test"])}
    f = _write_set(tmp_path / "d", labels=labels, classes=classes)
    out = tmp_path / "run"
    code = main(["train", "data.dataset=ec", f"data.path={f}",
                 f"data.options={{structures: {sample_structures}, workers: 1, progress: false}}",
                 "data.edges=radius:10", "model.backbone=gvp",
                 "model.backbone_options={node_dims: [8, 4], edge_dims: [8, 1], num_layers: 1}", "optim.epochs=1",
                 "run.progress=false", "--out", str(out)])
    assert code == 0
    res = json.loads((out / "metrics.json").read_text())
    assert 0 <= res["test/fmax"] <= 1 and 0 <= res["val/fmax"] <= 1 and "test/aupr" in res


# ------------------------------------------------------------------------------------ the seed study, end to end
def test_go_study_end_to_end_gvp_with_and_without_random_edges(tmp_path, sample_structures, capsys):
    """``farfield study --dataset go-bp --backbones gvp --strategies none random`` on the chains we have
    structures for: every arm trains, the report uses the dataset's metric (Fmax) and shows the
    label-frequency and sequence-composition reference baselines."""
    import json

    from farfield.cli.main import main
    go = _write_go(tmp_path / "go")
    out = tmp_path / "study"
    rc = main(["study", "--dataset", "go-bp", "--data-path", str(go), "--backbones", "gvp",
               "--strategies", "none", "random", "--seeds", "2", "--epochs", "2", "--workers", "0",
               "--out", str(out), "--json", "data.edges=radius:10.0", "data.batch_size=4",
               "model.backbone_options={hidden: 16, num_layers: 2}",
               f"data.options={{structures: {sample_structures}, workers: 1, progress: false}}"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["metric"] == "test/fmax" and summary["better"] == "higher"
    arms = {g["arm"]: g for g in summary["groups"]}
    assert set(arms) == {"none", "none-wide", "random"} and all(g["n"] == 2 for g in arms.values())
    assert arms["random"]["params"] <= arms["none-wide"]["params"]
    base = next(iter(summary["baselines"].values()))
    assert set(base) == {"prior", "composition"} and 0 <= base["prior"]["fmax"] <= 1
    report = (out / "report.md").read_text()
    assert "Fmax" in report and "label-frequency" in report and "composition" in report
    # results per identity cut-off: 4HHB-C is below 40-95% identity, 4HHB-D below 95% only
    runs = json.loads((out / "results.json").read_text())["runs"]
    per = runs[0]["test_by_identity"]
    assert [per[c]["n"] for c in ("30%", "40%", "50%", "70%", "95%")] == [0, 1, 1, 1, 2]
    assert "fmax" in per["95%"] and "fmax" not in per["30%"]
    # every test chain is below 95% identity: that column reproduces the run's test metrics, also for the
    # random-edge arm (predictions come from the test loader, with its fixed draw of random edges)
    for r in runs:
        assert r["test_by_identity"]["95%"]["fmax"] == pytest.approx(r["test/fmax"], abs=1e-6), r["arm"]
    assert summary["by_identity"]["gvp + none"]["95%"]["n"] == 2 and "by sequence identity" in report

"""The ``folder`` dataset: your own structures plus a CSV of labels, from the loader to a one-command training
run, and its errors on bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from farfield.datasets import DATASETS, dataset_info
from farfield.datasets.custom import amino_acid_composition, folder, read_labels, task_for
from farfield.errors import ConfigError, InputError

SMALL = {"1A8O": 70, "1aki": 129, "1dix": 208, "1l2y": 20, "1orc": 64, "2n0n_M1": 11, "3o5r": 128}


def _csv(tmp_path, text, name="labels.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _load(path, structures, **kw):
    return folder(path, structures=str(structures), **kw)


def test_registered_and_task_depends_on_the_csv(tmp_path, structures):
    assert DATASETS["folder"].resolve() is folder
    assert "task" not in dataset_info("folder") and folder.task_for is task_for
    p = _csv(tmp_path, "id,y\n1l2y,0.5\n1orc,-1.25\n")
    assert task_for(p) == {"kind": "graph_regression", "num_outputs": 1, "label_names": ["y"],
                           "pooling": "mean"}
    graphs = _load(p, structures)
    assert [g.name for g in graphs] == ["1l2y", "1orc"]
    assert graphs[0].y.tolist() == [[0.5]] and graphs[1].y.tolist() == [[-1.25]]
    assert graphs[0].x_s.shape == (20, 27) and graphs[0].x_v.shape == (20, 3, 3)       # default preset gvp
    assert "edge_index" not in graphs[0] and "split" not in graphs[0] and "group" not in graphs[0]


def test_composition_baseline(tmp_path, structures):
    g = _load(_csv(tmp_path, "id,y\n1l2y,1\n2n0n_M1,0\n"), structures, task="regression")[0]
    # Trp-cage NLYIQWLKDGGPSSGRPPPS
    expect = np.array([sum(c == a for c in "NLYIQWLKDGGPSSGRPPPS") / 20 for a in "ARNDCQEGHILKMFPSTWYV"])
    assert g.baseline_composition.shape == (1, 20)
    assert np.allclose(g.baseline_composition.numpy()[0], expect)
    assert math.isclose(float(g.baseline_composition.sum()), 1.0, abs_tol=1e-6)
    assert amino_acid_composition(np.array([0, 0, 20, 19])).tolist()[:1] == [0.5]


@pytest.mark.parametrize("text,kind,n,y", [
    ("id,a\n1l2y,1\n1orc,0\n", "binary", 1, [[1], [0]]),
    ("id,a,b,c\n1l2y,1,0,1\n1orc,0,0,1\n", "multilabel", 3, [[1, 0, 1], [0, 0, 1]]),
    ("id,go\n1l2y,GO:2;GO:1\n1orc,\n", "multilabel", 2, [[1, 1], [0, 0]]),
    ("id,fold\n1l2y,beta\n1orc,alpha\n", "multiclass", 2, [[1], [0]]),
    ("id,a,b\n1l2y,0.5,3\n1orc,2,1e-3\n", "graph_regression", 2, [[0.5, 3], [2, 1e-3]]),
])
def test_task_inference_and_encoding(tmp_path, text, kind, n, y):
    t = read_labels(_csv(tmp_path, text))
    assert (t.kind, t.num_outputs) == (kind, n)
    assert np.allclose(t.y, y)
    if kind == "multiclass":
        assert t.label_names == ["alpha", "beta"]


def test_explicit_tasks_and_target_columns(tmp_path):
    p = _csv(tmp_path, "id,chain,cls,score\n1l2y,,0,0.1\n1orc,,2,0.7\n1aki,,1,0.3\n")
    with pytest.raises(ConfigError, match="holds integers: set task=multiclass"):
        read_labels(p, target="cls")
    t = read_labels(p, target="cls", task="multiclass")
    assert t.kind == "multiclass" and t.num_outputs == 3 and t.y[:, 0].tolist() == [0, 2, 1]
    assert read_labels(p, target="cls", task="regression").kind == "graph_regression"
    assert read_labels(p, target="score,cls", task="regression").columns == ["score", "cls"]
    assert read_labels(p, task="regression").columns == ["cls", "score"]               # chain is a key column
    with pytest.raises(ConfigError, match=r"target 'nope' names no label column .*\['cls', 'score'\]"):
        read_labels(p, target="nope")
    with pytest.raises(ConfigError, match="one label column"):
        read_labels(p, task="binary")
    with pytest.raises(InputError, match=r"line 3 \(id '1orc'\): label 'cls' is '2'; a binary label must be one of"):
        read_labels(p, target="cls", task="binary")


def test_chains_select_and_group(tmp_path, structures):
    p = _csv(tmp_path, "id,chain,y\n1k6p,A,1.5\n1k6p,B,2\n1k6p_B,,3\n1l2y,,4\n")
    gs = _load(p, structures)
    assert [g.name for g in gs] == ["1k6p:A", "1k6p:B", "1k6p_B", "1l2y"]
    assert gs[0].num_nodes == gs[1].num_nodes == gs[2].num_nodes == 99 and gs[3].num_nodes == 20
    assert torch.equal(gs[1].pos, gs[2].pos)
    assert [int(g.group) for g in gs] == [0, 0, 1, 2]          # the chains of one entry stay in one split


def test_atom_level_and_presets(tmp_path, structures):
    p = _csv(tmp_path, "id,y\n1l2y,1\n2n0n_M1,2\n")
    g = _load(p, structures, level="atom")[0]
    assert g.x_s.shape[1] == 9 and "x_v" not in g and g.num_nodes > 100        # heavy atoms, element one-hot
    assert _load(p, structures, level="atom", hydrogens=True)[0].num_nodes > g.num_nodes
    assert _load(p, structures, preset="ca_sc")[0].x_s.shape == (20, 59)
    with pytest.raises(ConfigError, match="preset must be one of"):
        _load(p, structures, preset="ca_full")
    with pytest.raises(ConfigError, match="level must be"):
        _load(p, structures, level="residues")


def test_node_level_labels(tmp_path, structures):
    rows = "".join(f"1l2y,A,{r},{r / 10}\n" for r in range(1, 21) if r != 7)
    p = _csv(tmp_path, "id,chain,resnum,dist\n" + rows)
    assert task_for(p) == {"kind": "node_regression", "num_outputs": 1, "label_names": ["dist"],
                           "pooling": "mean"}
    with pytest.raises(InputError, match=r"1 of 20 residues of 1l2y.pdb have no label \(\['A7'\]\)"):
        _load(p, structures)
    g = _load(p, structures, missing_label=-1)[0]
    expect = [r / 10 if r != 7 else -1.0 for r in range(1, 21)]
    assert g.y.shape == (20, 1) and np.allclose(g.y[:, 0].numpy(), expect)
    assert g.baseline_residue_type.shape == (20, 21) and "baseline_composition" not in g
    p.write_text("id,chain,resnum,dist\n" + rows + "1l2y,A,99,0\n")
    with pytest.raises(InputError, match="line 21: 1l2y.pdb has no amino-acid residue chain 'A' number 99"):
        _load(p, structures, missing_label=0)
    with pytest.raises(ConfigError, match="task='binary' needs graph-level labels, but .* per-residue"):
        _load(p, structures, task="binary")
    with pytest.raises(ConfigError, match="task='graph_regression' needs graph-level labels"):
        read_labels(p, task="graph_regression")
    assert read_labels(p, task="node_regression").kind == read_labels(p, task="regression").kind == "node_regression"
    with pytest.raises(ConfigError, match="need level=residue"):
        _load(p, structures, level="atom", missing_label=0)


def test_split_file(tmp_path, structures):
    p = _csv(tmp_path, "id,y\n1l2y,1.5\n1orc,2\n2n0n_M1,3\n")
    s = _csv(tmp_path, "id,split\n1l2y,train\n1orc,Valid\n2n0n_M1,test\nzzzz,train\n", "split.csv")
    gs = _load(p, structures, split_file="split.csv")                # relative: next to the CSV
    assert [int(g.split) for g in gs] == [0, 1, 2]
    s.write_text("id,split\n1l2y,train\n1orc,dev\n2n0n_M1,test\n")
    with pytest.raises(InputError, match=r"split.csv: line 3 \(id '1orc'\): unknown split 'dev'; use one of "
                                         r"\['test', 'train', 'val'\]"):
        _load(p, structures, split_file=str(s))
    s.write_text("id,split\n1l2y,train\n1orc,val\n")
    with pytest.raises(InputError, match=r"has no split for 1 id\(s\): \['2n0n_M1'\]"):
        _load(p, structures, split_file=str(s))


@pytest.mark.parametrize("text,err,match", [
    ("", InputError, "is empty"),
    ("\n\n", InputError, "is empty"),
    ("id,y\n", InputError, r"has a header \['id', 'y'\] but no rows"),
    ("name,y\n1l2y,1\n", InputError, r"has no 'id' column \(columns: \['name', 'y'\]\)"),
    ("id\n1l2y\n", InputError, "has no label column"),
    ("id,y\n1l2y,nan\n1orc,1\n", InputError, r"line 2 \(id '1l2y'\): label 'y' is 'nan'; every label must be a finite"),
    ("id,y\n1l2y,1\n1orc,\n", InputError, r"line 3 \(id '1orc'\): label 'y' is 'blank'"),
    ("id,y\n1l2y,1\n1l2y,2\n", InputError, r"line 3 repeats \{'id': '1l2y', 'chain': None\} of line 2"),
    ("id,y\n1l2y,1,3\n", InputError, "line 2 has 3 fields, the header 2"),
    ("id,y,y\n1l2y,1,3\n", InputError, "duplicate columns"),
    ("id,a,b\n1l2y,x,1\n", ConfigError, "cannot infer the task"),
    ("id,chain,resnum,y\n1l2y,A,1.5,1\n", InputError, "resnum '1.5' is not an integer"),
])
def test_bad_csv(tmp_path, structures, text, err, match):
    with pytest.raises(err, match=match):
        _load(_csv(tmp_path, text), structures)


def test_bad_options_and_missing_structures(tmp_path, structures):
    p = _csv(tmp_path, "id,y\n1l2y,1.5\nnot_there,2\n9zzz_A,3\n")
    with pytest.raises(InputError) as e:
        _load(p, structures)
    assert "no structure file for id(s) ['not_there', '9zzz_A']" in str(e.value) and str(structures) in str(e.value)
    with pytest.raises(ConfigError, match=r"task must be one of \['regression', 'binary', 'multiclass', 'multilabel'"):
        _load(p, structures, task="ordinal")
    with pytest.raises(ConfigError, match="give the label CSV"):
        folder(None)
    with pytest.raises(InputError, match="not found"):
        folder(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="structure folder not found"):
        folder(p, structures=str(tmp_path / "nowhere"))
    (tmp_path / "other.csv").write_text("id,y\n")
    with pytest.raises(ConfigError, match="holds 2 CSV files"):
        folder(tmp_path)
    _csv(tmp_path, "id,y\n1l2y,1.5\n1orc,2\n", "good.csv")
    (tmp_path / "labels.csv").unlink()
    assert [g.name for g in folder(tmp_path, csv="good.csv", structures=str(structures))] == ["1l2y", "1orc"]


def test_train_in_one_command(tmp_path, structures, capsys):
    """A user's CSV and structure folder, trained for one epoch with the documented command line."""
    import json

    from farfield.cli.main import main

    ids = list(SMALL) + ["1k6p_A"]
    rng = np.random.default_rng(0)
    csv = _csv(tmp_path, "id,stability\n" + "".join(f"{i},{rng.normal():.3f}\n" for i in ids))
    _csv(tmp_path, "id,split\n" + "".join(f"{i},{s}\n" for i, s in zip(ids, ["train"] * 5 + ["val"] * 2 + ["test"])),
         "split.csv")
    out = tmp_path / "run"
    code = main(["train", "data.dataset=folder", f"data.path={csv}", f"data.options.structures={structures}",
                 "data.options.split_file=split.csv", "data.options.preset=ca_bb", "data.edges=radius:10",
                 "task.kind=graph_regression", "model.backbone=gvp",
                 "model.backbone_options={node_dims: [8, 4], edge_dims: [8, 1], num_layers: 1}", "optim.epochs=1",
                 "run.progress=false", f"run.out={out}", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    res = json.loads(captured.out)
    assert res["epochs"] == 1 and math.isfinite(res["test/mae"])

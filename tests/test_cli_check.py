"""`farfield check` and `farfield expressivity` from the command line."""
from __future__ import annotations

import json

from farfield.cli.main import main


def test_check_one_model_json(capsys):
    assert main(["check", "--model", "gvp", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["graphs"] == 2
    assert {r["test"] for r in out["models"][0]["results"]} == {"rotation", "reflection", "translation",
                                                                "permutation", "batching"}


def test_check_table_and_float32(capsys):
    assert main(["check", "--model", "tfn_se3", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "SE(3)" in out


def test_check_on_a_structure_file_at_atom_level(capsys, structures):
    assert main(["check", "--model", "schnet", "--structure", str(structures / "1l2y.pdb"), "--level", "atom",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"]


def test_check_long_range_all(capsys):
    from farfield.models.long_range import STRATEGIES
    assert main(["check", "--model", "schnet,painn", "--long-range", "all", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    labels = [m["model"] for m in out["models"]]
    assert out["ok"] and out["long_range"] == list(STRATEGIES)
    assert labels[:3] == ["schnet", "schnet+random", "schnet+full"] and "painn+ewald" in labels
    assert len(labels) == 2 * len(STRATEGIES)


def test_check_errors(capsys):
    assert main(["check", "--model", "gvp", "--long-range", "ewlad"]) == 2
    assert "unknown strategy 'ewlad'" in capsys.readouterr().err
    assert main(["check", "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["check", "--structure", "/nonexistent.pdb"]) == 2
    assert "nonexistent" in capsys.readouterr().err


def test_expressivity_cli(capsys):
    assert main(["expressivity", "--mode", "distance", "--models", "schnet", "gvp", "--tests", "chain:4",
                 "--layers", "3", "--seeds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in out["results"]}
    assert rows["schnet"]["distinguished"] is False and rows["gvp"]["distinguished"] is True
    assert all(r["agrees"] for r in out["results"])
    assert main(["expressivity", "--tests", "5body"]) == 2
    assert main(["expressivity", "--epochs", "0"]) == 2

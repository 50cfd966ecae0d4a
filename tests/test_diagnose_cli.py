"""``farfield diagnose graphs`` and ``farfield diagnose model`` end to end on tiny inputs, and their errors."""
from __future__ import annotations

import json

import pytest

from farfield.cli.main import main

DATA = ["data.target=potential", "task.kind=node_regression", "data.limit=24", "data.split=[0.5, 0.25, 0.25]"]
TINY = [*DATA, "optim.epochs=1", "model.backbone=schnet",
        "model.backbone_options={hidden: 8, num_layers: 1, num_basis: 4}", "data.edges=radius:3.0"]


def test_graph_measures_per_construction(tmp_path, capsys):
    assert main(["diagnose", "graphs", *DATA, "--edges", "radius:3.0", "radius:6.0,max=40", "--hops", "2",
                 "--max-graphs", "6", "--json", "--out", str(tmp_path)]) == 0
    res = json.loads(capsys.readouterr().out)["graphs"]
    short, wide = res["radius:3.0"]["distributions"], res["radius:6.0,max=40"]["distributions"]
    assert res["radius:3.0"]["graphs"] == 6 and res["radius:3.0"]["cutoff"] == 3.0
    assert wide["mean_degree"]["mean"] > short["mean_degree"]["mean"]
    assert wide["diameter_hops"]["mean"] < short["diameter_hops"]["mean"]
    assert wide["spectral_gap"]["mean"] > short["spectral_gap"]["mean"]           # better connected
    assert (tmp_path / "curvature.png").is_file() and (tmp_path / "results.json").is_file()
    assert main(["diagnose", "graphs", *DATA, "--hops", "0"]) == 2
    assert "--hops must be >= 1" in capsys.readouterr().err


def test_model_diagnostics_of_a_run_and_a_study(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["diagnose", "model", str(run), "--graphs", "2", "--json", "--out", str(tmp_path / "d")]) == 0
    r = json.loads(capsys.readouterr().out)["run"]
    # one SchNet layer on a 3 A radius graph cannot read atoms beyond 3 A: exactly zero influence from there
    assert r["beyond_cutoff"] == 0.0 and r["beyond_L_cutoffs"] == 0.0 and r["layers"] == 1
    assert len(r["mad_per_layer"]) == 2 and r["graphs"] == 2 and r["range_angstrom"] > 0
    assert (tmp_path / "d" / "influence.png").is_file() and (tmp_path / "d" / "mad.png").is_file()
    study = tmp_path / "study"
    assert main(["study", *TINY, "--strategies", "none", "--seeds", "1", "--workers", "0", "--no-diagnostics",
                 "--out", str(study)]) == 0
    capsys.readouterr()
    assert main(["diagnose", "model", str(study), "--graphs", "1"]) == 0
    assert "| schnet + none |" in capsys.readouterr().out
    assert main(["diagnose", "model", str(tmp_path / "nothing")]) == 2
    assert "neither a run directory" in capsys.readouterr().err

"""The study report's diagnostics section: each arm's range measure and influence profile from its trained runs,
exact zeros where a model cannot see, cached per run."""
from __future__ import annotations

import json

import pytest

from farfield.study import Study, run_study
from farfield.train.config import load_config

TINY = ["data.target=potential", "task.kind=node_regression", "data.limit=24", "data.split=[0.5, 0.25, 0.25]",
        "optim.epochs=1", "model.backbone=schnet", "model.backbone_options={hidden: 8, num_layers: 1, num_basis: 4}",
        "data.edges=radius:3.0"]


@pytest.fixture(scope="module")
def study_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("diag")
    st = Study(load_config(None, TINY), strategies=("none", "virtual_node"), seeds=1, out=str(out),
               param_matched=False)
    return st, run_study(st, quiet=True), out


def test_every_arm_gets_a_range_measure_and_a_profile(study_out):
    st, summary, out = study_out
    diag = summary["diagnostics"]
    assert diag["reference_edges"] == "radius:3.0" and [a["arm"] for a in diag["arms"]] == ["none", "virtual_node"]
    for a in diag["arms"]:
        assert not a["errors"] and len(a["runs"]) == 1
        assert a["range_angstrom"] >= 0 and a["range_hops"] >= 0 and 0 < a["mad"] <= 2
        assert sum(a["profile"]["mass"]) == pytest.approx(1.0, abs=1e-9)      # every atom is within 40 A
    none, vn = diag["arms"]
    # one layer on a 3 A radius graph: no influence at all from beyond 3 A, exactly; a virtual node reads everything
    assert none["beyond_cutoff"] == 0.0 and none["beyond_L_cutoffs"] == 0.0
    assert vn["beyond_cutoff"] > 0 and vn["range_angstrom"] > none["range_angstrom"]
    report = (out / "report.md").read_text()
    assert "## Diagnostics" in report and "| schnet + virtual_node |" in report and (out / "influence.png").is_file()


def test_diagnostics_are_cached_per_run(study_out, monkeypatch):
    from farfield.study import diagnostics
    st, summary, out = study_out
    run_dir = summary["diagnostics"]["arms"][0]["runs"][0]["run_dir"]
    cached = json.loads((out.joinpath(run_dir) if not run_dir.startswith("/") else
                         __import__("pathlib").Path(run_dir)).joinpath("diagnostics.json").read_text())
    assert cached["key"]["version"] == diagnostics.VERSION

    def boom(*a, **k):
        raise AssertionError("recomputed")
    monkeypatch.setattr(diagnostics, "run_diagnostics", boom)
    again = run_study(st, quiet=True)
    assert again["diagnostics"]["arms"][0]["range_angstrom"] == summary["diagnostics"]["arms"][0]["range_angstrom"]
    # a failing run is reported in its arm, not raised
    monkeypatch.setattr(diagnostics, "VERSION", diagnostics.VERSION + 1)
    failed = run_study(st, quiet=True)["diagnostics"]["arms"][0]
    assert failed["runs"] == [] and "recomputed" in failed["errors"][0]


def test_diagnostics_in_worker_processes_equal_in_process(study_out, tmp_path):
    """The default study diagnoses in worker processes (spawned); the numbers equal the in-process ones."""
    import shutil
    from dataclasses import replace

    from farfield.study.diagnostics import study_diagnostics
    st, summary, out = study_out
    rows = []
    for a in summary["diagnostics"]["arms"]:                # fresh copies of the runs: nothing cached
        src = a["runs"][0]["run_dir"]
        dst = tmp_path / a["arm"]
        shutil.copytree(src, dst)
        (dst / "diagnostics.json").unlink()
        rows.append({"backbone": "schnet", "arm": a["arm"], "seed": 0, "split_seed": 0, "run_dir": str(dst)})
    par = study_diagnostics(rows, replace(st, workers=2), quiet=True)
    for a, b in zip(par["arms"], summary["diagnostics"]["arms"]):
        assert not a["errors"] and a["range_angstrom"] == pytest.approx(b["range_angstrom"], rel=1e-12)

"""Study arms: strategies, explicit overrides and factorial grids are one mechanism; arms cannot change what they
are compared on; the control is named; parameter matching works for any arm; the CLI and YAML declare arms."""
from __future__ import annotations

import argparse
from dataclasses import replace

import pytest

from farfield.errors import ConfigError, InputError
from farfield.study import Arm, Study, grid, strategy_arm, summarize
from farfield.study.arms import parse_cli_arm, parse_grid_option
from farfield.train.config import load_config
from farfield.train.run import config_hash

TINY = ["data.target=potential", "task.kind=node_regression", "data.limit=24", "data.split=[0.5, 0.25, 0.25]",
        "optim.epochs=1", "model.backbone=schnet", "model.backbone_options={hidden: 8, num_layers: 1, num_basis: 4}"]


def _base(*extra):
    return load_config(None, [*TINY, *extra])


def test_grid_is_the_factorial_product_with_a_template():
    arms = grid({"cutoff": [3, 5], "max": [10, 40]}, {"data.edges": "radius:{cutoff},max={max}"})
    assert [a.name for a in arms] == ["cutoff=3,max=10", "cutoff=3,max=40", "cutoff=5,max=10", "cutoff=5,max=40"]
    assert arms[1].overrides == {"data.edges": "radius:3,max=40"} and all(a.kind == "grid" for a in arms)
    dotted = grid({"model.backbone_options.num_layers": [2, 4], "optim.lr": [1e-3]})
    assert [a.overrides for a in dotted] == [{"model.backbone_options.num_layers": 2, "optim.lr": 1e-3},
                                             {"model.backbone_options.num_layers": 4, "optim.lr": 1e-3}]
    assert dotted[0].name == "num_layers=2,lr=0.001"


@pytest.mark.parametrize("factors, template, match", [
    ({"cutoff": [3]}, None, "need a template"),
    ({"cutoff": [3]}, {"data.edges": "radius:{cut}"}, "no grid factor defines"),
    ({"cutoff": [3], "max": [1]}, {"data.edges": "radius:{cutoff}"}, "not used by the template"),
    ({"cutoff": []}, {"data.edges": "radius:{cutoff}"}, "non-empty list"),
    ({"cutoff": [3, 3]}, {"data.edges": "radius:{cutoff}"}, "repeats a level"),
    ({}, None, "at least one factor"),
])
def test_grid_errors_name_the_problem(factors, template, match):
    with pytest.raises(ConfigError, match=match):
        grid(factors, template)


@pytest.mark.parametrize("key", ["data.dataset", "data.split_seed", "data.limit", "data.target", "task.kind",
                                 "task.monitor", "run.seed", "run.out", "data.path"])
def test_an_arm_may_not_change_what_arms_are_compared_on(key):
    with pytest.raises(ConfigError, match="compared on"):
        Arm("x", {key: 1})


def test_arm_names_and_keys_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="dotted config key"):
        Arm("x", {"edges": "radius:3"})
    with pytest.raises(ConfigError, match="may not contain '/'"):
        Arm("a/b", {})
    with pytest.raises(ConfigError, match="two arms are called 'none'"):
        Study(_base(), strategies=("none",), arms=(Arm("none", {"optim.lr": 0.1}),), out=str(tmp_path))
    with pytest.raises(ConfigError, match="control arm 'nope'"):
        Study(_base(), strategies=("none", "ewald"), control="nope", out=str(tmp_path))
    with pytest.raises(ConfigError, match="study arm 'bad'.*lr"):          # invalid values name the arm
        Study(_base(), strategies=("none",), arms=(Arm("bad", {"optim.lr": -3}),),
              out=str(tmp_path))


def test_strategy_arms_are_overrides_with_the_old_semantics(tmp_path):
    """A strategy arm sets the strategy with its defaults; the base's own options stay with the base's strategy;
    the run configs equal the ones built by hand (so a study's run keys do not depend on how an arm was declared)."""
    base = _base("model.long_range=neural_atoms", "model.long_range_options={num_atoms: 4}")
    st = Study(base, strategies=("neural_atoms", "ewald", "ewald+noisy_nodes"), seeds=1, out=str(tmp_path),
               param_matched=False)
    runs = {r.arm: r.cfg for r in st.runs()}
    assert runs["neural_atoms"].model.long_range_options == {"num_atoms": 4}
    assert runs["ewald"].model.long_range == "ewald" and runs["ewald"].model.long_range_options == {}
    assert runs["ewald+noisy_nodes"].task.noisy_nodes == 0.1 and runs["ewald"].task.noisy_nodes == 0.0
    by_hand = replace(base, model=replace(base.model, long_range="ewald", long_range_options={}),
                      run=replace(base.run, seed=0, progress=False))
    declared = Study(base, strategies=("neural_atoms",), arms=(Arm("ewald", {"model.long_range": "ewald",
                                                                              "model.long_range_options": {}}),),
                     seeds=1, out=str(tmp_path), param_matched=False)
    cfg = next(r.cfg for r in declared.runs() if r.arm == "ewald")
    assert config_hash(cfg) == config_hash(by_hand) == config_hash(runs["ewald"])


def test_graph_construction_arms_change_only_the_edges(tmp_path):
    arms = grid({"cutoff": [3.0, 8.0], "max": [10, 40]}, {"data.edges": "radius:{cutoff},max={max}"})
    st = Study(_base(), strategies=("none",), arms=tuple(arms), seeds=2, out=str(tmp_path), param_matched=False)
    runs = st.runs()
    assert len(runs) == 5 * 2
    cfg = next(r.cfg for r in runs if r.arm == "cutoff=8.0,max=40" and r.seed == 1)
    control = next(r.cfg for r in runs if r.arm == "none" and r.seed == 1)
    assert cfg.data.edges == "radius:8.0,max=40"
    a, b = cfg.to_dict(), control.to_dict()
    for d in (a, b):
        d["data"].pop("edges")
        d["run"].pop("out")
    assert a == b                                      # nothing else differs between an arm and its control
    assert "/cutoff=8.0_max=40/" in str(next(r.cfg.run.out for r in runs if r.arm == "cutoff=8.0,max=40"))


def test_parameter_matching_widens_the_control_to_the_largest_custom_arm(tmp_path):
    from farfield.study import matched_width, total_params
    from farfield.study.baselines import longest_distance
    from farfield.train.data import GraphDataModule
    base = _base()
    deep = Arm("deep", {"model.backbone_options.num_layers": 3})
    st = Study(base, strategies=("none",), arms=(deep,), seeds=1, out=str(tmp_path))
    dm = GraphDataModule(base.data, base.data.edges, seed=0)
    dm.setup()
    wide, counts = matched_width(st, dm.input_spec, longest_distance(dm))
    n_deep = total_params(st.arm_config("schnet", deep), dm.input_spec, 10.0)
    widened = next(r.cfg for r in st.runs(wide) if r.arm == "none-wide")
    n_wide = total_params(widened, dm.input_spec, 10.0)
    n_narrower = total_params(st.arm_config("schnet", st.arm("none"), {"hidden": wide["schnet"]["hidden"] - 1}),
                              dm.input_spec, 10.0)
    assert counts["schnet"]["largest_arm"] == "deep" and n_narrower < n_deep <= n_wide == counts["schnet"]["wide"]
    assert widened.model.backbone_options["num_layers"] == 1        # the control widened, not deepened
    assert [r.arm for r in st.runs(wide)] == ["none", "none-wide", "deep"]


def test_a_named_control_is_what_every_arm_is_compared_with(tmp_path):
    arms = grid({"cutoff": [3.0, 5.0, 8.0]}, {"data.edges": "radius:{cutoff}"})
    st = Study(_base(), strategies=(), arms=tuple(arms), control="cutoff=5.0", seeds=3, out=str(tmp_path),
               param_matched=False)
    mae = {"cutoff=3.0": [3.0, 3.2, 3.1], "cutoff=5.0": [2.0, 2.1, 2.3], "cutoff=8.0": [1.0, 1.4, 1.2]}
    rows = [{"backbone": "schnet", "arm": a, "seed": k, "split_seed": 0, "test/mae": v, "epochs": 1,
             "params": {"total": 10, "long_range": 0}, "sec_per_epoch": 1.0, "graphs_per_sec": 1.0,
             "peak_rss_mb": 1.0} for a, vals in mae.items() for k, v in enumerate(vals)]
    s = summarize(rows, st)
    g = {x["arm"]: x for x in s["groups"]}
    assert s["control"] == "cutoff=5.0" and "vs_control" not in g["cutoff=5.0"]
    assert g["cutoff=8.0"]["vs_control"]["diff"] == pytest.approx(-0.9333333, abs=1e-6)
    assert g["cutoff=3.0"]["vs_control"]["diff"] == pytest.approx(0.9666667, abs=1e-6)
    assert g["cutoff=3.0"]["vs_control"]["family_size"] == 2
    from farfield.study import format_table
    assert "vs cutoff=5.0" in format_table(s)


def test_cli_arm_and_grid_parsing():
    a = parse_cli_arm(["r8", "data.edges=radius:8.0", "optim.lr=3e-3", "model.long_range_options={num_atoms: 4}"])
    assert a.name == "r8" and a.overrides == {"data.edges": "radius:8.0", "optim.lr": 0.003,
                                              "model.long_range_options": {"num_atoms": 4}}
    assert parse_grid_option("cutoff=[3, 4.5]") == ("cutoff", [3, 4.5])
    with pytest.raises(ConfigError, match="YAML list"):
        parse_grid_option("cutoff=3,4")
    with pytest.raises(ConfigError, match="first word is the arm's name"):
        parse_cli_arm(["data.edges=radius:8"])


def _args(**kw):
    ns = dict(arm=None, grid=None, template=None)
    ns.update(kw)
    return argparse.Namespace(**ns)


def test_yaml_study_section_and_cli_declare_the_same_arms(tmp_path):
    from farfield.cli.study import load_study_config, study_arms
    f = tmp_path / "study.yaml"
    f.write_text("data: {target: potential}\nmodel: {backbone: schnet}\n"
                 "study:\n  control: none\n  arms:\n    r8: {data.edges: 'radius:8.0'}\n"
                 "  grid: {max: [10, 40]}\n  template: {data.edges: 'radius:5.0,max={max}'}\n")
    cfg, sec = load_study_config(str(f), [])
    assert cfg.data.target == "potential" and sec["control"] == "none"
    arms, declared = study_arms(_args(), sec)
    cli, _ = study_arms(_args(arm=[["r8", "data.edges=radius:8.0"]], grid=["max=[10, 40]"],
                              template=["data.edges=radius:5.0,max={max}"]), {})
    assert declared and [(a.name, a.overrides) for a in arms] == [(a.name, a.overrides) for a in cli]
    assert [a.name for a in arms] == ["r8", "max=10", "max=40"]
    top = tmp_path / "top.yaml"
    top.write_text("arms: {r8: {data.edges: 'radius:8.0'}}\n")
    assert load_study_config(str(top), [])[1] == {"arms": {"r8": {"data.edges": "radius:8.0"}}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {arms: {}, colour: red}\n")
    with pytest.raises(InputError, match="unknown study keys"):
        load_study_config(str(bad), [])


def test_cli_study_with_declared_arms_runs_and_reports_them(tmp_path, capsys):
    """``farfield study --arm ... --grid ...`` end to end on a tiny slice: the arms train, the report lists their
    overrides and compares them with the control."""
    import json

    from farfield.cli.main import main
    out = tmp_path / "s"
    rc = main(["study", *TINY, "--arm", "r3", "data.edges=radius:3.0", "--grid", "max=[4]", "--template",
               "data.edges=radius:5.0,max={max}", "--seeds", "2", "--workers", "0", "--no-param-matched",
               "--no-diagnostics", "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert [g["arm"] for g in summary["groups"]] == ["none", "r3", "max=4"]
    assert summary["groups"][1]["vs_control"]["n"] == 2
    report = (out / "report.md").read_text()
    assert "| r3 | custom | data.edges=radius:3.0 |" in report and "| max=4 | grid | data.edges=radius:5.0,max=4 |" in report
    assert main(["study", *TINY, "--arm", "x", "data.split_seed=3", "--out", str(out)]) == 2
    assert "compared on" in capsys.readouterr().err


def test_pareto_front_by_hand():
    from farfield.study.report import pareto_front
    cost = [1.0, 2.0, 3.0, 2.5, float("nan")]
    mae = [10.0, 8.0, 5.0, 9.0, 1.0]
    assert pareto_front(cost, mae) == [0, 1, 2]                        # arm 3 is dominated by arm 1
    assert pareto_front(cost, [-x for x in mae], lower_is_better=False) == [0, 1, 2]
    assert pareto_front([1.0, 1.0], [2.0, 2.0]) == [0, 1]               # ties dominate neither


def test_the_shipped_example_study_config_builds_its_arms(tmp_path):
    """examples/study_arms.yaml (quoted in the README) declares 6 arms and a widened control."""
    from conftest import ROOT

    from farfield.cli.study import load_study_config, study_arms
    cfg, sec = load_study_config(str(ROOT / "examples" / "study_arms.yaml"), [])
    arms, _ = study_arms(_args(), sec)
    st = Study(cfg, strategies=tuple(sec["strategies"]), arms=tuple(arms), control=sec["control"], seeds=1,
               out=str(tmp_path))
    assert st.labels() == ["none", "none-wide", "ewald", "r8", "deep", "max=10", "max=40"]
    deep = next(r.cfg for r in st.runs({"schnet": {"hidden": 40}}) if r.arm == "deep")
    assert deep.model.backbone_options == {"hidden": 32, "num_layers": 6, "num_basis": 16}

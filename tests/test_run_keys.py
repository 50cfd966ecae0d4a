"""Run keys and study bookkeeping: the data's identity is part of a run's key (a changed data file never reuses
old runs), the loader's parallelism is not; parameter matching on the models that train; convergence of runs
too short to judge."""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from farfield.datasets import peptide_electrostatics as pe
from farfield.datasets.identity import path_identity
from farfield.errors import ConfigError
from farfield.train.config import TrainConfig, apply_overrides, load_config
from farfield.train.run import config_hash, run_data_identity, train
from farfield.study import Study, format_table, matched_width, summarize
from farfield.study.baselines import longest_distance as _longest_distance

TINY = ["data.target=potential", "task.kind=node_regression", "data.limit=24", "data.split=[0.5, 0.25, 0.25]",
        "optim.epochs=1",
        "model.backbone=schnet", "model.backbone_options={hidden: 8, num_layers: 1, num_basis: 4}"]


def test_loader_parallelism_is_not_part_of_the_run_key():
    a = apply_overrides(TrainConfig(), ["data.num_workers=0"])
    b = apply_overrides(TrainConfig(), ["data.num_workers=2"])
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(apply_overrides(TrainConfig(), ["data.batch_size=3"]))


def test_a_changed_data_file_gets_a_new_run_key_and_is_never_resumed(tmp_path):
    data = tmp_path / "pe.npz"
    shutil.copyfile(pe.DEFAULT_PATH, data)
    cfg = apply_overrides(TrainConfig(), [*TINY, f"data.path={data}", f"run.out={tmp_path / 'run'}"])
    ident, key = run_data_identity(cfg), config_hash(cfg)
    assert ident == pe.checksum(data)[:16] and ident == run_data_identity(TrainConfig())   # same bytes, same id
    train(cfg, quiet=True)
    # regenerate "the same" file with one target changed: a new identity, a new key, and the old directory refuses
    arrays = dict(np.load(data, allow_pickle=False))
    arrays["potential"] = arrays["potential"].copy()
    arrays["potential"][0] += 1.0
    np.savez_compressed(data, **arrays)
    from farfield.datasets import identity
    identity.clear_cache()
    assert run_data_identity(cfg) != ident and config_hash(cfg) != key
    with pytest.raises(ConfigError, match="trained on other data"):
        train(cfg, quiet=True)


def test_path_identity_follows_content_not_timestamps(tmp_path):
    import os
    from farfield.datasets import identity
    d = tmp_path / "labels"
    d.mkdir()
    (d / "a.csv").write_text("id,y\n1abc,0.5\n")
    first = path_identity(d)
    os.utime(d / "a.csv", (1, 1))
    identity.clear_cache()
    assert path_identity(d) == first                      # touched, same content: same identity
    (d / "a.csv").write_text("id,y\n1abc,0.7\n")          # same size, other content
    identity.clear_cache()
    assert path_identity(d) != first
    assert path_identity(tmp_path / "nothing") == "missing"


@pytest.fixture(scope="module")
def dm():
    from farfield.train.data import GraphDataModule
    cfg = apply_overrides(TrainConfig(), [*TINY[:4]])
    m = GraphDataModule(cfg.data, cfg.data.edges, seed=0)
    m.setup()
    return m


def test_parameter_matching_uses_the_arms_own_long_range_options(tmp_path, dm):
    from farfield.study import total_params as _total_params
    base = load_config(None, [*TINY, "model.long_range=neural_atoms", "model.long_range_options={num_atoms: 64}"])
    st = Study(base, strategies=("none", "neural_atoms"), seeds=1, out=str(tmp_path))
    wide, counts = matched_width(st, dm.input_spec, _longest_distance(dm))
    arm = next(r for r in st.runs(wide) if r.arm == "neural_atoms")
    assert arm.cfg.model.long_range_options == {"num_atoms": 64}
    trained = _total_params(arm.cfg, dm.input_spec, _longest_distance(dm))
    assert counts["schnet"]["target"] == trained            # matched against the model that trains
    assert counts["schnet"]["wide"] >= trained


def test_parameter_matching_with_noisy_nodes_arms(tmp_path, dm):
    base = load_config(None, TINY)
    st = Study(base, strategies=("none", "none+noisy_nodes", "ewald+noisy_nodes"), seeds=1, out=str(tmp_path))
    wide, counts = matched_width(st, dm.input_spec, _longest_distance(dm))    # crashed on the '+noisy_nodes' label
    assert wide["schnet"]["hidden"] > 8 and counts["schnet"]["wide"] >= counts["schnet"]["target"]


def test_runs_too_short_to_judge_convergence_are_not_called_still_improving(tmp_path):
    st = Study(load_config(None, TINY), strategies=("none", "ewald"), seeds=2, out=str(tmp_path), param_matched=False)
    rows = [{"backbone": "schnet", "arm": s, "seed": k, "split_seed": 0, "test/mae": 1.0 + k + (s == "ewald"),
             "params": {"total": 10, "long_range": 0}, "sec_per_epoch": 1.0, "cpu_sec_per_epoch": 1.0,
             "graphs_per_sec": 1.0, "peak_rss_mb": 1.0, "epochs": 3, "curve": [],
             "convergence": {"rel_change": float("nan"), "converged": None, "epochs": 3}} for s in ("none", "ewald")
            for k in range(2)]
    summary = summarize(rows, st)
    table = format_table(summary)
    assert "n/a (< 5 epochs)" in table and "0/2" not in table
    from farfield.study import report_markdown
    assert "Still improving" not in report_markdown(summary, st)


def _row(s, seed, split=0, **metrics):
    return {"backbone": "schnet", "arm": s, "seed": seed, "split_seed": split, **metrics,
            "params": {"total": 10, "long_range": 0}, "sec_per_epoch": 1.0, "cpu_sec_per_epoch": 1.0,
            "graphs_per_sec": 1.0, "peak_rss_mb": 1.0, "epochs": 10, "curve": []}


def test_study_compares_on_the_metric_the_runs_monitored():
    """PSR-style runs select checkpoints on group Spearman; the study compares on it, not on MAE."""
    st = Study(load_config(None, TINY), strategies=("none", "ewald"), seeds=2, param_matched=False)
    rows = [_row(s, k, **{"test/mae": 1.0, "test/group_spearman": 0.1 * k + (s == "ewald"), "monitor": "group_spearman"})
            for s in ("none", "ewald") for k in range(2)]
    summary = summarize(rows, st)
    assert summary["metric"] == "test/group_spearman" and summary["better"] == "higher"


def test_oracle_fraction_uses_each_split_seeds_own_baselines():
    st = Study(load_config(None, TINY), strategies=("none",), seeds=1, param_matched=False, split_seeds=(0, 1))
    rows = [_row("none", 0, 0, **{"test/mae": 6.0}), _row("none", 0, 1, **{"test/mae": 4.0})]
    bl = {"0": {"mean": {"mae": 10.0}, "cutoff_oracle": {"mae": 2.0}},      # split 0: (10 - 6) / 8 = 0.5
          "1": {"mean": {"mae": 5.0}, "cutoff_oracle": {"mae": 3.0}}}       # split 1: (5 - 4) / 2 = 0.5
    g = summarize(rows, st, bl)["groups"][0]
    assert g["oracle_fraction"] == pytest.approx(0.5)        # split 0's baselines alone would give 0.75


def test_split_seeds_on_a_dataset_with_its_own_split_are_refused(tmp_path, monkeypatch):
    from farfield.data import fields as F
    from farfield.datasets import DATASETS
    from farfield.study import run_study
    import torch

    def official(path=None, **kw):
        graphs = DATASETS["peptide_electrostatics"](**kw)[:24]
        for i, g in enumerate(graphs):
            g[F.SPLIT] = torch.tensor([0 if i < 16 else (1 if i < 20 else 2)])
        return graphs
    monkeypatch.setitem(DATASETS, "pe_official", official)
    base = load_config(None, [*TINY, "data.dataset=pe_official"])
    st = Study(base, strategies=("none",), seeds=1, out=str(tmp_path), param_matched=False, split_seeds=(0, 1))
    with pytest.raises(ConfigError, match="own .official. split"):
        run_study(st, quiet=True)


def test_multi_target_regression_reports_each_target(tmp_path):
    """QM9-style mu + alpha: per-target MAE in the run's metrics and the study report, next to the pooled MAE."""
    import torch
    from farfield.train.module import ColumnError, _metrics
    m = _metrics("graph_regression", 2)
    p = torch.tensor([[1.0, 10.0], [2.0, 30.0]])
    t = torch.tensor([[1.5, 20.0], [2.0, float("nan")]])
    m.update(p, t)
    out = m.compute()
    assert float(out["mae_0"]) == pytest.approx(0.25) and float(out["mae_1"]) == pytest.approx(10.0)
    assert float(out["rmse_0"]) == pytest.approx((0.25 / 2) ** 0.5)
    assert "mae_0" not in _metrics("graph_regression", 1)
    # end to end: a 2-target run names its targets (a benchmark copy with two graph targets per item)
    from farfield.datasets import DATASETS

    def two_targets(path=None, target=None, **kw):
        near = DATASETS["peptide_electrostatics"](target="energy_near")[:24]
        far = DATASETS["peptide_electrostatics"](target="energy_far")[:24]
        for g, f in zip(near, far):
            g.y = torch.cat([g.y, f.y], 1)
        return near
    import pytest as _pytest
    mp = _pytest.MonkeyPatch()
    mp.setitem(DATASETS, "pe_two", two_targets)
    try:
        cfg = apply_overrides(TrainConfig(), ["data.dataset=pe_two", "data.target=energy_near,energy_far",
                                              "task.kind=graph_regression", "data.split=[0.5, 0.25, 0.25]",
                                              "optim.epochs=1",
                                              "model.backbone_options={hidden: 8, num_layers: 1, num_basis: 4}",
                                              f"run.out={tmp_path / 'run'}"])
        res = train(cfg, quiet=True)
    finally:
        mp.undo()
    assert set(res["test_by_target"]) == {"energy_near", "energy_far"}
    assert all(v["mae"] > 0 for v in res["test_by_target"].values())
    # the pooled MAE is the mean of the per-target ones (equal counts)
    mean = sum(v["mae"] for v in res["test_by_target"].values()) / 2
    assert res["test/mae"] == pytest.approx(mean, rel=1e-4)


def test_study_report_has_a_per_target_table():
    from farfield.study import report_markdown
    st = Study(load_config(None, TINY), strategies=("none", "ewald"), seeds=2, param_matched=False)
    rows = [_row(s, k, **{"test/mae": 5.0 + k, "test_by_target": {"mu": {"mae": 0.5 + k, "rmse": 1.0},
                                                                    "alpha": {"mae": 9.5 + k, "rmse": 12.0}}})
            for s in ("none", "ewald") for k in range(2)]
    summary = summarize(rows, st)
    assert summary["by_target"]["schnet + none"]["alpha"]["mae"]["mean"] == pytest.approx(10.0)
    md = report_markdown(summary, st)
    assert "per target" in md and "`mu`" in md and "`alpha`" in md


def test_a_run_directory_written_with_an_older_key_is_refused(tmp_path):
    """A run directory from before run keys carried the data's identity (no data_identity file, another stored
    hash) is not returned or resumed on data that may have changed."""
    import json

    import yaml
    cfg = apply_overrides(TrainConfig(), [*TINY, f"run.out={tmp_path / 'old'}"])
    out = tmp_path / "old"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (out / "config_hash").write_text("0123456789\n")
    (out / "metrics.json").write_text(json.dumps({"test/mae": 123.0}))
    with pytest.raises(ConfigError, match="earlier farfield"):
        train(cfg, quiet=True)


def test_identity_covers_loader_options_that_name_files_and_the_loader_version(tmp_path, monkeypatch):
    from farfield.datasets import DATASETS, identity
    from farfield.datasets.identity import data_identity
    csv = tmp_path / "labels.csv"
    csv.write_text("id,y\n1abc,0.5\n")
    monkeypatch.setitem(DATASETS, "toy", lambda path=None, **kw: [])
    first = data_identity("toy", None, {"csv": str(csv), "workers": 2})
    csv.write_text("id,y\n1abc,0.7\n")
    identity.clear_cache()
    assert data_identity("toy", None, {"csv": str(csv), "workers": 2}) != first
    assert data_identity("psr", None, {}).startswith("v2")           # featurisation version of the ATOM3D loaders

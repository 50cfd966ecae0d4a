"""Study arms and reports beyond regression: classification reference baselines, metric formatting, Noisy
Nodes arms and the default study's dataset keys."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from farfield.errors import ConfigError
from farfield.train.config import load_config
from farfield.train.stats import classification_metrics, linear_score_baseline, prior_baseline
from farfield.study import Study, format_table
from farfield.study.arms import split_noisy as split_arm


def test_prior_baseline_scores_label_frequencies():
    rng = np.random.default_rng(0)
    ytr = (rng.random((200, 4)) < [0.1, 0.3, 0.5, 0.7]).astype(float)
    yte = (rng.random((100, 4)) < [0.1, 0.3, 0.5, 0.7]).astype(float)
    m = prior_baseline(ytr, yte, "multilabel")
    # constant scores: every label's AP is its positive fraction in the test set
    assert m["ap"] == pytest.approx(yte.mean(0).mean())
    # Fmax of a constant predictor: at thresholds below the smallest frequency every label is predicted
    assert 0 < m["fmax"] <= 1
    b = prior_baseline(ytr[:, :1], yte[:, :1], "binary")
    assert b["auroc"] == pytest.approx(0.5)


def test_linear_score_baseline_learns_a_linear_rule_and_picks_alpha_on_validation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 5))
    y = np.stack([(x[:, 0] > 0), (x[:, 1] + x[:, 2] > 0)], 1).astype(float)
    m = linear_score_baseline(x[:400], y[:400], x[400:500], y[400:500], x[500:], y[500:], kind="multilabel")
    assert m["ap"] > 0.95 and m["alpha"] in (1e-2, 0.1, 1, 10, 100, 1e3, 1e4)
    noise = linear_score_baseline(rng.normal(size=(400, 5)), y[:400], rng.normal(size=(100, 5)), y[400:500],
                                  rng.normal(size=(100, 5)), y[500:], kind="multilabel")
    assert noise["ap"] < 0.75          # features unrelated to the labels: close to the prevalence
    mc = linear_score_baseline(x[:400], (x[:400, 0] > 0).astype(int) + (x[:400, 1] > 0), x[400:500],
                               (x[400:500, 0] > 0).astype(int) + (x[400:500, 1] > 0), x[500:],
                               (x[500:, 0] > 0).astype(int) + (x[500:, 1] > 0), kind="multiclass")
    assert mc["acc"] > 0.6                # the majority class alone gives about 0.5


def test_classification_metrics_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    y = (rng.random((80, 3)) < 0.4).astype(float)
    s = rng.normal(size=(80, 3)) + y
    m = classification_metrics(y, s, "multilabel")
    assert m["ap"] == pytest.approx(np.mean([sk.average_precision_score(y[:, j], s[:, j]) for j in range(3)]))
    b = classification_metrics(y[:, 0], s[:, 0], "binary")
    assert b["auroc"] == pytest.approx(sk.roc_auc_score(y[:, 0], s[:, 0]))


def _base(**over):
    return load_config(None, ["data.dataset=peptide_electrostatics", "model.backbone=schnet",
                              *[f"{k}={v}" for k, v in over.items()]])


def test_noisy_nodes_arms_change_only_the_auxiliary_loss_weight(tmp_path):
    st = Study(_base(), backbones=("schnet",), strategies=("none", "none+noisy_nodes", "ewald+noisy_nodes"),
               seeds=2, out=str(tmp_path), param_matched=False, noisy_nodes=0.25)
    runs = st.runs()
    assert [r.arm for r in runs] == ["none", "none", "none+noisy_nodes", "none+noisy_nodes",
                                       "ewald+noisy_nodes", "ewald+noisy_nodes"]
    plain, noisy, ewald = runs[0].cfg, runs[2].cfg, runs[4].cfg
    assert plain.task.noisy_nodes == 0 and noisy.task.noisy_nodes == 0.25 and ewald.task.noisy_nodes == 0.25
    assert noisy.model == plain.model and ewald.model.long_range == "ewald"
    assert noisy.data == plain.data and noisy.optim == plain.optim
    assert runs[0].cfg.run.out != runs[2].cfg.run.out                    # config-hashed run directories
    assert split_arm("ewald+noisy_nodes") == ("ewald", True) and split_arm("ewald") == ("ewald", False)
    with pytest.raises(ConfigError, match="unknown strategy"):
        Study(_base(), strategies=("none", "bogus+noisy_nodes"), out=str(tmp_path))
    with pytest.raises(ConfigError, match="noisy_nodes"):
        Study(_base(), strategies=("none", "none+noisy_nodes"), out=str(tmp_path), noisy_nodes=0)
    with pytest.raises(ConfigError, match="base config"):
        Study(_base(**{"task.noisy_nodes": 0.1}), strategies=("none", "none+noisy_nodes"), out=str(tmp_path))


def test_classification_table_shows_scores_to_four_decimals_and_the_baselines():
    g = {"backbone": "gcn", "arm": "none", "n": 3, "mean": 0.52345, "std": 0.01234, "params": 1000,
         "sec_per_epoch": 1.0, "cpu_sec_per_epoch": 1.0, "converged": 3}
    summary = {"metric": "test/ap", "units": "", "groups": [g],
               "baselines": {"0": {"prior": {"ap": 0.18, "fmax": 0.5, "aupr": 0.46, "label": "label-frequency"},
                                   "composition": {"ap": 0.43, "fmax": 0.63, "aupr": 0.64, "alpha": 1,
                                                   "label": "ridge score"}}}}
    t = format_table(summary)
    assert "0.5234 +- 0.0123 (3)" in t
    assert "| AP | Fmax | AUPR |" in t and "| label-frequency | 0.1800 | 0.5000 | 0.4600 |" in t


def test_study_with_another_dataset_drops_the_default_datasets_keys():
    from farfield.cli.study import DEFAULT_STUDY, _default_study
    ns = argparse.Namespace(dataset="peptides_func", overrides=[])
    kept = _default_study(ns)
    assert not any(o.startswith(("data.dataset=", "data.target=", "task.kind=")) for o in kept)
    assert "optim.epochs=35" in kept
    assert _default_study(argparse.Namespace(dataset=None, overrides=[])) == DEFAULT_STUDY
    assert "data.target=potential" not in _default_study(argparse.Namespace(dataset=None,
                                                                             overrides=["data.dataset=qm9"]))


def test_cli_preset_choices_are_the_feature_presets():
    from farfield.cli.main import PRESET_NAMES
    from farfield.features import PRESETS
    assert set(PRESET_NAMES) == set(PRESETS)


def test_input_error_survives_pickling_from_a_worker_process():
    import pickle

    from farfield.errors import InputError
    e = pickle.loads(pickle.dumps(InputError("a.pdb", "is empty")))
    assert isinstance(e, InputError) and e.source == "a.pdb" and e.reason == "is empty" and str(e) == "a.pdb: is empty"


def test_noisy_nodes_arms_keep_auto_task_settings(tmp_path):
    """An arm's task still resolves against the dataset (num_outputs unset stays unset)."""
    from types import SimpleNamespace

    import torch

    from farfield.train.run import task_for_data
    base = load_config(None, ["data.dataset=qm9", "data.target=mu,alpha", "model.backbone=schnet"])
    st = Study(base, strategies=("none", "none+noisy_nodes"), seeds=1, out=str(tmp_path), param_matched=False)
    noisy = st.runs()[1].cfg
    assert noisy.task.noisy_nodes == 0.1 and noisy.task.requested["num_outputs"] is None
    assert noisy.to_dict()["task"]["kind"] == "auto"
    assert task_for_data(noisy, SimpleNamespace(target_mean=torch.zeros(2))).num_outputs == 2


def test_eta_costs_each_arm_at_its_own_measured_time():
    from farfield.study import estimate_remaining
    # 2 workers; 'none' runs took 60 s, 'ewald' runs 150 s; 3 none and 4 ewald left, nothing running
    eta, unmeasured = estimate_remaining(["none"] * 3 + ["ewald"] * 4, {"none": [50, 70], "ewald": [150]}, [], 2)
    assert eta == pytest.approx((3 * 60 + 4 * 150) / 2) and unmeasured == 0
    # an arm not timed yet is costed at the dearest measured arm, not the cheapest, and is counted
    eta, unmeasured = estimate_remaining(["none", "random"], {"none": [60], "ewald": [150]}, [], 2)
    assert eta == pytest.approx((60 + 150) / 2) and unmeasured == 1
    # time already spent by runs in flight is credited (at most 95% of their estimate)
    eta, _ = estimate_remaining(["ewald", "ewald"], {"ewald": [100]}, [("ewald", 80.0)], 2)
    assert eta == pytest.approx((200 - 80) / 2)
    eta, _ = estimate_remaining(["ewald"], {"ewald": [100]}, [("ewald", 500.0)], 2)
    assert eta == pytest.approx(5.0)
    # each run in flight is credited against its own estimate, not its arm's remaining total
    eta, _ = estimate_remaining(["a"] * 5, {"a": [10]}, [("a", 30.0)], 1)
    assert eta == pytest.approx(50 - 9.5)
    # fewer runs than workers: the runs, not the workers, bound the parallelism
    eta, _ = estimate_remaining(["none"], {"none": [60]}, [], 8)
    assert eta == pytest.approx(60)
    eta, unmeasured = estimate_remaining(["none"], {}, [], 2)
    assert np.isnan(eta) and unmeasured == 1


def test_execution_interleaves_arms_by_seed(tmp_path):
    from farfield.study import execution_order
    base = load_config(None, [])
    st = Study(base, strategies=("none", "random", "ewald"), seeds=3, out=str(tmp_path), param_matched=False)
    runs = st.runs()
    order = execution_order(runs, list(range(len(runs))))
    first = [(runs[i].arm, runs[i].seed) for i in order[:3]]
    assert first == [("none", 0), ("random", 0), ("ewald", 0)]
    assert sorted(order) == list(range(len(runs)))
    assert [runs[i].seed for i in order] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_reference_baselines_stream_without_building_edges(monkeypatch):
    """Baseline arrays and targets are read from the raw items: no edges are built and no graph list of a lazy
    split is materialised."""
    import farfield.train.data as D
    from farfield.train.config import apply_overrides, TrainConfig
    from farfield.study import reference_baselines
    cfg = apply_overrides(TrainConfig(), ["data.target=potential", "task.kind=node_regression", "data.limit=40"])
    dm = D.GraphDataModule(cfg.data, cfg.data.edges, seed=0, standardize=True)
    dm.setup()
    expected = reference_baselines(dm, "node_regression")
    calls = []
    monkeypatch.setattr(D, "build_edges", lambda *a, **k: calls.append(1))
    class Store:                      # a lazy store: items by index, node counts in an index
        def __init__(self, graphs):
            self.graphs, self.index = graphs, {"num_nodes": np.array([g.num_nodes for g in graphs])}

        def __len__(self):
            return len(self.graphs)

        def __getitem__(self, i):
            return self.graphs[i]

    class NoBuild(D.LazySplit):
        def __getitem__(self, i):
            raise AssertionError("an item was built with edges")

    dm.train = NoBuild(Store(dm.train), np.arange(len(dm.train)), dm.fixed)
    got = reference_baselines(dm, "node_regression")
    assert not calls
    assert got["composition"]["mae"] == pytest.approx(expected["composition"]["mae"])
    assert got["mean"]["mae"] == pytest.approx(expected["mean"]["mae"])


def test_small_metrics_keep_three_significant_digits():
    """An MAE of 0.0758 is printed as 0.0758, not 0.08; metrics above 1 keep two decimals (tables unchanged)."""
    from farfield.study.report import _digits
    small = {"metric": "test/mae", "groups": [{"mean": 0.0758}, {"mean": 0.0901}]}
    assert _digits(small) == 4
    assert f"{0.0758:.{_digits(small)}f}" == "0.0758"
    assert _digits({"metric": "test/mae", "groups": [{"mean": 14.49}, {"mean": 4.01}]}) == 2
    assert _digits({"metric": "test/mae", "groups": [{"mean": 0.5}]}) == 3
    assert _digits({"metric": "test/ap", "groups": [{"mean": 0.01}]}) == 4
    assert _digits({"metric": "test/mae", "groups": []}) == 2

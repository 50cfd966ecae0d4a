"""Study arms and reports beyond regression: classification reference baselines, metric formatting, Noisy
Nodes arms and the default study's dataset keys."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from farfield.errors import ConfigError
from farfield.train.config import load_config
from farfield.train.stats import classification_metrics, linear_score_baseline, prior_baseline
from farfield.train.study import Study, format_table, split_arm


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
    assert [r.label for r in runs] == ["none", "none", "none+noisy_nodes", "none+noisy_nodes",
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
    g = {"backbone": "gcn", "strategy": "none", "n": 3, "mean": 0.52345, "std": 0.01234, "params": 1000,
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

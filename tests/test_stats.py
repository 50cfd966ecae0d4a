"""Study statistics against hand-computed values, and the degenerate cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from farfield.train.stats import convergence, holm, mean_baseline, paired_t, r2_score, ridge_baseline, variance_components


def test_paired_t_matches_hand_computation():
    # d = [-1, -2, -0.5]: mean -7/6, sd sqrt(7/12), se = sd / sqrt(3), t_{0.975, 2} = 4.302652729749464
    t = paired_t([10, 12, 11], [9, 10, 10.5])
    sd = math.sqrt(7 / 12)
    se = sd / math.sqrt(3)
    assert t["diff"] == pytest.approx(-7 / 6) and t["sd"] == pytest.approx(sd)
    assert t["ci_low"] == pytest.approx(-7 / 6 - 4.302652729749464 * se)
    assert t["ci_high"] == pytest.approx(-7 / 6 + 4.302652729749464 * se)
    # with 2 degrees of freedom the t tail has a closed form: P(T > x) = (1 - x / sqrt(x^2 + 2)) / 2
    x = (7 / 6) / se
    assert t["p_value"] == pytest.approx(1 - x / math.sqrt(x * x + 2))
    assert t["d_z"] == pytest.approx(-(7 / 6) / sd)
    assert t["interval"] == "Student-t"


def test_paired_t_is_not_the_min_max_of_the_differences():
    t = paired_t([0, 0, 0], [1, 2, 3])
    assert t["ci_low"] < 1 and t["ci_high"] > 3          # a percentile bootstrap of 3 values would give [1, 3]


@pytest.mark.parametrize("base,other", [([1.0], [2.0]), ([1, 2, 3], [2, 3, 4]), ([], [])])
def test_paired_t_undefined_cases_are_nan(base, other):
    t = paired_t(base, other)
    assert math.isnan(t["p_value"]) and math.isnan(t["ci_low"]) and math.isnan(t["ci_high"])


def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04 with m = 3: 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.01, float("nan"), 0.2])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.2)
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert all(math.isnan(x) for x in holm([float("nan")]))


def test_study_never_flags_without_a_finite_corrected_p():
    from farfield.train.config import TrainConfig
    from farfield.study import Study, summarize

    def row(s, seed, mae):
        return {"backbone": "schnet", "arm": s, "seed": seed, "split_seed": 0, "test/mae": mae,
                "params": {"total": 10, "long_range": 0}, "sec_per_epoch": 1.0, "cpu_sec_per_epoch": 1.0,
                "graphs_per_sec": 1.0, "peak_rss_mb": 1.0, "epochs": 10, "curve": []}
    study = Study(TrainConfig(), strategies=("none", "ewald"), seeds=3, param_matched=False)
    # a constant improvement: no variance, so no interval and no p-value; not flagged
    rows = [row("none", k, 10.0 + k) for k in range(3)] + [row("ewald", k, 9.0 + k) for k in range(3)]
    g = summarize(rows, study)["groups"][1]["vs_control"]
    assert math.isnan(g["p_holm"]) and not g["better"]
    # one seed: nothing to test
    study1 = Study(TrainConfig(), strategies=("none", "ewald"), seeds=1, param_matched=False)
    g = summarize([row("none", 0, 10.0), row("ewald", 0, 1.0)], study1)["groups"][1]["vs_control"]
    assert math.isnan(g["p_value"]) and not g["better"]
    # a clear, noisy improvement is flagged
    rows = [row("none", k, 10.0 + k) for k in range(3)] + [row("ewald", k, 5.0 + k + 0.1 * (-1) ** k) for k in range(3)]
    g = summarize(rows, study)["groups"][1]["vs_control"]
    assert g["better"] and g["p_holm"] < 0.05


def test_ridge_and_mean_baselines():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 3 + 0.01 * rng.normal(size=200)
    r = ridge_baseline(x[:120], y[:120], x[120:160], y[120:160], x[160:], y[160:])
    assert r["r2"] > 0.999 and r["mae"] < 0.05
    m = mean_baseline(y[:120], y[160:])
    assert m["mae"] == pytest.approx(np.abs(y[160:] - y[:120].mean()).mean())
    assert r2_score([1, 2, 3], [1, 2, 3]) == 1.0


def test_convergence_flags_runs_still_improving():
    assert convergence([5, 4, 3, 2, 1, 0.5, 0.4, 0.3, 0.2, 0.1])["converged"] is False
    flat = convergence([5, 2, 1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.899])
    assert flat["converged"] is True and flat["rel_change"] == pytest.approx(0.001 / 0.9)
    assert convergence([1, 2])["converged"] is None
    assert convergence([0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999], mode="max")["converged"] is True


def test_variance_components():
    v = variance_components([1, 3, 11, 13], [0, 0, 1, 1])
    assert v["seed_sd"] == pytest.approx(math.sqrt(2)) and v["split_sd"] == pytest.approx(math.sqrt(50))

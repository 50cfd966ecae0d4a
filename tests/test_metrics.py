"""farfield.metrics: Fmax (hand-computed and brute force), pair AUPR and AUROC (scikit-learn), correlations
(scipy), per-group Spearman, raw scores (no softmax) and bad input."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from farfield.errors import InputError
from farfield.metrics import auroc, fmax, pair_aupr, pearson, per_group_spearman, spearman


def _fmax_brute(y, s, ths):
    """CAFA Fmax by the definition, protein by protein, in plain Python (proteins with true terms only)."""
    best = (0.0, None)
    for t in sorted(ths, reverse=True):                        # ties: the highest threshold wins
        precs, recs = [], []
        for yi, si in zip(y, s):
            pred = [j for j in range(len(si)) if si[j] >= t]
            true = [j for j in range(len(yi)) if yi[j] == 1]
            if not true:                                       # not a benchmark protein of this ontology
                continue
            tp = len(set(pred) & set(true))
            if pred:
                precs.append(tp / len(pred))
            if true:
                recs.append(tp / len(true))
        if not precs:
            continue
        pr, rc = sum(precs) / len(precs), sum(recs) / len(recs)
        f = 2 * pr * rc / (pr + rc) if pr + rc > 0 else 0.0
        if f > best[0]:
            best = (f, t)
    return best


def test_fmax_hand_computed():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    s = np.array([[0.9, 0.8, 0.3], [0.2, 0.7, 0.1]])
    # t=0.9: P1={0} pr 1, rc 1/2; P2 predicts nothing -> pr=1, rc=(1/2+0)/2=1/4, F=0.4
    # t=0.8: P1={0,1} pr 1/2 rc 1/2 -> pr=1/2, rc=1/4, F=1/3
    # t=0.7: P1 pr 1/2 rc 1/2; P2={1} pr 1 rc 1 -> pr=3/4, rc=3/4, F=3/4
    # t=0.3: P1={0,1,2} pr 2/3 rc 1; P2 pr 1 rc 1 -> pr=5/6, rc=1, F=(10/6)/(11/6)=10/11
    # t=0.2: P2={0,1} pr 1/2 -> pr=(2/3+1/2)/2=7/12, rc=1, F=14/19
    # t=0.1: P2 all, pr 1/3 -> pr=1/2, rc=1, F=2/3
    f, t = fmax(y, s)
    assert f == pytest.approx(10 / 11) and t == pytest.approx(0.3)
    # a fixed grid (DeepFRI-style) reaches the same optimum at the grid point just below 0.3
    f2, t2 = fmax(y, s, thresholds=np.linspace(0, 1, 101))
    assert f2 == pytest.approx(10 / 11) and t2 == pytest.approx(0.3)
    # a protein without true terms is not evaluated (CAFA), whatever it scores: counting its precision (0 at
    # every threshold it predicts at) would give F = 2 (5/9)(1) / (5/9 + 1) = 5/7 at t = 0.3
    y3 = np.vstack([y, [0, 0, 0]])
    s3 = np.vstack([s, [0.95, 0.95, 0.95]])
    assert fmax(y3, s3)[0] == pytest.approx(10 / 11) and fmax(y3, s3)[1] == pytest.approx(0.3)


@pytest.mark.parametrize("seed", range(4))
def test_fmax_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    P, T = 9, 7
    y = (rng.random((P, T)) < 0.3).astype(int)
    y[0] = 0                                                   # a protein without annotations
    s = np.round(rng.normal(size=(P, T)), 1)                   # raw logits with ties
    ths = np.unique(s)
    f, t = fmax(y, s)
    fb, tb = _fmax_brute(y, s, ths)
    assert f == pytest.approx(fb) and t == pytest.approx(tb)
    grid = np.linspace(-2, 2, 17)
    assert fmax(y, s, thresholds=grid)[0] == pytest.approx(_fmax_brute(y, s, grid)[0])


def test_fmax_uses_raw_scores_no_softmax():
    y = np.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    logits = np.array([[2.0, 2.0, 2.0, -5.0], [1.5, 1.4, -5.0, -5.0]])
    f_raw = fmax(y, logits)[0]
    # a per-entry monotone map (sigmoid) keeps every protein-term order: Fmax is unchanged
    assert fmax(y, 1 / (1 + np.exp(-logits)))[0] == pytest.approx(f_raw)
    # a softmax across terms couples the terms of a protein and changes the result; fmax must not apply one
    e = np.exp(logits - logits.max(1, keepdims=True))
    soft = e / e.sum(1, keepdims=True)
    f_soft = fmax(y, soft)[0]
    # raw: t=1.5 predicts exactly the true terms, F=1. softmax: protein 1's three terms get 1/3 each, below
    # protein 2's false term (0.475): F = 2 (3/4)(1) / (7/4) = 6/7 at t=1/3, or 2/3 at t=0.525
    assert f_raw == pytest.approx(1.0)
    assert f_soft == pytest.approx(6 / 7, abs=1e-6)
    assert f_raw != pytest.approx(f_soft)


def test_fmax_no_positives_and_bad_input():
    f, t = fmax(np.zeros((2, 3)), np.ones((2, 3)))
    assert np.isnan(f) and np.isnan(t)
    with pytest.raises(InputError, match="NaN"):
        fmax(np.ones((2, 2)), np.array([[0.1, np.nan], [0.2, 0.3]]))
    with pytest.raises(InputError, match="shapes differ"):
        fmax(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(InputError, match="0/1"):
        fmax(np.full((2, 2), 2), np.ones((2, 2)))
    with pytest.raises(InputError, match="2-dimensional"):
        fmax(np.ones(3), np.ones(3))


def test_pair_aupr_hand_computed_and_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    # pairs in decreasing score: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.3 (pos), 0.2, 0.1 (neg)
    y = np.array([[1, 0, 1], [0, 1, 0]])
    s = np.array([[0.9, 0.8, 0.3], [0.2, 0.7, 0.1]])
    # AP = 1/3 * 1 (k=1: P=1) + 1/3 * 2/3 (k=3: P=2/3) + 1/3 * 3/4 (k=4: P=3/4) = (1 + 2/3 + 3/4) / 3
    assert pair_aupr(y, s) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        y = (rng.random((20, 11)) < 0.2).astype(int)
        s = np.round(rng.normal(size=(20, 11)), 1)             # ties included
        assert pair_aupr(y, s) == pytest.approx(sk.average_precision_score(y, s, average="micro"))
        assert auroc(y, s) == pytest.approx(sk.roc_auc_score(y.ravel(), s.ravel()))
    assert np.isnan(pair_aupr(np.zeros((2, 2)), np.ones((2, 2))))
    assert np.isnan(auroc(np.ones(4), np.arange(4.0)))


def test_correlations_match_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=50)
    b = a + rng.normal(size=50)
    b[:5] = b[5]                                               # ties
    assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0])
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0])
    assert np.isnan(spearman(np.ones(4), np.arange(4)))
    assert np.isnan(pearson([1.0], [2.0]))
    with pytest.raises(InputError):
        spearman(np.arange(3), np.arange(4))


def test_per_group_spearman():
    a = np.array([1, 2, 3, 4, 1, 2, 3, 5, 5, 7])
    b = np.array([1, 2, 3, 4, 3, 2, 1, 1, 1, 2])
    g = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 3])
    # group 0: +1; group 1: -1; group 2: one item (skipped); group 3: a non-constant, b non-constant -> +1
    assert per_group_spearman(a, b, g) == pytest.approx((1 - 1 + 1) / 3)
    rng = np.random.default_rng(2)
    a, b, g = rng.normal(size=40), rng.normal(size=40), rng.integers(0, 4, 40)
    ref = np.mean([stats.spearmanr(a[g == k], b[g == k])[0] for k in range(4)])
    assert per_group_spearman(a, b, g) == pytest.approx(ref)
    # constant groups are skipped; none left -> nan
    assert np.isnan(per_group_spearman([1, 1, 2, 2], [1, 2, 3, 4], [0, 0, 1, 1]))
    with pytest.raises(InputError, match="groups"):
        per_group_spearman([1, 2], [1, 2], [0])

"""Evaluation metrics of the protein-function and protein-structure benchmarks, as pure numpy functions.

* :func:`fmax` - protein-centric maximum F-measure of CAFA (Radivojac et al., "A large-scale evaluation of
  computational protein function prediction", Nature Methods 2013, Eqs. 1-3), the headline metric of DeepFRI
  (Gligorijevic et al., "Structure-based protein function prediction using graph convolutional networks",
  Nature Communications 2021) on EC and GO.
* :func:`pair_aupr` - pair-centric (micro: every protein-term pair is one binary decision) area under the
  precision-recall curve, DeepFRI's second metric.
* :func:`auroc` - area under the ROC curve (pairs flattened), by the Mann-Whitney U statistic.
* :func:`pearson`, :func:`spearman` and :func:`per_group_spearman` (ATOM3D PSR's per-target Spearman,
  Townshend et al., "ATOM3D: Tasks on Molecules in Three Dimensions", NeurIPS 2021 Datasets and Benchmarks).

Scores are used **as given** (raw logits or sigmoid probabilities): no softmax across terms is applied.
A softmax couples the terms of one protein (raising one term's score lowers every other's) and, for
multi-label targets, changes which terms pass a threshold and hence Fmax; ProteinWorkshop's Fmax applied
one (a defect we do not reproduce). Monotone *per-entry* transforms (e.g. a sigmoid) leave :func:`fmax`
with ``thresholds=None``, :func:`pair_aupr` and :func:`auroc` unchanged.

Every function raises :class:`~farfield.errors.InputError` for mismatched shapes, non-binary labels or
NaN / infinite values.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from farfield.errors import InputError

__all__ = ["fmax", "pair_aupr", "auroc", "pearson", "spearman", "per_group_spearman"]


def _finite(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(name, f"holds {int((~np.isfinite(a)).sum())} NaN or infinite value(s)")
    return a


def _labels_scores(y_true, y_score, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    t = _finite("y_true", y_true)
    s = _finite("y_score", y_score)
    if t.shape != s.shape:
        raise InputError("y_true/y_score", f"shapes differ: {t.shape} vs {s.shape}")
    if ndim is not None and t.ndim != ndim:
        raise InputError("y_true", f"must be {ndim}-dimensional [proteins, terms], got shape {t.shape}")
    if not np.all((t == 0) | (t == 1)):
        raise InputError("y_true", "must hold only 0/1 labels")
    return t.astype(bool), s


def fmax(y_true, y_score, thresholds=None) -> tuple[float, float]:
    """Protein-centric Fmax (CAFA; Radivojac et al. 2013, Eqs. 1-3) and the threshold that reaches it.

    The evaluated proteins are those with at least one true term (CAFA's benchmark proteins of the ontology;
    a chain without annotation in it, e.g. an empty GO-MF column of a DeepFRI file, is not evaluated). For a
    threshold ``t`` let ``P_i(t) = {terms j : y_score[i, j] >= t}`` and ``T_i = {j : y_true[i, j] = 1}``:

    * precision ``pr(t) = 1/m(t) * sum_{i : |P_i(t)| > 0} |P_i(t) & T_i| / |P_i(t)|`` (averaged over the
      ``m(t)`` evaluated proteins with at least one score ``>= t``),
    * recall ``rc(t) = 1/n * sum_i |P_i(t) & T_i| / |T_i|`` (averaged over the ``n`` evaluated proteins),
    * ``Fmax = max_t 2 pr(t) rc(t) / (pr(t) + rc(t))`` (0 where ``m(t) = 0``).

    Args:
        y_true: [P, T] 0/1 labels (P proteins, T terms).
        y_score: [P, T] raw scores (logits or probabilities; no softmax is applied).
        thresholds: the thresholds to try (e.g. ``np.linspace(0, 1, 101)`` as DeepFRI's evaluation);
            ``None`` (default) tries every distinct score, which gives the exact maximum over all thresholds
            (the F-measure only changes at a score) in ``O(PT log PT)``.

    Returns:
        ``(Fmax, t*)`` with ``t*`` the highest threshold reaching the maximum; ``(nan, nan)`` when no protein
        has a true term.
    """
    t, s = _labels_scores(y_true, y_score, ndim=2)
    annotated = t.sum(1) > 0
    t, s = t[annotated], s[annotated]                          # CAFA: only proteins with true terms
    n_true = t.sum(1)                                          # [P] |T_i| > 0
    n = int(len(n_true))
    if n == 0 or s.size == 0:
        return float("nan"), float("nan")
    if thresholds is not None:
        ths = np.sort(_finite("thresholds", thresholds).ravel())[::-1]   # ties go to the highest threshold
        if ths.size == 0:
            raise InputError("thresholds", "is empty")
        best = (0.0, float(ths[0]))
        for th in ths:
            pred = s >= th                                      # [P, T]
            n_pred = pred.sum(1)
            tp = (pred & t).sum(1)
            has = n_pred > 0
            if not has.any():
                continue
            pr = float(np.mean(tp[has] / n_pred[has]))
            rc = float(np.sum(tp[n_true > 0] / n_true[n_true > 0]) / n)
            f = 2 * pr * rc / (pr + rc) if pr + rc > 0 else 0.0
            if f > best[0]:
                best = (f, float(th))
        return best
    # exact sweep. Sort each protein's terms by decreasing score: the k-th term (rank k) admitted for protein i
    # moves its precision from tp(k-1)/(k-1) to tp(k)/k and its recall by label/|T_i|. Summing these changes
    # over all pairs with score >= t (a prefix of every protein's sorted row) gives sum_i pr_i(t), m(t) and
    # sum_i rc_i(t) at once; they are read off at the last pair of every distinct score.
    P, T = s.shape
    row = np.argsort(-s, axis=1, kind="stable")                  # [P, T]
    s_row = np.take_along_axis(s, row, axis=1)
    lab = np.take_along_axis(t, row, axis=1).astype(np.float64)  # [P, T] label of the k-th best term
    tp = np.cumsum(lab, axis=1)                                  # [P, T] true positives among the first k
    rank = np.arange(1, T + 1, dtype=np.float64)[None, :]        # [1, T]
    prev = np.where(rank > 1, (tp - lab) / np.maximum(rank - 1, 1), 0.0)
    d_prec = (tp / rank - prev).ravel()                          # change of sum_i precision_i
    d_m = np.broadcast_to(rank == 1, (P, T)).astype(np.float64).ravel()   # protein i starts predicting
    d_rec = (lab / np.maximum(n_true, 1)[:, None]).ravel()       # zero for proteins without true terms
    del prev, tp, lab
    flat = s_row.ravel()
    order = np.argsort(-flat, kind="stable")                     # [PT] all pairs by decreasing score
    flat = flat[order]
    last = np.r_[flat[1:] != flat[:-1], True]                    # t = score admits all its ties
    m = np.cumsum(d_m[order])[last]
    pr = np.cumsum(d_prec[order])[last] / m
    rc = np.cumsum(d_rec[order])[last] / n
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(pr + rc > 0, 2 * pr * rc / (pr + rc), 0.0)
    k = int(np.argmax(f))
    return float(f[k]), float(flat[last][k])


def pair_aupr(y_true, y_score) -> float:
    """Pair-centric (micro) area under the precision-recall curve (Gligorijevic et al. 2021).

    Every protein-term pair is one binary decision; the area is the step-wise average precision
    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds in decreasing order (no
    interpolation; equal to scikit-learn's ``average_precision_score(y_true, y_score, average="micro")``).

    Args:
        y_true: [P, T] (or any shape) 0/1 labels; y_score: raw scores of the same shape.

    Returns:
        AP in [0, 1]; ``nan`` when there is no positive pair.
    """
    t, s = _labels_scores(y_true, y_score)
    t, s = t.ravel(), s.ravel()
    n_pos = int(t.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order].astype(np.float64)
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(t)[last]
    npred = (np.arange(1, s.size + 1))[last]
    precision = tp / npred
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(y_true, y_score) -> float:
    """Area under the ROC curve of flattened labels / scores, by the Mann-Whitney U statistic
    ``AUC = (sum of positive ranks - n+ (n+ + 1) / 2) / (n+ n-)`` with average ranks for ties.

    Args:
        y_true: 0/1 labels (any shape); y_score: scores of the same shape.

    Returns:
        AUROC in [0, 1]; ``nan`` when only one class is present.
    """
    t, s = _labels_scores(y_true, y_score)
    t, s = t.ravel(), s.ravel()
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = _finite("a", a).ravel()
    b = _finite("b", b).ravel()
    if a.shape != b.shape:
        raise InputError("a/b", f"lengths differ: {a.size} vs {b.size}")
    return a, b


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2:
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    den = np.sqrt((da * da).sum() * (db * db).sum())
    if den == 0:
        return float("nan")
    return float(np.clip((da * db).sum() / den, -1.0, 1.0))


def pearson(a, b) -> float:
    """Pearson correlation of two [n] vectors; ``nan`` when n < 2 or either is constant."""
    return _pearson(*_pair(a, b))


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks; ties share their mean rank) of two
    [n] vectors; ``nan`` when n < 2 or either is constant."""
    a, b = _pair(a, b)
    return _pearson(rankdata(a), rankdata(b))


def per_group_spearman(a, b, groups) -> float:
    """Mean over groups of the Spearman correlation within each group (ATOM3D PSR's per-target Spearman).

    Args:
        a, b: [n] values (e.g. predicted and true GDT_TS of decoys); groups: [n] group ids (e.g. targets).

    Returns:
        The mean over groups with >= 2 items in which neither ``a`` nor ``b`` is constant; ``nan`` if none.
    """
    a, b = _pair(a, b)
    g = np.asarray(groups).ravel()
    if g.shape != a.shape:
        raise InputError("groups", f"has {g.size} entries, expected {a.size}")
    vals = []
    for key in np.unique(g):
        sel = g == key
        if sel.sum() < 2:
            continue
        r = spearman(a[sel], b[sel])
        if np.isfinite(r):
            vals.append(r)
    return float(np.mean(vals)) if vals else float("nan")

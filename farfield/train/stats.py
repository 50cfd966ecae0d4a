"""Statistics of a study: paired comparisons by seed, multiple-comparison correction, effect sizes,
reference baselines and convergence.

Everything here is plain numpy / scipy on small arrays, and each quantity is named for what it is:

* :func:`paired_t` - the mean of paired differences ``d_k = other_k - base_k`` (one pair per seed, both
  runs trained with the same seed, split and budget), its **Student-t 95% confidence interval**
  ``mean +- t_{0.975, n-1} * sd / sqrt(n)``, the two-sided **paired t-test** p-value and the effect size
  **Cohen's d_z** = mean / sd of the differences. With fewer than two pairs, or differences of zero
  variance, the interval and p-value are undefined and returned as NaN (never 0 or "significant").
* :func:`holm` - Holm's step-down adjustment (Holm 1979, "A simple sequentially rejective multiple test
  procedure", Scand. J. Statist. 6:65-70) of the p-values of the strategies compared with one baseline;
  it controls the family-wise error rate. NaN p-values are left out of the family and stay NaN.
* :func:`ridge_baseline` - a closed-form ridge regression fitted on the training split, its penalty chosen
  on the validation split, evaluated on the test split (MAE and R^2): the study's non-geometric and
  cutoff-oracle reference baselines.
* :func:`prior_baseline`, :func:`linear_score_baseline` - the classification counterparts: label frequencies
  (CAFA's naive predictor) and a ridge on 0/1 labels used as a score, evaluated with
  :func:`classification_metrics`.
* :func:`convergence` - the relative improvement of the best validation metric during the last 20% of
  epochs; a run that still improves by more than ``tol`` there is flagged as not converged.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["paired_t", "holm", "ridge_baseline", "RIDGE_ALPHAS", "mean_baseline", "convergence", "r2_score", "variance_components",
           "classification_metrics", "prior_baseline", "linear_score_baseline", "CLASSIFICATION_METRICS"]


def paired_t(base, other, confidence: float = 0.95) -> dict:
    """Paired comparison ``other - base`` over seeds (arrays of equal length, paired by position).

    Returns ``n``, ``diff`` (mean difference), ``sd`` (sample sd of the differences, ddof 1), ``ci_low`` /
    ``ci_high`` (Student-t interval at ``confidence``), ``p_value`` (two-sided paired t-test), ``d_z``
    (Cohen's effect size for paired data). Undefined quantities are NaN."""
    from scipy import stats
    a, b = np.asarray(base, float), np.asarray(other, float)
    if a.shape != b.shape:
        raise ValueError(f"paired_t: base and other must pair up, got {a.shape} and {b.shape}")
    d = b - a
    n = int(len(d))
    nan = float("nan")
    out = {"n": n, "diff": float(d.mean()) if n else nan, "sd": nan, "ci_low": nan, "ci_high": nan,
           "p_value": nan, "d_z": nan, "confidence": confidence, "interval": "Student-t", "test": "paired t-test"}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    out["sd"] = sd
    if not sd > 0 or not math.isfinite(sd):
        return out
    se = sd / math.sqrt(n)
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    out.update(ci_low=out["diff"] - t * se, ci_high=out["diff"] + t * se,
               p_value=float(2 * stats.t.sf(abs(out["diff"]) / se, n - 1)), d_z=out["diff"] / sd)
    return out


def holm(p_values) -> list[float]:
    """Holm-adjusted p-values, in the input order. ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))`` over
    the m finite p-values sorted ascending; NaN inputs are not counted in m and stay NaN."""
    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if not m:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def r2_score(y, pred) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot (about the mean of ``y``)."""
    y, pred = np.asarray(y, float).ravel(), np.asarray(pred, float).ravel()
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float(1 - ((y - pred) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")


def _metrics(y, pred) -> dict:
    y, pred = np.asarray(y, float).ravel(), np.asarray(pred, float).ravel()
    return {"mae": float(np.abs(y - pred).mean()), "rmse": float(np.sqrt(((y - pred) ** 2).mean())),
            "r2": r2_score(y, pred)}


def _as_2d(y) -> np.ndarray:
    y = np.asarray(y, float)
    return y.reshape(len(y), -1) if y.ndim != 2 else y


def mean_baseline(y_train, y_test) -> dict:
    """Predict the training mean (per target column) for every test item."""
    y_train, y_test = _as_2d(y_train), _as_2d(y_test)
    return _metrics(y_test, np.broadcast_to(np.nanmean(y_train, 0), y_test.shape))


def _ridge_fits(x_train, y_train, alphas):
    """Closed-form multi-output ridge on standardised features (intercepts unpenalised): alpha -> predictor."""
    xtr, ytr = np.asarray(x_train, float), _as_2d(y_train)
    xtr = xtr.reshape(len(xtr), -1)
    mu, sd = xtr.mean(0), xtr.std(0)
    sd[sd == 0] = 1.0

    def design(x):
        x = np.asarray(x, float)
        return (x.reshape(len(x), -1) - mu) / sd

    a_tr = design(xtr)
    y_mu = ytr.mean(0)
    gram, rhs = a_tr.T @ a_tr, a_tr.T @ (ytr - y_mu)
    for alpha in alphas:
        w = np.linalg.solve(gram + alpha * np.eye(a_tr.shape[1]), rhs)
        yield alpha, (lambda x, w=w: design(x) @ w + y_mu)


#: ridge penalties tried by :func:`ridge_baseline` (the penalty on the squared weights of standardised features,
#: not scaled by the number of rows; wide enough that the default study's choices, 1e3 and 1e2, are inside it)
RIDGE_ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def ridge_baseline(x_train, y_train, x_val, y_val, x_test, y_test, alphas=RIDGE_ALPHAS) -> dict:
    """Ridge regression on standardised features (intercept unpenalised), closed form, one output per target
    column. The penalty is the ``alphas`` entry with the lowest validation MAE (the training split alone when
    there is no validation split). Returns test ``mae``, ``rmse``, ``r2`` and the chosen ``alpha``.

    This is the one ridge fit of the package: the study's reference baselines and the built-in benchmark's
    dataset card both use it, so their numbers come from the same fit."""
    ytr = _as_2d(y_train)
    has_val = len(np.asarray(y_val).ravel()) > 0
    best = None
    for alpha, f in _ridge_fits(x_train, ytr, alphas):
        score = _metrics(y_val, f(x_val))["mae"] if has_val else _metrics(ytr, f(x_train))["mae"]
        if best is None or score < best[0]:
            best = (score, alpha, f)
    return {**_metrics(_as_2d(y_test), best[2](x_test)), "alpha": best[1]}


#: the metric each classification task reports first, and the others
CLASSIFICATION_METRICS = {"multilabel": ("ap", "fmax", "aupr"), "binary": ("auroc", "ap"), "multiclass": ("acc",)}


def classification_metrics(y, scores, kind: str) -> dict:
    """Test metrics of ``scores`` (any monotone score, e.g. logits or probabilities) against labels ``y``:
    multilabel ``ap`` (LRGB's label-averaged AP), ``fmax`` (CAFA protein-centric) and ``aupr`` (pair-centric);
    binary ``auroc`` and ``ap``; multiclass ``acc`` (``scores`` [n, C]). A metric that is undefined on the data
    (e.g. one class only) is NaN."""
    y, s = _as_2d(y), _as_2d(scores)
    out = {}
    if kind == "multiclass":
        return {"acc": float((s.argmax(1) == y.ravel().astype(int)).mean()) if len(y) else float("nan")}
    from farfield import metrics as M
    from farfield.datasets.lrgb import lrgb_average_precision
    fns = {"ap": lambda: lrgb_average_precision(y, s), "fmax": lambda: M.fmax(y, s)[0],
           "aupr": lambda: M.pair_aupr(y, s), "auroc": lambda: M.auroc(y.ravel(), s.ravel())}
    for k in CLASSIFICATION_METRICS[kind]:
        try:
            out[k] = float(fns[k]())
        except ValueError:
            out[k] = float("nan")
    return out


def prior_baseline(y_train, y_test, kind: str) -> dict:
    """The label-frequency predictor: every test item gets the training frequency of each label as its score
    (CAFA's "naive" baseline; for multiclass, the most frequent class)."""
    ytr, yte = _as_2d(y_train), _as_2d(y_test)
    if kind == "multiclass":
        counts = np.bincount(ytr.ravel().astype(int))
        scores = np.broadcast_to(counts / counts.sum(), (len(yte), len(counts)))
    else:
        scores = np.broadcast_to(np.nanmean(ytr, 0), yte.shape)
    return classification_metrics(yte, np.array(scores), kind)


def linear_score_baseline(x_train, y_train, x_val, y_val, x_test, y_test, kind: str,
                          alphas=(1e-2, 0.1, 1, 10, 100, 1e3, 1e4)) -> dict:
    """A linear classifier of the simplest kind: ridge regression on the 0/1 labels (one-hot classes for
    multiclass), i.e. a regularised linear probability model, used as a score. The penalty maximises the
    first metric of :data:`CLASSIFICATION_METRICS` on validation; returns the test metrics and ``alpha``."""
    ytr = _as_2d(y_train)
    if kind == "multiclass":
        c = int(max(_as_2d(y).max() for y in (y_train, y_val, y_test) if len(y))) + 1
        ytr = np.eye(c)[ytr.ravel().astype(int)]
    ytr = np.nan_to_num(ytr, nan=0.0)
    key = CLASSIFICATION_METRICS[kind][0]
    has_val = len(np.asarray(y_val).ravel()) > 0
    best = None
    for alpha, f in _ridge_fits(x_train, ytr, alphas):
        m = classification_metrics(y_val, f(x_val), kind) if has_val else classification_metrics(y_train, f(x_train), kind)
        score = m[key] if math.isfinite(m[key]) else -math.inf
        if best is None or score > best[0]:
            best = (score, alpha, f)
    return {**classification_metrics(y_test, best[2](x_test), kind), "alpha": best[1]}


def convergence(values, tail: float = 0.2, tol: float = 0.02, mode: str = "min") -> dict:
    """How much the best-so-far validation metric improved during the last ``tail`` fraction of epochs.

    ``rel_change`` = (best before the tail - best overall) / |best before the tail| (for ``mode='max'`` the
    sign is flipped so that positive always means "still improving"); ``converged`` = rel_change <= ``tol``.
    Fewer than 5 epochs: not assessable (``converged`` None)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) < 5:
        return {"rel_change": float("nan"), "converged": None, "epochs": int(len(v))}
    cut = max(1, int(math.floor(len(v) * (1 - tail))))
    best = np.min if mode == "min" else np.max
    before, overall = float(best(v[:cut])), float(best(v))
    rel = (before - overall) / abs(before) if before != 0 else 0.0
    rel = rel if mode == "min" else -rel
    return {"rel_change": float(rel), "converged": bool(rel <= tol), "epochs": int(len(v))}


def variance_components(values, splits) -> dict:
    """Seed variance (pooled within-split sample variance) and split variance (sample variance of the
    per-split means) of a metric measured on several split seeds x run seeds."""
    values, splits = np.asarray(values, float), np.asarray(splits)
    groups = [values[splits == s] for s in np.unique(splits)]
    within = [g.var(ddof=1) for g in groups if len(g) > 1]
    means = np.array([g.mean() for g in groups])
    return {"seed_sd": float(np.sqrt(np.mean(within))) if within else float("nan"),
            "split_sd": float(means.std(ddof=1)) if len(means) > 1 else float("nan"),
            "splits": int(len(groups))}

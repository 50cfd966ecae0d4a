"""Reference baselines of a study, fitted on the study's own split: the mean (or label-frequency) predictor and a
ridge on every non-geometric feature set the dataset provides (``baseline_<name>``: composition, ECFP counts, the
cutoff oracle of the built-in benchmark). A model that does not beat them has not learned structure."""
from __future__ import annotations

__all__ = ["BASELINE_LABELS", "reference_baselines", "longest_distance", "task_kind"]

BASELINE_LABELS = {
    "mean": "mean predictor (training mean)",
    "prior": "label-frequency predictor (training frequencies; CAFA's naive baseline)",
    "composition": "non-geometric: ridge on composition",
    "cutoff_oracle": "cutoff oracle: ridge on the exact within-cutoff part + composition",
    "ecfp": "non-geometric: ridge on ECFP4 counts (log1p, 2,048 bins)",
}

REGRESSION = ("graph_regression", "node_regression")


def reference_baselines(dm, kind: str = "graph_regression") -> dict[str, dict]:
    """Test-split metrics of the reference baselines on the datamodule's split. Regression: the mean predictor
    and a ridge regression (fitted on train, penalty chosen on val) on every ``baseline_<name>`` feature set the
    dataset provides (typically ``composition`` and ``cutoff_oracle``). Classification (``kind`` binary,
    multiclass, multilabel): the label-frequency predictor and a ridge on the 0/1 labels used as a score on
    each feature set (:func:`farfield.train.stats.linear_score_baseline`)."""
    from farfield.train.stats import linear_score_baseline, mean_baseline, prior_baseline, ridge_baseline
    out = {}
    y = dm.split_targets()                       # streamed: no edges built, no lazy store held in memory
    regression = kind in REGRESSION
    if regression:
        out["mean"] = mean_baseline(y["train"], y["test"])
    else:
        out["prior"] = prior_baseline(y["train"], y["test"], kind)
    for name in dm.baselines:
        a = dm.baseline_arrays(name)
        out[name] = ridge_baseline(*a["train"], *a["val"], *a["test"]) if regression else \
            linear_score_baseline(*a["train"], *a["val"], *a["test"], kind=kind)
    for k, v in out.items():
        v["label"] = BASELINE_LABELS.get(k, f"ridge on {k}")
        if not regression and k != "prior":
            v["label"] = {"composition": "non-geometric: ridge score on composition",
                          "ecfp": "non-geometric: ridge score on ECFP4 counts"}.get(k, f"ridge score on {k}")
    return out


def task_kind(cfg) -> str:
    """The task kind of a config (``TrainConfig`` resolves ``auto`` against the dataset)."""
    return cfg.task.kind


def longest_distance(dm) -> float:
    """The longest intra-graph distance over all splits, one graph at a time (lazy datasets are streamed, not
    materialised); 1.0 when no graph has two positioned nodes."""
    import torch
    longest = 1.0
    for part in (dm.train, dm.val, dm.test):
        get = part.raw if hasattr(part, "raw") else part.__getitem__
        for i in range(len(part)):
            g = get(i)
            if g.pos is not None and g.num_nodes > 1:
                longest = max(longest, float(torch.pdist(g.pos.double()).max()))
    return longest

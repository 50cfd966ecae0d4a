"""Seeded train / validation / test splits, optionally by group (e.g. all conformers of one sequence in the
same split, so that a test item never shares its sequence with a training item)."""
from __future__ import annotations

import numpy as np

__all__ = ["split_indices"]


def split_indices(n: int, fractions, seed: int, groups=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a random train / val / test split of ``range(n)`` with ``fractions`` (three numbers summing
    to 1), drawn from ``seed`` (fixed across run seeds, so that runs are paired).

    With ``groups`` ([n] ints), whole groups are assigned: the unique groups are permuted and cut at
    ``round(f * n_groups)``; without, every item is its own group (the same split as a plain permutation).
    Returns sorted-by-permutation index arrays (train, val, test)."""
    if groups is None:
        perm = np.random.default_rng(seed).permutation(n)
        n_tr = int(round(fractions[0] * n))
        n_va = int(round(fractions[1] * n))
        return perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
    uniq = np.unique(groups)
    tr_g, va_g, te_g = split_indices(len(uniq), fractions, seed)
    idx = np.arange(n)
    order = {g: k for k, g in enumerate(uniq[np.concatenate([tr_g, va_g, te_g])])}
    rank = np.array([order[g] for g in groups])
    pick = lambda sel: idx[np.isin(groups, uniq[sel])][np.argsort(rank[np.isin(groups, uniq[sel])], kind="stable")]
    return pick(tr_g), pick(va_g), pick(te_g)

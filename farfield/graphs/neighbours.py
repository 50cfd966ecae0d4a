"""Neighbour-search kernels on NumPy arrays, vectorised over a whole batch.

One KD-tree (scipy's ``cKDTree``) serves the whole batch: every group (graph, or graph x chain) is
translated along x by ``g * S`` with ``S`` larger than the batch's extent plus the search radius, so no
two groups can come within the radius of each other. Distances are then recomputed from the original
coordinates by the callers. Neither cross-graph edges nor per-node Python loops can occur.

All functions take ``pos`` float64 [N, 3] and ``group`` int64 [N] (dense labels 0..G-1) and return
int64 index arrays.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["dense_labels", "separated_positions", "radius_pairs", "knn_pairs", "full_pairs", "cap_per_target",
           "symmetrise"]


def dense_labels(*keys: np.ndarray) -> np.ndarray:
    """Dense int64 labels 0..G-1 of the distinct tuples of ``keys`` (each [N]), in order of first
    appearance of each tuple."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if len(keys) == 1:
        k = keys[0]
        if k.dtype.kind in "iu" and (k[1:] >= k[:-1]).all():
            change = np.r_[True, k[1:] != k[:-1]]
            return np.cumsum(change) - 1
    stacked = np.stack([np.unique(k, return_inverse=True)[1].reshape(-1) for k in keys], axis=1)
    _, first, inv = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inv.reshape(-1)]


def separated_positions(pos: np.ndarray, group: np.ndarray, gap: float) -> np.ndarray:
    """``pos`` with group g translated by ``g * S`` along x, S = x-extent + gap, so that points of
    different groups are more than ``gap`` apart."""
    if len(pos) == 0 or group.max(initial=0) == 0:
        return pos
    extent = float(pos[:, 0].max() - pos[:, 0].min())
    shifted = pos.copy()
    shifted[:, 0] += group * (extent + gap)
    return shifted


def radius_pairs(pos: np.ndarray, group: np.ndarray, r: float) -> np.ndarray:
    """Unordered pairs (i < j) of the same group with ``|x_i - x_j| <= r``: int64 [P, 2]."""
    if len(pos) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    tree = cKDTree(separated_positions(pos, group, r + 1.0))
    return tree.query_pairs(r, output_type="ndarray").astype(np.int64, copy=False)


def symmetrise(pairs: np.ndarray) -> np.ndarray:
    """[P, 2] unordered pairs -> [2, 2P] directed edges (both directions), first the (i -> j) block."""
    p = len(pairs)
    e = np.empty((2, 2 * p), dtype=np.int64)
    e[:, :p] = pairs.T
    e[0, p:] = pairs[:, 1]
    e[1, p:] = pairs[:, 0]
    return e


def cap_per_target(edges: np.ndarray, dist: np.ndarray, max_neighbours: int) -> np.ndarray:
    """Keep, for every target (row 1), its ``max_neighbours`` nearest sources; ties in distance go to the
    lower source index. Deterministic and independent of the input edge order. Returns a bool mask [E]."""
    src, tgt = edges
    order = np.lexsort((src, dist, tgt))
    t_sorted = tgt[order]
    start = np.r_[0, np.flatnonzero(t_sorted[1:] != t_sorted[:-1]) + 1]
    run_start = np.repeat(start, np.diff(np.r_[start, len(order)]))
    rank = np.arange(len(order)) - run_start
    keep = np.zeros(len(order), dtype=bool)
    keep[order[rank < max_neighbours]] = True
    return keep


def knn_pairs(pos: np.ndarray, group: np.ndarray, k: int) -> np.ndarray:
    """Directed edges [2, E] (source, target) from each target's ``k`` nearest other nodes of its group
    (fewer when the group has fewer than k + 1 nodes)."""
    n = len(pos)
    if n < 2 or k < 1:
        return np.zeros((2, 0), dtype=np.int64)
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    diag = float(np.linalg.norm(hi - lo)) + 1.0  # bound on any intra-group distance
    shifted = separated_positions(pos, group, 2.0 * diag)
    kk = min(k + 1, n)
    dist, idx = cKDTree(shifted).query(shifted, k=kk, distance_upper_bound=diag)
    dist = dist.reshape(n, kk)
    idx = idx.reshape(n, kk)
    rows = np.arange(n)[:, None]
    valid = np.isfinite(dist) & (idx != rows)
    # keep the first k valid entries per row (self is dropped wherever it appears, e.g. duplicate points)
    rank = np.cumsum(valid, axis=1)
    valid &= rank <= k
    tgt = np.broadcast_to(rows, idx.shape)[valid]
    src = idx[valid]
    return np.stack([src.astype(np.int64), tgt.astype(np.int64)])


def full_pairs(group: np.ndarray) -> np.ndarray:
    """All directed pairs (i != j) within each group: [2, sum_g n_g (n_g - 1)]."""
    n = len(group)
    if n < 2:
        return np.zeros((2, 0), dtype=np.int64)
    order = np.argsort(group, kind="stable")
    g = group[order]
    counts = np.bincount(g)
    ptr = np.r_[0, np.cumsum(counts)]
    per_node = counts[g]                                   # group size for each (sorted) target
    tgt_pos = np.repeat(np.arange(n), per_node)            # sorted position of target
    block_start = np.r_[0, np.cumsum(per_node)[:-1]]
    offset = np.arange(len(tgt_pos)) - np.repeat(block_start, per_node)
    src_pos = ptr[g][tgt_pos] + offset
    keep = src_pos != tgt_pos
    return np.stack([order[src_pos[keep]], order[tgt_pos[keep]]]).astype(np.int64)

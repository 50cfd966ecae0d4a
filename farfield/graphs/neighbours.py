"""Neighbour-search kernels on NumPy arrays, vectorised over a whole batch.

One KD-tree (scipy's ``cKDTree``) serves the whole batch: every group (graph, or graph x chain) is
translated along x by ``g * S`` with ``S`` larger than the batch's extent plus the search radius, so no
two groups can come within the radius of each other. Distances are then recomputed from the original
coordinates by the callers. Neither cross-graph edges nor per-node Python loops can occur.

Membership is decided from the *original* coordinates with the rules of :mod:`farfield.graphs.neighbours_torch`
(the device-side twins): ``d2 = dx*dx + dy*dy + dz*dz`` in float64, radius ``d2 <= r*r``, kNN and caps first in
(d2, source index) order. The tree only proposes candidates (with a margin that covers the rounding of the
shifted coordinates), so host and device give identical edge sets, ties included.

All functions take ``pos`` float64 [N, 3] and ``group`` int64 [N] (dense labels 0..G-1) and return
int64 index arrays.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["dense_labels", "separated_positions", "radius_pairs", "knn_pairs", "full_pairs", "cap_per_target",
           "symmetrise", "sq_dist"]


def sq_dist(pos: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """Squared distances [E] as ``dx*dx + dy*dy + dz*dz`` (float64, the order the torch kernels use)."""
    out = None
    for c in range(3):                      # one contiguous coordinate at a time: half the memory traffic
        x = np.ascontiguousarray(pos[:, c])
        d = x.take(src) - x.take(tgt)
        out = d * d if out is None else out + d * d
    return out


def _margin(pos: np.ndarray, r: float) -> float:
    """Slack for tree queries on shifted coordinates: far above their rounding error, far below any real gap."""
    scale = float(np.abs(pos).max(initial=0.0)) + r
    return 1e-9 * max(1.0, scale) + 1e-12


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
    shifted = separated_positions(pos, group, r + 1.0)
    pairs = cKDTree(shifted).query_pairs(r + _margin(shifted, r), output_type="ndarray").astype(np.int64, copy=False)
    if len(pairs):
        pairs = pairs[sq_dist(pos, pairs[:, 0], pairs[:, 1]) <= r * r]
    return pairs


def symmetrise(pairs: np.ndarray) -> np.ndarray:
    """[P, 2] unordered pairs -> [2, 2P] directed edges (both directions), first the (i -> j) block."""
    p = len(pairs)
    e = np.empty((2, 2 * p), dtype=np.int64)
    e[:, :p] = pairs.T
    e[0, p:] = pairs[:, 1]
    e[1, p:] = pairs[:, 0]
    return e


def cap_per_target(edges: np.ndarray, d2: np.ndarray, max_neighbours: int) -> np.ndarray:
    """Keep, for every target (row 1), its ``max_neighbours`` sources first in (squared distance ``d2``, source
    index) order: ties go to the lower source index. Deterministic and independent of the input edge order.
    Returns a bool mask [E]."""
    src, tgt = edges
    order = np.lexsort((src, d2, tgt))
    t_sorted = tgt[order]
    start = np.r_[0, np.flatnonzero(t_sorted[1:] != t_sorted[:-1]) + 1]
    run_start = np.repeat(start, np.diff(np.r_[start, len(order)]))
    rank = np.arange(len(order)) - run_start
    keep = np.zeros(len(order), dtype=bool)
    keep[order[rank < max_neighbours]] = True
    return keep


def knn_pairs(pos: np.ndarray, group: np.ndarray, k: int) -> np.ndarray:
    """Directed edges [2, E] (source, target): each target's ``k`` other nodes of its group first in (d2, source
    index) order, ties at the k-th distance to the lower index (all of them when the group has at most k others).

    The tree proposes the ``k + 8`` nearest candidates (on shifted coordinates); a row is settled when its last
    candidate is farther than its k-th exact distance plus the rounding margin, or when it holds the whole group;
    the other rows (ties or near-ties at the boundary) are asked again with twice as many candidates."""
    n = len(pos)
    if n < 2 or k < 1:
        return np.zeros((2, 0), dtype=np.int64)
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    diag = float(np.linalg.norm(hi - lo)) + 1.0  # bound on any intra-group distance
    shifted = separated_positions(pos, group, 2.0 * diag)
    tree = cKDTree(shifted)
    margin = _margin(shifted, diag)
    sizes = np.bincount(group)[group]                   # nodes in each target's group (self included)
    src_out, tgt_out = [], []
    # fast path: the tree's own order decides every row whose k-th and (k+1)-th candidates are further apart than
    # the rounding of the shifted coordinates can move them (no tie, no near-tie at the boundary)
    kk = min(k + 2, n)
    dist, idx = tree.query(shifted, k=kk, distance_upper_bound=diag)
    dist, idx = dist.reshape(n, kk), idx.reshape(n, kk)
    rows_all = np.arange(n)
    valid = np.isfinite(dist) & (idx != rows_all[:, None])
    rank = np.cumsum(valid, axis=1)
    take = valid & (rank <= k)
    n_valid = rank[:, -1]
    d_k = np.where(take, dist, -np.inf).max(axis=1)
    d_next = np.where(valid & (rank > k), dist, np.inf).min(axis=1)
    whole = n_valid >= sizes - 1
    clean = (whole & (n_valid <= k)) | (d_next - d_k > 2.0 * margin)
    src_out.append(idx[take & clean[:, None]])
    tgt_out.append(np.broadcast_to(rows_all[:, None], idx.shape)[take & clean[:, None]])
    rows = rows_all[~clean]
    kk = min(k + 9, n)
    while len(rows):
        dist, idx = tree.query(shifted[rows], k=kk, distance_upper_bound=diag)
        dist, idx = dist.reshape(len(rows), kk), idx.reshape(len(rows), kk)
        valid = np.isfinite(dist) & (idx != rows[:, None])
        idx_c = np.where(valid, idx, 0)
        d2 = sq_dist(pos, idx_c.reshape(-1), np.repeat(rows, kk)).reshape(len(rows), kk)
        d2 = np.where(valid, d2, np.inf)
        src_key = np.where(valid, idx, n)
        # sort each row by (d2, source index)
        o = np.argsort(src_key, axis=1, kind="stable")
        d2s, srcs = np.take_along_axis(d2, o, 1), np.take_along_axis(src_key, o, 1)
        o = np.argsort(d2s, axis=1, kind="stable")
        d2s, srcs = np.take_along_axis(d2s, o, 1), np.take_along_axis(srcs, o, 1)
        n_valid = valid.sum(axis=1)
        whole = n_valid >= sizes[rows] - 1                # every other node of the group is a candidate
        kr = np.minimum(k, n_valid)
        kth = np.sqrt(d2s[np.arange(len(rows)), np.maximum(kr - 1, 0)])
        settled = whole | (dist[:, -1] > kth + margin)
        take = (np.arange(kk)[None, :] < kr[:, None]) & settled[:, None]
        src_out.append(srcs[take])
        tgt_out.append(np.broadcast_to(rows[:, None], srcs.shape)[take])
        if kk >= n:
            break
        rows = rows[~settled]
        kk = min(2 * kk, n)
    src, tgt = np.concatenate(src_out), np.concatenate(tgt_out)
    o = np.argsort(tgt, kind="stable")
    return np.stack([src[o].astype(np.int64), tgt[o].astype(np.int64)])


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

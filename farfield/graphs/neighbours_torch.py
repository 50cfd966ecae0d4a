"""Neighbour-search kernels in torch, on whatever device the positions live (CPU, CUDA, ...), batched.

These are the device-side twins of :mod:`farfield.graphs.neighbours` (scipy's ``cKDTree`` on the host): the same
edge **sets** for the same inputs, ties included, because both sides decide membership with the same
float64 arithmetic and the same rules:

* squared distances are ``dx*dx + dy*dy + dz*dz`` in float64, in that order (:func:`sq_dist`);
* radius: ``d2 <= r*r``; with a cap, each target keeps its ``max`` sources first in (d2, source index) order;
* kNN: each target keeps its ``k`` other nodes first in (d2, source index) order (ties to the lower index).

Radius search uses a cell list (Allen & Tildesley, *Computer Simulation of Liquids*, 1987, Sec. 5.3.2): nodes are
binned into cubes of side >= r keyed by (group, cell), sorted once, and every target scans the 27 neighbouring
cells of its group; candidates are enumerated in chunks (bounded memory) and filtered by exact distance. kNN is a
dense, row-chunked search within each group (O(sum_g n_g^2): meant for residue graphs and batches of molecules;
the host KD-tree stays the default for one very large graph on the CPU). Nothing is copied to the host; the only
synchronisations are the sizes of data-dependent outputs.

All functions take ``pos`` float64 [N, 3] and ``group`` int64 [N] (dense labels 0..G-1) on one device and return
int64 tensors on that device.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sq_dist", "dense_labels", "radius_edges", "knn_edges", "full_edges", "cap_per_target",
           "first_occurrence", "hash_uniform", "column_code", "mix32"]

#: candidate pairs enumerated per chunk by the cell list / rows x columns per chunk of a dense search
CHUNK = 1 << 22


def sq_dist(pos: Tensor, src: Tensor, tgt: Tensor) -> Tensor:
    """Squared distances ``|x_src - x_tgt|^2`` [E] as ``dx*dx + dy*dy + dz*dz`` (float64, fixed order)."""
    d = pos[src] - pos[tgt]
    return d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]


def dense_labels(*keys: Tensor) -> Tensor:
    """Dense int64 labels 0..G-1 of the distinct tuples of ``keys`` (each [N] integer), in order of first
    appearance (the same labels as :func:`farfield.graphs.neighbours.dense_labels`)."""
    n = keys[0].numel()
    dev = keys[0].device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=dev)
    inv = None
    for k in keys:
        _, ki = torch.unique(k.reshape(-1).long(), return_inverse=True)
        inv = ki if inv is None else inv * (int(ki.max()) + 1) + ki
    _, inv = torch.unique(inv, return_inverse=True)
    g = int(inv.max()) + 1
    first = torch.full((g,), n, dtype=torch.long, device=dev).scatter_reduce(
        0, inv, torch.arange(n, device=dev), reduce="amin")
    rank = torch.empty(g, dtype=torch.long, device=dev)
    rank[torch.argsort(first)] = torch.arange(g, device=dev)
    return rank[inv]


def _expand_runs(start: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Runs ``[start_m, start_m + count_m)`` -> (run id [T], element [T]), T = sum(count)."""
    m = torch.arange(count.numel(), device=count.device)
    run = torch.repeat_interleave(m, count)
    offset = torch.cumsum(count, 0) - count
    return run, start[run] + (torch.arange(run.numel(), device=count.device) - offset[run])


def radius_edges(pos: Tensor, group: Tensor, r: float) -> Tensor:
    """Directed edges [2, E] (source, target), both directions, between distinct nodes of the same group with
    ``d2 <= r*r``; ordered by target (in the cell-sorted order) then source cell."""
    dev = pos.device
    n = pos.shape[0]
    if n < 2:
        return torch.zeros((2, 0), dtype=torch.long, device=dev)
    r = float(r)
    side = r * (1.0 + 1e-6) + 1e-12        # cells a little larger than r: no pair within r is lost to rounding
    lo = pos.min(0).values
    cell = torch.floor((pos - lo) / side).long() + 1                       # >= 1: room for the -1 neighbour
    dims = cell.max(0).values + 2                                          # [3], room for the +1 neighbour
    d1, d2 = int(dims[1]), int(dims[2])                                   # one small sync for the key layout
    key = ((group.long() * int(dims[0]) + cell[:, 0]) * d1 + cell[:, 1]) * d2 + cell[:, 2]
    order = torch.argsort(key)
    skey = key[order]
    ukey, counts = torch.unique_consecutive(skey, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    o = torch.tensor([-1, 0, 1], device=dev)
    offs = ((o[:, None, None] * d1 + o[None, :, None]) * d2 + o[None, None, :]).reshape(-1)   # [27]
    # per occupied cell, its 27 neighbour cells (start, count); absent cells count 0
    nk = ukey[:, None] + offs[None, :]
    idx = torch.searchsorted(ukey, nk).clamp_max(ukey.numel() - 1)
    hit = ukey[idx] == nk
    ncount = torch.where(hit, counts[idx], torch.zeros_like(idx))
    nstart = starts[idx]
    # candidates: every node of a cell x every node of the cell's neighbours; enumerate per chunk of cells
    per_cell = counts * ncount.sum(1)
    bounds = torch.cumsum(per_cell, 0)
    total = int(bounds[-1])
    r2 = r * r
    ps = pos.index_select(0, order)                                        # positions in cell order
    xs, ys, zs = ps[:, 0].contiguous(), ps[:, 1].contiguous(), ps[:, 2].contiguous()
    src_out, tgt_out = [], []
    c0 = 0
    ncell = ukey.numel()
    chunk_ends = torch.searchsorted(bounds, torch.arange(CHUNK, total + CHUNK, CHUNK, device=dev), right=True).tolist()
    for c1 in chunk_ends:
        c1 = max(min(c1, ncell), c0 + 1)
        if c0 >= ncell:
            break
        cs = torch.arange(c0, c1, device=dev)
        # (target node, neighbour run) pairs: each node of cell c against each of c's 27 runs
        t_run, t_node = _expand_runs(starts[cs], counts[cs])               # t_run indexes cs
        run_start = nstart[cs][t_run]                                      # [T, 27]
        run_count = ncount[cs][t_run]
        pair_tgt = t_node[:, None].expand_as(run_start).reshape(-1)
        rr, s_sorted = _expand_runs(run_start.reshape(-1), run_count.reshape(-1))
        tgt_sorted = pair_tgt.index_select(0, rr)
        # squared distance in cell order, one coordinate at a time (the same arithmetic as sq_dist)
        dx = xs.index_select(0, s_sorted) - xs.index_select(0, tgt_sorted)
        d2 = dx * dx
        dx = ys.index_select(0, s_sorted) - ys.index_select(0, tgt_sorted)
        d2 = d2 + dx * dx
        dx = zs.index_select(0, s_sorted) - zs.index_select(0, tgt_sorted)
        d2 = d2 + dx * dx
        keep = ((d2 <= r2) & (s_sorted != tgt_sorted)).nonzero().reshape(-1)
        src_out.append(order.index_select(0, s_sorted.index_select(0, keep)))
        tgt_out.append(order.index_select(0, tgt_sorted.index_select(0, keep)))
        c0 = c1
    return torch.stack([torch.cat(src_out), torch.cat(tgt_out)])


def _lex_order(primary: Tensor, secondary: Tensor, tertiary: Tensor) -> Tensor:
    """Permutation sorting by (primary, secondary, tertiary) ascending (stable sorts, last key first)."""
    o = torch.argsort(tertiary, stable=True)
    o = o[torch.argsort(secondary[o], stable=True)]
    return o[torch.argsort(primary[o], stable=True)]


def cap_per_target(edges: Tensor, d2: Tensor, max_neighbours: int) -> Tensor:
    """Bool mask [E]: for every target (row 1) its ``max_neighbours`` sources first in (d2, source) order."""
    src, tgt = edges
    if src.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=src.device)
    order = _lex_order(tgt, d2, src)
    t_sorted = tgt[order]
    new = torch.ones_like(t_sorted, dtype=torch.bool)
    new[1:] = t_sorted[1:] != t_sorted[:-1]
    idx = torch.arange(t_sorted.numel(), device=src.device)
    run_start = torch.cummax(torch.where(new, idx, torch.zeros_like(idx)), 0).values
    keep = torch.zeros_like(new)
    keep[order[(idx - run_start) < max_neighbours]] = True
    return keep


def _group_layout(group: Tensor):
    """(order [N] sorting nodes by group (stable), counts [G], ptr [G+1], local index [N] within the group)."""
    n = group.numel()
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=int(group.max()) + 1 if n else 0)
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.long, device=group.device)
    ptr[1:] = torch.cumsum(counts, 0)
    local = torch.empty(n, dtype=torch.long, device=group.device)
    local[order] = torch.arange(n, device=group.device) - ptr[group[order]]
    return order, counts, ptr, local


def _row_chunks(counts_of_rows: Tensor, width: int):
    """Row ranges [r0, r1) of at most CHUNK // width rows."""
    n = counts_of_rows.numel()
    step = max(1, CHUNK // max(width, 1))
    return [(r0, min(n, r0 + step)) for r0 in range(0, n, step)]


def knn_edges(pos: Tensor, group: Tensor, k: int) -> Tensor:
    """Directed edges [2, E] (source, target): each target's ``k`` other nodes of its group first in (d2, source
    index) order (all of them when the group has at most k others). Rows are padded to the largest group."""
    dev = pos.device
    n = pos.shape[0]
    if n < 2 or k < 1:
        return torch.zeros((2, 0), dtype=torch.long, device=dev)
    order, counts, ptr, _ = _group_layout(group)
    width = int(counts.max())
    ar = torch.arange(width, device=dev)
    src_out, tgt_out = [], []
    for r0, r1 in _row_chunks(order, width):
        rows = order[r0:r1]                                   # targets, grouped
        g = group[rows]
        cols = ptr[g][:, None] + ar[None, :]                  # [R, W] sorted positions of candidate sources
        valid = ar[None, :] < counts[g][:, None]
        src = order[cols.clamp_max(n - 1)]
        d = pos[src] - pos[rows][:, None, :]
        d2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]
        valid &= src != rows[:, None]
        d2 = d2.masked_fill(~valid, float("inf"))
        kk = min(k, width - 1)
        if kk < 1:
            continue
        kth = torch.topk(d2, kk, dim=1, largest=False).values[:, -1:]         # k-th smallest d2 per row
        lt = (d2 < kth) & valid
        eq = (d2 == kth) & valid
        need = kk - lt.sum(1, keepdim=True)
        # ties at the k-th distance go to the lowest source indices; along a row the sources ascend in index
        # (the stable sort by group keeps node order), so the rank of a tie is a running count
        eq_rank = torch.cumsum(eq, 1) - 1
        keep = lt | (eq & (eq_rank < need))
        rr, cc = keep.nonzero(as_tuple=True)
        src_out.append(src[rr, cc])
        tgt_out.append(rows[rr])
    if not src_out:
        return torch.zeros((2, 0), dtype=torch.long, device=dev)
    return torch.stack([torch.cat(src_out), torch.cat(tgt_out)])


def full_edges(group: Tensor) -> Tensor:
    """All directed pairs (i != j) within each group: [2, sum_g n_g (n_g - 1)]."""
    dev = group.device
    n = group.numel()
    if n < 2:
        return torch.zeros((2, 0), dtype=torch.long, device=dev)
    order, counts, ptr, _ = _group_layout(group)
    g_sorted = group[order]
    run, src_pos = _expand_runs(ptr[g_sorted], counts[g_sorted])     # run = target's sorted position
    keep = src_pos != run
    return torch.stack([order[src_pos[keep]], order[run[keep]]])


def first_occurrence(key: Tensor) -> Tensor:
    """Sorted positions of the first occurrence of each distinct value of ``key`` [E] (int64)."""
    if key.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=key.device)
    skey, perm = torch.sort(key, stable=True)
    new = torch.ones_like(skey, dtype=torch.bool)
    new[1:] = skey[1:] != skey[:-1]
    return torch.sort(perm[new]).values


# ---- counter-based random numbers: the same stream on every device ----------------------------------------
# All arithmetic is int64 on values below 2^32 times constants below 2^31: exact, no overflow, device-independent.

_M32 = 0xFFFFFFFF


def _mulmod32(a: Tensor, c: int) -> Tensor:
    """``(a * c) mod 2^32`` for int64 ``a`` in [0, 2^32) and a constant ``c < 2^31``: the product stays below 2^63
    (no int64 overflow, hence the same on every device)."""
    return (a * c) & _M32


def mix32(h: Tensor) -> Tensor:
    """A 32-bit integer finaliser (xorshift-multiply, constants 0x21F0AAAD and 0x735A2D97, Wellons' hash-prospector
    2018, both below 2^31) on int64 tensors holding values in [0, 2^32)."""
    h = h ^ (h >> 16)
    h = _mulmod32(h, 0x21F0AAAD)
    h = h ^ (h >> 15)
    h = _mulmod32(h, 0x735A2D97)
    return h ^ (h >> 15)


def column_code(j: Tensor) -> Tensor:
    """The per-column half of :func:`hash_uniform`'s counter (computed once per column, not per element)."""
    return _mulmod32((j + 1) & _M32, 0x5851F42D)


def hash_uniform(base: Tensor, i: Tensor, j: Tensor, col: Tensor | None = None) -> Tensor:
    """Uniform float64 numbers in (0, 1) at 2^-32 resolution, a pure function of the int64 counters (``base``
    [R, 1] in [0, 2^32), ``i`` [R, 1], ``j`` [R, C] or broadcastable; ``col``: :func:`column_code` of ``j`` when
    already computed): identical on every device and for any chunking, unlike a sequential generator."""
    row = mix32(base ^ mix32(i & _M32))
    h = mix32(row ^ (column_code(j) if col is None else col))
    return (h.to(torch.float64) + 0.5) * (2.0 ** -32)

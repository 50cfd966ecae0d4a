"""Periodic radius graphs: every periodic image within a cutoff, with integer lattice shifts.

For a crystal or a solvated box the neighbours of atom ``i`` are the atoms ``j`` *and all their periodic
images* ``pos[j] + n @ cell`` (``n`` in Z^3) within the cutoff. :func:`periodic_radius_graph` returns them
as int64 ``edge_index`` [2, E] (row 0 = source j, row 1 = target i, PyG's ``source_to_target`` flow, as in
:mod:`farfield.graphs.builders`) and int64 ``shift`` [E, 3], with the convention

    edge vector (source minus target) = pos[src] - pos[tgt] + shift @ cell[graph]

``cell`` holds the lattice vectors a, b, c as *rows*. Positions need not be wrapped into the cell.

* Every image within the cutoff is an edge: pairs with ``0 < |vector| <= cutoff`` (the bound is
  inclusive, a pair exactly at the cutoff is kept). When the cutoff exceeds half the cell width one pair
  appears several times with different shifts, and an atom receives edges from its own images
  (``i -> i`` with a non-zero shift); the zero-shift self pair never appears (nor do two distinct atoms
  at the same position, whose distance is 0).
* Fully periodic along a, b and c; general triclinic cells.
* Edges never connect two graphs of a batch (one neighbour search per graph, indices offset).
* Deterministic order: sorted by (target, source, shift) lexicographically.
* Not differentiable: recompute the edge vectors from ``pos``, ``cell`` and ``shift`` in the model.

The search uses vesin (G. Fraux et al., lab-cosmo, BSD-3; a C library called through ctypes), whose cell
lists handle general triclinic cells and cutoffs larger than the cell (multiple images), which the
minimum-image convention and non-periodic KD-trees (:mod:`farfield.graphs.neighbours`) cannot. Its
convention is ``D = points[j] - points[i] + S @ box`` (checked), so ``src = j``, ``tgt = i`` and
``shift = S``; vesin drops pairs exactly at the cutoff (``d < cutoff``), so farfield searches a hair
wider and applies ``d <= cutoff`` itself, with the same float64 arithmetic as the reference, so both agree
exactly. Cost: O(N + E) per graph, E ~ N * density * 4/3 pi cutoff^3 (about 52 edges per atom for water
density 0.1 atoms/A^3 and a 5 A cutoff), plus an O(E log E) sort.

When vesin cannot be imported the search falls back to :func:`brute_force_periodic_pairs`, the reference
enumeration of lattice images vectorised with NumPy: O(N^2 * images) time, fine for a few hundred atoms,
slow for thousands.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from farfield.errors import ConfigError, InputError

try:  # optional at import time; without it the brute-force reference is used
    import vesin as _vesin
except ImportError:  # pragma: no cover - depends on the environment
    _vesin = None

__all__ = ["periodic_radius_graph", "brute_force_periodic_pairs", "minimum_image"]

_REL_VOLUME_MIN = 1e-8      # |det(cell)| / (|a| |b| |c|) below this: singular cell
_SEARCH_SLACK = 1e-9        # relative widening of the candidate search before the exact <= cutoff test


# --- validation ----------------------------------------------------------------------------------
def _check_cutoff(cutoff) -> float:
    try:
        r = float(cutoff)
    except (TypeError, ValueError):
        raise ConfigError(f"cutoff: must be a positive finite number, got {cutoff!r}") from None
    if not math.isfinite(r) or r <= 0:
        raise ConfigError(f"cutoff: must be a positive finite number, got {r}")
    return r


def _as_float64(x, name: str, shape_msg: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_complex() or not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
            raise InputError(name, f"must be a real-valued tensor {shape_msg}, got dtype {x.dtype}")
        return x.to(torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(name, f"must be a real-valued array {shape_msg}") from None


def _vectors(x, name: str, rows: str) -> np.ndarray:
    """``x`` as float64 [rows, 3], or an InputError naming ``name`` and the shape it has."""
    a = _as_float64(x, name, f"[{rows}, 3]")
    if a.ndim != 2 or a.shape[1] != 3:
        raise InputError(name, f"must have shape [{rows}, 3], got {list(a.shape)}")
    return a


def _single_cell(cell) -> np.ndarray:
    """One cell as float64 [3, 3], finite and non-singular, or an InputError."""
    c = _as_float64(cell, "cell", "[3, 3]")
    if c.shape != (3, 3):
        raise InputError("cell", f"must have shape [3, 3], got {list(c.shape)}")
    _check_cells(c[None])
    return c


def _check_cells(cell: np.ndarray, name: str = "cell") -> None:
    """``cell`` float64 [B, 3, 3]: finite and non-singular (relative volume test)."""
    for g, c in enumerate(cell):
        where = f"graph {g}: " if len(cell) > 1 else ""
        if not np.isfinite(c).all():
            raise InputError(name, f"{where}non-finite entries in the cell {c.tolist()}")
        norms = np.linalg.norm(c, axis=1)
        det = float(np.linalg.det(c))
        if not (abs(det) >= _REL_VOLUME_MIN * float(np.prod(norms)) and np.prod(norms) > 0):
            raise InputError(name, f"{where}singular cell (lattice vectors are (nearly) linearly dependent: "
                                   f"det = {det:.3g}, row norms {norms.round(6).tolist()}): {c.tolist()}")


# --- shared exact arithmetic ------------------------------------------------------------------------
def _edge_vectors(pos: np.ndarray, cell: np.ndarray, src: np.ndarray, tgt: np.ndarray,
                  shift: np.ndarray) -> np.ndarray:
    """``pos[src] - pos[tgt] + shift @ cell`` in float64, written out element-wise so that the result does
    not depend on BLAS blocking or the number of edges (both backends use this and agree bit for bit)."""
    s = shift.astype(np.float64)
    lattice = s[:, 0:1] * cell[0] + s[:, 1:2] * cell[1] + s[:, 2:3] * cell[2]
    return pos[src] - pos[tgt] + lattice


def _keep_within(pos, cell, src, tgt, shift, cutoff):
    v = _edge_vectors(pos, cell, src, tgt, shift)
    d = np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1] + v[:, 2] * v[:, 2])
    keep = (d <= cutoff) & (d > 0)
    return src[keep], tgt[keep], shift[keep]


def _sort_edges(src, tgt, shift):
    """Stack and sort by (target, source, shift a, b, c): one int64 key when it fits (about 3x faster than a
    five-key lexsort), else the lexsort."""
    src, tgt, shift = src.astype(np.int64), tgt.astype(np.int64), shift.astype(np.int64)
    n = int(max(src.max(initial=0), tgt.max(initial=0))) + 1
    lo = int(shift.min(initial=0))
    base = int(shift.max(initial=0)) - lo + 1
    if n * n * base ** 3 < 2 ** 62:
        s = shift - lo
        key = ((tgt * n + src) * base + s[:, 0]) * base ** 2 + s[:, 1] * base + s[:, 2]
        order = np.argsort(key, kind="stable")
    else:
        order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], src, tgt))
    return np.stack([src[order], tgt[order]]), shift[order]


def _perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distance between opposite faces of the cell along a, b, c: V / |b x c| etc."""
    vol = abs(float(np.linalg.det(cell)))
    cross = np.stack([np.cross(cell[1], cell[2]), np.cross(cell[2], cell[0]), np.cross(cell[0], cell[1])])
    return vol / np.linalg.norm(cross, axis=1)


# --- the two searches ---------------------------------------------------------------------------------
def _brute_candidates(pos: np.ndarray, cell: np.ndarray, cutoff: float):
    """Candidate (src, tgt, shift) of one graph, searched slightly wider than ``cutoff``."""
    n = len(pos)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64))
    if n == 0:
        return empty
    # wrap into the cell: pos = w + k @ cell with fractional(w) in [0, 1), so fractional differences
    # lie in (-1, 1) and |n_a| <= ceil(cutoff / width_a) + 1 covers every image within the cutoff
    frac = pos @ np.linalg.inv(cell)
    k = np.floor(frac)
    w = (frac - k) @ cell
    reach = np.ceil(cutoff / _perpendicular_widths(cell)).astype(np.int64) + 1
    grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in reach], indexing="ij"), -1).reshape(-1, 3)
    r2 = (cutoff * (1 + _SEARCH_SLACK) + 1e-12) ** 2
    diff = w[None, :, :] - w[:, None, :]          # [tgt, src, 3] = w[src] - w[tgt]
    srcs, tgts, shifts = [], [], []
    for img in grid:
        v = diff + img @ cell
        t, s = np.nonzero(np.einsum("ijk,ijk->ij", v, v) <= r2)
        if len(t):
            tgts.append(t)
            srcs.append(s)
            shifts.append(np.broadcast_to(img, (len(t), 3)))
    if not tgts:
        return empty
    src, tgt, img = np.concatenate(srcs), np.concatenate(tgts), np.concatenate(shifts)
    # back to the unwrapped positions: w[s] - w[t] + img @ cell = pos[s] - pos[t] + (img - k[s] + k[t]) @ cell
    shift = (img - k[src] + k[tgt]).astype(np.int64)
    return src.astype(np.int64), tgt.astype(np.int64), shift


def _vesin_candidates(pos: np.ndarray, cell: np.ndarray, cutoff: float):
    if len(pos) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    nl = _vesin.NeighborList(cutoff=cutoff * (1 + _SEARCH_SLACK) + 1e-12, full_list=True)
    i, j, s = nl.compute(np.ascontiguousarray(pos), np.ascontiguousarray(cell), True, quantities="ijS")
    # vesin: D = points[j] - points[i] + S @ box  ->  source j, target i, shift S
    return j.astype(np.int64), i.astype(np.int64), s.astype(np.int64)


# --- public API ---------------------------------------------------------------------------------------
def brute_force_periodic_pairs(pos, cell, cutoff) -> tuple[np.ndarray, np.ndarray]:
    """Reference enumeration of :func:`periodic_radius_graph` for one graph (NumPy, float64).

    Positions are wrapped into the cell and every image ``n`` in Z^3 with
    ``|n_a| <= ceil(cutoff / w_a) + 1`` (``w_a`` the perpendicular width of the cell along a, likewise b, c)
    is tested against every ordered pair, O(N^2 * images). Returns int64 NumPy ``edge_index`` [2, E]
    (source, target) and ``shift`` [E, 3] with the same convention, filter (``0 < d <= cutoff``) and order
    as :func:`periodic_radius_graph`. Used as the test reference and as the fallback without vesin.
    """
    r = _check_cutoff(cutoff)
    p = _vectors(pos, "pos", "N")
    c = _single_cell(cell)
    if not np.isfinite(p).all():
        raise InputError("pos", f"{int((~np.isfinite(p)).any(1).sum())} atom(s) with non-finite coordinates")
    src, tgt, shift = _keep_within(p, c, *_brute_candidates(p, c, r), r)
    return _sort_edges(src, tgt, shift)


def periodic_radius_graph(pos: torch.Tensor, cell: torch.Tensor, cutoff: float,
                          batch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All periodic images within ``cutoff``: ``(edge_index, shift)``.

    Args:
        pos: [N, 3] positions (any float dtype; the search runs in float64 on the CPU).
        cell: [3, 3] for one graph, or [B, 3, 3] one per graph; rows are the lattice vectors a, b, c.
        cutoff: radius; pairs with ``0 < |vector| <= cutoff`` are edges.
        batch: [N] graph index of each node (0..B-1), or None for a single graph. Graphs without atoms
            (indices with no node) are allowed.

    Returns:
        ``edge_index`` int64 [2, E] (row 0 = source, row 1 = target) and ``shift`` int64 [E, 3] such that
        the edge vector is ``pos[src] - pos[tgt] + shift.to(pos.dtype) @ cell[batch[tgt]]``; sorted by
        (target, source, shift); on ``pos.device``.

    Raises:
        ConfigError: cutoff not a positive finite number.
        InputError: wrong shapes, non-finite positions or cell, singular cell, batch out of range of the
            cells.
    """
    r = _check_cutoff(cutoff)
    device = pos.device if isinstance(pos, torch.Tensor) else torch.device("cpu")
    p = _as_float64(pos, "pos", "[N, 3]")
    c = _as_float64(cell, "cell", "[3, 3] or [B, 3, 3]")
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError("pos", f"must have shape [N, 3], got {list(p.shape)}")
    if c.shape == (3, 3):
        c = c[None]
    if c.ndim != 3 or c.shape[1:] != (3, 3) or c.shape[0] == 0:
        raise InputError("cell", f"must have shape [3, 3] or [B, 3, 3] with B >= 1, got {list(c.shape)}")
    bad = ~np.isfinite(p).all(1)
    if bad.any():
        raise InputError("pos", f"{int(bad.sum())} atom(s) with non-finite coordinates "
                                f"(first: atom {int(np.nonzero(bad)[0][0])})")
    _check_cells(c)
    n_cells = len(c)
    if batch is None:
        if n_cells != 1:
            raise InputError("batch", f"cell holds {n_cells} graphs but batch is None (one graph); pass batch")
        b = np.zeros(len(p), dtype=np.int64)
    else:
        bt = batch.detach().cpu() if isinstance(batch, torch.Tensor) else torch.as_tensor(np.asarray(batch))
        if bt.is_floating_point() or bt.is_complex() or bt.dtype == torch.bool:
            raise InputError("batch", f"must be an integer tensor, got dtype {bt.dtype}")
        b = bt.to(torch.int64).numpy().reshape(-1) if bt.ndim == 1 else None
        if b is None or len(b) != len(p):
            raise InputError("batch", f"must have shape [N] = [{len(p)}], got {list(bt.shape)}")
        if len(b) and (b.min() < 0 or b.max() >= n_cells):
            raise InputError("batch", f"graph indices {int(b.min())}..{int(b.max())} do not match the "
                                      f"{n_cells} cell(s) given (cell count mismatch)")

    search = _vesin_candidates if _vesin is not None else _brute_candidates
    srcs, tgts, shifts = [], [], []
    for g in range(n_cells):
        idx = np.nonzero(b == g)[0]
        if len(idx) == 0:
            continue
        pg = np.ascontiguousarray(p[idx])
        s, t, sh = _keep_within(pg, c[g], *search(pg, c[g], r), r)
        srcs.append(idx[s])
        tgts.append(idx[t])
        shifts.append(sh)
    if srcs:
        edge_index, shift = _sort_edges(np.concatenate(srcs), np.concatenate(tgts), np.concatenate(shifts))
    else:
        edge_index, shift = np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int64)
    return torch.from_numpy(edge_index).to(device), torch.from_numpy(shift).to(device)


def minimum_image(vec, cell):
    """The shortest lattice-equivalent of each displacement in ``vec`` [E, 3] for ``cell`` [3, 3] (rows a, b,
    c): ``vec + n @ cell`` of least norm over n in Z^3.

    Wraps the fractional coordinates into [-0.5, 0.5) and then picks the shortest of the 27 neighbouring
    images. Exact for reasonably reduced (e.g. Niggli/Minkowski-reduced) cells; for very skewed cells the
    true minimum can lie further out, so reduce the cell first. For documentation and debugging (the graph
    itself keeps every image, see :func:`periodic_radius_graph`). Returns the same type as ``vec`` (a
    float64 NumPy array, or a tensor of ``vec``'s dtype and device).
    """
    is_tensor = isinstance(vec, torch.Tensor)
    v = _vectors(vec, "vec", "E")
    c = _single_cell(cell)
    frac = v @ np.linalg.inv(c)
    frac = frac - np.floor(frac + 0.5)
    grid = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
    cand = (frac[:, None, :] + grid[None]) @ c                      # [E, 27, 3]
    best = np.argmin(np.einsum("ijk,ijk->ij", cand, cand), axis=1)
    out = cand[np.arange(len(v)), best]
    if is_tensor:
        return torch.from_numpy(out).to(dtype=vec.dtype if vec.is_floating_point() else torch.float64,
                                        device=vec.device)
    return out

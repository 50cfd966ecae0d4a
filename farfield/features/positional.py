"""Positional and structural encodings of graphs: LapPE and RWSE, and the sign-flip augmentation of LapPE.

They are node features computed from a graph's connectivity alone, used by the LRGB baselines and by any
dataset that asks for them (``data.options={lap_pe: k, rwse: k}`` where the loader supports it).
"""
from __future__ import annotations

import numpy as np
import torch

from farfield.errors import ConfigError

__all__ = ["laplacian_pe", "random_walk_se", "random_sign_flip"]


def _adjacency(edge_index, num_nodes: int) -> np.ndarray:
    a = np.zeros((num_nodes, num_nodes), dtype=np.float64)
    ei = np.asarray(edge_index)
    if ei.size:
        a[ei[0], ei[1]] = 1.0
        a[ei[1], ei[0]] = 1.0
    np.fill_diagonal(a, 0.0)
    return a


def laplacian_pe(edge_index, num_nodes: int, k: int, normalization: str = "none", *, skip_trivial: bool = False,
                 eigenvalues: bool = True) -> np.ndarray:
    """LapPE (Dwivedi et al. 2020, "Benchmarking Graph Neural Networks") as GraphGPS computes it for the LRGB
    Peptides baselines (Rampasek et al. 2022, "Recipe for a General, Powerful, Scalable Graph Transformer";
    Dwivedi et al. 2022, LRGB): the eigenvectors of the ``k`` lowest eigenvalues of the graph Laplacian,
    **including** the lowest (eigenvalue 0, eigenvector constant on each connected component), [num_nodes, k]
    float32, followed (``eigenvalues=True``) by those k eigenvalues as k more columns, the same on every
    node of the graph: [num_nodes, 2k]. GraphGPS's LapPE encoder likewise receives each node's k
    eigenvector entries paired with the k eigenvalues.

    ``normalization``: ``'none'`` (L = D - A, the GraphGPS Peptides setting, with ``k = 10``) or ``'sym'``
    (L = I - D^-1/2 A D^-1/2; an isolated node has L_ii = 1, as in PyG's ``get_laplacian``). Eigenvalues
    are clipped at 0 (round-off) and eigenvectors are unit-norm (GraphGPS's default ``'L2'`` eigenvector
    normalisation).

    Padding: a graph with fewer than ``k`` nodes has fewer than ``k`` eigenpairs; GraphGPS pads them with NaN
    and its encoder replaces NaN with 0 before use. Here the missing columns (eigenvectors and eigenvalues)
    are 0 directly, so node features stay finite; a padded eigenvector column is all zero, which no real
    (unit-norm) eigenvector is, so padding stays recognisable.

    ``skip_trivial=True``: drop the lowest eigenpair and return eigenvectors (and eigenvalues) 1..k instead,
    the setting of Dwivedi et al. 2020 (on a connected graph eigenvector 0 is constant and carries no
    position); this is *not* what the LRGB / GraphGPS Peptides baselines use. ``skip_trivial=True,
    eigenvalues=False`` is what farfield computed before it matched GraphGPS.

    Signs: eigenvectors are defined up to sign. GraphGPS keeps LAPACK's arbitrary sign and flips signs at
    random during training; here each sign is fixed deterministically (the eigenvector's largest-magnitude
    entry positive, the first such entry when several tie within 1e-6) and training should flip at random
    (:func:`random_sign_flip` on the eigenvector columns only, :func:`sign_flip_columns`). Within a degenerate
    eigenspace (e.g. the zero eigenvalues of a disconnected graph, a ring's pairs) the basis itself is
    arbitrary, as in GraphGPS."""
    n, k = int(num_nodes), max(int(k), 0)
    out = np.zeros((n, 2 * k if eigenvalues else k), dtype=np.float32)
    if normalization not in ("none", "sym"):
        raise ConfigError(f"laplacian_pe: normalization must be 'none' or 'sym', got {normalization!r}")
    if n == 0 or k == 0:
        return out
    a = _adjacency(edge_index, n)
    deg = a.sum(1)
    if normalization == "none":
        lap = np.diag(deg) - a
    else:
        inv = np.zeros(n)
        inv[deg > 0] = deg[deg > 0] ** -0.5                 # isolated nodes: 0, without dividing by zero
        lap = np.eye(n) - inv[:, None] * a * inv[None, :]
    vals, vecs = np.linalg.eigh(lap)
    start = 1 if skip_trivial else 0
    idx = np.argsort(vals, kind="stable")[start: start + k]
    vals, vecs = np.clip(vals[idx], 0.0, None), vecs[:, idx]
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=0, keepdims=True), 1e-12)
    m = len(idx)
    if m:
        mag = np.abs(vecs)
        first = (mag >= mag.max(0, keepdims=True) - 1e-6).argmax(0)   # first entry of (near-)largest magnitude
        vecs = vecs * np.where(vecs[first, np.arange(m)] < 0, -1.0, 1.0)[None, :]
    out[:, :m] = vecs
    if eigenvalues:
        out[:, k: k + m] = vals[None, :]
    return out


def random_walk_se(edge_index, num_nodes: int, k: int) -> np.ndarray:
    """RWSE (Dwivedi et al., "Graph Neural Networks with Learnable Structural and Positional
    Representations", ICLR 2022): the return probabilities ``[P^1]_ii ... [P^k]_ii`` of the random walk
    P = D^-1 A, [num_nodes, k] float32 (isolated nodes: zeros)."""
    n = int(num_nodes)
    out = np.zeros((n, k), dtype=np.float32)
    if n == 0 or k <= 0:
        return out
    a = _adjacency(edge_index, n)
    deg = a.sum(1)
    p = np.where(deg[:, None] > 0, a / np.maximum(deg, 1)[:, None], 0.0)
    m = np.eye(n)
    for t in range(k):
        m = m @ p
        out[:, t] = np.diagonal(m)
    return out


def random_sign_flip(x: torch.Tensor, batch: torch.Tensor | None, cols: slice, generator=None) -> torch.Tensor:
    """A copy of ``x`` with the LapPE eigenvector columns ``cols`` multiplied by an independent random sign per
    graph and eigenvector (the training-time augmentation for the sign ambiguity of eigenvectors; eigenvalue
    columns must not be in ``cols``)."""
    k = cols.stop - cols.start
    if k <= 0:
        return x
    b = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if batch is None else batch
    g = int(b.max()) + 1 if b.numel() else 0
    s = torch.randint(0, 2, (g, k), generator=generator).to(x.device, x.dtype) * 2 - 1
    x = x.clone()
    x[:, cols] = x[:, cols] * s[b]
    return x

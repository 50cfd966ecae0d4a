r"""Over-smoothing: the mean average distance (MAD) of node embeddings, per layer.

MAD (Chen, Lin, Li, Li, Zhou, Sun, "Measuring and relieving the over-smoothing problem for graph neural
networks from the topological view", AAAI 2020, Eqs. 1-3): with the cosine distance

.. math::  D_{ij} = 1 - \frac{h_i \cdot h_j}{\lVert h_i \rVert \lVert h_j \rVert},

masked by a target mask ``M`` (``D^tgt = D * M``: all pairs, or pairs within / beyond k hops, Eq. 2), each
node's average over its **non-zero** distances and then the average over the nodes with a non-zero average:

.. math::  \bar D_i = \frac{\sum_j D^{tgt}_{ij}}{\sum_j 1(D^{tgt}_{ij} > 0)}, \qquad
           \mathrm{MAD} = \frac{\sum_i \bar D_i}{\sum_i 1(\bar D_i > 0)}.

So pairs of identical embeddings do not dilute the average (three nodes ``a, a, b`` with ``a`` orthogonal to
``b`` have MAD 1, not 2/3), and MAD is 0 when every embedding is identical (0/0 read as 0, as the authors'
code does with a small epsilon). Near 0 = over-smoothed.

Our choices where the paper is silent: pairs are taken within each graph of a batch only (a batch of
molecules is not one graph); ``i = j`` is excluded (it is zero anyway for non-zero embeddings); a zero
embedding has cosine similarity 0 with everything (distance 1, as in scikit-learn's ``cosine_distances``);
distances are computed in float64 and those at most ``tol`` are read as exactly zero, so that rounding of
identical embeddings (about 1e-16) does not count as a non-zero distance.

:func:`layer_embeddings` records the node scalars ``s`` after the embedding and after every layer through
the backbone's :class:`~farfield.models.base.LayerHooks`; with a long-range module
(:class:`~farfield.models.long_range.WithLongRange`) the recorder is its ``inner`` hooks, called after the
mechanism's update, so "after layer i" includes the long-range residual. Frame-averaged models run the
backbone once per frame: the recorded embeddings are averaged over frames, like their outputs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from farfield.errors import ConfigError, InputError
from farfield.models.base import LayerHooks, NodeState

__all__ = ["mad", "layer_embeddings", "mad_per_layer", "hop_mask"]


def _graph_index(batch, n: int, device) -> Tensor:
    if batch is None:
        return torch.zeros(n, dtype=torch.long, device=device)
    b = batch if isinstance(batch, Tensor) else getattr(batch, "batch", None)
    if b is None:
        return torch.zeros(n, dtype=torch.long, device=device)
    if b.shape != (n,):
        raise InputError("batch", f"graph index has shape {tuple(b.shape)}, expected ({n},)")
    return b.to(device)


def _cosine_distances(h: Tensor) -> Tensor:
    norm = h.norm(dim=1, keepdim=True)
    u = torch.where(norm > 0, h / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(h))
    return 1.0 - u @ u.T


def mad(h: Tensor, batch=None, mask=None, tol: float = 1e-12) -> float:
    """MAD of node embeddings ``h`` [N, d] (Chen et al. 2020; the module docstring gives the definition).

    Args:
        h: node embeddings.
        batch: graph of every node, a tensor [N] or a PyG batch (its ``batch``); None = one graph. Only pairs
            within a graph count.
        mask: optional target pairs: a bool tensor [N, N] (entries across graphs are ignored) or a list of
            per-graph [n_g, n_g] bool tensors (e.g. :func:`hop_mask`).
        tol: distances <= tol count as zero.
    """
    if h.dim() != 2:
        raise InputError("h", f"expected node embeddings [N, d], got shape {tuple(h.shape)}")
    n = h.shape[0]
    b = _graph_index(batch, n, h.device)
    x = h.detach().to(torch.float64)
    if n == 0:
        return 0.0
    G = int(b.max()) + 1
    counts = torch.bincount(b, minlength=G)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
    if bool((b[1:] < b[:-1]).any()):
        raise InputError("batch", "nodes are not sorted by graph (PyG batch layout expected)")
    if isinstance(mask, (list, tuple)) and len(mask) != G:
        raise ConfigError(f"mad: {len(mask)} per-graph masks for {G} graphs")
    if isinstance(mask, Tensor) and mask.shape != (n, n):
        raise ConfigError(f"mad: mask must be [N, N] = [{n}, {n}], got {tuple(mask.shape)}")
    node_means = []
    for g in range(G):
        lo, hi = ptr[g], ptr[g + 1]
        D = _cosine_distances(x[lo:hi])
        D = torch.where(D > tol, D, torch.zeros_like(D))
        D.fill_diagonal_(0.0)
        if mask is not None:
            M = mask[g] if isinstance(mask, (list, tuple)) else mask[lo:hi, lo:hi]
            if M.shape != D.shape:
                raise ConfigError(f"mad: graph {g}: mask {tuple(M.shape)} does not match its {hi - lo} nodes")
            D = D * M.to(device=D.device, dtype=D.dtype)
        nz = (D > 0).sum(1)
        node_means.append(D.sum(1) / nz.clamp(min=1))           # 0 where a node has no non-zero distance
    dbar = torch.cat(node_means)
    k = int((dbar > 0).sum())
    return float(dbar.sum() / k) if k else 0.0


def hop_mask(batch, k: int, beyond: bool = False) -> list[Tensor]:
    """Per-graph pair masks for :func:`mad`: pairs within ``k`` hops (``beyond=False``) or farther than ``k``
    hops, including unreachable pairs (``beyond=True``), on ``batch.edge_index`` taken as undirected."""
    from farfield.diagnostics.influence import hop_distances
    if k < 0:
        raise ConfigError(f"hop_mask: k must be >= 0, got {k}")
    return [(d > k) if beyond else (d <= k) for d in hop_distances(batch)]


class _Recorder(LayerHooks):
    """Records ``state.s`` after the embedding (``start``) and after every layer (``after``), one list per
    forward pass of the backbone."""

    def __init__(self):
        self.passes: list[list[Tensor]] = []

    def start(self, state: NodeState, batch) -> None:
        self.passes.append([state.s.detach()])

    def after(self, i: int, state: NodeState, batch) -> NodeState:
        if not self.passes:
            raise ConfigError("layer_embeddings: the backbone called its layer hooks without start()")
        self.passes[-1].append(state.s.detach())
        return state


def _backbone_and_view(model, batch):
    """A backbone and the batch it sees: a :class:`~farfield.train.module.TaskModule` contributes its model
    and its view of the batch (pair items: one graph per component)."""
    import sys
    tm = sys.modules.get("farfield.train.module")    # not imported = not a TaskModule (and no Lightning import)
    if tm is not None and isinstance(model, tm.TaskModule):
        view, _ = model._graphs(batch)
        return model.model, view
    return model, batch


def layer_embeddings(model, batch) -> list[Tensor]:
    """Node scalars ``s`` [N, d] after the embedding and after each of the ``num_layers`` layers (a list of
    ``num_layers + 1`` detached tensors) of a backbone (plain, with a long-range module, or frame-averaged) or
    of a :class:`~farfield.train.module.TaskModule`. Runs without gradients in the model's current mode."""
    backbone, view = _backbone_and_view(model, batch)
    rec = _Recorder()
    with torch.no_grad():
        backbone(view, between=rec)
    L = backbone.num_layers
    if not rec.passes:
        raise ConfigError(f"layer_embeddings: {type(backbone).__name__} did not call its layer hooks")
    bad = [len(p) for p in rec.passes if len(p) != L + 1]
    if bad:
        raise ConfigError(f"layer_embeddings: recorded {bad[0]} states, expected {L + 1} (embedding + {L} layers)")
    k = len(rec.passes)
    return [sum(p[i] for p in rec.passes) / k for i in range(L + 1)]


def mad_per_layer(model, batch, mask=None, tol: float = 1e-12) -> list[float]:
    """:func:`mad` of :func:`layer_embeddings`: ``num_layers + 1`` values (embedding first), pairs within each
    graph of ``batch`` (optionally restricted by ``mask``)."""
    _, view = _backbone_and_view(model, batch)
    return [mad(h, getattr(view, "batch", None), mask, tol) for h in layer_embeddings(model, batch)]

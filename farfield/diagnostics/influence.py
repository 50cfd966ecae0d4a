r"""Influence of inputs on a model's outputs, the range measure, and influence-against-distance profiles.

**Influence** (Jacobian norm; Xu et al., ICML 2018, "Representation learning on graphs with jumping knowledge
networks", Sec. 3; Topping et al., ICLR 2022, Eq. 2 bounds it by powers of the normalised adjacency): for an
output row ``Y_i`` [k] (a node's prediction, or a graph's) and the inputs ``X_j`` of node ``j``,

.. math::  I[i, j] = \lVert \partial Y_i / \partial X_j \rVert_1 = \sum_{c, f} | \partial Y_{i c} / \partial X_{j f} |

summed over output channels ``c`` and input components ``f`` (the features of ``x_s``, or the three
coordinates of ``pos``), computed separately for ``x_s`` and ``pos``. :func:`influence` returns one dense
block ``[n_out_g, n_g]`` per graph ``g`` of the batch: node-level outputs give ``[n_g, n_g]`` (rows are
output nodes), graph-level outputs ``[1, n_g]``.

**Range measure** (Bamberger, Gutteridge, le Roux, Bronstein, Dong, "On measuring long-range interactions in
graph neural networks", ICML 2025, arXiv 2506.05971; Sec. 4 and its Table 1): for an output node ``u``,
the normalised influence ``I_u(v) = I[u, v] / sum_w I[u, w]`` is a distribution over input nodes and

.. math::  \rho_u = \sum_v I_u(v)\, d(u, v),

the expected distance of what ``u`` reads; a graph's range is the mean of ``rho_u`` over its nodes, a
dataset's the mean over graphs. ``d`` is the hop distance (:func:`hop_distances`, breadth-first search on the
edges the model is fed, edges taken as undirected) or the Euclidean distance (:func:`euclidean_distances`).

*Graph-level outputs.* A single graph output ``y_G`` has no "own node" to measure distances from. The paper's
graph-level measure (its Table 1, and its reference implementation, ``BenGutteridge/range-measure``, which
reduces the absolute Hessian to an ``[N, N]`` matrix) uses second-order interactions: the influence of the
*pair* ``(u, v)`` on ``y_G`` is

.. math::  I^{(2)}[u, v] = \sum_{c, f, f'} | \partial^2 y_{G c} / \partial X_{u f} \partial X_{v f'} |,

and ``rho_G`` is the same row-normalised expectation of ``d(u, v)`` averaged over ``u``. That is what we use
(:func:`pairwise_influence`): a first-order alternative (influence of node ``j`` on ``y_G`` against the
distance of ``j`` to a centroid) measures the geometry of the readout, not how far apart the atoms are whose
*combination* the model uses, so a sum of purely atomic terms would score as "long-range" on a large molecule
although no two atoms interact; the Hessian of such a sum is zero off the diagonal (range 0), as it should
be. Its cost is one double-backward pass per input component and output channel (packed across graphs; see
"Cost"), against one backward pass per output row and channel for the Jacobian. Only the ``x_s``-``x_s`` and
``pos``-``pos`` blocks are computed (mixed feature-coordinate second derivatives are not).

*Conventions* (where the paper does not fix them). Disconnected pairs have infinite hop distance; a row that
puts any influence on an unreachable node has ``rho_u = inf`` by default (``unreachable='inf'``; with
``0 * inf = 0`` for the rows that put none there), and every result reports that share of influence, so a
model that bridges disconnected components (a virtual node, attention) is visible rather than averaged away;
``unreachable='exclude'`` renormalises over reachable nodes, a number replaces the infinite distance. A row
whose total influence is zero (a constant output) has no distribution: its ``rho_u`` is NaN and it is left
out of the means (the reference code sets it to 0, which would count it as perfectly local).

**Cost.** One vector-Jacobian product per output row and channel (``packed=True``: per *local* row and
channel, one row of every graph at once), each a backward pass over the whole batch. Measured on a shared
2-core CPU (1 thread, float64) for SchNet (hidden 32, 3 layers, cutoff 5 A) on 8 graphs of the built-in
``peptide_electrostatics`` benchmark (636 atoms, graphs of 70 and 89 atoms, 9,330 radius-5 A edges) with
one output channel per node:

==================================  ===============  ==============  ===========
run                                  backward passes  products        seconds
==================================  ===============  ==============  ===========
node-level, exact, loop              636              636             34-46
node-level, exact, vmap (8 / pass)   80               636             76
node-level, packed, loop             89               89              5.7-6.1
node-level, packed, vmap (4 / pass)  23               89              7.7-8.6
graph-level (sum pooled), exact      8                8               0.9
pairwise (Hessian), x_s and pos      801 (double)     801             75
==================================  ===============  ==============  ===========

So on this CPU batching the products with ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap) is
*slower* on large graphs (each product is already a dense computation over thousands of edges; batching
multiplies its memory traffic) and 2-4x *faster* on small ones (12-atom chains: 0.4 s against 1.0 s for 528
products), where per-pass overhead dominates, as it does on accelerators. ``method='auto'`` (default)
therefore times the first chunk batched and the second looped and runs the rest with the faster one
(``Influence.method`` says which, with both timings); the results are identical. Every farfield backbone and
long-range mechanism runs under vmap (PyG's ``scatter`` included); an op that does not makes vmap fall back
to the loop with a warning naming it (recorded in ``Influence.method``). ``packed=True`` is the large
saving (G times fewer passes for G equal graphs) but assumes graphs do not interact: the default measures
that (``cross_graph``, exactly 0.0 for every farfield model tested).

Batch layout: PyG batches with nodes sorted by graph (``batch`` [N], ``ptr`` [G+1]); a single ``Data`` is
one graph.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from farfield.data import fields as F
from farfield.errors import ConfigError, InputError

__all__ = ["Influence", "RangeMeasure", "InfluenceProfile", "influence", "pairwise_influence", "range_measure",
           "influence_profile", "hop_distances", "euclidean_distances", "load_trained", "model_fn",
           "OUTPUT_KINDS"]

#: inputs whose influence can be measured: node scalar features and coordinates
WRT = (F.X_S, F.POS)
METHODS = ("auto", "vmap", "loop")
#: what :func:`model_fn` can return: per-node predictions, per-graph predictions, backbone node scalars
OUTPUT_KINDS = ("node", "graph", "embedding")


# -- results -----------------------------------------------------------------------------------------------
@dataclass
class Influence:
    """Per-graph influence blocks.

    ``blocks[name][g]``: [n_out_g, n_g] float tensor for input ``name`` (``'x_s'`` or ``'pos'``); ``I[i, j]``
    is the influence of graph ``g``'s node ``j`` on its output row ``i`` (node ``i``, or the graph for
    graph-level outputs; for :func:`pairwise_influence` the pair ``(i, j)``). ``level``: ``'node'``,
    ``'graph'`` or ``'pair'``. ``ptr`` [G+1] node offsets of the graphs in the batch.

    ``cross_graph[name]``: the largest entry outside the graph blocks (the influence of a node on another
    graph's outputs), which a model that keeps graphs independent has exactly 0.0; None where not measured
    (``packed=True`` assumes independence). ``backward_passes``: calls of ``torch.autograd.grad`` (batched
    ones count once); ``vjps``: vector-Jacobian products; ``method``: how they ran (``'vmap'`` or ``'loop'``; under
    ``'auto'`` followed by both timings; the loop with the reason when vmap failed); ``seconds``: wall time."""

    level: str
    blocks: dict[str, list[Tensor]]
    ptr: Tensor
    cross_graph: dict[str, float | None] = field(default_factory=dict)
    backward_passes: int = 0
    vjps: int = 0
    method: str = "loop"
    seconds: float = 0.0

    def __getitem__(self, name: str) -> list[Tensor]:
        if name not in self.blocks:
            raise KeyError(f"no influence computed for {name!r}; have {sorted(self.blocks)}")
        return self.blocks[name]

    @property
    def num_graphs(self) -> int:
        return int(self.ptr.numel()) - 1


@dataclass
class RangeMeasure:
    """``per_node`` [R]: ``rho_u`` of every output row (graphs concatenated; NaN where the row has no
    influence); ``per_graph`` [G]: mean of ``rho_u`` over each graph's rows (NaN rows left out); ``mean``: the
    mean over graphs (each graph counts once, as the paper averages graph ranges over a dataset);
    ``unreachable`` [R]: each row's share of normalised influence on nodes at infinite distance."""

    per_node: Tensor
    per_graph: Tensor
    mean: float
    unreachable: Tensor


@dataclass
class InfluenceProfile:
    """Influence against distance. ``distance`` [B]: the hop count of each bin (hop profiles) or its centre;
    ``edges`` [B+1] bin edges (None for hop profiles); ``mass`` [B]: the share of an output row's normalised
    influence that falls in the bin, averaged over rows then over graphs (with ``unreachable_mass`` and
    ``outside_mass`` it sums to 1); ``mean`` [B]: mean normalised influence ``I_u(v)`` over the (u, v) pairs
    in the bin, pooled over graphs (the decay curve; NaN for empty bins); ``pairs`` [B]: their number;
    ``unreachable_mass``: influence share on nodes at infinite distance; ``outside_mass``: on finite
    distances outside the given bin edges."""

    distance: Tensor
    edges: Tensor | None
    mass: Tensor
    mean: Tensor
    pairs: Tensor
    unreachable_mass: float
    outside_mass: float


# -- batch helpers -----------------------------------------------------------------------------------------
def _layout(batch) -> tuple[Tensor, Tensor, int]:
    """(graph of every node [N], node offsets ptr [G+1], G)."""
    x = getattr(batch, F.X_S, None)
    pos = getattr(batch, F.POS, None)
    ref = x if x is not None else pos
    if ref is None:
        raise InputError(_name(batch), "has neither x_s nor pos")
    n = int(ref.shape[0])
    b = getattr(batch, "batch", None)
    if b is None:
        b = torch.zeros(n, dtype=torch.long, device=ref.device)
    G = int(batch.num_graphs) if hasattr(batch, "num_graphs") else (int(b.max()) + 1 if n else 0)
    if n and bool((b[1:] < b[:-1]).any()):
        raise InputError(_name(batch), "nodes are not sorted by graph (PyG batch layout expected)")
    counts = torch.bincount(b, minlength=G)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return b, ptr, G


def _name(batch) -> str:
    n = getattr(batch, F.NAME, None)
    return n if isinstance(n, str) else "batch"


def hop_distances(batch, edge_index: Tensor | None = None) -> list[Tensor]:
    """Hop distances within every graph of ``batch``: a list of [n_g, n_g] float64 tensors, ``inf`` for pairs
    in different connected components. Breadth-first search (``scipy.sparse.csgraph.shortest_path``,
    unweighted) on ``edge_index`` (default ``batch.edge_index``: the edges the model is fed, including any
    long-range edges a graph strategy added), taken as undirected. Module mechanisms (virtual nodes,
    attention) do not add edges: their reach is not a hop distance."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import shortest_path

    b, ptr, G = _layout(batch)
    ei = batch[F.EDGE_INDEX] if edge_index is None else edge_index
    ei = ei.detach().cpu().numpy()
    out = []
    for g in range(G):
        lo, hi = int(ptr[g]), int(ptr[g + 1])
        n = hi - lo
        m = (ei[0] >= lo) & (ei[0] < hi)
        if bool(((ei[1][m] < lo) | (ei[1][m] >= hi)).any()):
            raise InputError(_name(batch), f"graph {g} has edges to other graphs")
        e = ei[:, m] - lo
        adj = sp.coo_matrix((np.ones(e.shape[1]), (e[0], e[1])), shape=(n, n)).tocsr()
        d = shortest_path(adj, method="D", directed=False, unweighted=True) if n else np.zeros((0, 0))
        out.append(torch.as_tensor(d, dtype=torch.float64))
    return out


def euclidean_distances(batch, pos: Tensor | None = None) -> list[Tensor]:
    """Euclidean distances (Angstrom) within every graph: a list of [n_g, n_g] float64 tensors."""
    b, ptr, G = _layout(batch)
    p = (batch[F.POS] if pos is None else pos).detach().to(torch.float64)
    return [torch.cdist(p[int(ptr[g]):int(ptr[g + 1])], p[int(ptr[g]):int(ptr[g + 1])]) for g in range(G)]


# -- the Jacobian engine -----------------------------------------------------------------------------------
def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"influence: method must be one of {METHODS}, got {method!r}")
    return method


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Engine:
    """Absolute Jacobian rows of ``target`` [R, C] with respect to ``inputs`` (name -> leaf [N, ...]), summed
    over channels and input components, gathered into per-graph blocks.

    A probe is a one-hot vector on ``target``: exact mode probes one (row, channel) at a time, so the
    gradient on every other graph is the measured cross-graph influence; packed mode sets one row of
    *every* graph at once (local row ``l``, channel ``c``), valid when graphs are independent."""

    def __init__(self, target: Tensor, row_graph: Tensor, rows_ptr: Tensor, inputs: dict[str, Tensor],
                 node_graph: Tensor, ptr: Tensor, method: str, chunk_size: int):
        self.target, self.inputs = target, inputs
        self.row_graph, self.rows_ptr, self.node_graph, self.ptr = row_graph, rows_ptr, node_graph, ptr
        self.method, self.chunk = method, int(chunk_size)
        if self.chunk < 1:
            raise ConfigError(f"influence: chunk_size must be >= 1, got {chunk_size}")
        self.G = int(ptr.numel()) - 1
        self.n = ptr[1:] - ptr[:-1]                        # [G] nodes
        self.r = rows_ptr[1:] - rows_ptr[:-1]              # [G] output rows
        sizes = self.r * self.n
        self.block_off = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
        self.buffers = {k: torch.zeros(int(self.block_off[-1]), dtype=torch.float64, device=target.device)
                        for k in inputs}
        self.cross = {k: 0.0 for k in inputs}
        self.passes = self.vjps = 0
        self.note = method
        N = int(ptr[-1])
        self.cols_local = torch.arange(N, device=target.device) - ptr[node_graph]

    def _sel(self, probes: Tensor, packed: bool) -> tuple[Tensor, Tensor]:
        """Selected row of every graph per probe ([P, G], -1 = none) and the probe's channel [P]."""
        C = self.target.shape[1]
        row, chan = probes // C, probes % C
        G = self.G
        if packed:                                           # probe index = local row * C + channel
            sel = self.rows_ptr[:-1].unsqueeze(0) + row.unsqueeze(1)                  # [P, G]
            sel = torch.where(row.unsqueeze(1) < self.r.unsqueeze(0), sel, torch.full_like(sel, -1))
        else:                                                # probe index = global row * C + channel
            sel = torch.full((probes.numel(), G), -1, dtype=torch.long, device=probes.device)
            sel[torch.arange(probes.numel(), device=probes.device), self.row_graph[row]] = row
        return sel, chan

    def _vectors(self, sel: Tensor, chan: Tensor) -> Tensor:
        P = sel.shape[0]
        V = torch.zeros((P,) + tuple(self.target.shape), dtype=self.target.dtype, device=self.target.device)
        p, g = (sel >= 0).nonzero(as_tuple=True)
        V[p, sel[p, g], chan[p]] = 1
        return V

    def _grads(self, V: Tensor) -> list[Tensor]:
        names = list(self.inputs)
        leaves = [self.inputs[k] for k in names]
        if self.method == "vmap":
            try:
                gs = torch.autograd.grad(self.target, leaves, V, retain_graph=True, allow_unused=True,
                                         is_grads_batched=True)
                self.passes += 1
                return [torch.zeros((V.shape[0],) + tuple(x.shape), dtype=x.dtype, device=x.device) if g is None
                        else g for g, x in zip(gs, leaves)]
            except RuntimeError as e:        # an op without a batching rule: loop from here on
                why = str(e).strip().splitlines()[0][:200]
                warnings.warn(f"influence: batched vector-Jacobian products failed ({why}); falling back to one "
                              "backward pass per probe", RuntimeWarning, stacklevel=4)
                self.method, self.note = "loop", f"loop (vmap failed: {why})"
        out = [[] for _ in leaves]
        for v in V:
            gs = torch.autograd.grad(self.target, leaves, v, retain_graph=True, allow_unused=True)
            self.passes += 1
            for lst, g, x in zip(out, gs, leaves):
                lst.append(torch.zeros_like(x) if g is None else g)
        return [torch.stack(lst) for lst in out]

    def _timed(self, V: Tensor, method: str) -> tuple[list[Tensor], float]:
        """Gradients by ``method``, and the seconds per vector-Jacobian product."""
        dev = self.target.device
        _sync(dev)
        t = time.perf_counter()
        self.method = method
        grads = self._grads(V)
        _sync(dev)
        return grads, (time.perf_counter() - t) / max(1, V.shape[0])

    def _auto(self, k: int, V: Tensor) -> list[Tensor]:
        """``method='auto'``: the first chunk batched (vmap), the second looped; the faster one does the rest."""
        if k == 0:
            grads, self._t_vmap = self._timed(V, "vmap")
            if self.method == "vmap":                 # not fallen back to the loop
                self.method, self.note = "auto", "vmap (auto: a single chunk)"
            return grads
        grads, t_loop = self._timed(V, "loop")
        self.method = "vmap" if self._t_vmap <= t_loop else "loop"
        self.note = (f"{self.method} (auto: {1e3 * self._t_vmap:.2f} ms per product batched, "
                     f"{1e3 * t_loop:.2f} ms looped)")
        return grads

    def run(self, packed: bool) -> None:
        R, C = self.target.shape
        total = (int(self.r.max()) if self.G else 0) * C if packed else R * C
        for k, start in enumerate(range(0, total, self.chunk)):
            probes = torch.arange(start, min(start + self.chunk, total), device=self.target.device)
            sel, chan = self._sel(probes, packed)
            V = self._vectors(sel, chan)
            grads = self._auto(k, V) if self.method == "auto" else self._grads(V)
            self.vjps += int(probes.numel())
            owner = sel[:, self.node_graph]                                           # [P, N]
            valid = owner >= 0
            g_of = self.node_graph.unsqueeze(0).expand_as(owner)
            flat = (self.block_off[g_of] + (owner - self.rows_ptr[g_of]) * self.n[g_of]
                    + self.cols_local.unsqueeze(0))
            for name, gr in zip(self.inputs, grads):
                A = gr.detach().abs().to(torch.float64).flatten(2).sum(-1)           # [P, N]
                if not packed and bool((~valid).any()):
                    self.cross[name] = max(self.cross[name], float(A[~valid].max()))
                self.buffers[name].index_add_(0, flat[valid], A[valid])

    def blocks(self) -> dict[str, list[Tensor]]:
        out = {}
        for name, buf in self.buffers.items():
            out[name] = [buf[int(self.block_off[g]):int(self.block_off[g + 1])].reshape(int(self.r[g]), int(self.n[g]))
                         for g in range(self.G)]
        return out


def _leaves(fn, batch, wrt) -> tuple[object, dict[str, Tensor]]:
    """A shallow copy of ``batch`` whose ``wrt`` fields are fresh leaves that require grad (in ``fn.dtype`` when
    the callable declares one, e.g. :func:`model_fn`)."""
    wrt = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    if not wrt:
        raise ConfigError("influence: wrt is empty; give 'x_s' and/or 'pos'")
    bad = [w for w in wrt if w not in WRT]
    if bad:
        raise ConfigError(f"influence: wrt must name inputs among {WRT}, got {bad}")
    dtype = getattr(fn, "dtype", None)
    view = copy.copy(batch)
    leaves = {}
    for w in wrt:
        x = getattr(batch, w, None)
        if x is None:
            raise InputError(_name(batch), f"has no {w!r} to measure influence of" +
                             (" (a 2D graph without coordinates: pass wrt='x_s')" if w == F.POS else ""))
        x = x.detach().clone()
        if dtype is not None:
            x = x.to(dtype)
        leaves[w] = x.requires_grad_(True)
        setattr(view, w, leaves[w])
    return view, leaves


def _outputs(Y: Tensor, N: int, G: int, level: str, batch) -> tuple[Tensor, str]:
    if not isinstance(Y, Tensor):
        raise InputError(_name(batch), f"fn must return a tensor [N, k] or [G, k], got {type(Y).__name__}")
    Y = Y.reshape(Y.shape[0], -1) if Y.dim() != 1 else Y.unsqueeze(-1)
    if level not in ("auto", "node", "graph"):
        raise ConfigError(f"influence: level must be 'auto', 'node' or 'graph', got {level!r}")
    if level == "auto":
        level = "node" if Y.shape[0] == N else ("graph" if Y.shape[0] == G else "")
    want = {"node": N, "graph": G}.get(level)
    if want is None or Y.shape[0] != want:
        raise InputError(_name(batch), f"fn returned {Y.shape[0]} rows; expected {N} (node-level) or {G} "
                                       "(graph-level)")
    return Y, level


def influence(fn: Callable, batch, wrt: Sequence[str] | str = ("x_s", "pos"), *, level: str = "auto",
              packed: bool = False, method: str = "auto", chunk_size: int = 16) -> Influence:
    """Jacobian-norm influence ``I[i, j] = sum |d Y_i / d X_j|`` of every input node ``j`` on every output row
    ``i`` of the same graph (see the module docstring), for each input in ``wrt``.

    Args:
        fn: ``fn(batch) -> Y``, ``Y`` [N, k] node outputs or [G, k] graph outputs (any differentiable model;
            :func:`model_fn` builds one from a trained module). Must be deterministic (``model.eval()``).
        batch: a PyG ``Batch`` (or one ``Data``). It is not modified.
        wrt: ``'x_s'`` and / or ``'pos'``.
        level: ``'auto'`` (by the number of rows of ``Y``), ``'node'`` or ``'graph'``.
        packed: probe one output row of *every* graph per backward pass (about G times fewer passes). Exact
            only when graphs do not interact; ``cross_graph`` is then not measured (None). The default probes
            one row at a time and measures the cross-graph influence, which must be 0.0.
        method: ``'vmap'`` (batched vector-Jacobian products, ``chunk_size`` per backward pass), ``'loop'``
            (one backward pass per probe), ``'auto'``: whichever of the two is faster on the first two chunks
            (see "Cost" above).
        chunk_size: probes per batched pass (and per accumulation step of the loop).

    Returns:
        :class:`Influence` with per-graph blocks ``[n_out_g, n_g]`` (float64) per input.
    """
    t0 = time.perf_counter()
    node_graph, ptr, G = _layout(batch)
    N = int(ptr[-1])
    view, leaves = _leaves(fn, batch, wrt)
    Y, level = _outputs(fn(view), N, G, level, batch)
    if not Y.requires_grad:
        raise InputError(_name(batch), f"fn's output does not depend on {list(leaves)} through autograd")
    if level == "node":
        row_graph, rows_ptr = node_graph, ptr
    else:
        row_graph = torch.arange(G, device=node_graph.device)
        rows_ptr = torch.arange(G + 1, device=node_graph.device)
    eng = _Engine(Y, row_graph, rows_ptr, leaves, node_graph, ptr, _check_method(method), chunk_size)
    eng.run(packed)
    return Influence(level, eng.blocks(), ptr.cpu(), {k: (None if packed else v) for k, v in eng.cross.items()},
                     eng.passes, eng.vjps, eng.note, time.perf_counter() - t0)


def pairwise_influence(fn: Callable, batch, wrt: Sequence[str] | str = ("x_s", "pos"), *, method: str = "auto",
                       chunk_size: int = 16) -> Influence:
    """Second-order (pair) influence on graph-level outputs, the paper's graph-level range (module docstring):
    ``I2[u, v] = sum_{c, f, f'} |d^2 y_{G c} / d X_{u f} d X_{v f'}|`` for nodes ``u, v`` of graph ``G``, per
    input in ``wrt`` (the ``x_s``-``x_s`` and ``pos``-``pos`` blocks).

    ``fn(batch)`` must return graph outputs [G, k]. The first derivatives of ``sum_G y_G`` are taken with
    ``create_graph=True``, then one double-backward pass per (local node, input component, channel) serves
    every graph at once: this assumes graphs do not interact (:func:`influence` measures that exactly), and
    costs ``k * max_g(n_g) * width`` passes. Returns an :class:`Influence` with ``level='pair'`` and blocks
    [n_g, n_g] (symmetric up to rounding)."""
    t0 = time.perf_counter()
    node_graph, ptr, G = _layout(batch)
    N = int(ptr[-1])
    view, leaves = _leaves(fn, batch, wrt)
    Y, level = _outputs(fn(view), N, G, "graph", batch)
    if not Y.requires_grad:
        raise InputError(_name(batch), f"fn's output does not depend on {list(leaves)} through autograd")
    resolved = _check_method(method)
    blocks, passes, vjps, note = {}, 0, 0, resolved
    for name, leaf in leaves.items():
        acc = None
        for c in range(Y.shape[1]):
            (g1,) = torch.autograd.grad(Y[:, c].sum(), leaf, create_graph=True, retain_graph=True, allow_unused=True)
            if g1 is None or not g1.requires_grad:           # linear in this input: the Hessian is zero
                continue
            eng = _Engine(g1.reshape(N, -1), node_graph, ptr, {name: leaf}, node_graph, ptr, resolved, chunk_size)
            eng.run(packed=True)
            passes, vjps, note = passes + eng.passes, vjps + eng.vjps, eng.note
            resolved = eng.method if eng.method in ("vmap", "loop") else resolved   # 'auto' decides once
            b = eng.blocks()[name]
            acc = b if acc is None else [x + y for x, y in zip(acc, b)]
        if acc is None:
            n = (ptr[1:] - ptr[:-1]).tolist()
            acc = [torch.zeros(k, k, dtype=torch.float64) for k in n]
        blocks[name] = acc
    return Influence("pair", blocks, ptr.cpu(), {k: None for k in leaves}, passes, vjps, note,
                     time.perf_counter() - t0)


# -- range and profiles ------------------------------------------------------------------------------------
def _as_blocks(x, what: str) -> list[Tensor]:
    if isinstance(x, Influence):
        raise ConfigError(f"{what}: pass the blocks of one input, e.g. result['x_s'], not the Influence object")
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, (list, tuple)) and all(isinstance(t, Tensor) for t in x):
        return list(x)
    raise ConfigError(f"{what}: expected a tensor [n_out, n] or a list of per-graph tensors, got {type(x).__name__}")


def _pairs(I, dist, what: str) -> list[tuple[Tensor, Tensor]]:
    Is, Ds = _as_blocks(I, what), _as_blocks(dist, what)
    if len(Is) != len(Ds):
        raise ConfigError(f"{what}: {len(Is)} influence blocks but {len(Ds)} distance blocks")
    out = []
    for g, (a, d) in enumerate(zip(Is, Ds)):
        if a.shape != d.shape:
            hint = (" (graph-level influence has one row per graph and no node to measure distances from: use "
                    "pairwise_influence for the graph-level range)" if a.shape[0] == 1 and d.shape[0] > 1 else "")
            raise ConfigError(f"{what}: graph {g}: influence {tuple(a.shape)} and distances {tuple(d.shape)} differ"
                              + hint)
        a = a.detach().to(torch.float64)
        if bool((a < 0).any()):
            raise ConfigError(f"{what}: influence must be non-negative (a norm)")
        out.append((a, d.detach().to(torch.float64, copy=False).to(a.device)))
    return out


def _normalise(a: Tensor) -> Tensor:
    """Rows divided by their sums; rows summing to zero become NaN."""
    tot = a.sum(1, keepdim=True)
    return torch.where(tot > 0, a / torch.where(tot > 0, tot, torch.ones_like(tot)), torch.full_like(a, math.nan))


def range_measure(I, dist, unreachable: str | float = "inf") -> RangeMeasure:
    """The range measure of Bamberger et al. (ICML 2025, Sec. 4): ``rho_u = sum_v I_u(v) d(u, v)`` with
    ``I_u(v) = I[u, v] / sum_w I[u, w]``, per output row ``u``, averaged per graph and over graphs.

    Args:
        I: one input's blocks (``influence(...)['x_s']``; :func:`pairwise_influence` for graph-level
            outputs), or one tensor [n_out, n].
        dist: matching distances (:func:`hop_distances`, :func:`euclidean_distances`, or a tensor).
        unreachable: how infinite distances count: ``'inf'`` (a row with influence on an unreachable node has
            ``rho_u = inf``), ``'exclude'`` (renormalise over reachable nodes), or a number to use as their
            distance.
    """
    if not (unreachable in ("inf", "exclude") or (isinstance(unreachable, (int, float))
                                                  and not isinstance(unreachable, bool))):
        raise ConfigError(f"range_measure: unreachable must be 'inf', 'exclude' or a number, got {unreachable!r}")
    rhos, unr, graphs = [], [], []
    for a, d in _pairs(I, dist, "range_measure"):
        far = torch.isinf(d)
        P = _normalise(a)
        share = torch.where(far, P, torch.zeros_like(P)).sum(1)
        dfin = torch.where(far, torch.zeros_like(d), d)
        if unreachable == "exclude":
            Pr = _normalise(torch.where(far, torch.zeros_like(a), a))
            rho = (Pr * dfin).sum(1)
        elif unreachable == "inf":
            rho = (P * dfin).sum(1)
            rho = torch.where(share > 0, torch.full_like(rho, math.inf), rho)
        else:
            rho = (P * torch.where(far, torch.full_like(d, float(unreachable)), d)).sum(1)
        rhos.append(rho)
        unr.append(share)
        graphs.append(_nanmean(rho))
    per_graph = torch.stack(graphs) if graphs else torch.zeros(0, dtype=torch.float64)
    return RangeMeasure(torch.cat(rhos) if rhos else per_graph, per_graph, float(_nanmean(per_graph)),
                        torch.cat(unr) if unr else per_graph)


def _nanmean(x: Tensor) -> Tensor:
    ok = ~torch.isnan(x)
    return x[ok].mean() if bool(ok.any()) else torch.tensor(math.nan, dtype=torch.float64)


def influence_profile(I, dist, bins: int | Sequence[float] | Tensor | None = None) -> InfluenceProfile:
    """Normalised influence against distance, the "influence vs distance" curve.

    ``bins=None``: integer distances (hops), one bin per hop 0..H (H the largest finite hop distance);
    an int: that many equal bins on [0, largest finite distance]; a sequence: bin edges (left-closed, the last
    bin closed). Rows are normalised as in :func:`range_measure` (rows without influence are left out); see
    :class:`InfluenceProfile` for what is averaged how. For hop bins and no unreachable influence,
    ``sum_h h * mass[h]`` equals ``range_measure(I, hops).mean``."""
    pairs = _pairs(I, dist, "influence_profile")
    finite = [d[torch.isfinite(d)] for _, d in pairs]
    dmax = max((float(f.max()) for f in finite if f.numel()), default=0.0)
    if bins is None:
        if any(bool((f != f.round()).any()) for f in finite):
            raise ConfigError("influence_profile: distances are not integers (hops); give bins for Euclidean "
                              "distances")
        B = int(dmax) + 1
        edges = None
        centres = torch.arange(B, dtype=torch.float64)
    else:
        if isinstance(bins, int) and not isinstance(bins, bool):
            if bins < 1:
                raise ConfigError(f"influence_profile: bins must be >= 1, got {bins}")
            edges = torch.linspace(0.0, dmax if dmax > 0 else 1.0, bins + 1, dtype=torch.float64)
        else:
            edges = torch.as_tensor(bins, dtype=torch.float64).reshape(-1)
            if edges.numel() < 2 or bool((edges[1:] <= edges[:-1]).any()):
                raise ConfigError("influence_profile: bin edges must be increasing, at least two of them")
        B = edges.numel() - 1
        centres = (edges[1:] + edges[:-1]) / 2
    mass_g, unr_g, out_g = [], [], []
    total = torch.zeros(B, dtype=torch.float64)
    count = torch.zeros(B, dtype=torch.long)
    for a, d in pairs:
        P = _normalise(a)
        rows = ~torch.isnan(P[:, 0]) if P.shape[1] else torch.zeros(P.shape[0], dtype=torch.bool)
        if not bool(rows.any()):
            continue
        P, d = P[rows], d[rows]
        far = torch.isinf(d)
        if edges is None:
            idx = torch.where(far, torch.full_like(d, -1), d).long()
        else:
            e = edges.to(d.device)
            idx = torch.bucketize(torch.where(far, torch.zeros_like(d), d), e, right=True) - 1
            idx = torch.where(d == e[-1], torch.full_like(idx, B - 1), idx)
            idx = torch.where(far | (idx < 0) | (idx >= B), torch.full_like(idx, -1), idx)
        inside = idx >= 0
        m = torch.zeros(P.shape[0], B, dtype=torch.float64, device=P.device)
        m.scatter_add_(1, torch.where(inside, idx, torch.zeros_like(idx)), torch.where(inside, P, torch.zeros_like(P)))
        mass_g.append(m.mean(0).cpu())
        unr_g.append(float(torch.where(far, P, torch.zeros_like(P)).sum(1).mean()))
        out_g.append(float(torch.where(~far & ~inside, P, torch.zeros_like(P)).sum(1).mean()))
        total += m.sum(0).cpu()
        count += torch.bincount(idx[inside].cpu(), minlength=B)[:B]
    if not mass_g:
        nan = torch.full((B,), math.nan, dtype=torch.float64)
        return InfluenceProfile(centres, edges, nan, nan.clone(), count, math.nan, math.nan)
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))
    return InfluenceProfile(centres, edges, torch.stack(mass_g).mean(0), mean, count,
                            sum(unr_g) / len(unr_g), sum(out_g) / len(out_g))


# -- trained models ----------------------------------------------------------------------------------------
def load_trained(run_dir: str | Path, checkpoint: str = "best", with_data: bool = False):
    """Rebuild the :class:`~farfield.train.module.TaskModule` of a ``farfield train`` run directory.

    Reads ``run_dir/config.yaml`` (:func:`farfield.train.config.load_config`), sets up its data module and
    builds the module exactly as training did (:func:`farfield.train.run.build_module`, as
    :func:`farfield.train.run.evaluate` does), then loads ``checkpoints/<checkpoint>.ckpt`` (``'best'``,
    ``'last'``, or a path) with ``torch.load(weights_only=True)``: a checkpoint holding anything but tensors
    and plain data is refused (:class:`InputError`), never unpickled. ``'best'`` falls back to the checkpoint
    ``metrics.json`` names when ``best.ckpt`` was never written. Returns ``(module, cfg)`` with the module in
    eval mode on the CPU, or ``(module, cfg, datamodule)`` with ``with_data``. Like training, building seeds
    the global random generators with ``run.seed``."""
    from farfield.train.config import load_config
    from farfield.train.data import GraphDataModule
    from farfield.train.run import _REFUSED, _refused, build_module

    run = Path(run_dir)
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise InputError(str(run), "is not a farfield run directory (no config.yaml)")
    cfg = load_config(cfg_path)
    path = Path(checkpoint) if checkpoint not in ("best", "last") else run / "checkpoints" / f"{checkpoint}.ckpt"
    if checkpoint == "best" and not path.is_file() and (run / "metrics.json").is_file():
        import json           # a run whose best checkpoint was never written names the one it tested
        name = json.loads((run / "metrics.json").read_text()).get("best_checkpoint")
        path = run / "checkpoints" / name if isinstance(name, str) and "/" not in name else path
    if not path.is_file():
        raise InputError(str(path), "checkpoint not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - refused or unreadable: never fall back to full unpickling
        if _refused(e):
            raise InputError(str(path), _REFUSED) from None
        raise InputError(str(path), f"unreadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("state_dict"), dict):
        raise InputError(str(path), "holds no state_dict (not a farfield / Lightning checkpoint)")
    dm = GraphDataModule(cfg.data, cfg.model.edge_spec(cfg.data.edges), seed=cfg.run.seed,
                         standardize=cfg.task.standardize)
    dm.setup("test")
    module, _ = build_module(cfg, dm)
    module.load_state_dict(ck["state_dict"])
    module.eval()
    return (module, cfg, dm) if with_data else (module, cfg)


def _to_dtype(batch, dtype: torch.dtype):
    view = copy.copy(batch)
    for key in list(batch.keys()):
        v = getattr(batch, key, None)
        if isinstance(v, Tensor) and v.is_floating_point() and v.dtype != dtype:
            setattr(view, key, v.to(dtype))
    return view


def model_fn(module, kind: str = "node", dtype: torch.dtype = torch.float64) -> Callable:
    """The output callable ``fn(batch) -> Tensor`` of a :class:`~farfield.train.module.TaskModule` for
    :func:`influence`: a copy of the module in ``dtype`` (float64 by default) and eval mode (dropout off,
    batch norm on running statistics); floating-point batch fields are cast to ``dtype``.

    ``kind``: ``'node'``: per-node predictions [N, k] (node tasks: the module's output; graph tasks: the head
    applied to every node before pooling, e.g. atomic contributions under sum pooling); ``'graph'``: the
    module's graph predictions [G, k] (graph tasks only); ``'embedding'``: the backbone's node scalars
    [N, d]. Outputs are in the module's own (standardised) units. ``fn.dtype`` tells :func:`influence` which
    dtype to make its input leaves."""
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"model_fn: kind must be one of {OUTPUT_KINDS}, got {kind!r}")
    m = copy.deepcopy(module).to(dtype).eval()
    node_task = m.task.kind == "node_regression"
    if kind == "graph" and node_task:
        raise ConfigError("model_fn: a node_regression module has no graph-level output; use kind='node'")
    if kind == "node" and m.pair:
        raise ConfigError("model_fn: a pair module's head reads both structures' pooled features; it has no "
                          "per-node output (use kind='graph' or 'embedding')")

    def fn(batch):
        b = _to_dtype(batch, dtype)
        if kind == "graph" or (kind == "node" and node_task):
            return m(b)
        view, n, s, energy = m._encode(b)
        return s if kind == "embedding" else m.node_outputs(s, energy)

    fn.dtype = dtype
    fn.module = m
    return fn

r"""Receiver-sorted (CSR) edge layouts and segment reductions, computed once per batch and shared by all layers.

Message passing sums edge messages onto their receivers, :math:`m_i = \sum_{j \in N(i)} \phi_{ij}`
(Gilmer et al., "Neural Message Passing for Quantum Chemistry", ICML 2017, eq. 1). Scattering messages in
arbitrary edge order (``index_add_`` / ``scatter_add_``) reads and writes the output at random rows, and on
CUDA it uses atomic additions, whose order (hence the float result) changes from run to run. Sorting the
edges by receiver **once per batch** turns the sum into contiguous segment reductions (the compressed sparse
row, CSR, layout; the same lever as FlashSchNet's receiver-sorted aggregation), and a segment reduction adds
each receiver's messages in a fixed order, so it is deterministic by construction on any device.

Public surface:

* :func:`csr_layout` -> :class:`ReceiverIndex`: the permutation ``perm`` [E] that sorts edges by receiver
  (stable: ties keep their input order), the sorted ``src`` / ``tgt`` [E], the CSR offsets ``ptr`` [N + 1]
  and, on request, the sender-sorted layout used by deterministic gathers and transposed products.
* :func:`segment_sum`: ``[E, ...]`` messages in receiver order -> ``[N, ...]`` sums.
* :func:`gather_src`: ``x[src]`` in receiver order; with ``deterministic`` its backward is a segment sum over
  the sender-sorted layout instead of a scatter.
* :func:`edge_pairs`: the pairing of each edge with its reverse in an undirected graph (radius and kNN-
  symmetrised graphs store both directions), so that a function of the pair (a distance filter) is computed
  once per pair.
* :class:`SparseAdjacency` / :func:`spmm`: a fixed weighted adjacency (e.g. GCN's
  :math:`\hat D^{-1/2}\hat A\hat D^{-1/2}`, Kipf & Welling, ICLR 2017, eq. 2) as a CSR matrix and its
  transpose, multiplied with node features (MKL / cuSPARSE), with the transpose product as the backward.

Determinism: on CPU every reduction here (``index_add_`` on sorted receivers, the CSR product) runs in a
fixed order and gives bitwise identical results run to run. On CUDA, ``index_add_`` (and the backward of
``index_select``) use atomics; pass ``deterministic=True`` (or enable
``torch.use_deterministic_algorithms``) to route sums through ``torch.segment_reduce`` (one fixed-order
reduction per segment) and gathers' backward through the sender-sorted segment sum (one extra permutation
gather of the gradient). Cost, measured on CPU with ``deterministic=True`` forced (one thread, 780 atoms,
12k edges, 128 features, forward + backward): gather + multiply + segment sum about 1.0x the default path;
:func:`spmm` falls back to gather + segment sum, ~40x the CSR product. No accelerator was available to time the
CUDA paths.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["ReceiverIndex", "csr_layout", "segment_sum", "gather_src", "edge_pairs", "EdgePairs",
           "SparseAdjacency", "spmm", "use_deterministic"]


def use_deterministic(deterministic: bool | None, device: torch.device) -> bool:
    """Whether a reduction on ``device`` takes the segment-reduction path: ``deterministic`` if given (True
    forces it on any device, e.g. to test it on CPU); None: on an accelerator when
    ``torch.are_deterministic_algorithms_enabled()``, never on CPU, where the fast paths are already
    fixed-order."""
    if deterministic is not None:
        return bool(deterministic)
    return device.type != "cpu" and torch.are_deterministic_algorithms_enabled()


def _offsets(sorted_index: Tensor, num_nodes: int) -> Tensor:
    counts = torch.bincount(sorted_index, minlength=num_nodes)
    ptr = sorted_index.new_zeros(num_nodes + 1)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr


@dataclass
class ReceiverIndex:
    """Receiver-sorted layout of ``edge_index`` [2, E] (row 0 senders j, row 1 receivers i).

    ``perm`` [E]: input edge ids in receiver order (stable sort); ``src`` / ``tgt`` [E] = ``edge_index[:, perm]``
    (``tgt`` non-decreasing); ``ptr`` [N + 1]: receiver ``i``'s edges are ``ptr[i]:ptr[i+1]`` of the sorted
    order (isolated nodes have empty segments); ``num_nodes`` N. :meth:`by_sender` gives, in the sorted edge
    numbering, the permutation ``sperm`` [E] that sorts edges by sender and its offsets ``sptr`` [N + 1]
    (computed on first use and kept)."""

    perm: Tensor
    src: Tensor
    tgt: Tensor
    ptr: Tensor
    num_nodes: int
    _sender: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def num_edges(self) -> int:
        return int(self.src.shape[0])

    def sort(self, edge_values: Tensor) -> Tensor:
        """Per-edge values [E, ...] in input order -> receiver order (``index_select`` by ``perm``)."""
        return edge_values.index_select(0, self.perm)

    def by_sender(self) -> tuple[Tensor, Tensor]:
        if self._sender is None:
            sperm = torch.argsort(self.src, stable=True)
            self._sender = (sperm, _offsets(self.src.index_select(0, sperm), self.num_nodes))
        return self._sender


def csr_layout(edge_index: Tensor, num_nodes: int) -> ReceiverIndex:
    """Sort ``edge_index`` [2, E] by receiver (row 1) once; see :class:`ReceiverIndex`. Empty graphs
    (E = 0) and isolated nodes are allowed."""
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"csr_layout: edge_index must be [2, E], got {tuple(edge_index.shape)}")
    edge_index = edge_index.long()
    perm = torch.argsort(edge_index[1], stable=True)
    src, tgt = edge_index[0].index_select(0, perm), edge_index[1].index_select(0, perm)
    return ReceiverIndex(perm, src, tgt, _offsets(tgt, num_nodes), int(num_nodes))


def segment_sum(msg: Tensor, layout: ReceiverIndex, deterministic: bool | None = None) -> Tensor:
    r"""Sum receiver-sorted messages ``msg`` [E, ...] per receiver -> [N, ...] (zeros for isolated nodes):
    :math:`m_i = \sum_{e = ptr_i}^{ptr_{i+1}-1} msg_e`.

    CPU: ``index_add_`` on the sorted receivers (fixed order, the fastest of index_add_ / segment_reduce /
    scatter measured at one thread). Accelerators: ``index_add_`` (atomics) unless :func:`use_deterministic`,
    then ``torch.segment_reduce`` with the CSR offsets (fixed order per segment, bitwise reproducible)."""
    n = layout.num_nodes
    if msg.shape[0] != layout.num_edges:
        raise ValueError(f"segment_sum: {msg.shape[0]} messages for {layout.num_edges} edges")
    if msg.shape[0] and use_deterministic(deterministic, msg.device):      # (no edges: nothing to order)
        return torch.segment_reduce(msg, "sum", offsets=layout.ptr, axis=0, unsafe=True)
    return msg.new_zeros((n,) + tuple(msg.shape[1:])).index_add_(0, layout.tgt, msg)


class _GatherSorted(torch.autograd.Function):
    """``x[src]`` whose backward is a fixed-order segment sum over the sender-sorted layout."""

    @staticmethod
    def forward(ctx, x, layout):
        ctx.layout = layout
        ctx.shape = x.shape
        return x.index_select(0, layout.src)

    @staticmethod
    def backward(ctx, grad):
        layout = ctx.layout
        sperm, sptr = layout.by_sender()
        g = grad.index_select(0, sperm)
        if g.shape[0] == 0:
            return grad.new_zeros(ctx.shape), None
        return torch.segment_reduce(g, "sum", offsets=sptr, axis=0, unsafe=True), None


def gather_src(x: Tensor, layout: ReceiverIndex, deterministic: bool | None = None) -> Tensor:
    """Sender features ``x[src]`` [E, ...] in receiver order (``index_select``; its backward scatters onto
    senders with ``index_add_``, atomics on CUDA). With :func:`use_deterministic` the backward is a segment sum
    over the sender-sorted layout (fixed order)."""
    if use_deterministic(deterministic, x.device):
        return _GatherSorted.apply(x, layout)
    return x.index_select(0, layout.src)


@dataclass
class EdgePairs:
    """Pairing of receiver-sorted edges with their reverses: ``half`` [P] sorted-edge ids of one representative
    per pair (``src <= tgt``; a self-loop is its own pair), ``pair`` [E] the pair id of every sorted edge, so
    that ``f_half.index_select(0, pair)`` expands a per-pair quantity to all edges. Each pair row receives at
    most two gradient contributions in that expansion's backward, and a sum of two floats does not depend on
    their order, so it is deterministic even with atomics."""

    half: Tensor
    pair: Tensor

    def expand(self, per_pair: Tensor) -> Tensor:
        return per_pair.index_select(0, self.pair)


def edge_pairs(layout: ReceiverIndex, *keys: Tensor | None) -> EdgePairs | None:
    """Pair every edge ``(j, i)`` of ``layout`` with its reverse ``(i, j)`` when the graph is undirected.

    ``keys``: per-edge tensors in receiver order (e.g. the distance [E] and the edge type [E]) that must be
    **bitwise** equal on an edge and its reverse for a per-pair value to stand for both (a distance computed
    as ``|pos_j - pos_i|`` is; one with a periodic lattice offset may differ by round-off). Returns None
    (compute per edge) when an edge has no reverse, an edge is repeated, or a key differs."""
    e, n = layout.num_edges, layout.num_nodes
    if e == 0:
        return None
    src, tgt = layout.src, layout.tgt
    key = tgt * n + src                        # unique id of (j -> i)
    order = torch.argsort(key, stable=True)
    skey = key.index_select(0, order)
    if bool((skey[1:] == skey[:-1]).any()):
        return None                            # repeated edge (e.g. periodic images): no unique reverse
    rkey = src * n + tgt
    where = torch.searchsorted(skey, rkey).clamp_(max=e - 1)
    if not bool((skey.index_select(0, where) == rkey).all()):
        return None
    rev = order.index_select(0, where)         # sorted-edge id of each edge's reverse
    for k in keys:
        if k is not None and not torch.equal(k, k.index_select(0, rev)):
            return None
    rep = src <= tgt
    half = rep.nonzero().squeeze(1)
    pair = torch.empty_like(src)
    pair[half] = torch.arange(half.shape[0], device=src.device)
    other = (~rep).nonzero().squeeze(1)
    pair[other] = pair.index_select(0, rev.index_select(0, other))
    return EdgePairs(half, pair)


@dataclass
class SparseAdjacency:
    r"""A fixed weighted adjacency :math:`A` [N, N] with :math:`A_{ij}` = weight of edge j -> i, stored as CSR
    for :math:`A` (rows = receivers) and for :math:`A^\top` (rows = senders). Built once per batch by
    :meth:`from_edges`; the weights carry no gradient."""

    a: Tensor
    at: Tensor
    layout: ReceiverIndex
    values: Tensor                                 # [E] receiver-sorted weights

    @classmethod
    def from_edges(cls, edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> "SparseAdjacency":
        layout = csr_layout(edge_index, num_nodes)
        w = edge_weight.detach().index_select(0, layout.perm)
        n = int(num_nodes)
        # int32 indices when they fit: MKL's CSR kernels take int32, int64 ones are converted on every product
        it = torch.int32 if max(n, layout.num_edges) < 2 ** 31 - 1 else torch.int64
        sperm, sptr = layout.by_sender()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            a = torch.sparse_csr_tensor(layout.ptr.to(it), layout.src.to(it), w, (n, n), device=w.device,
                                        check_invariants=False)
            at = torch.sparse_csr_tensor(sptr.to(it), layout.tgt.index_select(0, sperm).to(it),
                                         w.index_select(0, sperm), (n, n), device=w.device, check_invariants=False)
        return cls(a, at, layout, w)


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adj, x, bias):
        ctx.adj, ctx.has_bias = adj, bias is not None
        with torch.autocast(x.device.type, enabled=False):          # the product runs in the adjacency's dtype
            if bias is None:
                return adj.a @ x
            # bias as addmm's input: one pass fewer than a zero-filled product plus a separate add
            return torch.addmm(bias.expand(x.shape[0], x.shape[1]), adj.a, x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.to(ctx.adj.values.dtype).contiguous()
        with torch.autocast(grad.device.type, enabled=False):
            gx = ctx.adj.at @ grad if ctx.needs_input_grad[1] else None
        gb = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return None, gx, gb


def spmm(adj: SparseAdjacency, x: Tensor, bias: Tensor | None = None, deterministic: bool | None = None) -> Tensor:
    r""":math:`A x + b` for node features ``x`` [N, F] and an optional ``bias`` [F] -> [N, F] (row i:
    :math:`\sum_j A_{ij} x_j + b`, the messages ``w_e x_{src(e)}`` summed onto receivers), backward
    :math:`A^\top g` and :math:`\sum_i g_i`. CPU: MKL CSR products (row-parallel, fixed order per row:
    deterministic); with :func:`use_deterministic` (or no edges) the gather and segment sums of this module
    instead of the sparse product. ``x`` and ``bias`` are cast to the adjacency's dtype (build it in float32
    or float64: under autocast the node features may arrive in bfloat16 / float16) and the product runs with
    autocast off."""
    if x.shape[0] != adj.layout.num_nodes:
        raise ValueError(f"spmm: {x.shape[0]} node rows for an adjacency of {adj.layout.num_nodes} nodes")
    if use_deterministic(deterministic, x.device) or adj.layout.num_edges == 0 or x.dim() != 2:
        w = adj.values.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
        out = segment_sum(gather_src(x, adj.layout, deterministic) * w, adj.layout, deterministic)
        return out if bias is None else out + bias
    dt = adj.values.dtype                                           # lower-precision (autocast) inputs are upcast
    return _SpMM.apply(adj, x.to(dt).contiguous(), None if bias is None else bias.to(dt))

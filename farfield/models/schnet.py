"""SchNet (Schuett et al., "SchNet: A continuous-filter convolutional neural network for modeling quantum
interactions", NeurIPS 2017; J. Chem. Phys. 148, 241722, 2018)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from farfield.data import fields as F
from farfield.models.base import Backbone, BackboneOutput, EdgeGeometry, InputSpec, NodeState, build_radial, \
    edge_geometry
from farfield.nn.aggregate import csr_layout, edge_pairs, gather_src, segment_sum
from farfield.nn.mlp import ShiftedSoftplus

__all__ = ["SchNet"]


class CFConvInteraction(nn.Module):
    r"""Interaction block: :math:`x = W_1 h`, :math:`m_i = \sum_j x_j \odot W(d_{ij})` with filter
    :math:`W(d) = \mathrm{Dense}(\mathrm{ssp}(\mathrm{Dense}(e(d)))) \cdot u(d)` (``u`` the envelope weight
    ``g.weight``, zero beyond the cutoff; 1 when None), then :math:`h \leftarrow h + W_3\,\mathrm{ssp}(W_2 m)`.

    Computation (equal to the formula above to round-off): edges arrive sorted by receiver
    (:func:`farfield.nn.aggregate.csr_layout`, built once per forward by :meth:`SchNet.geometry`), so the sum is a
    segment sum; in an undirected graph the filter, a function of the distance only, is computed once per edge
    pair (``g.pairs``) and shared by both directions; the envelope multiplies the filter (per pair) rather than
    the message; and the constant of the filter's inner ssp is folded into the bias of its second Dense:
    :math:`(\mathrm{softplus}(z) - \ln 2) V^\top + b = \mathrm{softplus}(z) V^\top + (b - \ln 2\, V 1)`.
    Bitwise reproducible on CPU; on CUDA under ``torch.use_deterministic_algorithms(True)`` the sums and the
    gather's backward take the fixed-order segment reductions of :mod:`farfield.nn.aggregate` (plain
    ``index_add_`` uses atomics there)."""

    def __init__(self, hidden: int, num_filters: int, num_basis: int):
        super().__init__()
        self.filter = nn.Sequential(nn.Linear(num_basis, num_filters), ShiftedSoftplus(),
                                    nn.Linear(num_filters, num_filters))
        self.lin1 = nn.Linear(hidden, num_filters, bias=False)
        self.lin2 = nn.Linear(num_filters, hidden)
        self.act = ShiftedSoftplus()
        self.lin3 = nn.Linear(hidden, hidden)

    def edge_filter(self, rbf: Tensor, weight: Tensor | None) -> Tensor:
        """:math:`W(d) u(d)` [P, F] from radial features ``rbf`` [P, K] and envelope ``weight`` [P] (or None)."""
        first, _, second = self.filter
        bias = second.bias - math.log(2.0) * second.weight.sum(1)
        w = TF.linear(TF.softplus(first(rbf)), second.weight, bias)
        return w if weight is None else w * weight.unsqueeze(-1)

    def forward(self, state: NodeState, g: EdgeGeometry) -> NodeState:
        csr, pairs = getattr(g, "csr", None), getattr(g, "pairs", None)
        if csr is None:                              # geometry not from SchNet.geometry: sort here
            csr = csr_layout(g.edge_index, g.num_nodes)
            w = csr.sort(self.edge_filter(g.rbf, g.weight))
        elif pairs is not None:
            w = pairs.expand(self.edge_filter(g.pair_rbf, g.pair_weight))      # [E, F], receiver order
        else:
            w = self.edge_filter(g.rbf, g.weight)
        m = segment_sum(gather_src(self.lin1(state.s), csr) * w, csr)           # [N, F]
        return state.replace(s=state.s + self.lin3(self.act(self.lin2(m))))


class SchNet(Backbone):
    r"""SchNet: invariant continuous-filter convolutions on interatomic distances.

    .. math::
        h_i^{(0)} = W_e x_i,\qquad
        h_i \leftarrow h_i + W_3\, \mathrm{ssp}\Big(W_2 \sum_{j \in N(i)} W_1 h_j \odot
        \mathrm{Dense}(\mathrm{ssp}(\mathrm{Dense}(e(d_{ij})))) \cdot u(d_{ij})\Big)

    with Gaussian expansion :math:`e`, shifted softplus ssp and the cosine cutoff
    :math:`u(d) = \tfrac12(\cos(\pi d/c)+1)` for :math:`d \le c`, **clamped to zero beyond c** (the
    unclamped cosine is periodic). The cutoff function is the envelope of the radial basis (``envelope``,
    default cosine as in the paper; ``'polynomial'`` for DimeNet's, Gasteiger et al. 2020; None drops it).
    Edges longer than the cutoff raise unless the radial basis says otherwise.
    Symmetry: E(3) invariant. Uses ``x_s`` and ``pos`` (``x_v`` and ``edge_s`` are ignored).

    Args:
        spec: input widths. hidden: node width. num_layers: interaction blocks. num_filters: filter width
        (default = hidden). cutoff: Angstrom. num_basis: Gaussians on [0, cutoff]. radial: a radial basis
        module (default ``GaussianRBF(cutoff, num_basis, envelope=CosineEnvelope(cutoff))``).
        envelope: 'cosine' | 'polynomial' | None. long_cutoff: separate basis for long-range edges
        (:func:`~farfield.models.base.two_range_options`).
    """

    symmetry = "E(3)"

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 6, num_filters: int | None = None,
                 cutoff: float = 5.0, num_basis: int = 50, radial: nn.Module | None = None,
                 envelope: str | None = "cosine", long_cutoff: float | None = None):
        super().__init__(spec)
        self.radial = build_radial("SchNet", radial, cutoff, num_basis, envelope, long_cutoff)
        nb = self.radial.num_basis
        self.cutoff = float(getattr(self.radial, "cutoff", cutoff))
        self.hidden_s = hidden
        self.embedding = nn.Linear(spec.node_s, hidden)
        self.layers = nn.ModuleList([CFConvInteraction(hidden, num_filters or hidden, nb)
                                     for _ in range(num_layers)])

    def geometry(self, state: NodeState, batch) -> EdgeGeometry:
        """:func:`~farfield.models.base.edge_geometry` with every per-edge field in receiver order, plus ``csr``
        (:class:`~farfield.nn.aggregate.ReceiverIndex` of the sorted ``edge_index``), ``pairs``
        (:func:`~farfield.nn.aggregate.edge_pairs` on the distance and edge type, or None) and ``pair_rbf`` /
        ``pair_weight``: the radial features and envelope of one edge per pair."""
        g = edge_geometry(state.pos, batch, self.radial)
        csr = csr_layout(g.edge_index, g.num_nodes)
        p = csr.perm
        et = getattr(batch, F.EDGE_TYPE, None)
        g.edge_index = torch.stack([csr.src, csr.tgt])
        g.vec, g.dist, g.unit = g.vec.index_select(0, p), g.dist.index_select(0, p), g.unit.index_select(0, p)
        g.rbf = None if g.rbf is None else g.rbf.index_select(0, p)
        g.weight = None if g.weight is None else g.weight.index_select(0, p)
        g.edge_s = None if g.edge_s is None else g.edge_s.index_select(0, p)
        g.csr = csr
        g.pairs = edge_pairs(csr, g.dist.detach(), None if et is None else et.reshape(-1).index_select(0, p))
        if g.pairs is not None:
            g.pair_rbf = g.rbf.index_select(0, g.pairs.half)
            g.pair_weight = None if g.weight is None else g.weight.index_select(0, g.pairs.half)
        return g

    def embed(self, batch) -> NodeState:
        return NodeState(s=self.embedding(batch[F.X_S]), v=None, pos=batch[F.POS])

    def output(self, state: NodeState, batch) -> BackboneOutput:
        return BackboneOutput(s=state.s)

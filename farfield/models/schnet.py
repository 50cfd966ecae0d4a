"""SchNet (Schuett et al., "SchNet: A continuous-filter convolutional neural network for modeling quantum
interactions", NeurIPS 2017; J. Chem. Phys. 148, 241722, 2018)."""
from __future__ import annotations

from torch import nn

from farfield.data import fields as F
from farfield.models.base import Backbone, BackboneOutput, EdgeGeometry, InputSpec, NodeState, build_radial
from farfield.nn.mlp import ShiftedSoftplus, aggregate, gather

__all__ = ["SchNet"]


class CFConvInteraction(nn.Module):
    r"""Interaction block: :math:`x = W_1 h`, :math:`m_i = \sum_j x_j \odot W(d_{ij})` with filter
    :math:`W(d) = \mathrm{Dense}(\mathrm{ssp}(\mathrm{Dense}(e(d)))) \cdot u(d)` (``u`` the envelope weight
    ``g.weight``, zero beyond the cutoff; 1 when None), then :math:`h \leftarrow h + W_3\,\mathrm{ssp}(W_2 m)`."""

    def __init__(self, hidden: int, num_filters: int, num_basis: int):
        super().__init__()
        self.filter = nn.Sequential(nn.Linear(num_basis, num_filters), ShiftedSoftplus(),
                                    nn.Linear(num_filters, num_filters))
        self.lin1 = nn.Linear(hidden, num_filters, bias=False)
        self.lin2 = nn.Linear(num_filters, hidden)
        self.act = ShiftedSoftplus()
        self.lin3 = nn.Linear(hidden, hidden)

    def forward(self, state: NodeState, g: EdgeGeometry) -> NodeState:
        src, tgt = g.edge_index
        w = self.filter(g.rbf)                                              # [E, F]
        m = aggregate(gather(self.lin1(state.s), src) * w, tgt, g.num_nodes, weight=g.weight)   # [N, F]
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

    def embed(self, batch) -> NodeState:
        return NodeState(s=self.embedding(batch[F.X_S]), v=None, pos=batch[F.POS])

    def output(self, state: NodeState, batch) -> BackboneOutput:
        return BackboneOutput(s=state.s)

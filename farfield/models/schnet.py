"""SchNet (Schuett et al., "SchNet: A continuous-filter convolutional neural network for modeling quantum
interactions", NeurIPS 2017; J. Chem. Phys. 148, 241722, 2018)."""
from __future__ import annotations

from torch import nn

from farfield.data import fields as F
from farfield.features.radial import CosineEnvelope, GaussianRBF
from farfield.models.base import Backbone, BackboneOutput, EdgeGeometry, InputSpec, NodeState
from farfield.nn.mlp import ShiftedSoftplus, aggregate

__all__ = ["SchNet"]


class CFConvInteraction(nn.Module):
    r"""Interaction block: :math:`x = W_1 h`, :math:`m_i = \sum_j x_j \odot W(d_{ij})` with filter
    :math:`W(d) = \mathrm{Dense}(\mathrm{ssp}(\mathrm{Dense}(e(d)))) \cdot u(d)` (``u`` the cosine cutoff,
    zero beyond the cutoff), then :math:`h \leftarrow h + W_3\,\mathrm{ssp}(W_2 m)`."""

    def __init__(self, hidden: int, num_filters: int, num_basis: int, cutoff: float):
        super().__init__()
        self.filter = nn.Sequential(nn.Linear(num_basis, num_filters), ShiftedSoftplus(),
                                    nn.Linear(num_filters, num_filters))
        self.envelope = CosineEnvelope(cutoff)
        self.lin1 = nn.Linear(hidden, num_filters, bias=False)
        self.lin2 = nn.Linear(num_filters, hidden)
        self.act = ShiftedSoftplus()
        self.lin3 = nn.Linear(hidden, hidden)

    def forward(self, state: NodeState, g: EdgeGeometry) -> NodeState:
        src, tgt = g.edge_index
        w = self.filter(g.rbf) * self.envelope(g.dist).unsqueeze(-1)      # [E, F]
        m = aggregate(self.lin1(state.s)[src] * w, tgt, g.num_nodes)      # [N, F]
        return state.replace(s=state.s + self.lin3(self.act(self.lin2(m))))


class SchNet(Backbone):
    r"""SchNet: invariant continuous-filter convolutions on interatomic distances.

    .. math::
        h_i^{(0)} = W_e x_i,\qquad
        h_i \leftarrow h_i + W_3\, \mathrm{ssp}\Big(W_2 \sum_{j \in N(i)} W_1 h_j \odot
        \mathrm{Dense}(\mathrm{ssp}(\mathrm{Dense}(e(d_{ij})))) \cdot u(d_{ij})\Big)

    with Gaussian expansion :math:`e`, shifted softplus ssp and the cosine cutoff
    :math:`u(d) = \tfrac12(\cos(\pi d/c)+1)` for :math:`d \le c`, **clamped to zero beyond c** (the
    unclamped cosine is periodic). Edges longer than the cutoff raise unless the radial basis says otherwise.
    Symmetry: E(3) invariant. Uses ``x_s`` and ``pos`` (``x_v`` and ``edge_s`` are ignored).

    Args:
        spec: input widths. hidden: node width. num_layers: interaction blocks. num_filters: filter width
        (default = hidden). cutoff: Angstrom. num_basis: Gaussians on [0, cutoff]. radial: a radial basis
        module mapping [E] -> [E, num_basis] (default ``GaussianRBF(cutoff, num_basis)``).
    """

    symmetry = "E(3)"

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 6, num_filters: int | None = None,
                 cutoff: float = 5.0, num_basis: int = 50, radial: nn.Module | None = None):
        super().__init__(spec)
        self.radial = radial or GaussianRBF(cutoff, num_basis)
        nb = self.radial.num_basis
        self.cutoff = float(getattr(self.radial, "cutoff", cutoff))
        self.hidden_s = hidden
        self.embedding = nn.Linear(spec.node_s, hidden)
        self.layers = nn.ModuleList([CFConvInteraction(hidden, num_filters or hidden, nb, self.cutoff)
                                     for _ in range(num_layers)])

    def embed(self, batch) -> NodeState:
        return NodeState(s=self.embedding(batch[F.X_S]), v=None, pos=batch[F.POS])

    def output(self, state: NodeState, batch) -> BackboneOutput:
        return BackboneOutput(s=state.s)

"""An unconstrained geometric message-passing network: messages see raw relative coordinates, so it is
translation invariant but *not* rotation invariant. Wrap it in
:class:`farfield.symmetry.FrameAveraging` to make it E(3) / SE(3) invariant (Puny et al., "Frame Averaging
for Invariant and Equivariant Network Design", ICLR 2022; Duval et al., "FAENet", ICML 2023)."""
from __future__ import annotations

import torch
from torch import nn

from farfield.data import fields as F
from farfield.models.base import Backbone, BackboneOutput, EdgeGeometry, InputSpec, NodeState, build_radial
from farfield.nn.mlp import MLP, aggregate, gather

__all__ = ["MPNN"]


class MPNNLayer(nn.Module):
    r""":math:`m_{ij} = \phi_m(h_i, h_j, x_j - x_i, e(d_{ij}), a_{ij})`, :math:`h_i \leftarrow
    \mathrm{LN}(h_i + \phi_h(h_i, \sum_j u_{ij} m_{ij}))`, node vector
    :math:`v_i = \sum_j u_{ij} (x_j - x_i)\,\phi_v(m_{ij})`, with the envelope weight :math:`u_{ij}`
    (``g.weight``; 1 when None)."""

    def __init__(self, hidden: int, edge_in: int, act: str):
        super().__init__()
        self.phi_m = MLP([2 * hidden + 3 + edge_in, hidden, hidden], act=act, last_act=True)
        self.phi_h = MLP([2 * hidden, hidden, hidden], act=act)
        self.phi_v = nn.Linear(hidden, 1)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, state: NodeState, g: EdgeGeometry) -> NodeState:
        src, tgt = g.edge_index
        parts = [gather(state.s, tgt), gather(state.s, src), g.vec, g.rbf]
        if g.edge_s is not None:
            parts.append(g.edge_s)
        m = self.phi_m(torch.cat(parts, dim=-1))
        v = aggregate(g.vec * self.phi_v(m), tgt, g.num_nodes, weight=g.weight).unsqueeze(1)
        m = aggregate(m, tgt, g.num_nodes, weight=g.weight)
        h = self.norm(state.s + self.phi_h(torch.cat([state.s, m], dim=-1)))
        return state.replace(s=h, v=v)


class MPNN(Backbone):
    r"""Unconstrained MPNN on relative coordinates (and raw ``x_v`` components, flattened into the node
    input). Declares ``T(3)`` (translation invariance, permutation equivariance only); the symmetry check
    confirms it is *not* rotation invariant, and :class:`~farfield.symmetry.FrameAveraging` makes it so.
    Every message is multiplied by the envelope weight of the radial basis (smooth at the cutoff;
    ``envelope=None`` for unweighted messages).

    Args: spec, hidden, num_layers, cutoff, num_basis, radial, act, envelope ('cosine' | 'polynomial' |
    None), long_cutoff (see :func:`~farfield.models.base.two_range_options`).
    """

    symmetry = "T(3)"

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 4, cutoff: float = 5.0,
                 num_basis: int = 16, radial: nn.Module | None = None, act: str = "silu",
                 envelope: str | None = "cosine", long_cutoff: float | None = None):
        super().__init__(spec)
        self.radial = build_radial("MPNN", radial, cutoff, num_basis, envelope, long_cutoff)
        self.hidden_s, self.hidden_v = hidden, 1
        self.embedding = nn.Linear(spec.node_s + 3 * spec.node_v, hidden)
        self.layers = nn.ModuleList([MPNNLayer(hidden, self.radial.num_basis + spec.edge_s, act)
                                     for _ in range(num_layers)])

    def embed(self, batch) -> NodeState:
        x = batch[F.X_S]
        if self.spec.node_v:
            x = torch.cat([x, batch[F.X_V].flatten(1)], dim=-1)
        pos = batch[F.POS]
        return NodeState(s=self.embedding(x), v=pos.new_zeros(pos.shape[0], 1, 3), pos=pos)

    def output(self, state: NodeState, batch) -> BackboneOutput:
        return BackboneOutput(s=state.s, v=state.v)

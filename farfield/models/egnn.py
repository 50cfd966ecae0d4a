"""E(n)-equivariant graph neural network (Satorras, Hoogeboom & Welling, "E(n) Equivariant Graph Neural
Networks", ICML 2021)."""
from __future__ import annotations

import torch
from torch import nn

from farfield.data import fields as F
from farfield.features.radial import GaussianRBF
from farfield.models.base import Backbone, BackboneOutput, EdgeGeometry, InputSpec, NodeState, default_radial
from farfield.nn.mlp import MLP, aggregate

__all__ = ["EGNN"]


class EGNNLayer(nn.Module):
    r""":math:`m_{ij} = \phi_e(h_i, h_j, \lVert x_i - x_j\rVert^2, e(d_{ij}), a_{ij})`,
    :math:`h_i \leftarrow h_i + \phi_h(h_i, \sum_j m_{ij})` and, with coordinate updates,
    :math:`x_i \leftarrow x_i + \tfrac{1}{|N(i)|}\sum_j (x_i - x_j)\, \phi_x(m_{ij})`. The last vector
    :math:`\sum_j (x_i - x_j)\phi_x(m_{ij})` is kept as the layer's node vector ``v`` [N, 1, 3]."""

    def __init__(self, hidden: int, edge_in: int, update_coords: bool, act: str = "silu"):
        super().__init__()
        self.phi_e = MLP([2 * hidden + 1 + edge_in, hidden, hidden], act=act, last_act=True)
        self.phi_h = MLP([2 * hidden, hidden, hidden], act=act)
        self.phi_x = MLP([hidden, hidden, 1], act=act)
        self.norm = nn.LayerNorm(hidden)
        self.update_coords = update_coords

    def forward(self, state: NodeState, g: EdgeGeometry) -> NodeState:
        src, tgt = g.edge_index
        h = state.s
        parts = [h[tgt], h[src], (g.dist ** 2).unsqueeze(-1)]
        if g.rbf is not None:
            parts.append(g.rbf)
        if g.edge_s is not None:
            parts.append(g.edge_s)
        m = self.phi_e(torch.cat(parts, dim=-1))                              # [E, hidden]
        dx = aggregate(-g.vec * self.phi_x(m), tgt, g.num_nodes, "mean")       # [N, 3]; -vec = x_i - x_j
        h = self.norm(h + self.phi_h(torch.cat([h, aggregate(m, tgt, g.num_nodes)], dim=-1)))
        pos = state.pos + dx if self.update_coords else state.pos
        return state.replace(s=h, v=dx.unsqueeze(1), pos=pos)


class EGNN(Backbone):
    r"""EGNN: invariant node features, messages from squared distances, optional equivariant coordinate
    updates (Satorras et al. 2021, eqs. 3-6). Layer norm after each residual update for stable depth.

    Coordinate updates are **off by default** (property prediction): then every layer sees the input
    geometry. With ``update_coords=True`` positions move each layer and the updated positions are returned
    in ``BackboneOutput.pos``. ``v`` [N, 1, 3] is the last layer's coordinate-update vector (equivariant).
    Symmetry: E(3). Uses ``x_s``, ``pos`` and ``edge_s`` (``x_v`` ignored).

    Args: spec, hidden, num_layers, cutoff, num_basis, radial (default Gaussian RBF on [0, cutoff]; pass
    ``radial=False`` for the original squared-distance-only messages), update_coords, act.
    """

    symmetry = "E(3)"

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 4, cutoff: float = 5.0,
                 num_basis: int = 16, radial: nn.Module | bool | None = None, update_coords: bool = False,
                 act: str = "silu"):
        super().__init__(spec)
        if radial is None and update_coords:
            # moving atoms can drift past the cutoff during a forward pass: treat them as at the cutoff
            radial = GaussianRBF(cutoff, num_basis, beyond="clamp")
        self.radial = None if radial is False else (radial or default_radial(cutoff, num_basis))
        edge_in = (self.radial.num_basis if self.radial is not None else 0) + spec.edge_s
        self.hidden_s, self.hidden_v = hidden, 1
        self.moves_positions = update_coords
        self.embedding = nn.Linear(spec.node_s, hidden)
        self.layers = nn.ModuleList([EGNNLayer(hidden, edge_in, update_coords, act) for _ in range(num_layers)])

    def embed(self, batch) -> NodeState:
        pos = batch[F.POS]
        return NodeState(s=self.embedding(batch[F.X_S]), v=pos.new_zeros(pos.shape[0], 1, 3), pos=pos)

    def output(self, state: NodeState, batch) -> BackboneOutput:
        return BackboneOutput(s=state.s, v=state.v, pos=state.pos if self.moves_positions else None)

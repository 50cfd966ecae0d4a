"""E(n)-equivariant graph neural network (Satorras, Hoogeboom & Welling, "E(n) Equivariant Graph Neural
Networks", ICML 2021)."""
from __future__ import annotations

import torch
from torch import nn

from farfield.data import fields as F
from farfield.errors import ConfigError
from farfield.features.radial import make_envelope
from farfield.models.base import (Backbone, BackboneOutput, EdgeGeometry, InputSpec, NodeState, build_radial,
                                  edge_geometry)
from farfield.nn.mlp import MLP, aggregate, gather

__all__ = ["EGNN"]


class EGNNLayer(nn.Module):
    r""":math:`m_{ij} = \phi_e(h_i, h_j, \lVert x_i - x_j\rVert^2, e(d_{ij}), a_{ij})`,
    :math:`h_i \leftarrow h_i + \phi_h(h_i, \sum_j u_{ij} m_{ij})` and, with coordinate updates,
    :math:`x_i \leftarrow x_i + \sum_j u_{ij} (x_i - x_j)\, \phi_x(m_{ij}) / c(\sum_j u_{ij})`, with the
    envelope weight :math:`u_{ij}` (``g.weight``; 1 when None, then :math:`c` = the neighbour count as in
    the paper's mean) and the smooth count :math:`c` of :func:`farfield.nn.smooth_count`. The last vector
    is kept as the layer's node vector ``v`` [N, 1, 3]."""

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
        parts = [gather(h, tgt), gather(h, src), (g.dist ** 2).unsqueeze(-1)]
        if g.rbf is not None:
            parts.append(g.rbf)
        if g.edge_s is not None:
            parts.append(g.edge_s)
        m = self.phi_e(torch.cat(parts, dim=-1))                              # [E, hidden]
        dx = aggregate(-g.vec * self.phi_x(m), tgt, g.num_nodes, "mean", weight=g.weight)   # [N, 3]; -vec = x_i - x_j
        h = self.norm(h + self.phi_h(torch.cat([h, aggregate(m, tgt, g.num_nodes, weight=g.weight)], dim=-1)))
        pos = state.pos + dx if self.update_coords else state.pos
        return state.replace(s=h, v=dx.unsqueeze(1), pos=pos)


class EGNN(Backbone):
    r"""EGNN: invariant node features, messages from squared distances, optional equivariant coordinate
    updates (Satorras et al. 2021, eqs. 3-6). Layer norm after each residual update for stable depth.

    Smooth at the cutoff by default: every message (feature and coordinate) is multiplied by the envelope
    weight of the radial basis (``envelope='cosine'``; or ``'polynomial'``, Gasteiger et al. 2020) and the
    coordinate update's mean uses a smooth weighted count. ``envelope=None`` gives the published,
    unweighted messages (eqs. 3-6; outputs jump when an atom crosses the cutoff of a radius graph).

    Coordinate updates are **off by default** (property prediction): then every layer sees the input
    geometry. With ``update_coords=True`` positions move each layer and the updated positions are returned
    in ``BackboneOutput.pos``; the graph and the envelope weights stay those of the input positions (edges
    that drift past the cutoff get zero radial features, not an error).
    ``v`` [N, 1, 3] is the last layer's coordinate-update vector (equivariant).
    Symmetry: E(3). Uses ``x_s``, ``pos`` and ``edge_s`` (``x_v`` ignored).

    Args: spec, hidden, num_layers, cutoff, num_basis, radial (default Gaussian RBF on [0, cutoff]; pass
    ``radial=False`` for the original squared-distance-only messages, still weighted by the envelope unless
    ``envelope=None``), update_coords, act, envelope, long_cutoff (see
    :func:`~farfield.models.base.two_range_options`).
    """

    symmetry = "E(3)"

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 4, cutoff: float = 5.0,
                 num_basis: int = 16, radial: nn.Module | bool | None = None, update_coords: bool = False,
                 act: str = "silu", envelope: str | None = "cosine", long_cutoff: float | None = None):
        super().__init__(spec)
        self.edge_envelope = None
        if radial is False:
            if long_cutoff is not None:
                raise ConfigError("EGNN: long_cutoff needs a radial basis (radial=False has none)")
            self.radial = None
            self.edge_envelope = make_envelope(envelope, cutoff)
        else:
            # moving atoms can drift past the cutoff during a forward pass: there they get zero features
            # (and zero envelope weight) instead of an error
            beyond = "zero" if update_coords and radial is None else "error"
            if update_coords and envelope is None and radial is None:
                beyond = "clamp"
            self.radial = build_radial("EGNN", radial or None, cutoff, num_basis, envelope, long_cutoff, beyond)
        edge_in = (self.radial.num_basis if self.radial is not None else 0) + spec.edge_s
        self.hidden_s, self.hidden_v = hidden, 1
        self.moves_positions = update_coords
        self.embedding = nn.Linear(spec.node_s, hidden)
        self.layers = nn.ModuleList([EGNNLayer(hidden, edge_in, update_coords, act) for _ in range(num_layers)])

    def _weight(self, g: EdgeGeometry):
        return self.edge_envelope(g.dist) if self.edge_envelope is not None else g.weight

    def geometry(self, state: NodeState, batch) -> EdgeGeometry:
        g = edge_geometry(state.pos, batch, self.radial)
        g.weight = self._weight(g)
        if self.moves_positions and state.pos is not batch[F.POS]:
            # the graph is built on the input positions: its edges keep the envelope weight of their input
            # length in every layer, so an edge entering the graph at the cutoff enters with weight 0
            g.weight = self._weight(edge_geometry(batch[F.POS], batch, self.radial))
        return g

    def embed(self, batch) -> NodeState:
        pos = batch[F.POS]
        return NodeState(s=self.embedding(batch[F.X_S]), v=pos.new_zeros(pos.shape[0], 1, 3), pos=pos)

    def output(self, state: NodeState, batch) -> BackboneOutput:
        return BackboneOutput(s=state.s, v=state.v, pos=state.pos if self.moves_positions else None)

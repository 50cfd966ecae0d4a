"""GVP-GNN (Jing, Eismann, Suriana, Townshend & Dror, "Learning from Protein Structure with Geometric
Vector Perceptrons", ICLR 2021; Jing et al., "Equivariant Graph Neural Networks for 3D Macromolecular
Structure", 2021 — the vector-gated version)."""
from __future__ import annotations

import torch
from torch import nn

from farfield.data import fields as F
from farfield.models.base import Backbone, BackboneOutput, EdgeGeometry, InputSpec, NodeState, build_radial
from farfield.nn.gvp import GVP, EdgeSegments, GVPConvLayer, GVPLayerNorm

__all__ = ["GVPGNN"]


class GVPGNN(Backbone):
    r"""GVP-GNN with vector gating, as in methods reference s.1 (gvp-pytorch's ATOM3D / CPD models).

    Embedding: ``(s, V) = GVP_{no act}(LN(x_s, x_v))``, edges ``(e_s, E_v) = GVP_{no act}(LN([rbf(d_ij);
    edge_s], unit(x_j - x_i)))``. Each layer is a post-norm :class:`~farfield.nn.GVPConvLayer`:
    3-GVP messages on ``[s_j, e_ij, s_i]``, mean aggregation, (4 ns, 2 nv) feed-forward, dropout on
    scalars and whole vector channels. Output: ``s = GVP_{->(ns, 0)}(LN(h))`` (vector norms folded into
    scalars, as in the reference readout) and ``v`` = the final layer-normed vectors [N, nv, 3].
    At atom level nodes start without vectors (vi = 0): geometry enters through the edge vectors.

    Smooth at the cutoff by default: messages are multiplied by the envelope weight of the radial basis
    and averaged with the smooth weighted count of :func:`farfield.nn.mlp.aggregate` (for neighbours well inside
    the cutoff, :math:`\sum_j u_{ij} m_{ij} / c(\sum_j u_{ij})` is the plain mean). ``envelope=None`` gives the
    published plain mean (outputs jump when an atom crosses the cutoff of a radius graph).

    Symmetry: E(3) (O(3)-equivariant: no cross products).

    Args:
        spec: input widths. node_dims: (ns, nv) hidden (default (100, 16), the ATOM3D setting).
        edge_dims: (es, ev) hidden (default (32, 1)). num_layers: GVPConvLayers (default 5). cutoff,
        num_basis: Gaussian RBF on [0, cutoff] unless ``radial`` is given. dropout: 0.1.
        activations: (scalar, vector) activation names; ATOM3D uses ('relu', None).
        n_message / n_feedforward: GVPs per message / feed-forward (3 / 2).
        envelope: 'cosine' | 'polynomial' | None. long_cutoff: see
        :func:`~farfield.models.base.two_range_options`.
    """

    symmetry = "E(3)"

    def __init__(self, spec: InputSpec, node_dims: tuple[int, int] = (100, 16), edge_dims: tuple[int, int] = (32, 1),
                 num_layers: int = 5, cutoff: float = 4.5, num_basis: int = 16, radial: nn.Module | None = None,
                 dropout: float = 0.1, activations: tuple[str | None, str | None] = ("relu", None),
                 vector_gate: bool = True, n_message: int = 3, n_feedforward: int = 2,
                 envelope: str | None = "cosine", long_cutoff: float | None = None):
        super().__init__(spec)
        self.radial = build_radial("GVPGNN", radial, cutoff, num_basis, envelope, long_cutoff)
        node_in = (spec.node_s, spec.node_v)
        edge_in = (self.radial.num_basis + spec.edge_s, 1)
        self.hidden_s, self.hidden_v = node_dims
        self.node_in = nn.ModuleDict({"norm": GVPLayerNorm(node_in),
                                      "gvp": GVP(node_in, node_dims, (None, None), vector_gate)})
        self.edge_in = nn.ModuleDict({"norm": GVPLayerNorm(edge_in),
                                      "gvp": GVP(edge_in, edge_dims, (None, None), vector_gate)})
        self.layers = nn.ModuleList([GVPConvLayer(node_dims, edge_dims, n_message, n_feedforward, dropout,
                                                  activations, vector_gate) for _ in range(num_layers)])
        self.out_norm = GVPLayerNorm(node_dims)
        self.out = GVP(node_dims, (node_dims[0], 0), activations, vector_gate)

    def embed(self, batch) -> NodeState:
        xv = batch[F.X_V] if self.spec.node_v else None
        s, v = self.node_in["gvp"](self.node_in["norm"]((batch[F.X_S], xv)))
        return NodeState(s=s, v=v, pos=batch[F.POS])

    def geometry(self, state: NodeState, batch) -> EdgeGeometry:
        g = super().geometry(state, batch)
        es = g.rbf if g.edge_s is None else torch.cat([g.rbf, g.edge_s], dim=-1)
        g.edge_attr = self.edge_in["gvp"](self.edge_in["norm"]((es, g.unit.unsqueeze(1))))
        # incoming-edge structure and neighbour counts, once per forward for every layer's mean
        g.segments = EdgeSegments(g.edge_index[1], state.s.shape[0], g.weight, state.s)
        return g

    def layer(self, i: int, state: NodeState, g: EdgeGeometry) -> NodeState:
        s, v = self.layers[i]((state.s, state.v), g.edge_index, g.edge_attr, g.weight, getattr(g, "segments", None))
        return state.replace(s=s, v=v)

    def output(self, state: NodeState, batch) -> BackboneOutput:
        s, v = self.out_norm((state.s, state.v))
        return BackboneOutput(s=self.out((s, v))[0], v=v)

"""Steerable E(3) GNN in the spirit of SEGNN (Brandstetter, Hesselink, van der Pol, Bekkers & Welling,
"Geometric and Physical Quantities improve E(3) Equivariant Message Passing", ICLR 2022), on e3nn."""
from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from farfield.data import fields as F
from farfield.errors import ConfigError
from farfield.models._irreps import E3nnPrecision, check_max_l, hidden_irreps, pack, sh_irreps, split_irreps, unpack
from farfield.models.base import (Backbone, BackboneOutput, EdgeGeometry, InputSpec, NodeState, at_least_float32,
                                  build_radial, full_precision)
from farfield.models.tfn import embed_input, gate_for, input_irreps
from farfield.nn.mlp import aggregate, gather

__all__ = ["SEGNN", "SteerableLinear"]


class SteerableLinear(nn.Module):
    r"""Steerable linear layer conditioned on an attribute: :math:`W_{a}(h) = h \otimes_{W} a` (a fully
    connected tensor product with learned, shared weights), optionally followed by a gated nonlinearity.
    With :math:`a = Y(\hat r)` the scalar and geometric channels exchange orientation, not only norms."""

    def __init__(self, irreps_in: o3.Irreps, irreps_attr: o3.Irreps, irreps_out: o3.Irreps, gate: bool):
        super().__init__()
        self.gate = gate_for(irreps_out) if gate else None
        target = self.gate.irreps_in if gate else irreps_out
        self.tp = o3.FullyConnectedTensorProduct(irreps_in, irreps_attr, target)

    def forward(self, x, attr):
        # e3nn's tensor products take one dtype for inputs and weights: under mixed-precision autocast they run
        # in float32 with autocast off (float64 inputs stay float64)
        x, attr = at_least_float32(x), at_least_float32(attr)
        with full_precision(x):
            y = self.tp(x, attr.to(x.dtype))
            return self.gate(y) if self.gate is not None else y


class SEGNNLayer(nn.Module):
    r"""Message :math:`m_{ij} = \phi_m(h_i \| h_j \| e(d_{ij});\, a_{ij})` (two steerable linear layers with
    gates, conditioned on :math:`a_{ij} = Y(\hat r_{ij})`), aggregation
    :math:`m_i = \frac{1}{\bar n}\sum_j u_{ij} m_{ij}` (:math:`u_{ij}` the envelope weight ``g.weight``, 1
    when None), update :math:`h_i \leftarrow h_i + \phi_u(h_i \| m_i;\, a_i)` with node attribute
    :math:`a_i = \mathrm{mean}_j Y(\hat r_{ij})` (smooth weighted mean with an envelope)."""

    def __init__(self, irreps: o3.Irreps, irreps_attr: o3.Irreps, num_basis: int, avg_neighbours: float):
        super().__init__()
        edge_in = irreps + irreps + o3.Irreps(f"{num_basis}x0e")     # [h_i | h_j | rbf], not simplified
        self.msg1 = SteerableLinear(edge_in, irreps_attr, irreps, gate=True)
        self.msg2 = SteerableLinear(irreps, irreps_attr, irreps, gate=True)
        upd_in = irreps + irreps
        self.upd1 = SteerableLinear(upd_in, irreps_attr, irreps, gate=True)
        self.upd2 = SteerableLinear(irreps, irreps_attr, irreps, gate=False)
        self.irreps = irreps
        self.avg = float(avg_neighbours)

    def forward(self, x, g: EdgeGeometry, a_edge, a_node):
        src, tgt = g.edge_index
        e = torch.cat([gather(x, tgt), gather(x, src), g.rbf], dim=-1)
        m = self.msg2(self.msg1(e, a_edge), a_edge)
        m = aggregate(m, tgt, g.num_nodes, weight=g.weight) / self.avg
        u = torch.cat([x, m], dim=-1)
        return x + self.upd2(self.upd1(u, a_node), a_node)


class SEGNN(E3nnPrecision, Backbone):
    r"""Steerable E(3)-equivariant GNN (SEGNN-like) on e3nn.

    Node features carry ``channels`` copies of l = 0..``max_l`` (parity :math:`(-1)^l`). Every linear map
    is a steerable linear layer conditioned on spherical harmonics: messages on the edge attribute
    :math:`Y(\hat r_{ij})`, updates on the node attribute :math:`\mathrm{mean}_j Y(\hat r_{ij})` (SEGNN eqs. 8-9),
    with gated nonlinearities. Unlike GVP, where vectors influence scalars only through their norms, the
    tensor products let scalar and geometric channels exchange orientation.

    Smooth at the cutoff by default: messages are multiplied by the envelope weight of the radial basis and
    the node attribute is the smooth weighted mean of :func:`farfield.nn.mlp.aggregate`. ``envelope=None`` gives
    the published plain sums and means (outputs jump when an atom crosses the cutoff of a radius graph).

    Symmetry: E(3). Outputs ``s`` (l = 0), ``v`` (l = 1, x y z), ``t`` (l >= 2). Uses ``x_s``, ``x_v``, ``pos``.

    Args: spec, channels, max_l (1..5, also the attribute order), num_layers, cutoff, num_basis, radial,
    avg_neighbours, envelope ('cosine' | 'polynomial' | None), long_cutoff (see
    :func:`~farfield.models.base.two_range_options`).
    """

    symmetry = "E(3)"

    def __init__(self, spec: InputSpec, channels: int = 16, max_l: int = 2, num_layers: int = 3,
                 cutoff: float = 5.0, num_basis: int = 16, radial: nn.Module | None = None,
                 avg_neighbours: float = 10.0, envelope: str | None = "cosine", long_cutoff: float | None = None):
        super().__init__(spec)
        max_l = check_max_l(max_l)
        if max_l < 1:
            raise ConfigError("SEGNN: max_l must be >= 1")
        self.radial = build_radial("SEGNN", radial, cutoff, num_basis, envelope, long_cutoff)
        self.irreps = hidden_irreps(channels, max_l, parity=True)
        self.irreps_sh = sh_irreps(max_l)
        self.hidden_s, self.hidden_v, self.irreps_t = split_irreps(self.irreps)
        self.embedding = SteerableLinear(input_irreps(spec), self.irreps_sh, self.irreps, gate=False)
        self.layers = nn.ModuleList([SEGNNLayer(self.irreps, self.irreps_sh, self.radial.num_basis,
                                                avg_neighbours) for _ in range(num_layers)])

    def geometry(self, state: NodeState, batch) -> EdgeGeometry:
        g = super().geometry(state, batch)
        g.sh = o3.spherical_harmonics(self.irreps_sh, g.unit, normalize=False, normalization="component")
        mean_sh = aggregate(g.sh, g.edge_index[1], g.num_nodes, "mean", weight=g.weight)
        # l = 0 attribute: 1 for every node, isolated ones included
        g.node_attr = torch.cat([torch.ones_like(mean_sh[:, :1]), mean_sh[:, 1:]], dim=-1)
        return g

    def embed(self, batch) -> NodeState:
        # the embedding is conditioned on the node attribute, so it needs the geometry
        g = self.geometry(NodeState(s=None, v=None, pos=batch[F.POS]), batch)
        s, v, t = unpack(self.embedding(embed_input(batch, self.spec), g.node_attr), self.irreps)
        return NodeState(s=s, v=v, pos=batch[F.POS], t=t)

    def layer(self, i: int, state: NodeState, g: EdgeGeometry) -> NodeState:
        x = self.layers[i](pack(state.s, state.v, state.t), g, g.sh, g.node_attr)
        s, v, t = unpack(x, self.irreps)
        return state.replace(s=s, v=v, t=t)

    def output(self, state: NodeState, batch) -> BackboneOutput:
        return BackboneOutput(s=state.s, v=state.v, t=state.t)

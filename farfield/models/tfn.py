"""Tensor-field network on e3nn (Thomas et al., "Tensor field networks", 2018), with optional higher body
order from tensor products of the aggregated features, in the spirit of MACE (Batatia et al., "MACE: Higher
Order Equivariant Message Passing Neural Networks", NeurIPS 2022) but **not** MACE: no symmetric
contraction, no element-dependent product weights, a constant neighbour normaliser. Registered as
``tfn_products`` (correlation 3); the name ``mace`` is reserved for a faithful implementation."""
from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn

from farfield.data import fields as F
from farfield.errors import ConfigError
from farfield.models._irreps import E3nnPrecision, check_max_l, hidden_irreps, pack, sh_irreps, split_irreps, unpack
from farfield.models.base import (Backbone, BackboneOutput, EdgeGeometry, InputSpec, NodeState, at_least_float32,
                                  build_radial, full_precision)
from farfield.nn.mlp import MLP, aggregate, gather

__all__ = ["TFN", "gate_for", "input_irreps", "embed_input"]


def gate_for(target: o3.Irreps) -> Gate:
    """e3nn Gate producing ``target``: even scalars through SiLU, odd scalars through tanh (odd function,
    keeps parity), every l > 0 irrep scaled by the sigmoid of its own even scalar gate."""
    scalars = o3.Irreps([(m, ir) for m, ir in target if ir.l == 0])
    gated = o3.Irreps([(m, ir) for m, ir in target if ir.l > 0])
    acts = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
    gates = o3.Irreps([(m, (0, 1)) for m, _ in gated])
    return Gate(scalars, acts, gates, [torch.sigmoid] * len(gates), gated)


def input_irreps(spec: InputSpec) -> o3.Irreps:
    return o3.Irreps([(spec.node_s, (0, 1))] + ([(spec.node_v, (1, -1))] if spec.node_v else []))


def embed_input(batch, spec: InputSpec):
    xs = batch[F.X_S]
    return pack(xs, batch[F.X_V] if spec.node_v else None, None)


class TFNLayer(nn.Module):
    r"""Interaction: :math:`A_i = \frac{1}{\bar n}\sum_j u_{ij} R(d_{ij}) \,(W h_j \otimes Y(\hat r_{ij}))`
    (per-edge weights from a radial MLP, channel-wise 'uvu' paths; :math:`u_{ij}` the envelope weight
    ``g.weight``, 1 when None), then with ``correlation`` :math:`\nu > 1` the
    products (fully connected tensor products, not MACE's symmetric contraction) :math:`B^{(k)} = B^{(k-1)} \otimes A` up to order :math:`\nu` (body order
    :math:`\nu + 1`), a gated nonlinearity and a residual self-connection:
    :math:`h_i \leftarrow \mathrm{Gate}(W_A A_i + \sum_k W_k B_i^{(k)}) + W_{sc} h_i`."""

    def __init__(self, irreps: o3.Irreps, irreps_sh: o3.Irreps, num_basis: int, correlation: int,
                 avg_neighbours: float, radial_hidden: int = 64):
        super().__init__()
        self.gate = gate_for(irreps)
        target = self.gate.irreps_in
        self.up = o3.Linear(irreps, irreps)
        mid, instr = [], []
        for i1, (mul, ir1) in enumerate(irreps):
            for i2, (_, ir2) in enumerate(irreps_sh):
                for ir in ir1 * ir2:
                    if ir in [r for _, r in irreps]:
                        instr.append((i1, i2, len(mid), "uvu", True))
                        mid.append((mul, ir))
        mid = o3.Irreps(mid)
        self.tp = o3.TensorProduct(irreps, irreps_sh, mid, instr, shared_weights=False, internal_weights=False)
        self.radial = MLP([num_basis, radial_hidden, radial_hidden, self.tp.weight_numel], act="silu")
        self.lin = o3.Linear(mid, irreps)
        self.products = nn.ModuleList()
        for _ in range(correlation - 1):
            self.products.append(o3.FullyConnectedTensorProduct(irreps, irreps, irreps))
        self.out = o3.Linear(irreps, target)
        self.sc = o3.Linear(irreps, irreps)
        self.avg = float(avg_neighbours)

    def forward(self, x, g: EdgeGeometry, sh):
        src, tgt = g.edge_index
        msg = self.tp(gather(self.up(x), src), sh, self.radial(g.rbf))
        a = self.lin(aggregate(msg, tgt, g.num_nodes, weight=g.weight) / self.avg)
        b, total = a, a
        for tp in self.products:
            b = tp(b, a)
            total = total + b
        return self.gate(self.out(total)) + self.sc(x)


class TFN(E3nnPrecision, Backbone):
    r"""Spherical-basis tensor-field network (e3nn; runs on CPU), optionally with tensor-product correlations
    of the aggregated features (higher body order, MACE-like; registered as ``tfn_products``).

    Hidden features carry ``channels`` copies of every degree l = 0..``max_l``; messages are tensor
    products of neighbour features with spherical harmonics :math:`Y^{(l)}(\hat r_{ij})` weighted by
    learned radial functions (see :class:`TFNLayer`). With ``parity=True`` features have parity
    :math:`(-1)^l` and the model is E(3)-equivariant (cannot tell mirror images apart); with
    ``parity=False`` both parities of every l are carried, cross-product-like paths are allowed, and the
    model is SE(3)-equivariant (chirality-aware: ``s`` includes pseudo-scalars). ``correlation`` > 1 takes
    products of the aggregated features (body order correlation + 1, as MACE, but with fully connected
    tensor products instead of MACE's symmetric contraction and element-dependent weights).

    Smooth at the cutoff by default: every message is multiplied by the envelope weight of the radial basis
    (``envelope='cosine'``; ``'polynomial'`` as in Gasteiger et al. 2020 / MACE). ``envelope=None`` gives
    the published TFN messages, whose radial MLP biases and spherical harmonics of the unit vector reach
    the sum unweighted (outputs jump when an atom crosses the cutoff of a radius graph).

    Outputs: ``s`` the scalar channels, ``v`` the l = 1 channels in x, y, z, ``t`` the l >= 2 channels
    (e3nn layout, irreps ``self.irreps_t``). Uses ``x_s``, ``x_v``, ``pos``.

    Args: spec, channels, max_l (1..5), num_layers, parity, correlation (1 = TFN, 2-4 = tensor-product
    correlations), cutoff, num_basis, radial, avg_neighbours (constant normaliser of the neighbour sum),
    envelope ('cosine' | 'polynomial' | None), long_cutoff (see :func:`~farfield.models.base.two_range_options`).
    """

    def __init__(self, spec: InputSpec, channels: int = 16, max_l: int = 2, num_layers: int = 3,
                 parity: bool = True, correlation: int = 1, cutoff: float = 5.0, num_basis: int = 16,
                 radial: nn.Module | None = None, avg_neighbours: float = 10.0, envelope: str | None = "cosine",
                 long_cutoff: float | None = None):
        super().__init__(spec)
        max_l = check_max_l(max_l)
        if max_l < 1:
            raise ConfigError("TFN: max_l must be >= 1")
        if not 1 <= correlation <= 4:
            raise ConfigError(f"TFN: correlation must be 1..4, got {correlation}")
        self.symmetry = "E(3)" if parity else "SE(3)"
        self.radial = build_radial("TFN", radial, cutoff, num_basis, envelope, long_cutoff)
        self.irreps = hidden_irreps(channels, max_l, parity)
        self.irreps_sh = sh_irreps(max_l)
        self.hidden_s, self.hidden_v, self.irreps_t = split_irreps(self.irreps)
        self.embedding = o3.Linear(input_irreps(spec), self.irreps)
        self.layers = nn.ModuleList([TFNLayer(self.irreps, self.irreps_sh, self.radial.num_basis, correlation,
                                              avg_neighbours) for _ in range(num_layers)])

    def embed(self, batch) -> NodeState:
        inp = at_least_float32(embed_input(batch, self.spec))
        with full_precision(inp):          # e3nn takes one dtype for inputs and weights: float32 under autocast
            s, v, t = unpack(self.embedding(inp), self.irreps)
        return NodeState(s=s, v=v, pos=batch[F.POS], t=t)

    def geometry(self, state: NodeState, batch) -> EdgeGeometry:
        g = super().geometry(state, batch)
        g.sh = o3.spherical_harmonics(self.irreps_sh, g.unit, normalize=False, normalization="component")
        return g

    def layer(self, i: int, state: NodeState, g: EdgeGeometry) -> NodeState:
        x = at_least_float32(pack(state.s, state.v, state.t))
        if x.dtype != g.rbf.dtype or x.dtype != g.sh.dtype:
            g.rbf, g.sh = g.rbf.to(x.dtype), g.sh.to(x.dtype)
        with full_precision(x):            # e3nn tensor products in float32 under run.precision=bf16-mixed
            x = self.layers[i](x, g, g.sh)
        s, v, t = unpack(x, self.irreps)
        return state.replace(s=s, v=v, t=t)

    def output(self, state: NodeState, batch) -> BackboneOutput:
        return BackboneOutput(s=state.s, v=state.v, t=state.t)

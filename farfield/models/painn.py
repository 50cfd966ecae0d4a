"""PaiNN (Schuett, Unke & Gastegger, "Equivariant message passing for the prediction of tensorial
properties and molecular spectra", ICML 2021)."""
from __future__ import annotations

import torch
from torch import nn

from farfield.data import fields as F
from farfield.models.base import Backbone, EdgeGeometry, InputSpec, NodeState, build_radial
from farfield.nn.gvp import vector_norm
from farfield.nn.mlp import MLP, aggregate, gather

__all__ = ["PaiNN"]


class PaiNNLayer(nn.Module):
    r"""One message + update block (PaiNN eqs. 7-12).

    Message: :math:`[a, b, c] = \phi(s_j) \odot W(e(d_{ij}))\,u(d_{ij})` (``u`` = ``g.weight``, the envelope),
    :math:`\Delta s_i = \sum_j a`, :math:`\Delta v_i = \sum_j b \odot v_j + c \odot \hat r_{ij}`.
    Update: :math:`[a_{vv}, a_{sv}, a_{ss}] = \mathrm{MLP}([s_i, \lVert V v_i\rVert])`,
    :math:`\Delta v_i = a_{vv} \odot U v_i`, :math:`\Delta s_i = a_{ss} + a_{sv} \odot \langle U v_i, V v_i\rangle`.
    """

    def __init__(self, hidden: int, num_basis: int, act: str = "silu"):
        super().__init__()
        self.F = hidden
        self.phi = MLP([hidden, hidden, 3 * hidden], act=act)
        self.W = nn.Linear(num_basis, 3 * hidden)
        self.U = nn.Linear(hidden, hidden, bias=False)
        self.V = nn.Linear(hidden, hidden, bias=False)
        self.update = MLP([2 * hidden, hidden, 3 * hidden], act=act)

    def forward(self, state: NodeState, g: EdgeGeometry) -> NodeState:
        src, tgt = g.edge_index
        s, v, n = state.s, state.v, g.num_nodes
        x = gather(self.phi(s), src) * self.W(g.rbf)                                    # [E, 3F]
        if g.weight is not None:
            x = x * g.weight.unsqueeze(-1)
        a, b, c = torch.split(x, self.F, dim=-1)
        s = s + aggregate(a, tgt, n)
        dv = b.unsqueeze(-1) * gather(v, src) + c.unsqueeze(-1) * g.unit.unsqueeze(1)   # [E, F, 3]
        v = v + aggregate(dv, tgt, n)
        uv = self.U(v.transpose(-1, -2)).transpose(-1, -2)                               # [N, F, 3]
        vv = self.V(v.transpose(-1, -2)).transpose(-1, -2)
        avv, asv, ass = torch.split(self.update(torch.cat([s, vector_norm(vv)], dim=-1)), self.F, dim=-1)
        v = v + avv.unsqueeze(-1) * uv
        s = s + ass + asv * (uv * vv).sum(-1)
        return state.replace(s=s, v=v)


class PaiNN(Backbone):
    r"""PaiNN: polarizable atom interaction neural network with scalar and vector features of equal width F.

    Vectors start at zero (atom level) or as a channel-linear map of ``x_v`` (residue level). Filters use a
    radial basis times the envelope of the basis (cosine cutoff by default, as in the paper; zero beyond it),
    which multiplies every part of the message. Symmetry: E(3). Uses ``x_s``, ``x_v``, ``pos``.

    Args: spec, hidden (F), num_layers, cutoff, num_basis (Gaussians; the paper uses 20 sinc functions),
    radial, act, envelope ('cosine' | 'polynomial' | None), long_cutoff (see
    :func:`~farfield.models.base.two_range_options`).
    """

    symmetry = "E(3)"

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 3, cutoff: float = 5.0,
                 num_basis: int = 20, radial: nn.Module | None = None, act: str = "silu",
                 envelope: str | None = "cosine", long_cutoff: float | None = None):
        super().__init__(spec)
        self.radial = build_radial("PaiNN", radial, cutoff, num_basis, envelope, long_cutoff)
        self.hidden_s = self.hidden_v = hidden
        self.embedding = nn.Linear(spec.node_s, hidden)
        self.vec_in = nn.Linear(spec.node_v, hidden, bias=False) if spec.node_v else None
        self.layers = nn.ModuleList([PaiNNLayer(hidden, self.radial.num_basis, act) for _ in range(num_layers)])

    def embed(self, batch) -> NodeState:
        s = self.embedding(batch[F.X_S])
        if self.vec_in is not None:
            v = self.vec_in(batch[F.X_V].transpose(-1, -2)).transpose(-1, -2)
        else:
            v = s.new_zeros(s.shape[0], self.hidden_v, 3)
        return NodeState(s=s, v=v, pos=batch[F.POS])

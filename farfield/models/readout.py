"""Graph-level readouts: pooling of invariant scalars, group invariant global pooling (:class:`GIGP`) and an
equivariant pooling of vectors.

Shapes: node scalars ``s`` [N, d], vectors ``v`` [N, c, 3], ``batch`` [N] -> [B, d] / [B, c_out, 3].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from farfield.errors import ConfigError
from farfield.nn.mlp import MLP

__all__ = ["POOLINGS", "TASK_POOLINGS", "pool", "ScalarReadout", "GIGP", "VectorReadout"]

#: the scatter reductions of :func:`pool`
POOLINGS = ("sum", "mean", "max")
#: the graph readouts ``task.pooling`` accepts: the scatter reductions and ``gigp`` (:class:`GIGP`, which also
#: needs the node coordinates, so it is not a :func:`pool` reduction)
TASK_POOLINGS = POOLINGS + ("gigp",)


def pool(x: Tensor, batch: Tensor | None, reduce: str = "mean", num_graphs: int | None = None) -> Tensor:
    """Pool node rows of ``x`` [N, ...] per graph -> [B, ...] (sum / mean / max). A bfloat16 / float16 ``x``
    (under mixed-precision autocast) is pooled in float32: a sum over hundreds of nodes in bfloat16 would carry
    a relative error of order 2^-9 per addition."""
    from farfield.models.base import at_least_float32
    x = at_least_float32(x)
    if reduce not in POOLINGS:
        raise ConfigError(f"pooling must be one of {POOLINGS}, got {reduce!r}")
    if batch is None:
        batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    return scatter(x, batch, dim=0, dim_size=num_graphs, reduce=reduce)


class ScalarReadout(nn.Module):
    """Invariant graph readout: ``pool(s)`` with sum, mean or max."""

    def __init__(self, reduce: str = "mean"):
        super().__init__()
        if reduce not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {reduce!r}")
        self.reduce = reduce

    def forward(self, s: Tensor, batch: Tensor | None, num_graphs: int | None = None) -> Tensor:
        return pool(s, batch, self.reduce, num_graphs)


class GIGP(nn.Module):
    r"""Group invariant global pooling (GIGP; Bujel, Gideoni, Joshi and Lio, "Group Invariant Global Pooling",
    ICML 2023 TAG-ML workshop, arXiv:2305.19207) for point clouds under E(3) acting about each graph's centroid.

    GIGP replaces one global sum over a graph's elements by a sum over the group's *orbits*: the elements of each
    orbit are aggregated separately, every orbit aggregate goes through a network shared by all orbits and
    conditioned on the orbit's invariant, and the results are summed over orbits. Under rotations and
    reflections about the centroid :math:`c_b = \frac{1}{n_b} \sum_{i \in b} x_i` of graph :math:`b` the orbit
    of node :math:`i` is the sphere through it, whose invariant is the distance :math:`r_i = |x_i - c_b|`.
    The details below are farfield's reading of the paper (its full text may differ):

    * orbits are radial shells with centres :math:`\mu_k = k \cdot w`, :math:`k = 0, \dots, K - 1`
      (``width`` :math:`w`, ``num_orbits`` :math:`K`; they cover :math:`r` from 0 to about :math:`K w`; nodes
      farther out belong to the outermost shell);
    * soft membership :math:`w_{ik} = \mathrm{softmax}_k\!\big(-(r_i - \mu_k)^2 / (2 \sigma^2)\big)`,
      :math:`\sigma = w / 2`, so :math:`\sum_k w_{ik} = 1` for every node and the readout is continuous (indeed
      smooth) in the coordinates; hard shells are the limit :math:`\sigma \to 0`;
    * orbit aggregates :math:`a_{bk} = \sum_{i \in b} w_{ik} z_i` of the pooled node features :math:`z_i`;
    * output :math:`y_b = \sum_k \big[a_{bk} + \phi([a_{bk}, e_k])\big]` with :math:`e_k` the one-hot code of
      orbit :math:`k` and :math:`\phi` an MLP ``dim + K -> hidden -> dim`` (SiLU) whose last layer is
      zero-initialised.

    Because :math:`\sum_k a_{bk} = \sum_{i \in b} z_i`, GIGP equals sum pooling exactly at initialisation and
    whenever :math:`\phi = 0`; with one orbit (``num_orbits=1``) and :math:`\phi = 0` it is sum pooling (the
    paper's reduction to standard global pooling when the orbit structure is ignored). Like sum pooling, its
    output grows with the number of nodes (suited to extensive targets). :math:`r_i` is invariant to rotations,
    reflections and translations of the graph and to permutations of its nodes, so :math:`y_b` is too; graphs
    of a batch are pooled independently (per-graph scatters), so batching is exact.

    Shapes: ``z`` [N, dim], ``pos`` [N, 3], ``batch`` [N] (None: one graph) -> [B, dim]."""

    def __init__(self, dim: int, num_orbits: int = 16, width: float = 1.0, hidden: int | None = None):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"GIGP: dim must be a positive integer, got {dim!r}")
        if not isinstance(num_orbits, int) or num_orbits < 1:
            raise ConfigError(f"GIGP: num_orbits must be a positive integer, got {num_orbits!r}")
        if not width > 0:
            raise ConfigError(f"GIGP: width must be > 0, got {width!r}")
        self.dim, self.num_orbits, self.width = int(dim), int(num_orbits), float(width)
        self.sigma = self.width / 2
        hidden = int(hidden) if hidden is not None else max(self.dim, 32)
        self.register_buffer("centres", torch.arange(self.num_orbits, dtype=torch.get_default_dtype()) * self.width,
                             persistent=False)
        self.phi = MLP([self.dim + self.num_orbits, hidden, self.dim], act="silu")
        last = self.phi[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def memberships(self, pos: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Soft orbit memberships :math:`w_{ik}` [N, K] (rows sum to 1) from the distances to the centroids."""
        centroid = scatter(pos, batch, dim=0, dim_size=num_graphs, reduce="mean")       # [B, 3]
        r = torch.linalg.vector_norm(pos - centroid.index_select(0, batch), dim=-1)     # [N]
        mu = self.centres.to(r.dtype)
        return torch.softmax(-(r.unsqueeze(-1) - mu) ** 2 / (2 * self.sigma ** 2), dim=-1)

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor | None, num_graphs: int | None = None) -> Tensor:
        if z.dim() != 2 or z.shape[-1] != self.dim:
            raise ConfigError(f"GIGP: expected node features [N, {self.dim}], got {tuple(z.shape)}")
        if pos is None:
            raise ConfigError("GIGP (task.pooling=gigp) needs 3D coordinates (pos) of the nodes")
        if pos.shape != (z.shape[0], 3):
            raise ConfigError(f"GIGP: expected pos [{z.shape[0]}, 3], got {tuple(pos.shape)}")
        if batch is None:
            batch = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        w = self.memberships(pos, batch, num_graphs).to(z.dtype)                        # [N, K]
        a = scatter(w.unsqueeze(-1) * z.unsqueeze(1), batch, dim=0, dim_size=num_graphs, reduce="sum")  # [B, K, d]
        code = torch.eye(self.num_orbits, dtype=z.dtype, device=z.device).expand(num_graphs, -1, -1)
        return (a + self.phi(torch.cat([a, code], dim=-1))).sum(dim=1)                  # [B, d]


class VectorReadout(nn.Module):
    r"""Equivariant graph readout of vectors: :math:`V_G = \mathrm{pool}_i\, (W v_i) \odot g(s_i)` with a
    channel-mixing linear map :math:`W` (no bias) and invariant gates :math:`g = \mathrm{MLP}(s_i)`; rotating
    the input rotates :math:`V_G`. Shapes: s [N, d], v [N, c_in, 3] -> [B, c_out, 3]. Pooling sum or mean."""

    def __init__(self, scalar_dim: int, in_channels: int, out_channels: int = 1, reduce: str = "sum"):
        super().__init__()
        if reduce not in ("sum", "mean"):
            raise ConfigError(f"vector pooling must be 'sum' or 'mean' (max is not equivariant), got {reduce!r}")
        self.W = nn.Linear(in_channels, out_channels, bias=False)
        self.gate = MLP([scalar_dim, scalar_dim, out_channels], act="silu")
        self.reduce = reduce

    def forward(self, s: Tensor, v: Tensor, batch: Tensor | None, num_graphs: int | None = None) -> Tensor:
        wv = self.W(v.transpose(-1, -2)).transpose(-1, -2)          # [N, c_out, 3]
        return pool(wv * self.gate(s).unsqueeze(-1), batch, self.reduce, num_graphs)

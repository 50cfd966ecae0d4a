"""Graph-level readouts: pooling of invariant scalars and an equivariant pooling of vectors.

Shapes: node scalars ``s`` [N, d], vectors ``v`` [N, c, 3], ``batch`` [N] -> [B, d] / [B, c_out, 3].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from farfield.errors import ConfigError
from farfield.nn.mlp import MLP

__all__ = ["POOLINGS", "pool", "ScalarReadout", "VectorReadout"]

POOLINGS = ("sum", "mean", "max")


def pool(x: Tensor, batch: Tensor | None, reduce: str = "mean", num_graphs: int | None = None) -> Tensor:
    """Pool node rows of ``x`` [N, ...] per graph -> [B, ...] (sum / mean / max)."""
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

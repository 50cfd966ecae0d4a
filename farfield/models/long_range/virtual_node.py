"""Virtual nodes: one (OGB) or K fully connected global nodes per graph."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from farfield.errors import ConfigError
from farfield.models.long_range.base import Context, LongRange
from farfield.models.readout import pool

__all__ = ["VirtualNode"]

NORMS = ("layer", "batch", "none")


class RowLinear(nn.Linear):
    """``nn.Linear`` evaluated row by row (batched matrix-vector products), so that a row's result does not
    depend on how many rows there are: BLAS takes a different path for one row than for several, which
    would make a graph's virtual node differ in the last bits between a batch of one graph and a larger
    batch. Shapes: [B, d_in] -> [B, d_out]."""

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        return torch.baddbmm(self.bias.expand(B, 1, -1), x.unsqueeze(1),
                             self.weight.T.expand(B, -1, -1)).squeeze(1)


def _mlp(dim: int, norm: str) -> nn.Sequential:
    def n(w):
        return nn.LayerNorm(w) if norm == "layer" else nn.BatchNorm1d(w) if norm == "batch" else nn.Identity()
    return nn.Sequential(RowLinear(dim, 2 * dim), n(2 * dim), nn.ReLU(), RowLinear(2 * dim, dim), n(dim), nn.ReLU())


class VirtualNode(LongRange):
    r"""Virtual node(s) connected to every node of their graph (Gilmer et al. 2017; the OGB variant of
    Hu et al., "Open Graph Benchmark", NeurIPS 2020, ``ogb/graphproppred/mol_encoder`` examples).

    OGB variant (``num_virtual=1``): :math:`v^{(0)} = 0`; before layer l every node receives
    :math:`h_i \leftarrow h_i + v^{(l)}`, and the virtual node is updated from the layer's input
    :math:`v^{(l+1)} = \mathrm{MLP}(\sum_i h_i + v^{(l)})`, MLP = Lin(d, 2d)-Norm-ReLU-Lin(2d, d)-Norm-ReLU.
    With placement ``'parallel'`` (the default) this is exactly OGB's schedule: the update computed from
    layer l's input is added to its output, i.e. to layer l+1's input; no update follows the last layer
    (except in a one-layer backbone, where it would otherwise do nothing).

    K virtual nodes (``num_virtual=K > 1``; the "K fully connected virtual nodes" baseline of the Neural
    Atoms paper): slot k starts at a learned vector :math:`e_k`, is updated as
    :math:`v_k \leftarrow \mathrm{MLP}(\sum_i h_i + v_k + \mathrm{mean}_{k' \ne k} v_{k'})` (the virtual nodes
    are connected to each other) and nodes receive :math:`\sum_k v_k`.

    ``norm``: ``'layer'`` (default), ``'batch'`` (OGB's BatchNorm) or ``'none'``. BatchNorm over the virtual
    nodes of a batch makes training-mode outputs depend on the other graphs in the batch, which farfield
    otherwise guarantees never happens, hence LayerNorm by default; ``'batch'`` reproduces OGB exactly.
    ``shared=True`` uses one MLP for all layers. Shapes: s [N, d] -> ds [N, d]; cost O(N d).
    """

    name = "virtual_node"
    default_placement = "parallel"

    def __init__(self, dim: int, num_layers: int, num_virtual: int = 1, norm: str = "layer", shared: bool = False,
                 scale: float = 1.0, placement: str | None = None):
        super().__init__(dim, num_layers, scale, placement)
        if num_virtual < 1:
            raise ConfigError(f"VirtualNode: num_virtual must be >= 1, got {num_virtual}")
        if norm not in NORMS:
            raise ConfigError(f"VirtualNode: norm must be one of {NORMS}, got {norm!r}")
        self.num_virtual, self.norm, self.shared = num_virtual, norm, shared
        n_mlps = 1 if shared else max(num_layers - 1, 1)
        self.mlps = nn.ModuleList([_mlp(dim, norm) for _ in range(n_mlps)])
        # OGB starts the single virtual node at 0; K > 1 slots need distinct starts to differ at all
        self.init = nn.Parameter(torch.randn(num_virtual, dim) * 0.1) if num_virtual > 1 else None

    def start(self, ctx: Context, state) -> None:
        B, K, d = ctx.num_graphs, self.num_virtual, self.dim
        v = state.s.new_zeros(B, K, d)
        ctx.memory["v"] = v + self.init.to(v) if self.init is not None else v

    def update(self, i: int, s: Tensor, pos, ctx: Context) -> Tensor | None:
        if i == self.num_layers - 1 and self.num_layers > 1:
            return None
        v = ctx.memory["v"]                                               # [B, K, d]
        B, K, d = v.shape
        u = pool(s, ctx.batch, "sum", B).unsqueeze(1) + v                 # [B, K, d]
        if K > 1:
            u = u + (v.sum(1, keepdim=True) - v) / (K - 1)
        mlp = self.mlps[0 if self.shared else min(i, len(self.mlps) - 1)]
        v = mlp(u.reshape(B * K, d)).reshape(B, K, d)
        ctx.memory["v"] = v
        return v.sum(1)[ctx.batch]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_virtual={self.num_virtual}, norm={self.norm!r}, shared={self.shared}"

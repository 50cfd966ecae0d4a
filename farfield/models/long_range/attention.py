"""Global multi-head attention within each graph (the GraphGPS global block; Rampasek et al., "Recipe
for a General, Powerful, Scalable Graph Transformer", NeurIPS 2022)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from farfield.errors import ConfigError
from farfield.models.long_range.base import Context, LongRange

__all__ = ["GlobalAttention"]


class _AttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        x, mask = to_dense_batch(self.norm(h), batch, batch_size=num_graphs)        # [B, n, d], [B, n]
        B, n, d = x.shape
        H = self.heads
        q, k, v = self.qkv(x).view(B, n, 3, H, d // H).permute(2, 0, 3, 1, 4)      # 3 x [B, H, n, dh]
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // H)                        # [B, H, n, n]  (quadratic)
        if not bool(mask.all()):                                                    # padding present
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        # the normalisation in at least float32 (under bf16 autocast the scores are bfloat16), back to v's dtype
        attn = scores.softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(v.dtype)
        o = (self.drop(attn) @ v).transpose(1, 2).reshape(B, n, d)
        return self.out(o)[mask]


class GlobalAttention(LongRange):
    r"""Dense multi-head self-attention among all nodes of each graph, with a padding mask:
    :math:`\Delta h = W_o\,\mathrm{softmax}(Q K^\top / \sqrt{d_h}) V` on :math:`\mathrm{LN}(h)`, added in parallel
    with the message-passing layer as in a GraphGPS layer (:math:`h_M + h_T`; the backbone's own layer
    supplies :math:`h_M`). The attention matrix is materialised: O(B n_max^2) memory and time. This is the
    quadratic baseline the linear mechanisms are measured against.

    Args: dim, num_layers, heads (default 4; must divide dim), dropout on attention weights, shared (one
    block for all layers), scale, placement (default ``'parallel'``).
    """

    name = "attention"
    default_placement = "parallel"

    def __init__(self, dim: int, num_layers: int, heads: int = 4, dropout: float = 0.0, shared: bool = False,
                 scale: float = 1.0, placement: str | None = None):
        super().__init__(dim, num_layers, scale, placement)
        if heads < 1 or dim % heads:
            raise ConfigError(f"GlobalAttention: heads={heads} must be >= 1 and divide the width {dim}")
        self.heads, self.shared = heads, shared
        self.blocks = nn.ModuleList([_AttentionBlock(dim, heads, dropout) for _ in range(1 if shared else num_layers)])

    def update(self, i: int, s: Tensor, pos, ctx: Context) -> Tensor:
        return self.blocks[0 if self.shared else i](s, ctx.batch, ctx.num_graphs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", heads={self.heads}, shared={self.shared}"

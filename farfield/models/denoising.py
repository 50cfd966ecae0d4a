"""Noisy Nodes: position denoising as an auxiliary task on any 3D backbone.

Godwin et al., "Simple GNN Regularisation for 3D Molecular Property Prediction and Beyond" (ICLR 2022):
during training the input positions are corrupted, ``x~ = x + sigma * eps`` with ``eps ~ N(0, I)`` per atom
(eq. 1 of the paper), and a node-level head predicts ``eps`` from the corrupted input; the training loss is
``L = L_target + lambda * mean_i |eps_hat_i - eps_i|^2``. Evaluation uses clean positions and no denoising.

The head works from a backbone's invariant node scalars ``h`` [N, d] and the (noisy) coordinates, in the
form of the EGNN coordinate update (Satorras et al., ICML 2021, eq. 4)::

    eps_hat_i = 1 / max(deg_i, 1) * sum_{j in N(i)} (x_i - x_j) * phi(h_i, h_j, |x_i - x_j|)

``phi`` is an MLP to one scalar per edge, so ``eps_hat`` is E(3) equivariant (it rotates and reflects with
the input and ignores translations) whenever ``h`` is invariant, on every backbone.

Shapes: ``pos`` [N, 3], ``edge_index`` [2, E] (row 0 = source j, row 1 = target i, as in
:class:`farfield.models.base.EdgeGeometry`), ``h`` [N, d], prediction [N, 3], noise target [N, 3].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from farfield.nn.mlp import MLP

__all__ = ["NOISE_TARGET", "DenoisingHead", "add_position_noise", "denoising_loss"]

#: node field [N, 3] holding the standard-normal draw ``eps`` that was added (times sigma) to ``pos``
NOISE_TARGET = "noise_target"


class DenoisingHead(nn.Module):
    """EGNN-style equivariant node head predicting the normalised position noise ``eps`` [N, 3] (see the
    module docstring for the equation).

    Args:
        dim: width ``d`` of the backbone's node scalars.
        hidden: width of the edge MLP ``phi: [2d + 1] -> hidden -> hidden -> 1`` (default ``d``).
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = int(hidden or dim)
        self.phi = MLP([2 * dim + 1, hidden, hidden, 1], act="silu")

    def forward(self, h: Tensor, pos: Tensor, edge_index: Tensor) -> Tensor:
        src, tgt = edge_index                                          # j, i
        diff = pos.index_select(0, tgt) - pos.index_select(0, src)     # [E, 3] x_i - x_j
        dist = diff.norm(dim=-1, keepdim=True)                         # [E, 1]
        w = self.phi(torch.cat([h.index_select(0, tgt), h.index_select(0, src), dist.to(h.dtype)], dim=-1))
        out = torch.zeros_like(pos).index_add_(0, tgt, diff * w.to(pos.dtype))
        deg = torch.zeros(pos.shape[0], dtype=pos.dtype, device=pos.device).index_add_(
            0, tgt, torch.ones_like(tgt, dtype=pos.dtype))
        return out / deg.clamp(min=1).unsqueeze(-1)


def add_position_noise(data, sigma: float, generator: torch.Generator | None = None):
    """A shallow copy of ``data`` with ``pos`` [N, 3] replaced by ``pos + sigma * eps`` (``eps ~ N(0, I)``
    drawn from ``generator``) and ``eps`` stored as :data:`NOISE_TARGET` [N, 3] (in ``pos``'s dtype). The
    input is untouched."""
    import copy
    out = copy.copy(data)
    pos = data.pos
    # drawn on the generator's device (the CPU for a CPU generator), then moved to the positions' device
    eps = torch.randn(pos.shape, generator=generator, dtype=torch.float64,
                      device=generator.device if generator is not None else pos.device).to(pos)
    out.pos = pos + sigma * eps
    out[NOISE_TARGET] = eps
    return out


def denoising_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``mean_i |eps_hat_i - eps_i|^2 / 3`` (MSE over nodes and components) of ``pred`` / ``target`` [N, 3]."""
    return nn.functional.mse_loss(pred, target.to(pred.dtype))

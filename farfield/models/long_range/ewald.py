"""Ewald message passing, aperiodic variant (Kosmala et al., "Ewald-based Long-Range Message Passing for
Molecular Graphs", ICML 2023; reference code arthurkosmala/EwaldMP)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter, to_dense_batch

from farfield.errors import ConfigError
from farfield.features.radial import GaussianRBF, PolynomialEnvelope
from farfield.models.long_range.base import Context, LongRange

__all__ = ["EwaldMP", "k_grid", "svd_frame_coordinates"]


def k_grid(dk: float, k_cutoff: float) -> Tensor:
    """The aperiodic k-set: k = dk * n, n in Z^3, 0 < |k| <= k_cutoff, one of each +-k pair -> [K, 3].

    The integer range is ``round(k_cutoff / dk)``; the reference's float division (0.6 / 0.2 = 2.9999...)
    truncates to 2 and drops the boundary shell."""
    if dk <= 0 or k_cutoff <= 0:
        raise ConfigError(f"Ewald: dk and k_cutoff must be > 0, got {dk}, {k_cutoff}")
    m = int(round(k_cutoff / dk))
    r = torch.arange(-m, m + 1, dtype=torch.float64)
    n = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)   # [(2m+1)^3, 3]
    norm = (n * dk).norm(dim=-1)
    keep = (norm > 0) & (norm <= k_cutoff + 1e-9)
    # one of each +-k pair: the first non-zero component is positive
    first = torch.where(n[:, 0] != 0, n[:, 0], torch.where(n[:, 1] != 0, n[:, 1], n[:, 2]))
    return (n[keep & (first > 0)] * dk)


def svd_frame_coordinates(pos: Tensor, batch: Tensor, num_graphs: int, min_atoms: int = 3) -> tuple[Tensor, Tensor]:
    """Centre each graph and express it in its principal-axis frame (eigenvectors of the covariance,
    ascending eigenvalues) -> (x [N, 3], ok [N] bool). Sign choices of the axes are arbitrary; the Ewald
    sum is symmetric under them. Graphs with fewer than ``min_atoms`` atoms get ``ok = False`` (and a
    non-degenerate dummy covariance so that gradients stay finite)."""
    counts = torch.bincount(batch, minlength=num_graphs)
    c = scatter(pos, batch, dim=0, dim_size=num_graphs, reduce="mean")
    x = pos - c[batch]
    cov = scatter(x.unsqueeze(-1) * x.unsqueeze(-2), batch, dim=0, dim_size=num_graphs, reduce="sum")   # [B, 3, 3]
    small = counts < min_atoms
    dummy = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=pos.dtype, device=pos.device))
    cov = torch.where(small[:, None, None], dummy.expand_as(cov), cov)
    _, vecs = torch.linalg.eigh(cov)                                            # [B, 3, 3], columns = axes
    return torch.bmm(x.unsqueeze(1), vecs[batch]).squeeze(1), ~small[batch]


class _Residual(nn.Module):
    """x + act(W2 act(W1 x)) (the DimeNet/Ewald residual layer)."""

    def __init__(self, dim: int):
        super().__init__()
        self.l1, self.l2, self.act = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.act(self.l2(self.act(self.l1(x))))


class EwaldBlock(nn.Module):
    """Per-layer part of :class:`EwaldMP`: the pre-residual layer, the up-projection of the filter and the
    update MLP."""

    def __init__(self, dim: int, down: int):
        super().__init__()
        self.pre = _Residual(dim)
        self.up = nn.Linear(down, dim, bias=False)
        self.update = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), _Residual(dim))


class EwaldMP(LongRange):
    r"""Ewald message passing for aperiodic systems (methods.md s.4), in parallel with every layer.

    Per graph, coordinates are centred and rotated into their principal-axis frame (the k-grid, the
    filter and the damping are symmetric under the frame's sign ambiguity, so the result is E(3)
    invariant). With the k-set :func:`k_grid` (dk, k_cutoff):

    .. math::
        F_k = W_{up}^{(l)} W_{down}\,\phi(|k|), \qquad s_j = \prod_{a} \mathrm{sinc}(\Delta k\, x_{ja} / 2),\qquad
        S_k = \sum_j s_j \tilde h_j e^{i k\cdot x_j}, \qquad \tilde h = \mathrm{Res}(h)

        m_i = 0.01 \sum_k s_i\, F_k \odot \mathrm{Re}(S_k e^{-i k\cdot x_i}), \qquad
        \Delta h_i = \mathrm{Res}(\mathrm{SiLU}(W m_i))

    with Gaussian RBFs :math:`\phi` on [0, k_cutoff + 0.1] times a degree-5 polynomial envelope,
    :math:`W_{down}` (width ``down``, no bias) shared by all layers and :math:`W_{up}` per layer.
    ``sinc(u) = sin(u) / u`` (unnormalised): the damping vanishes at |x| = 2 pi / dk, the period of the
    k-grid, so images of the structure do not interact. Graphs with fewer than 3 atoms (no unique frame)
    get no Ewald update. Cost O(N |k| d); memory O(N (|k| + d)).

    The reference adds ``(h + v(h) + dh) / sqrt(3)``; here the update is added to the layer's output
    with an explicit ``scale``.

    Args: dim, num_layers, dk (1/Angstrom, default 0.2), k_cutoff (default 0.6, the PaiNN setting; 0.4 for
    SchNet), num_rbf (default 32), down (default 8), scale, placement (default ``'parallel'``).
    """

    name = "ewald"
    default_placement = "parallel"
    needs_positions = True

    def __init__(self, dim: int, num_layers: int, dk: float = 0.2, k_cutoff: float = 0.6, num_rbf: int = 32,
                 down: int = 8, scale: float = 1.0, placement: str | None = None):
        super().__init__(dim, num_layers, scale, placement)
        self.dk, self.k_cutoff = float(dk), float(k_cutoff)
        kv = k_grid(dk, k_cutoff)
        if kv.shape[0] == 0:
            raise ConfigError(f"Ewald: k_cutoff={k_cutoff} < dk={dk} leaves no k-vectors")
        self.register_buffer("kvecs", kv.to(torch.get_default_dtype()))
        self.rbf = GaussianRBF(k_cutoff + 0.1, num_rbf, envelope=PolynomialEnvelope(k_cutoff + 0.1, 5))
        self.down = nn.Linear(num_rbf, down, bias=False)
        self.blocks = nn.ModuleList([EwaldBlock(dim, down) for _ in range(num_layers)])

    @property
    def num_k(self) -> int:
        return int(self.kvecs.shape[0])

    def _phases(self, pos: Tensor, ctx: Context):
        cached = ctx.memory.get("phases")
        if cached is not None and cached[0] is pos:      # positions move only in EGNN-style backbones
            return cached[1]
        x, ok = svd_frame_coordinates(pos, ctx.batch, ctx.num_graphs)
        kx = x @ self.kvecs.to(x.dtype).T                                     # [N, K]
        damp = torch.sinc(self.dk * x / (2 * math.pi)).prod(-1) * ok          # [N]; torch.sinc(t) = sin(pi t)/(pi t)
        c, _ = to_dense_batch(torch.cos(kx), ctx.batch, batch_size=ctx.num_graphs)   # [B, n, K]
        s, mask = to_dense_batch(torch.sin(kx), ctx.batch, batch_size=ctx.num_graphs)
        d, _ = to_dense_batch(damp.unsqueeze(-1), ctx.batch, batch_size=ctx.num_graphs)   # [B, n, 1]
        out = (c, s, d, mask)
        ctx.memory["phases"] = (pos, out)
        return out

    def update(self, i: int, h: Tensor, pos: Tensor, ctx: Context) -> Tensor:
        blk = self.blocks[i]
        c, s, damp, mask = self._phases(pos, ctx)
        ht, _ = to_dense_batch(blk.pre(h), ctx.batch, batch_size=ctx.num_graphs)     # [B, n, d]
        ht = ht * damp
        S_re = c.transpose(1, 2) @ ht                                              # [B, K, d]
        S_im = s.transpose(1, 2) @ ht
        F_k = blk.up(self.down(self.rbf(self.kvecs.to(h.dtype).norm(dim=-1))))     # [K, d]
        m = 0.01 * damp * (c @ (F_k * S_re) + s @ (F_k * S_im))                   # [B, n, d]
        return blk.update(m[mask])

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dk={self.dk:g}, k_cutoff={self.k_cutoff:g}, num_k={self.num_k}"

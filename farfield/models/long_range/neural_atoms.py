"""Neural Atoms (Li et al., "Neural Atoms: Propagating Long-range Interaction in Molecular Graphs through
Efficient Communication Channel", ICLR 2024; reference code tmlr-group/NeuralAtom)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from farfield.errors import ConfigError
from farfield.models.long_range.base import Context, LongRange

__all__ = ["NeuralAtoms", "NeuralAtomBlock", "HEAD_REDUCTIONS", "SCHEDULES"]

#: how the number of neural atoms changes over layers (Li et al. 2024): 'fixed', 'desc'
SCHEDULES = ("fixed", "desc")

#: how back-projection combines the heads' attention: 'sum' (the reference's 2D code), 'mean'
HEAD_REDUCTIONS = ("sum", "mean")


class _MAB(nn.Module):
    """Set-Transformer multi-head attention block (the MAB of Lee et al., "Set Transformer", ICML 2019) over dense
    sets with an optional key mask: ``O = LN(Q' + softmax(Q' K'^T / sqrt(d)) V')``, ``O = LN(O + relu(O W_o))``.
    Shapes: q [B, M, d], x [B, K, d], key_mask [B, K] (True = valid) or None (every key valid) -> [B, M, d]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln0, self.ln1 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, q: Tensor, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        B, M, d = q.shape
        H = self.heads
        Q = self.q(q)
        Qh = Q.view(B, M, H, d // H).transpose(1, 2)                        # [B, H, M, dh]
        Kh = self.k(x).view(B, -1, H, d // H).transpose(1, 2)               # [B, H, K, dh]
        Vh = self.v(x).view(B, -1, H, d // H).transpose(1, 2)
        scores = Qh @ Kh.transpose(-1, -2) / math.sqrt(d)                   # [B, H, M, K]
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        O = Q + (scores.softmax(-1) @ Vh).transpose(1, 2).reshape(B, M, d)
        O = self.ln0(O)
        return self.ln1(O + torch.relu(self.o(O)))


class NeuralAtomBlock(nn.Module):
    r"""One Neural Atoms step (Li et al., "Neural Atoms", ICLR 2024, Sec. 3) for node scalars
    h [N, d] of B graphs, K_b neural atoms each.

    1. Project: :math:`Q = S W_q` (learned seeds S [K, d]), :math:`K_x = h W_k`, :math:`V_x = h W_v`, per head;
       :math:`A = \mathrm{softmax}_{c}(Q K_x^\top / \sqrt d)` over the **neural-atom axis** c (each atom spreads
       unit mass over its graph's neural atoms); :math:`Z = \mathrm{LN}(Q + A V_x)`,
       :math:`Z = \mathrm{LN}(Z + \mathrm{relu}(Z W_o))`.
    2. Exchange: :math:`\tilde Z = \mathrm{MAB}(Z, Z)`, self-attention among the graph's neural atoms.
    3. Back-project with the same weights: :math:`\Delta h_i = \sum_c \bar A_{c i} \tilde Z_c`, with
       :math:`\bar A` the sum (``head_reduce='sum'``, as the reference's 2D code) or the mean
       (``'mean'``) of A over heads. The two differ by the factor H (identical for one head): with 'sum'
       each node receives H units of attention mass.

    Unlike the reference code, attention weights are computed per real atom (``[N, H, K]``: each atom against
    its graph's seeds; the softmax runs over the neural-atom axis, so it needs no segment operation), heads and
    graphs are never reshaped into one axis (the reference's defect (b): mixing graphs when heads > 1), and
    graphs with fewer neural atoms mask the unused seeds out of both softmaxes. The two sums over a graph's
    atoms (:math:`A V_x`, [K_b, d] per graph, and the back-projection, [n_b, d] per graph) are matrix products
    over each graph's own rows of the node-major tensors (graphs are contiguous in ``batch``, as PyG collates
    them): nothing is padded to the largest graph (the reference's defect (a): padded atoms leaking into
    neural atoms; and the cost of a dense [B, N_max] layout), and seeds beyond the batch's largest K_b are
    never scored. A graph's output is therefore independent of the rest of its batch for any number of heads.

    Two products are re-associated where that is cheaper (same values up to float round-off):
    :math:`(h W_k^\top + b_k) Q^\top = h (W_k^\top Q^\top) + b_k Q^\top` (no [N, d] key projection; when
    ``(H - 1) K < d``), and with one head :math:`A^\top (h W_v^\top + b_v) = (A^\top h) W_v^\top +
    (A^\top 1) b_v^\top` (the value projection on B K rows instead of N; when ``B K < N``).
    Cost O(N K d + (N + B K) d^2) time, O(N H K + B K d) memory.
    """

    def __init__(self, dim: int, max_atoms: int, heads: int = 1, head_reduce: str = "mean"):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"NeuralAtoms: width {dim} is not divisible by heads={heads}")
        if head_reduce not in HEAD_REDUCTIONS:
            raise ConfigError(f"NeuralAtoms: head_reduce must be one of {HEAD_REDUCTIONS}, got {head_reduce!r}")
        self.heads, self.max_atoms, self.head_reduce = heads, max_atoms, head_reduce
        self.seeds = nn.Parameter(torch.randn(max_atoms, dim) / math.sqrt(dim))
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln0, self.ln1 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.exchange = _MAB(dim, heads)

    def forward(self, h: Tensor, batch: Tensor, num_graphs: int, atoms: Tensor) -> Tensor:
        """h [N, d], batch [N] (sorted: graphs contiguous), atoms [B] (neural atoms per graph, 1..max_atoms)
        -> dh [N, d]."""
        N, d = h.shape
        H, dh, B = self.heads, d // self.heads, num_graphs
        if B == 0 or N == 0:
            return h.new_zeros(N, d)
        sizes = torch.bincount(batch, minlength=B).tolist()                                  # n_b
        ks = atoms.tolist()                                                                   # K_b
        K = max(ks)                                                   # live seeds: the batch's largest K_b
        slot_ok = None if min(ks) == K else torch.arange(K, device=h.device)[None, :] < atoms[:, None]  # [B, K]
        Q = self.q(self.seeds[:K].to(h.dtype))                                                # [K, d]
        Qh, r = Q.view(K, H, dh), 1.0 / math.sqrt(d)
        if (H - 1) * K < d:
            # scores = (h W_k^T + b_k) Q^T = h (W_k^T Q^T) + b_k Q^T per head: one [N, d] @ [d, H K] product
            # instead of the key projection [N, d] @ [d, d] and [N, d] @ [d, K] (cheaper when H K < d + K)
            M = torch.einsum("hei,khe->ihk", self.k.weight.view(H, dh, d), Qh).reshape(d, H * K) * r
            c = torch.einsum("he,khe->hk", self.k.bias.view(H, dh), Qh).reshape(H * K) * r
            scores = torch.addmm(c, h, M).view(N, H, K)                                      # [N, H, K]
        else:
            scores = torch.einsum("nhe,khe->nhk", self.k(h).view(N, H, dh), Qh) * r
        if slot_ok is not None:
            scores = scores.masked_fill(~slot_ok[batch][:, None, :], float("-inf"))
        A = scores.softmax(-1)                                                                # over neural atoms
        # A V per graph over its own rows: [K_b, n_b] @ [n_b, d] (per head), padded to K slots with zeros.
        # torch.split (not slicing) so that backward concatenates the pieces instead of adding B full-size zeros.
        A_g = A.split(sizes)                                                                  # B x [n_b, H, K]
        if H == 1 and B * K < N:
            # A (h W_v^T + b_v) = (A h) W_v^T + (sum_i A_i) b_v: the value projection on B K rows instead of N
            hA = _stack([a[:, 0, :k].t() @ x for a, x, k in zip(A_g, h.split(sizes), ks)], K)      # [B, K, d]
            mass = _stack([a[:, 0, :k].sum(0) for a, k in zip(A_g, ks)], K)                     # [B, K]
            AV = nn.functional.linear(hA, self.v.weight) + mass.unsqueeze(-1) * self.v.bias
        elif H == 1:
            AV = _stack([a[:, 0, :k].t() @ v for a, v, k in zip(A_g, self.v(h).split(sizes), ks)], K)
        else:
            AV = _stack([torch.bmm(a[..., :k].permute(1, 2, 0), v.view(-1, H, dh).transpose(0, 1))
                         .transpose(0, 1).reshape(k, d)                      # [H, K_b, n_b] @ [H, n_b, dh]
                         for a, v, k in zip(A_g, self.v(h).split(sizes), ks)], K)
        Z = self.ln0(Q.unsqueeze(0) + AV)                                                     # [B, K, d]
        Z = self.ln1(Z + torch.relu(self.o(Z)))
        Z = self.exchange(Z, Z, slot_ok)
        if H == 1:
            A_bar = A.view(N, K)
        else:
            A_bar = A.sum(1) if self.head_reduce == "sum" else A.mean(1)                     # [N, K]
        # back-projection per graph: [n_b, K_b] @ [K_b, d]
        return torch.cat([a[:, :k] @ z[:k] for a, z, k in zip(A_bar.split(sizes), Z.unbind(0), ks)])


def _stack(rows: list[Tensor], K: int) -> Tensor:
    """Stack per-graph [K_b, ...] tensors into [B, K, ...], padding each with zero rows to K."""
    return torch.stack([x if x.shape[0] == K else nn.functional.pad(x, (0, 0) * (x.dim() - 1) + (0, K - x.shape[0]))
                        for x in rows])


class NeuralAtoms(LongRange):
    r"""Neural Atoms after (2D) or in parallel with (3D) every layer: :math:`h \leftarrow h + \alpha\,
    \mathrm{NA}_l(h)` with :class:`NeuralAtomBlock`.

    The reference code (Li et al. 2024) differs between its 2D and 3D models: on 2D backbones it inserts
    NA *after* each GNN layer (``h = h_local + NA(h_local)``) and *sums* the heads' attention in
    back-projection; on 3D backbones it runs NA in parallel with each interaction block. The class
    defaults are the 3D behaviour with the head mean (``placement='parallel'``, ``head_reduce='mean'``);
    :meth:`farfield.models.long_range.Strategy.wrap` switches to the 2D reference (``'after'``,
    ``'sum'``) for backbones without coordinates (``uses_positions`` False: gcn, gine, gatedgcn) unless
    the options say otherwise.

    Args:
        dim, num_layers, scale, placement: see :class:`~farfield.models.long_range.LongRange` (default
            placement ``'parallel'``; the reference's 3D update ``(h + I(h) + NA(h)) / sqrt(2)`` divides
            three terms by the norm of two; here the scale is explicit).
        num_atoms: K neural atoms per graph (the reference's 3D code uses 10).
        ratio: instead of ``num_atoms``, K_b = ceil(ratio * n_b) per graph (capped at ``max_atoms``), or with
            ``avg_nodes`` the same K = ceil(ratio * avg_nodes) for every graph (the reference's 2D
            configuration: Peptides ``avg_nodes=150, ratio=0.9``).
        avg_nodes: the dataset's average graph size for the reference's fixed-K rule (needs ``ratio``).
        schedule: ``'fixed'`` (every layer has K atoms) or ``'desc'`` (the reference's descending schedule,
            Li et al. 2024: layer l has K_l = ceil(ratio * K_{l-1}) atoms, K_1 = K; 150 / 0.9 over 5 layers
            gives 135, 122, 110, 99, 90).
        max_atoms: number of learned seeds (default ``num_atoms``, K with ``avg_nodes``, or 64 with ``ratio``).
        heads: attention heads (must divide ``dim``).
        shared: one block for all layers instead of one per layer.
        head_reduce: ``'mean'`` (default) or ``'sum'`` (the reference's 2D code) over heads in
            back-projection.
    """

    name = "neural_atoms"
    default_placement = "parallel"

    def __init__(self, dim: int, num_layers: int, num_atoms: int | None = 10, ratio: float | None = None,
                 max_atoms: int | None = None, heads: int = 1, shared: bool = False, scale: float = 1.0,
                 placement: str | None = None, head_reduce: str = "mean", avg_nodes: float | None = None,
                 schedule: str = "fixed"):
        super().__init__(dim, num_layers, scale, placement)
        if schedule not in SCHEDULES:
            raise ConfigError(f"NeuralAtoms: schedule must be one of {SCHEDULES}, got {schedule!r}")
        if schedule == "desc" and ratio is None:
            raise ConfigError("NeuralAtoms: schedule='desc' needs a ratio (K_l = ceil(ratio * K_{l-1}))")
        if avg_nodes is not None:
            if ratio is None:
                raise ConfigError("NeuralAtoms: avg_nodes needs a ratio (K = ceil(ratio * avg_nodes))")
            if not avg_nodes > 0:
                raise ConfigError(f"NeuralAtoms: avg_nodes must be positive, got {avg_nodes}")
        self.avg_nodes, self.schedule = avg_nodes, schedule
        if ratio is not None:
            if not 0 < ratio <= 1:
                raise ConfigError(f"NeuralAtoms: ratio must be in (0, 1], got {ratio}")
            num_atoms = None
        elif num_atoms is None or num_atoms < 1:
            raise ConfigError(f"NeuralAtoms: give num_atoms >= 1 or a ratio, got num_atoms={num_atoms}")
        if heads < 1:
            raise ConfigError(f"NeuralAtoms: heads must be >= 1, got {heads}")
        if head_reduce not in HEAD_REDUCTIONS:
            raise ConfigError(f"NeuralAtoms: head_reduce must be one of {HEAD_REDUCTIONS}, got {head_reduce!r}")
        self.num_atoms, self.ratio, self.heads, self.shared = num_atoms, ratio, heads, shared
        self.head_reduce = head_reduce
        fixed_k = math.ceil(ratio * avg_nodes) if avg_nodes is not None else None
        self.max_atoms = int(max_atoms or num_atoms or fixed_k or 64)
        if num_atoms is not None and num_atoms > self.max_atoms:
            raise ConfigError(f"NeuralAtoms: num_atoms={num_atoms} exceeds max_atoms={self.max_atoms}")
        self.blocks = nn.ModuleList([NeuralAtomBlock(dim, self.max_atoms, heads, head_reduce)
                                     for _ in range(1 if shared else num_layers)])

    def atoms_per_layer(self, counts: Tensor) -> list[Tensor]:
        """Neural atoms per graph for every layer: ``counts`` [B] nodes per graph -> num_layers x [B]."""
        if self.ratio is None:
            first = torch.full_like(counts, self.num_atoms)
        elif self.avg_nodes is not None:
            first = torch.full_like(counts, math.ceil(self.ratio * self.avg_nodes))
        else:
            first = torch.ceil(counts.to(torch.float64) * self.ratio).long()
        layers = [first.clamp(1, self.max_atoms)]
        for _ in range(1, self.num_layers):
            prev = layers[-1]
            layers.append(torch.ceil(prev.to(torch.float64) * self.ratio).long().clamp(1, self.max_atoms)
                          if self.schedule == "desc" else prev)
        return layers

    def start(self, ctx: Context, state) -> None:
        ctx.memory["atoms"] = self.atoms_per_layer(ctx.counts)

    def update(self, i: int, s: Tensor, pos, ctx: Context) -> Tensor:
        return self.blocks[0 if self.shared else i](s, ctx.batch, ctx.num_graphs, ctx.memory["atoms"][i])

    def extra_repr(self) -> str:
        k = f"num_atoms={self.num_atoms}" if self.ratio is None else f"ratio={self.ratio:g}"
        if self.avg_nodes is not None:
            k += f", avg_nodes={self.avg_nodes:g}"
        if self.schedule != "fixed":
            k += f", schedule={self.schedule!r}"
        return super().extra_repr() + f", {k}, max_atoms={self.max_atoms}, heads={self.heads}, shared={self.shared}, head_reduce={self.head_reduce!r}"

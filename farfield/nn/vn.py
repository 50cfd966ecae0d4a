r"""Vector Neurons (Deng, Litany, Duan, Poulenard, Tagliasacchi, Guibas, "Vector Neurons: A General Framework
for SO(3)-Equivariant Networks", ICCV 2021) for ragged PyG batches, in pure torch.

A VN feature is ``V`` [N, C, 3]: C vector channels per node (row vectors). A rotation :math:`Q` acts as
:math:`V \mapsto V Q^\top`; every layer :math:`f` here satisfies :math:`f(V Q^\top) = f(V) Q^\top`.

.. math::
    \text{linear:}\ V' = W V \quad (W \in \mathbb{R}^{C'\times C},\ \text{no bias})

    \text{leaky ReLU:}\ q = W V,\ d = U V,\quad
    V' = a\,q + (1-a)\Big[q \text{ if } \langle q, d\rangle \ge 0 \text{ else }
         q - \frac{\langle q, d\rangle}{\lVert d\rVert^2 + \epsilon}\, d\Big]

    \text{batch norm:}\ n = \lVert v\rVert,\quad v' = v\, \mathrm{BN}(n) / (n + \epsilon)

    \text{max pool:}\ v^{g}_c = v_{i^*c},\quad i^* = \arg\max_{i \in g} \langle v_{ic}, (W V_i)_c\rangle

    \text{invariant:}\ T = \mathrm{VNMLP}(V) \in \mathbb{R}^{3\times 3},\quad S = V T^\top
    \ \ (\text{since } V Q^\top (T Q^\top)^\top = V T^\top)

Per-graph reductions use ``torch_geometric.utils.scatter`` over the ``batch`` vector, with no dense padding;
graphs interact only through VN batch-norm statistics in training mode (off by default in the networks).
All layers are O(3)-equivariant; :class:`VNDGCNN` uses cross products (pseudovectors) and is SO(3)- only.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

__all__ = ["VNLinear", "VNLeakyReLU", "VNLinearLeakyReLU", "VNBatchNorm", "VNMaxPool", "VNInvariant",
           "VNPointNet", "VNDGCNN", "vn_leaky_relu", "vn_mean_pool", "knn_edges"]

EPS = 1e-6


def _weight(c_out: int, c_in: int) -> nn.Parameter:
    w = torch.empty(c_out, c_in)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))              # nn.Linear's default initialisation
    return nn.Parameter(w)


def _mix(w: Tensor, v: Tensor) -> Tensor:
    """Channel mixing W V: w [C', C], v [..., C, 3] -> [..., C', 3]."""
    return torch.einsum("oc,...ci->...oi", w, v)


class VNLinear(nn.Module):
    """V' = W V (channel mixing, no bias). Shapes: [..., c_in, 3] -> [..., c_out, 3]."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = _weight(c_out, c_in)

    def forward(self, v: Tensor) -> Tensor:
        return _mix(self.weight, v)


def vn_leaky_relu(q: Tensor, d: Tensor, negative_slope: float = 0.2, eps: float = EPS) -> Tensor:
    """The VN leaky ReLU of features ``q`` along directions ``d`` (broadcastable, [..., C, 3])."""
    dot = (q * d).sum(-1, keepdim=True)
    proj = q - dot / ((d * d).sum(-1, keepdim=True) + eps) * d
    return negative_slope * q + (1.0 - negative_slope) * torch.where(dot >= 0, q, proj)


class VNLeakyReLU(nn.Module):
    """VN leaky ReLU with a learned direction d = U V (U [c, c], or [1, c] when ``share_direction``).

    The paper's feature map q = W V is the preceding :class:`VNLinear` (as in the authors' code), so here
    q = V. Shapes: [..., c, 3] -> [..., c, 3].
    """

    def __init__(self, c: int, negative_slope: float = 0.2, share_direction: bool = False):
        super().__init__()
        self.negative_slope = negative_slope
        self.u = _weight(1 if share_direction else c, c)

    def forward(self, v: Tensor) -> Tensor:
        return vn_leaky_relu(v, _mix(self.u, v), self.negative_slope)


class VNBatchNorm(nn.Module):
    """v' = v BN(|v|)/(|v| + eps), ``BatchNorm1d(c)`` over all rows (batch statistics in training,
    running statistics in eval). Shapes: [..., c, 3] -> [..., c, 3]."""

    def __init__(self, c: int, eps: float = EPS):
        super().__init__()
        self.eps = eps
        self.bn = nn.BatchNorm1d(c)

    def forward(self, v: Tensor) -> Tensor:
        n = torch.linalg.vector_norm(v, dim=-1)                  # [..., c], subgradient 0 at v = 0
        nb = self.bn(n.reshape(-1, n.shape[-1])).reshape(n.shape)
        return v * (nb / (n + self.eps)).unsqueeze(-1)


class VNLinearLeakyReLU(nn.Module):
    """q = W V (optionally VN batch norm), d = U V, out = VN-leaky-ReLU(q, d); the paper's VN-ReLU layer.
    Shapes: [..., c_in, 3] -> [..., c_out, 3]."""

    def __init__(self, c_in: int, c_out: int, negative_slope: float = 0.2, share_direction: bool = False,
                 batch_norm: bool = False):
        super().__init__()
        self.negative_slope = negative_slope
        self.w = _weight(c_out, c_in)
        self.u = _weight(1 if share_direction else c_out, c_in)
        self.bn = VNBatchNorm(c_out) if batch_norm else None

    def forward(self, v: Tensor) -> Tensor:
        q = _mix(self.w, v)
        if self.bn is not None:
            q = self.bn(q)
        return vn_leaky_relu(q, _mix(self.u, v), self.negative_slope)


def vn_mean_pool(v: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Per-graph mean: [N, C, 3] -> [B, C, 3] (zeros for a graph without nodes)."""
    return scatter(v, batch, dim=0, dim_size=num_graphs, reduce="mean")


class VNMaxPool(nn.Module):
    """Per graph and channel, the node vector v maximising <v, k>, k = W v (W [c, c] learned).

    The score is rotation invariant, so the selected node is too; ties go to the lowest node index.
    W receives no gradient (argmax). Shapes: v [N, c, 3], batch [N] -> [B, c, 3] (zeros for empty graphs).
    """

    def __init__(self, c: int):
        super().__init__()
        self.w = _weight(c, c)

    def forward(self, v: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        n, c = v.shape[0], v.shape[1]
        score = (v * _mix(self.w, v)).sum(-1)                                   # [N, c]
        best = scatter(score, batch, dim=0, dim_size=num_graphs, reduce="max")  # [B, c]
        idx = torch.arange(n, device=v.device).unsqueeze(1).expand(n, c)
        idx = torch.where(score == best[batch], idx, torch.full_like(idx, n))
        sel = torch.full((num_graphs, c), n, dtype=torch.long, device=v.device)
        sel = sel.scatter_reduce(0, batch.unsqueeze(1).expand(n, c), idx, reduce="amin")  # [B, c]
        vpad = torch.cat([v, v.new_zeros(1, c, 3)], 0)                          # row n = zero (empty graph)
        return vpad[sel, torch.arange(c, device=v.device)]


class VNInvariant(nn.Module):
    """Rotation- (and reflection-) invariant scalars: a VN-MLP maps V to 3 vectors T, output V T^T.
    Shapes: [..., c, 3] -> [..., c, 3] (flatten to [..., 3c] for use as invariant features)."""

    def __init__(self, c: int, negative_slope: float = 0.2):
        super().__init__()
        self.mlp = nn.Sequential(VNLinearLeakyReLU(c, c, negative_slope), VNLinear(c, 3))

    def forward(self, v: Tensor) -> Tensor:
        t = self.mlp(v)                                          # [..., 3, 3]
        return torch.einsum("...ci,...ki->...ck", v, t)


def knn_edges(x: Tensor, batch: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """k nearest neighbours (by coordinates, no self loops) within each graph only: graphs with <= k nodes
    use all other nodes, one-node graphs get none. Returns (src = neighbour j, dst = centre i), each [E].
    Built by farfield's kNN graph builder (scipy cKDTree on the CPU, graphs kept apart), so memory is O(N k),
    not the O(N^2) of a dense distance matrix over the batch."""
    from farfield.graphs.neighbours import knn_pairs
    n = x.shape[0]
    if n <= 1 or k <= 0:
        e = torch.empty(0, dtype=torch.long, device=x.device)
        return e, e
    pairs = knn_pairs(x.detach().to("cpu", torch.float64).numpy(), batch.detach().cpu().numpy(), int(k))
    pairs = torch.from_numpy(pairs).to(x.device)
    return pairs[0], pairs[1]


class _VNNet(nn.Module):
    """Shared parts: the initial feature V0 = x g([h, |x|]) and the pooling.

    The radius |x_i| enters g because with V0 = x g(h) alone and equal h (e.g. node_s = 0) every node's
    features stay A x_i for one piecewise-linear A (q and d are parallel to x_i), so the mean pool of
    centred coordinates, and with it a mean-pooled VNPointNet, would be identically ~0.
    """

    reflection_equivariant: bool = True

    def __init__(self, node_s: int, channels: int, pooling: str):
        super().__init__()
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")
        self.node_s, self.channels, self.pooling = node_s, channels, pooling
        self.g = nn.Linear(node_s + 1, channels)

    def _initial(self, x: Tensor, h: Tensor | None) -> Tensor:
        if self.node_s > 0 and (h is None or h.shape[-1] != self.node_s):
            raise ValueError(f"this network expects node features h [N, {self.node_s}]")
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        g = self.g(torch.cat([h.to(x.dtype), r], -1) if self.node_s > 0 else r)
        return x.unsqueeze(1) * g.unsqueeze(2)                   # [N, C, 3]

    def _pool(self, v: Tensor, batch: Tensor, num_graphs: int, maxpool: VNMaxPool | None) -> Tensor:
        return vn_mean_pool(v, batch, num_graphs) if maxpool is None else maxpool(v, batch, num_graphs)


class VNPointNet(_VNNet):
    """VN-PointNet giving 3 equivariant vectors per graph (a frame, before Gram-Schmidt).

    V0 = x g([h, |x|]) [N, C, 3] (g = Linear(node_s + 1, C) of invariant atom features and radius); each of
    ``num_layers`` VNLinearLeakyReLU layers acts on [V, pool(V)[batch]] (2C -> C, the PointNet
    global-feature concat); then pool per graph and VNLinear(C, 3). O(3)-equivariant (no cross products).

    forward(x [N, 3] centred per graph, h [N, node_s] | None, batch [N], num_graphs B) -> [B, 3, 3].
    """

    reflection_equivariant = True

    def __init__(self, node_s: int = 0, channels: int = 16, num_layers: int = 3, pooling: str = "mean",
                 negative_slope: float = 0.2, batch_norm: bool = False):
        super().__init__(node_s, channels, pooling)
        self.layers = nn.ModuleList(VNLinearLeakyReLU(2 * channels, channels, negative_slope,
                                                      batch_norm=batch_norm) for _ in range(num_layers))
        self.pools = (nn.ModuleList(VNMaxPool(channels) for _ in range(num_layers + 1))
                      if pooling == "max" else None)
        self.out = VNLinear(channels, 3)

    def _p(self, i: int, v: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        return self._pool(v, batch, num_graphs, None if self.pools is None else self.pools[i])

    def forward(self, x: Tensor, h: Tensor | None, batch: Tensor, num_graphs: int) -> Tensor:
        v = self._initial(x, h)
        for i, layer in enumerate(self.layers):
            v = layer(torch.cat([v, self._p(i, v, batch, num_graphs)[batch]], 1))
        return self.out(self._p(len(self.layers), v, batch, num_graphs))


class VNDGCNN(_VNNet):
    """VN-DGCNN giving 3 equivariant vectors per graph. SO(3)-equivariant but NOT O(3)-equivariant: the
    edge feature x_i x x_j is a pseudovector (it does not flip under a reflection).

    V0 = x g([h, |x|]) as in :class:`VNPointNet`. Each of ``num_layers`` edge convolutions over the k nearest
    neighbours (on coordinates, within the graph; see :func:`knn_edges`) builds per channel
    [V_j - V_i, V_i, V_i x V_j] (3C channels), applies VNLinearLeakyReLU(3C, C) and averages over the
    neighbours (a node without neighbours gets zeros). The layer outputs are concatenated, mixed by
    VNLinearLeakyReLU(L C, C), pooled per graph and mapped by VNLinear(C, 3).

    forward(x [N, 3] centred per graph, h [N, node_s] | None, batch [N], num_graphs B) -> [B, 3, 3].
    """

    reflection_equivariant = False

    def __init__(self, node_s: int = 0, channels: int = 16, num_layers: int = 2, k: int = 8,
                 pooling: str = "mean", negative_slope: float = 0.2, batch_norm: bool = False):
        super().__init__(node_s, channels, pooling)
        self.k = k
        self.convs = nn.ModuleList(VNLinearLeakyReLU(3 * channels, channels, negative_slope,
                                                     batch_norm=batch_norm) for _ in range(num_layers))
        self.mix = VNLinearLeakyReLU(num_layers * channels, channels, negative_slope, batch_norm=batch_norm)
        self.pool = VNMaxPool(channels) if pooling == "max" else None
        self.out = VNLinear(channels, 3)

    def forward(self, x: Tensor, h: Tensor | None, batch: Tensor, num_graphs: int) -> Tensor:
        src, dst = knn_edges(x, batch, self.k)
        v, outs = self._initial(x, h), []
        for conv in self.convs:
            vi, vj = v[dst], v[src]
            e = torch.cat([vj - vi, vi, torch.linalg.cross(vi, vj, dim=-1)], 1)      # [E, 3C, 3]
            v = scatter(conv(e), dst, dim=0, dim_size=x.shape[0], reduce="mean")
            outs.append(v)
        v = self.mix(torch.cat(outs, 1))
        return self.out(self._pool(v, batch, num_graphs, self.pool))

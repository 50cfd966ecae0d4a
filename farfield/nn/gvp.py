"""Geometric Vector Perceptron layers (Jing et al., "Learning from Protein Structure with Geometric Vector
Perceptrons", ICLR 2021; "Equivariant Graph Neural Networks for 3D Macromolecular Structure", 2021).

Features are tuples ``(s, V)``: scalars ``s`` [n, ns] and vectors ``V`` [n, nv, 3]. Implemented exactly
as specified in farfield's methods reference s.1 (the gvp-pytorch equations): epsilon on the squared
norm, vector gate on pre-activation scalars, 3-GVP messages on ``[s_j, e_ij, s_i]``, mean aggregation,
post-norm residual layers with a (4 ns, 2 nv) feed-forward, vector dropout of whole channels and
parameter-free vector layer norm. Everything is O(3)-equivariant (no cross products).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from farfield.nn.mlp import activation, aggregate, gather, smooth_count

__all__ = ["GVP", "GVPLayerNorm", "GVPDropout", "GVPConv", "GVPConvLayer", "EdgeSegments", "vector_norm"]

Tup = tuple[Tensor, Tensor | None]


def vector_norm(v: Tensor, eps: float = 1e-8, keepdim: bool = False) -> Tensor:
    """sqrt(clamp(sum_xyz v^2, eps)) over the last axis (the epsilon is on the squared norm)."""
    return torch.sqrt(torch.clamp((v * v).sum(-1, keepdim=keepdim), min=eps))


class GVP(nn.Module):
    r"""One Geometric Vector Perceptron :math:`(s, V) \to (s', V')`.

    .. math::
        V_h = W_h V,\quad v_n = \sqrt{\max(\lVert V_h\rVert^2, \epsilon)},\quad
        s' = W_s[s; v_n] + b,\quad V' = W_v V_h \odot \sigma(W_{sv}\,\mathrm{act}_v(s') + b_{sv}),\quad
        s' \leftarrow \mathrm{act}_s(s')

    with hidden width :math:`h = \max(v_i, v_o)`. Without ``vector_gate``: :math:`V' = W_v V_h \odot
    \mathrm{act}_v(\lVert W_v V_h\rVert)`. With no input vectors (``vi = 0``): :math:`s' = W_s s`, :math:`V' = 0`.

    Shapes: ``s`` [n, si], ``V`` [n, vi, 3] (or None when vi = 0) -> ([n, so], [n, vo, 3] or None).

    Args:
        in_dims, out_dims: ``(scalars, vector channels)``.
        activations: ``(act_s, act_v)`` names or None (default ``('relu', 'sigmoid')``).
        vector_gate: gate vectors with a learned function of the scalars (GVP-GNN "vector gating").
    """

    def __init__(self, in_dims: tuple[int, int], out_dims: tuple[int, int],
                 activations: tuple[str | None, str | None] = ("relu", "sigmoid"), vector_gate: bool = True):
        super().__init__()
        self.si, self.vi = in_dims
        self.so, self.vo = out_dims
        self.vector_gate = vector_gate
        if self.vi:
            self.h = max(self.vi, self.vo)
            self.wh = nn.Linear(self.vi, self.h, bias=False)
            self.ws = nn.Linear(self.h + self.si, self.so)
            if self.vo:
                self.wv = nn.Linear(self.h, self.vo, bias=False)
                if vector_gate:
                    self.wsv = nn.Linear(self.so, self.vo)
        else:
            self.ws = nn.Linear(self.si, self.so)
        self.act_s = activation(activations[0])
        self.act_v = activation(activations[1])

    def forward(self, x: Tup) -> Tup:
        s, v = x
        if self.vi:
            vh = self.wh(v.transpose(-1, -2))                  # [n, 3, h]
            vn = vector_norm(vh.transpose(-1, -2))             # [n, h]
            return self.finish(self.ws(torch.cat([s, vn], dim=-1)), vh)
        return self.finish(self.ws(s), None)

    def finish(self, s: Tensor, vh: Tensor | None) -> Tup:
        r"""The GVP after its two linear maps: ``s`` = :math:`W_s[s; v_n] + b` [n, so] and ``vh`` =
        :math:`(W_h V)^\top` [n, 3, h] (None without input vectors): gating and activations. Lets a caller
        compute the linear maps another way (:class:`GVPConv` sums per-node parts of edge inputs)."""
        v = None
        if vh is not None:
            if self.vo:
                v = self.wv(vh).transpose(-1, -2)              # [n, vo, 3]
                if self.vector_gate:
                    g = self.act_v(s) if self.act_v is not None else s
                    v = v * torch.sigmoid(self.wsv(g)).unsqueeze(-1)
                elif self.act_v is not None:
                    v = v * self.act_v(vector_norm(v, keepdim=True))
        elif self.vo:
            v = s.new_zeros(s.shape[0], self.vo, 3)
        if self.act_s is not None:
            s = self.act_s(s)
        return (s, v) if self.vo else (s, None)


class GVPLayerNorm(nn.Module):
    """``nn.LayerNorm`` on scalars; vectors divided by sqrt(mean over channels of clamp(|v|^2, 1e-8))
    (no parameters)."""

    def __init__(self, dims: tuple[int, int]):
        super().__init__()
        self.s, self.v = dims
        self.norm = nn.LayerNorm(self.s)

    def forward(self, x: Tup) -> Tup:
        s, v = x
        if not self.v:
            return self.norm(s), v
        vn = torch.clamp((v * v).sum(-1, keepdim=True), min=1e-8)      # [n, c, 1]
        vn = torch.sqrt(vn.mean(dim=-2, keepdim=True))                  # [n, 1, 1]
        return self.norm(s), v / vn


class GVPDropout(nn.Module):
    """Dropout on scalars; on vectors, whole channels are dropped (and the rest scaled by 1/(1-p))."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.sdrop = nn.Dropout(p)

    def forward(self, x: Tup) -> Tup:
        s, v = x
        s = self.sdrop(s)
        if v is not None and self.training and self.p > 0:
            keep = torch.bernoulli((1 - self.p) * torch.ones(v.shape[:-1], device=v.device, dtype=v.dtype))
            v = keep.unsqueeze(-1) * v / (1 - self.p)
        return s, v


def _cat(*xs: Tup) -> Tup:
    s = torch.cat([x[0] for x in xs], dim=-1)
    vs = [x[1] for x in xs if x[1] is not None]
    return s, (torch.cat(vs, dim=-2) if vs else None)


class EdgeSegments:
    r"""Incoming-edge structure of a graph for the mean / sum over incoming edges, computed once per forward
    and shared by every :class:`GVPConv` layer.

    Holds the targets ``tgt`` [E], ``num_nodes``, the per-node weight totals ``total`` [N]
    (:math:`\sum_j w_{ij}`, the in-degree without weights) and, when ``tgt`` is sorted, the CSR offsets
    ``ptr`` (python ints, N + 1) and a constant in-degree ``k`` when there is one (kNN graphs). Sorted edges
    are processed in blocks of whole target nodes (:meth:`chunks`), each block summed on its own
    (:meth:`sum`): a reshape ``[n, k, ...].sum(1)`` at constant degree, ``index_add`` otherwise.

    Shapes: ``tgt`` [E] int64, ``weight`` [E] or None; the totals take dtype / device from ``like``."""

    def __init__(self, tgt: Tensor, num_nodes: int, weight: Tensor | None, like: Tensor):
        self.tgt, self.num_nodes, self.weight = tgt, num_nodes, weight
        E = tgt.shape[0]
        self.k = None
        self.ptr = None
        count = torch.zeros(num_nodes, device=tgt.device, dtype=torch.long).index_add_(
            0, tgt, torch.ones_like(tgt))
        if E == 0 or bool((tgt[1:] >= tgt[:-1]).all()):
            ptr = torch.zeros(num_nodes + 1, device=tgt.device, dtype=torch.long)
            ptr[1:] = torch.cumsum(count, 0)
            self.ptr = ptr.tolist()
            if num_nodes > 0 and E % num_nodes == 0 and bool((count == E // num_nodes).all()):
                self.k = E // num_nodes
        if weight is None:
            self.total = count.to(like.dtype)
        else:
            self.total = self.sum(weight.to(like.dtype), 0, num_nodes, 0, E, weighted=False)

    def matches(self, tgt: Tensor, num_nodes: int, weight: Tensor | None) -> bool:
        """Whether this was built for these targets (same storage and shape), node count and weights."""
        return self.num_nodes == num_nodes and _same(self.tgt, tgt) and _same(self.weight, weight)

    def chunks(self, max_edges: int) -> list[tuple[int, int, int, int]]:
        """``(a, b, e0, e1)``: target nodes [a, b) and their incoming edges [e0, e1), about ``max_edges`` edges
        each (whole nodes); one block with all edges when ``tgt`` is unsorted."""
        N, E = self.num_nodes, self.tgt.shape[0]
        if self.ptr is None or max_edges <= 0 or E <= max_edges:
            return [(0, N, 0, E)]
        out, a = [], 0
        ptr = self.ptr
        while a < N:
            b = a + 1
            if self.k:
                b = min(N, a + max(1, max_edges // self.k))
            else:
                while b < N and ptr[b + 1] - ptr[a] <= max_edges:
                    b += 1
            out.append((a, b, ptr[a], ptr[b]))
            a = b
        return out

    def sum(self, x: Tensor, a: int, b: int, e0: int, e1: int, weighted: bool = True) -> Tensor:
        r""":math:`\sum_{j \to i} w_{ij} x_{ij}` for targets ``i`` in [a, b) from their edges' ``x`` [e1 - e0, ...]
        (weighted when the graph has weights and ``weighted``) -> [b - a, ...]."""
        w = self.weight[e0:e1] if (weighted and self.weight is not None) else None
        n = b - a
        if self.k is not None and self.ptr is not None:
            xv = x.reshape((n, self.k) + x.shape[1:])
            if w is None:
                return xv.sum(1)
            if x.dim() == 2:                                                   # fused weighted sum: bmm
                return torch.bmm(w.to(x.dtype).reshape(n, 1, self.k), xv).squeeze(1)
            return (xv * w.to(x.dtype).reshape((n, self.k) + (1,) * (x.dim() - 1))).sum(1)
        if w is not None:
            x = x * w.to(x.dtype).reshape(w.shape + (1,) * (x.dim() - 1))
        idx = self.tgt[e0:e1] - a if a else self.tgt[e0:e1]
        return x.new_zeros((n,) + x.shape[1:]).index_add_(0, idx, x)

    def add_target(self, x: Tensor, t: Tensor, a: int, b: int, e0: int, e1: int) -> Tensor:
        """``x + t[tgt]`` for the edges [e0, e1) of targets [a, b) (``x`` [e1 - e0, ...], ``t`` [N, ...]): a
        broadcast over the neighbours at constant degree, a gather otherwise."""
        if self.k is not None and self.ptr is not None:
            n = b - a
            return (x.reshape((n, self.k) + x.shape[1:]) + t[a:b].unsqueeze(1)).reshape(x.shape)
        return x.add_(gather(t, self.tgt[e0:e1]))

    def scales(self, reduce: str) -> tuple[Tensor, Tensor]:
        r"""``(1 / c, total / c)`` [N]: the divisor of a mean (:func:`farfield.nn.smooth_count` of the weight
        total, or max(count, 1) without weights; 1 for a sum) and the factor a constant (a bias) picks up."""
        if reduce == "sum":
            return torch.ones_like(self.total), self.total
        c = smooth_count(self.total) if self.weight is not None else self.total.clamp(min=1)
        inv = 1.0 / c
        return inv, self.total * inv


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype


class _NormXYZ(torch.autograd.Function):
    r""":math:`\sqrt{\max(\lVert v\rVert^2, \epsilon)}` over axis 1 of ``v`` [n, 3, h] -> [n, h] with a
    one-pass backward :math:`v \cdot g / n` (zero where clamped); differentiable twice and vmap-able."""

    generate_vmap_rule = True

    @staticmethod
    def forward(v: Tensor) -> Tensor:
        return torch.sqrt(torch.clamp(v.square().sum(1), min=1e-8))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        v, n = ctx.saved_tensors
        floor = torch.sqrt(torch.tensor(1e-8, dtype=n.dtype, device=n.device))
        return v * torch.where(n > floor, g / n, torch.zeros_like(g)).unsqueeze(1)


def _vnorm_t(vh: Tensor) -> Tensor:
    r""":math:`\sqrt{\max(\lVert v\rVert^2, \epsilon)}` of ``vh`` [n, 3, h] over its xyz axis -> [n, h]
    (:func:`vector_norm` of the channel-major layout; a strided reduction over 3 whose autograd backward
    would take several passes, hence :class:`_NormXYZ`)."""
    return _NormXYZ.apply(vh)


def _addmm_(out: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``out += a @ b`` in place, in ``out``'s dtype (under autocast ``out`` may be bfloat16 while the weights are
    float32; in-place products are not autocast)."""
    if a.dtype != out.dtype or b.dtype != out.dtype:
        a, b = a.to(out.dtype), b.to(out.dtype)
    return out.addmm_(a, b)


def _lin_s(g: GVP, s: Tensor, vn: Tensor | None) -> Tensor:
    r""":math:`W_s[s; v_n] + b` without the concatenation (two accumulated products)."""
    W = g.ws.weight
    out = torch.addmm(g.ws.bias, s, W[:, :g.si].t())
    if vn is not None:
        out = _addmm_(out, vn, W[:, g.si:].t())
    return out


def _finish_t(g: GVP, s: Tensor, vh: Tensor | None) -> Tup:
    """:meth:`GVP.finish` with vectors in the xyz-major layout [n, 3, c] (``vh`` [n, 3, h] -> [n, 3, vo])."""
    v = None
    if vh is not None and g.vo:
        v = vh @ g.wv.weight.t()                                               # [n, 3, vo]
        if g.vector_gate:
            gin = g.act_v(s) if g.act_v is not None else s
            v = v * torch.sigmoid(torch.addmm(g.wsv.bias, gin, g.wsv.weight.t())).unsqueeze(1)
        elif g.act_v is not None:
            v = v * g.act_v(_vnorm_t(v)).unsqueeze(1)
    elif g.vo:
        v = s.new_zeros(s.shape[0], 3, g.vo)
    if g.act_s is not None:
        s = g.act_s(s)
    return s, v


def _gvp_t(g: GVP, s: Tensor, vt: Tensor | None) -> Tup:
    """One :class:`GVP` on ``(s [n, si], vt [n, 3, vi])`` (xyz-major vectors, contiguous: every vector map
    is one [3 n, c] x [c, c'] product, no transposes) -> ``(s [n, so], [n, 3, vo] or None)``."""
    if g.vi:
        vh = vt @ g.wh.weight.t()                                              # [n, 3, h]
        return _finish_t(g, _lin_s(g, s, _vnorm_t(vh)), vh)
    return _finish_t(g, _lin_s(g, s, None), None)


class GVPConv(nn.Module):
    r"""GVP graph convolution: :math:`h_i' = \mathrm{mean}_{j \in N(i)} g([h_j, e_{ji}, h_i])` where ``g`` is
    ``n_message`` stacked GVPs (the last without activations) on input dims (2 si + se, 2 vi + ve).

    Shapes: node tuple ([N, si], [N, vi, 3]), edge tuple ([E, se], [E, ve, 3]), ``edge_index`` [2, E]
    (row 0 = source j, row 1 = target i) -> ([N, so], [N, vo, 3]).

    With ``edge_weight`` [E] (a cutoff envelope) messages are weighted and the mean becomes the smooth
    weighted mean :math:`\sum_j u_{ij} g(\cdot) / c(\sum_j u_{ij})` of :func:`farfield.nn.mlp.aggregate`
    (continuous when an edge crosses the cutoff; the plain mean of the paper jumps with the neighbour count).

    ``split_first`` (default) evaluates the same function with fewer products (:meth:`_split_forward`):
    the first message GVP's linear maps split by input block and applied per node, vectors kept xyz-major
    [E, 3, c] along the message, the last message GVP's scalar map (linear: no activations) moved behind the
    (linear) mean so it runs per node instead of per edge, and edges taken in blocks of whole target nodes
    (``chunk_edges`` per block on CPU when targets are sorted, as kNN graphs are). Needs ``aggr`` 'mean' or
    'sum'. ``False`` gives the plain form on the edge-wise concatenation (the reference the tests compare with).
    """

    def __init__(self, in_dims: tuple[int, int], out_dims: tuple[int, int], edge_dims: tuple[int, int],
                 n_message: int = 3, activations=("relu", "sigmoid"), vector_gate: bool = True,
                 aggr: str = "mean", split_first: bool = True):
        super().__init__()
        si, vi = in_dims
        se, ve = edge_dims
        dims = [(2 * si + se, 2 * vi + ve)] + [tuple(out_dims)] * n_message
        gvps = []
        for k in range(n_message):
            last = k == n_message - 1
            gvps.append(GVP(dims[k], dims[k + 1], activations=(None, None) if last else activations,
                            vector_gate=vector_gate))
        self.message = nn.Sequential(*gvps)
        self.aggr = aggr
        self.split_first = split_first
        self._si, self._vi, self._se, self._ve = si, vi, se, ve

    #: edges per block of the split form on CPU (whole target nodes; sorted targets only)
    chunk_edges = 16384

    def _split_forward(self, s: Tensor, v: Tensor | None, src: Tensor, edge_attr: Tup,
                       seg: EdgeSegments) -> Tup:
        r"""The messages and their mean, the same function as the concatenated form with fewer products:

        * the first message GVP's linear maps split by input block, :math:`W_s[s_j; e_s; s_i; v_n] =
          W_s^{(j)} s_j + W_s^{(e)} e_s + W_s^{(i)} s_i + W_s^{(n)} v_n` and :math:`W_h[V_j; e_v; V_i] =
          W_h^{(j)} V_j + W_h^{(e)} e_v + W_h^{(i)} V_i`, node blocks applied once per node and gathered;
        * the last message GVP (no activations) has its scalar map behind the mean:
          :math:`\mathrm{mean}_j (W_s[s_j; v_{n,j}] + b) = W_s\,\mathrm{mean}_j[s_j; v_{n,j}] + b\,\beta`
          (:math:`\beta = \sum_j w_{ij} / c`: 1 for a node with neighbours, 0 without), and its vector gate
          :math:`\sigma(W_{sv}(W_s[s; v_n] + b) + b_{sv})` is one per-edge map by :math:`W_{sv} W_s`;
        * vectors xyz-major [E, 3, c] (each vector map one [3 E, c] x [c, c'] product), edges in blocks of
          whole target nodes (:meth:`EdgeSegments.chunks`; temporaries stay in cache).

        Equal to the concatenated form up to float round-off (sums are ordered differently)."""
        gs = list(self.message)
        g1, gl = gs[0], gs[-1]
        si, vi, se, ve = self._si, self._vi, self._se, self._ve
        es, ev = edge_attr
        W, b = g1.ws.weight, g1.ws.bias                                         # [so, 2 si + se (+ h)]
        ps_i = torch.addmm(b, s, W[:, si + se:2 * si + se].t())                 # [N, so], bias folded in
        ps_j = s @ W[:, :si].t()
        pv_i = pv_j = None
        if g1.vi and vi:
            Wh = g1.wh.weight                                                   # [h, 2 vi + ve]
            vt = v.transpose(-1, -2)                                            # [N, 3, vi]
            pv_i, pv_j = vt @ Wh[:, vi + ve:].t(), vt @ Wh[:, :vi].t()          # [N, 3, h]
        if len(gs) > 1 and gl.vo and gl.vi and gl.vector_gate:                  # gate on s' = W_s[s; v_n] + b
            M = gl.wsv.weight @ gl.ws.weight                                    # [vo, si + h]
            mc = torch.addmv(gl.wsv.bias, gl.wsv.weight, gl.ws.bias)
        sums_s, sums_n, sums_v = [], [], []
        for a, bb, e0, e1 in seg.chunks(self.chunk_edges if s.device.type == "cpu" else 0):
            src_c = src[e0:e1]
            out = seg.add_target(gather(ps_j, src_c), ps_i, a, bb, e0, e1)
            vh = vn = None
            if g1.vi:
                if vi:
                    vh = seg.add_target(gather(pv_j, src_c), pv_i, a, bb, e0, e1)
                if ve:
                    ve_h = ev[e0:e1].transpose(-1, -2) @ g1.wh.weight[:, vi:vi + ve].t()   # [e, 3, h]
                    vh = ve_h if vh is None else vh + ve_h
                vn = _vnorm_t(vh)                                               # [e, h]
            if se:
                out = _addmm_(out, es[e0:e1], W[:, si:si + se].t())
            if vn is not None:
                out = _addmm_(out, vn, W[:, 2 * si + se:].t())
            ms, mv = _finish_t(g1, out, vh)
            if len(gs) == 1:
                sums_s.append(seg.sum(ms, a, bb, e0, e1))
                if mv is not None:
                    sums_v.append(seg.sum(mv, a, bb, e0, e1))
                continue
            for g in gs[1:-1]:
                ms, mv = _gvp_t(g, ms, mv)
            vh = vn = None
            if gl.vi:
                vh = mv @ gl.wh.weight.t()                                      # [e, 3, h]
                vn = _vnorm_t(vh)                                               # [e, h]
                sums_n.append(seg.sum(vn, a, bb, e0, e1))
                if gl.vo:
                    mv = vh @ gl.wv.weight.t()                                  # [e, 3, vo]
                    if gl.vector_gate:
                        gate = _addmm_(torch.addmm(mc, ms, M[:, :gl.si].t()), vn, M[:, gl.si:].t())
                        mv = mv * torch.sigmoid(gate).unsqueeze(1)
                    sums_v.append(seg.sum(mv, a, bb, e0, e1))
            sums_s.append(seg.sum(ms, a, bb, e0, e1))
        inv, beta = seg.scales(self.aggr)
        cat = (lambda xs: xs[0] if len(xs) == 1 else torch.cat(xs))
        agg_s = cat(sums_s) * inv.unsqueeze(-1)
        if len(gs) == 1:
            out_s, g = agg_s, g1
        else:
            g = gl
            out_s = torch.addmm(beta.unsqueeze(-1) * gl.ws.bias, agg_s, gl.ws.weight[:, :gl.si].t())
            if sums_n:
                out_s = _addmm_(out_s, cat(sums_n) * inv.unsqueeze(-1), gl.ws.weight[:, gl.si:].t())
        if not g.vo:
            return out_s, None
        if not sums_v:                                                          # message GVPs without vectors
            return out_s, s.new_zeros(s.shape[0], g.vo, 3)
        return out_s, (cat(sums_v) * inv[:, None, None]).transpose(-1, -2)      # [N, vo, 3]

    def forward(self, x: Tup, edge_index: Tensor, edge_attr: Tup, edge_weight: Tensor | None = None,
                segments: EdgeSegments | None = None) -> Tup:
        """``segments``: an :class:`EdgeSegments` of ``edge_index[1]`` to reuse across layers (built here when
        absent or made for other edges)."""
        src, tgt = edge_index
        s, v = x
        n = s.shape[0]
        if self.split_first and self.aggr in ("mean", "sum"):
            seg = segments
            if seg is None or not seg.matches(tgt, n, edge_weight):
                seg = EdgeSegments(tgt, n, edge_weight, s)
            return self._split_forward(s, v, src, edge_attr, seg)
        xj = (gather(s, src), None if v is None else gather(v, src))
        xi = (gather(s, tgt), None if v is None else gather(v, tgt))
        ms, mv = self.message(_cat(xj, edge_attr, xi))
        return (aggregate(ms, tgt, n, self.aggr, edge_weight),
                None if mv is None else aggregate(mv, tgt, n, self.aggr, edge_weight))


class GVPConvLayer(nn.Module):
    r"""Post-norm residual GVP layer (GVP-GNN):

    .. math::
        h \leftarrow \mathrm{LN}(h + \mathrm{Dropout}(\mathrm{GVPConv}(h))),\qquad
        h \leftarrow \mathrm{LN}(h + \mathrm{Dropout}(\mathrm{GVP}_{\to(ns, nv)}(\mathrm{GVP}_{\to(4ns, 2nv)}(h))))

    (the last feed-forward GVP has no activations).
    """

    def __init__(self, node_dims: tuple[int, int], edge_dims: tuple[int, int], n_message: int = 3,
                 n_feedforward: int = 2, dropout: float = 0.1, activations=("relu", "sigmoid"),
                 vector_gate: bool = True):
        super().__init__()
        ns, nv = node_dims
        self.conv = GVPConv(node_dims, node_dims, edge_dims, n_message, activations, vector_gate)
        self.norm = nn.ModuleList([GVPLayerNorm(node_dims) for _ in range(2)])
        self.dropout = nn.ModuleList([GVPDropout(dropout) for _ in range(2)])
        hid = (4 * ns, 2 * nv)
        ff = []
        if n_feedforward == 1:
            ff.append(GVP(node_dims, node_dims, activations=(None, None), vector_gate=vector_gate))
        else:
            ff.append(GVP(node_dims, hid, activations=activations, vector_gate=vector_gate))
            for _ in range(n_feedforward - 2):
                ff.append(GVP(hid, hid, activations=activations, vector_gate=vector_gate))
            ff.append(GVP(hid, node_dims, activations=(None, None), vector_gate=vector_gate))
        self.ff = nn.Sequential(*ff)

    def forward(self, x: Tup, edge_index: Tensor, edge_attr: Tup, edge_weight: Tensor | None = None,
                segments: EdgeSegments | None = None) -> Tup:
        """``segments``: see :meth:`GVPConv.forward` (build one per forward and pass it to every layer)."""
        dh = self.dropout[0](self.conv(x, edge_index, edge_attr, edge_weight, segments))
        x = self.norm[0](_add(x, dh))
        dh = self.dropout[1](self.ff(x))
        return self.norm[1](_add(x, dh))


def _add(a: Tup, b: Tup) -> Tup:
    return a[0] + b[0], (None if a[1] is None else a[1] + b[1])

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

from farfield.nn.mlp import activation, aggregate, gather

__all__ = ["GVP", "GVPLayerNorm", "GVPDropout", "GVPConv", "GVPConvLayer", "vector_norm"]

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


class GVPConv(nn.Module):
    r"""GVP graph convolution: :math:`h_i' = \mathrm{mean}_{j \in N(i)} g([h_j, e_{ji}, h_i])` where ``g`` is
    ``n_message`` stacked GVPs (the last without activations) on input dims (2 si + se, 2 vi + ve).

    Shapes: node tuple ([N, si], [N, vi, 3]), edge tuple ([E, se], [E, ve, 3]), ``edge_index`` [2, E]
    (row 0 = source j, row 1 = target i) -> ([N, so], [N, vo, 3]).

    With ``edge_weight`` [E] (a cutoff envelope) messages are weighted and the mean becomes the smooth
    weighted mean :math:`\sum_j u_{ij} g(\cdot) / c(\sum_j u_{ij})` of :func:`farfield.nn.aggregate`
    (continuous when an edge crosses the cutoff; the plain mean of the paper jumps with the neighbour count).

    ``split_first`` (default) computes the first message GVP's linear maps per node and gathers them instead
    of multiplying the per-edge concatenation (:meth:`_first_message`): same function, fewer products.
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

    def _first_message(self, s: Tensor, v: Tensor | None, src: Tensor, tgt: Tensor, edge_attr: Tup) -> Tup:
        r"""The first message GVP on :math:`[h_j, e_{ji}, h_i]` without building the concatenation: its linear
        maps split by input block, :math:`W_s[s_j; e_s; s_i; v_n] = W_s^{(j)} s_j + W_s^{(e)} e_s + W_s^{(i)} s_i
        + W_s^{(n)} v_n` and :math:`W_h[V_j; e_v; V_i] = W_h^{(j)} V_j + W_h^{(e)} e_v + W_h^{(i)} V_i`; the
        node blocks are applied once per node and gathered (E / N times fewer products). Equal to the
        concatenated form up to float round-off (the sums are ordered differently)."""
        g = self.message[0]
        si, vi, se, ve = self._si, self._vi, self._se, self._ve
        es, ev = edge_attr
        vh = None
        if g.vi:
            W = g.wh.weight                                                     # [h, 2 vi + ve]
            vh = 0
            if vi:
                vt = v.transpose(-1, -2)                                        # [N, 3, vi]
                vh = gather(vt @ W[:, :vi].t(), src) + gather(vt @ W[:, vi + ve:].t(), tgt)
            if ve:
                vh = vh + ev.transpose(-1, -2) @ W[:, vi:vi + ve].t()           # [E, 3, h]
            vn = vector_norm(vh.transpose(-1, -2))                              # [E, h]
        W, b = g.ws.weight, g.ws.bias                                           # [so, 2 si + se (+ h)]
        out = gather(s @ W[:, :si].t(), src) + gather(s @ W[:, si + se:2 * si + se].t(), tgt) + b
        if se:
            out = out + es @ W[:, si:si + se].t()
        if g.vi:
            out = out + vn @ W[:, 2 * si + se:].t()
        return g.finish(out, vh)

    def forward(self, x: Tup, edge_index: Tensor, edge_attr: Tup, edge_weight: Tensor | None = None) -> Tup:
        src, tgt = edge_index
        s, v = x
        if self.split_first:
            ms, mv = self.message[1:](self._first_message(s, v, src, tgt, edge_attr))
        else:
            xj = (gather(s, src), None if v is None else gather(v, src))
            xi = (gather(s, tgt), None if v is None else gather(v, tgt))
            ms, mv = self.message(_cat(xj, edge_attr, xi))
        n = s.shape[0]
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

    def forward(self, x: Tup, edge_index: Tensor, edge_attr: Tup, edge_weight: Tensor | None = None) -> Tup:
        dh = self.dropout[0](self.conv(x, edge_index, edge_attr, edge_weight))
        x = self.norm[0](_add(x, dh))
        dh = self.dropout[1](self.ff(x))
        return self.norm[1](_add(x, dh))


def _add(a: Tup, b: Tup) -> Tup:
    return a[0] + b[0], (None if a[1] is None else a[1] + b[1])

"""Baselines for 2D molecular graphs without coordinates (LRGB; Dwivedi et al., "Long Range Graph
Benchmark", NeurIPS 2022 Datasets and Benchmarks): GCN, GINE and GatedGCN with the LRGB block
``h <- h + Dropout(ReLU(BN(conv(h))))``. They read ``x_s`` and ``edge_s`` only (never ``pos``), so every
geometric symmetry holds trivially; permutation equivariance is what the check verifies."""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GCNConv, GINEConv

from farfield.data import fields as F
from farfield.models.base import Backbone, EdgeGeometry, InputSpec, NodeState
from farfield.nn.mlp import aggregate, gather

__all__ = ["GCN", "GINE", "GatedGCN"]


class _Graph2D(Backbone):
    symmetry = "E(3)"
    uses_positions = False

    def __init__(self, spec: InputSpec, hidden: int, num_layers: int, dropout: float):
        super().__init__(spec)
        self.hidden_s = hidden
        self.embedding = nn.Linear(spec.node_s, hidden)
        self.edge_embedding = nn.Linear(max(spec.edge_s, 1), hidden)
        self.dropout = nn.Dropout(dropout)
        self.norms = nn.ModuleList([nn.BatchNorm1d(hidden) for _ in range(num_layers)])

    def embed(self, batch) -> NodeState:
        s = self.embedding(batch[F.X_S])
        pos = getattr(batch, F.POS, None)
        return NodeState(s=s, v=None, pos=pos if pos is not None else s.new_zeros(s.shape[0], 3))

    def geometry(self, state: NodeState, batch) -> EdgeGeometry:
        ei = batch[F.EDGE_INDEX]
        es = getattr(batch, F.EDGE_S, None) if self.spec.edge_s else None
        e_in = es.to(state.s.dtype) if es is not None else state.s.new_ones(ei.shape[1], 1)
        b = getattr(batch, "batch", None)
        if b is None:
            b = torch.zeros(state.s.shape[0], dtype=torch.long, device=state.s.device)
        g = EdgeGeometry(ei, None, None, None, None, es, b, state.s.shape[0])
        g.edge_h = self.edge_embedding(e_in)
        return g

    def block(self, i: int, h, dh):
        return h + self.dropout(torch.relu(self.norms[i](dh)))


class GCN(_Graph2D):
    r"""GCN (Kipf & Welling, ICLR 2017): :math:`h' = \hat D^{-1/2}\hat A\hat D^{-1/2} h W`, in the LRGB
    residual block. Edge features are ignored (as in the LRGB GCN baseline)."""

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 5, dropout: float = 0.0):
        super().__init__(spec, hidden, num_layers, dropout)
        self.layers = nn.ModuleList([GCNConv(hidden, hidden) for _ in range(num_layers)])

    def layer(self, i, state, g):
        return state.replace(s=self.block(i, state.s, self.layers[i](state.s, g.edge_index)))


class GINE(_Graph2D):
    r"""GINE (Hu et al., "Strategies for Pre-training GNNs", ICLR 2020):
    :math:`h_i' = \mathrm{MLP}((1+\epsilon) h_i + \sum_j \mathrm{ReLU}(h_j + e_{ji}))`, in the LRGB block."""

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 5, dropout: float = 0.0):
        super().__init__(spec, hidden, num_layers, dropout)
        self.layers = nn.ModuleList([
            GINEConv(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)), train_eps=True)
            for _ in range(num_layers)])

    def layer(self, i, state, g):
        return state.replace(s=self.block(i, state.s, self.layers[i](state.s, g.edge_index, g.edge_h)))


class GatedGCNLayer(nn.Module):
    r"""Residual gated graph convnet with edge features (Bresson & Laurent 2017; the GatedGCN of
    Dwivedi et al.'s benchmarks): :math:`\hat e_{ij} = A h_i + B h_j + C e_{ij}`,
    :math:`\sigma_{ij} = \mathrm{sigmoid}(\hat e_{ij})`,
    :math:`h_i' = U h_i + \sum_j \sigma_{ij} \odot V h_j / (\sum_j \sigma_{ij} + \epsilon)`; edges
    :math:`e_{ij} \leftarrow e_{ij} + \mathrm{Dropout}(\mathrm{ReLU}(\mathrm{BN}(\hat e_{ij})))`."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.A, self.B, self.C, self.U, self.V = (nn.Linear(hidden, hidden) for _ in range(5))
        self.edge_norm = nn.BatchNorm1d(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h, e, edge_index):
        src, tgt = edge_index
        e_hat = gather(self.A(h), tgt) + gather(self.B(h), src) + self.C(e)
        sig = torch.sigmoid(e_hat)
        n = h.shape[0]
        num = aggregate(sig * gather(self.V(h), src), tgt, n)
        den = aggregate(sig, tgt, n)
        out = self.U(h) + num / (den + 1e-6)
        e = e + self.dropout(torch.relu(self.edge_norm(e_hat)))
        return out, e


class GatedGCN(_Graph2D):
    """GatedGCN (see :class:`GatedGCNLayer`) in the LRGB block, with edge features updated every layer."""

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 5, dropout: float = 0.0):
        super().__init__(spec, hidden, num_layers, dropout)
        self.layers = nn.ModuleList([GatedGCNLayer(hidden, dropout) for _ in range(num_layers)])

    def layer(self, i, state, g):
        dh, g.edge_h = self.layers[i](state.s, g.edge_h, g.edge_index)
        return state.replace(s=self.block(i, state.s, dh))

"""Baselines for 2D molecular graphs without coordinates (LRGB; Dwivedi et al., "Long Range Graph
Benchmark", NeurIPS 2022 Datasets and Benchmarks): GCN, GINE and GatedGCN with the LRGB block
``h <- h + Dropout(ReLU(BN(conv(h))))``. They read ``x_s`` and ``edge_s`` only (never ``pos``), so every
geometric symmetry holds trivially; permutation equivariance is what the check verifies.

Options shared by the three (defaults give the LRGB block above, unchanged):

* ``activation``: the block's nonlinearity, ``'relu'`` (default) or ``'gelu'`` (any name of
  :data:`farfield.nn.mlp.ACTIVATIONS`);
* ``norm``: ``'batch'`` (default, BatchNorm of the layer output) or ``'none'``. With ``activation='gelu',
  norm='none'`` the block is ``h <- h + Dropout(GELU(conv(h)))``, the residual GCN layer of the tuned LRGB
  baselines (Toenshoff, Ritzert, Rosenbluth and Grohe, "Where Did the Gap Go? Reassessing the Long-Range Graph
  Benchmark", 2023, built on GraphGPS: Rampasek et al., "Recipe for a General, Powerful, Scalable Graph
  Transformer", NeurIPS 2022);
* ``pe_encoder`` / ``pe_columns`` / ``pe_width``: how the input embedding treats the last ``pe_columns``
  columns of ``x_s`` (positional / structural encodings appended by the loader). ``'none'`` (default): one
  linear map of all of ``x_s`` to ``hidden``. Otherwise, as GraphGPS's concatenated node encoders: the other
  columns are mapped to ``hidden - pe_width`` and the encoding to ``pe_width``, then concatenated.
  ``'rwse'``: BatchNorm of the raw random-walk return probabilities, then a linear map (GraphGPS's RWSE
  encoder, ``raw_norm_type: BatchNorm``, ``model: Linear``); ``'lap_deepset'``: the columns are ``k``
  Laplacian eigenvectors then their ``k`` eigenvalues (:func:`farfield.features.positional.laplacian_pe`);
  each pair (eigenvector entry, eigenvalue) goes through ``Linear(2, 2w) -> ReLU -> Linear(2w, w) -> ReLU``
  and the ``k`` results are summed (GraphGPS's LapPE ``DeepSet`` encoder with ``layers: 2``, no raw norm,
  no post-pooling MLP; padding columns of graphs under ``k`` nodes are zeros here, not masked).
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GCNConv, GINEConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from farfield.data import fields as F
from farfield.models.base import Backbone, EdgeGeometry, InputSpec, NodeState
from farfield.errors import ConfigError
from farfield.nn.aggregate import SparseAdjacency, spmm
from farfield.nn.mlp import activation as _activation
from farfield.nn.mlp import aggregate, gather

__all__ = ["GCN", "GINE", "GatedGCN", "NORMS", "PE_ENCODERS"]

#: ``norm`` options of the 2D blocks
NORMS = ("batch", "none")
#: ``pe_encoder`` options of the 2D input embedding
PE_ENCODERS = ("none", "rwse", "lap_deepset")


class _PEConcatEmbedding(nn.Module):
    """GraphGPS-style input encoder: ``Linear(x[:, :-c]) -> hidden - w`` concatenated with an encoding of the
    last ``c`` columns -> ``w`` (``kind`` ``'rwse'`` or ``'lap_deepset'``; see the module docstring)."""

    def __init__(self, node_s: int, hidden: int, kind: str, columns: int, width: int):
        super().__init__()
        self.kind, self.columns = kind, columns
        self.linear_x = nn.Linear(node_s - columns, hidden - width)
        if kind == "rwse":
            self.raw_norm = nn.BatchNorm1d(columns)
            self.pe = nn.Linear(columns, width)
        else:
            self.k = columns // 2
            self.linear_a = nn.Linear(2, 2 * width)
            self.pe = nn.Sequential(nn.ReLU(), nn.Linear(2 * width, width), nn.ReLU())

    def forward(self, x):
        h, p = x[:, :-self.columns], x[:, -self.columns:]
        if self.kind == "rwse":
            enc = self.pe(self.raw_norm(p))
        else:
            pairs = torch.stack([p[:, :self.k], p[:, self.k:]], dim=-1)      # [N, k, 2]: (eigvec entry, eigval)
            enc = self.pe(self.linear_a(pairs)).sum(1)
        return torch.cat([self.linear_x(h), enc], dim=-1)


class _Graph2D(Backbone):
    symmetry = "E(3)"
    uses_positions = False
    #: False for models that ignore edge features (GCN): the edge embedding is then not evaluated
    uses_edge_features = True

    def __init__(self, spec: InputSpec, hidden: int, num_layers: int, dropout: float, activation: str = "relu",
                 norm: str = "batch", pe_encoder: str = "none", pe_columns: int = 0, pe_width: int = 0):
        super().__init__(spec)
        if norm not in NORMS:
            raise ConfigError(f"{type(self).__name__}: norm must be one of {list(NORMS)}, got {norm!r}")
        _check_pe(type(self).__name__, spec, hidden, pe_encoder, pe_columns, pe_width)
        self.hidden_s = hidden
        self.act = _activation(activation)
        self.activation, self.norm, self.pe_encoder = activation, norm, pe_encoder
        # creation order as before the options existed, so that a seeded default model is unchanged
        self.embedding = nn.Linear(spec.node_s, hidden) if pe_encoder == "none" else \
            _PEConcatEmbedding(spec.node_s, hidden, pe_encoder, pe_columns, pe_width)
        self.edge_embedding = nn.Linear(max(spec.edge_s, 1), hidden)
        self.dropout = nn.Dropout(dropout)
        self.norms = nn.ModuleList([nn.BatchNorm1d(hidden) if norm == "batch" else nn.Identity()
                                    for _ in range(num_layers)])

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
        g.edge_h = self.edge_embedding(e_in) if self.uses_edge_features else None
        return g

    def block(self, i: int, h, dh):
        return h + self.dropout(self.act(self.norms[i](dh)))


def _check_pe(model: str, spec: InputSpec, hidden: int, kind: str, columns: int, width: int) -> None:
    if kind not in PE_ENCODERS:
        raise ConfigError(f"{model}: pe_encoder must be one of {list(PE_ENCODERS)}, got {kind!r}")
    for k, v in (("pe_columns", columns), ("pe_width", width)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"{model}: {k} must be a non-negative integer, got {v!r}")
    if kind == "none":
        if columns or width:
            raise ConfigError(f"{model}: pe_columns / pe_width need pe_encoder 'rwse' or 'lap_deepset'")
        return
    if not 0 < columns < spec.node_s:
        raise ConfigError(f"{model}: pe_encoder={kind!r} needs 0 < pe_columns < the {spec.node_s} input columns, "
                          f"got {columns}")
    if not 0 < width < hidden:
        raise ConfigError(f"{model}: pe_encoder={kind!r} needs 0 < pe_width < hidden={hidden}, got {width}")
    if kind == "lap_deepset" and columns % 2:
        raise ConfigError(f"{model}: pe_encoder='lap_deepset' reads k eigenvectors then k eigenvalues, so "
                          f"pe_columns must be even, got {columns}")


class GCN(_Graph2D):
    r"""GCN (Kipf & Welling, ICLR 2017): :math:`h' = \hat D^{-1/2}\hat A\hat D^{-1/2} h W`, in the LRGB
    residual block. Edge features are ignored (as in the LRGB GCN baseline).

    The layers are PyG ``GCNConv`` modules (same parameters and state dict), but the normalised adjacency
    (PyG's ``gcn_norm``: self-loops added where missing, symmetric degree normalisation) is built once per
    batch by :meth:`geometry` as a CSR matrix (:class:`farfield.nn.aggregate.SparseAdjacency`) and each
    layer is ``spmm(A, lin(h)) + bias``, the arithmetic of ``GCNConv.forward`` with a sparse product in
    place of its gather / scatter (equal to round-off; deterministic on CPU)."""

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 5, dropout: float = 0.0,
                 activation: str = "relu", norm: str = "batch", pe_encoder: str = "none", pe_columns: int = 0,
                 pe_width: int = 0):
        super().__init__(spec, hidden, num_layers, dropout, activation, norm, pe_encoder, pe_columns, pe_width)
        self.layers = nn.ModuleList([GCNConv(hidden, hidden) for _ in range(num_layers)])

    uses_edge_features = False                    # edge_embedding is kept (state dicts) but never evaluated

    def geometry(self, state: NodeState, batch) -> EdgeGeometry:
        g = super().geometry(state, batch)
        if not len(self.layers):
            return g
        conv = self.layers[0]                     # every layer has the same normalisation options
        dtype = state.s.dtype if state.s.dtype in (torch.float32, torch.float64) else torch.float32   # (autocast)
        ei, w = gcn_norm(g.edge_index, None, g.num_nodes, conv.improved, conv.add_self_loops, conv.flow, dtype)
        g.adj = SparseAdjacency.from_edges(ei, w, g.num_nodes)
        return g

    def layer(self, i, state, g):
        conv = self.layers[i]
        dh = spmm(g.adj, conv.lin(state.s), conv.bias)
        return state.replace(s=self.block(i, state.s, dh))


class GINE(_Graph2D):
    r"""GINE (Hu et al., "Strategies for Pre-training GNNs", ICLR 2020):
    :math:`h_i' = \mathrm{MLP}((1+\epsilon) h_i + \sum_j \mathrm{ReLU}(h_j + e_{ji}))`, in the LRGB block."""

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 5, dropout: float = 0.0,
                 activation: str = "relu", norm: str = "batch", pe_encoder: str = "none", pe_columns: int = 0,
                 pe_width: int = 0):
        super().__init__(spec, hidden, num_layers, dropout, activation, norm, pe_encoder, pe_columns, pe_width)
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

    def __init__(self, spec: InputSpec, hidden: int = 128, num_layers: int = 5, dropout: float = 0.0,
                 activation: str = "relu", norm: str = "batch", pe_encoder: str = "none", pe_columns: int = 0,
                 pe_width: int = 0):
        super().__init__(spec, hidden, num_layers, dropout, activation, norm, pe_encoder, pe_columns, pe_width)
        self.layers = nn.ModuleList([GatedGCNLayer(hidden, dropout) for _ in range(num_layers)])

    def layer(self, i, state, g):
        dh, g.edge_h = self.layers[i](state.s, g.edge_h, g.edge_index)
        return state.replace(s=self.block(i, state.s, dh))

"""Neural-network layers: GVP blocks, Vector Neurons, MLPs, activations and aggregation (pure torch + PyG
scatter; receiver-sorted CSR layouts and segment sums in :mod:`farfield.nn.aggregate`)."""
from farfield.nn.aggregate import (EdgePairs, ReceiverIndex, SparseAdjacency, csr_layout, edge_pairs, gather_src,
                                   segment_sum, spmm)
from farfield.nn.gvp import GVP, GVPConv, GVPConvLayer, GVPDropout, GVPLayerNorm, vector_norm
from farfield.nn.mlp import ACTIVATIONS, MLP, ShiftedSoftplus, activation, aggregate, gather, smooth_count
from farfield.nn.vn import (VNDGCNN, VNBatchNorm, VNInvariant, VNLeakyReLU, VNLinear, VNLinearLeakyReLU, VNMaxPool,
                            VNPointNet, vn_mean_pool)

__all__ = ["ACTIVATIONS", "EdgePairs", "GVP", "GVPConv", "GVPConvLayer", "GVPDropout", "GVPLayerNorm", "MLP",
           "ReceiverIndex", "ShiftedSoftplus", "SparseAdjacency", "VNBatchNorm", "VNDGCNN", "VNInvariant",
           "VNLeakyReLU", "VNLinear", "VNLinearLeakyReLU", "VNMaxPool", "VNPointNet", "activation", "aggregate",
           "csr_layout", "edge_pairs", "gather", "gather_src", "segment_sum", "smooth_count", "spmm", "vector_norm",
           "vn_mean_pool"]

"""Neural-network layers: GVP blocks, Vector Neurons, MLPs, activations and aggregation (pure torch + PyG scatter)."""
from farfield.nn.gvp import GVP, GVPConv, GVPConvLayer, GVPDropout, GVPLayerNorm, vector_norm
from farfield.nn.mlp import ACTIVATIONS, MLP, ShiftedSoftplus, activation, aggregate, gather, smooth_count
from farfield.nn.vn import (VNDGCNN, VNBatchNorm, VNInvariant, VNLeakyReLU, VNLinear, VNLinearLeakyReLU, VNMaxPool,
                            VNPointNet, vn_mean_pool)

__all__ = ["ACTIVATIONS", "GVP", "GVPConv", "GVPConvLayer", "GVPDropout", "GVPLayerNorm", "MLP",
           "ShiftedSoftplus", "VNBatchNorm", "VNDGCNN", "VNInvariant", "VNLeakyReLU", "VNLinear", "VNLinearLeakyReLU",
           "VNMaxPool", "VNPointNet", "activation", "aggregate", "gather", "smooth_count", "vector_norm", "vn_mean_pool"]

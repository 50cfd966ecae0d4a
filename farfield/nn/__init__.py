"""Neural-network layers: GVP blocks, MLPs, activations and aggregation (pure torch + PyG scatter)."""
from farfield.nn.gvp import GVP, GVPConv, GVPConvLayer, GVPDropout, GVPLayerNorm, vector_norm
from farfield.nn.mlp import ACTIVATIONS, MLP, ShiftedSoftplus, activation, aggregate, gather, smooth_count

__all__ = ["ACTIVATIONS", "GVP", "GVPConv", "GVPConvLayer", "GVPDropout", "GVPLayerNorm", "MLP",
           "ShiftedSoftplus", "activation", "aggregate", "gather", "smooth_count", "vector_norm"]

"""Transformations of a batch used by the symmetry check: rigid motions of the geometric fields and
within-graph node permutations. Coordinates are rows: ``x' = x Q^T + t``."""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from farfield.data import fields as F
from farfield.symmetry.frames import COORD_FIELDS, VECTOR_FIELDS

__all__ = ["random_rotation", "reflection", "transform_batch", "permute_batch", "within_graph_permutation",
           "cast_batch"]


def random_rotation(gen: torch.Generator, dtype=torch.float64) -> Tensor:
    """Uniform random rotation (det +1) from the QR decomposition of a Gaussian matrix."""
    a = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def reflection(gen: torch.Generator, dtype=torch.float64) -> Tensor:
    """A random improper rotation (det -1): a random rotation times a mirror."""
    return random_rotation(gen, dtype) @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=dtype))


def cast_batch(batch, dtype):
    """Copy of ``batch`` with every floating-point tensor in ``dtype``."""
    out = copy.copy(batch)
    for key, value in batch.items():
        if torch.is_tensor(value) and value.is_floating_point():
            out[key] = value.to(dtype)
    return out


def transform_batch(batch, Q: Tensor, t: Tensor | None = None):
    """Copy of ``batch`` with coordinate fields ``x Q^T + t`` and vector fields ``v Q^T``."""
    out = copy.copy(batch)
    for key in COORD_FIELDS:
        x = getattr(batch, key, None)
        if x is not None:
            y = x @ Q.T.to(x.dtype)
            out[key] = y + t.to(x.dtype) if t is not None else y
    for key in VECTOR_FIELDS:
        x = getattr(batch, key, None)
        if x is not None:
            out[key] = x @ Q.T.to(x.dtype)
    return out


def within_graph_permutation(batch_vec: Tensor, gen: torch.Generator) -> Tensor:
    """A random node permutation that keeps every node in its graph and the batch vector sorted:
    new node k is old node ``perm[k]``."""
    key = batch_vec.double() + torch.rand(batch_vec.shape[0], generator=gen, dtype=torch.float64) * 0.5
    return torch.argsort(key)


def permute_batch(batch, perm: Tensor):
    """Copy of ``batch`` with node fields reordered by ``perm`` and edges relabelled accordingly."""
    out = copy.copy(batch)
    n = batch.num_nodes
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n, device=perm.device)
    for key, value in batch.items():
        if key == F.EDGE_INDEX:
            out[key] = inv[value]
        elif torch.is_tensor(value) and value.dim() and value.shape[0] == n and batch.is_node_attr(key):
            out[key] = value[perm]
    return out

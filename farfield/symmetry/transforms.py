"""Transformations of a batch used by the symmetry check: rigid motions of the geometric fields and
within-graph node permutations. Coordinates are rows: ``x' = x Q^T + t``."""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from farfield.data import fields as F
from farfield.symmetry.frames import COORD_FIELDS, VECTOR_FIELDS

__all__ = ["random_rotation", "reflection", "transform_batch", "permute_batch", "within_graph_permutation",
           "cast_batch", "lattice_translate"]


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
    for key in VECTOR_FIELDS + (F.CELL,):
        x = getattr(batch, key, None)
        if x is not None:
            out[key] = x @ Q.T.to(x.dtype)
    return out


def lattice_translate(batch, gen: torch.Generator, max_shift: int = 2):
    """Copy of a periodic ``batch`` with about half of the atoms moved by random integer combinations ``n`` of
    their cell's lattice vectors (``pos + n @ cell``; coordinate fields alike) and the lattice shifts of
    their edges adjusted (``cell_shift - n[src] + n[tgt]``) so that every edge joins the same images
    -> (batch, offsets [N, 3]: what each atom moved by)."""
    pos = batch[F.POS]
    cell = batch[F.CELL].reshape(-1, 3, 3)
    n_atoms = pos.shape[0]
    b = getattr(batch, "batch", None)
    b = torch.zeros(n_atoms, dtype=torch.long) if b is None else b
    n = torch.randint(-max_shift, max_shift + 1, (n_atoms, 3), generator=gen)
    n = n * (torch.rand(n_atoms, 1, generator=gen) < 0.5)
    offset = torch.einsum("na,nab->nb", n.to(pos.dtype), cell.to(pos.dtype)[b])
    out = copy.copy(batch)
    for key in COORD_FIELDS:
        x = getattr(batch, key, None)
        if x is not None:
            out[key] = x + (offset if x.dim() == 2 else offset.unsqueeze(1)).to(x.dtype)
    src, tgt = batch[F.EDGE_INDEX]
    shift = getattr(batch, F.CELL_SHIFT, None)
    if shift is None:
        shift = torch.zeros(src.shape[0], 3, dtype=torch.long)
    out[F.CELL_SHIFT] = shift - n[src].to(shift.dtype) + n[tgt].to(shift.dtype)
    return out, offset


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

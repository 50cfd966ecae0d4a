"""Small building blocks: MLPs, activations and aggregation (PyG's pure-torch ``scatter``)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from farfield.errors import ConfigError

__all__ = ["ACTIVATIONS", "activation", "MLP", "ShiftedSoftplus", "aggregate", "gather", "smooth_count"]


class ShiftedSoftplus(nn.Module):
    r"""SchNet's :math:`\mathrm{ssp}(x) = \ln(0.5 e^x + 0.5)` (zero at zero)."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(x) - math.log(2.0)


ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
               "ssp": ShiftedSoftplus}


def activation(name: str | None) -> nn.Module | None:
    if name is None:
        return None
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """``Linear -> act -> ... -> Linear`` over ``dims`` (activation between layers, none after the last
    unless ``last_act``)."""

    def __init__(self, dims: list[int], act: str = "silu", last_act: bool = False, dropout: float = 0.0):
        if len(dims) < 2:
            raise ConfigError(f"MLP needs at least input and output widths, got {dims}")
        mods: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            mods.append(nn.Linear(a, b))
            if k < len(dims) - 2 or last_act:
                mods.append(activation(act))
                if dropout:
                    mods.append(nn.Dropout(dropout))
        super().__init__(*mods)


def gather(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` along the first axis, as ``index_select`` (its backward is a fast index_add, where
    advanced indexing backpropagates through a slower, single-threaded index_put_)."""
    return x.index_select(0, index)


def smooth_count(total_weight: Tensor) -> Tensor:
    r"""Smooth neighbour count :math:`c(s) = s + e^{-s}` of a weight sum :math:`s \ge 0`: C^\infty, >= 1,
    :math:`pprox s` for :math:`s \gtrsim 3` (so a weighted mean tends to the plain mean when neighbours are
    well inside the cutoff) and 1 at :math:`s = 0` (no division by a vanishing count, which would keep an
    edge at the cutoff at full strength)."""
    return total_weight + torch.exp(-total_weight)


def aggregate(msg: Tensor, index: Tensor, num_nodes: int, reduce: str = "sum", weight: Tensor | None = None
              ) -> Tensor:
    r"""Aggregate edge messages ``msg`` [E, ...] onto targets ``index`` [E] -> [num_nodes, ...].

    With a per-edge ``weight`` [E] (an envelope, zero at the cutoff) messages are multiplied by it first;
    ``reduce='sum'`` then gives :math:`\sum_j w_{ij} m_{ij}` and ``reduce='mean'`` the smooth weighted mean
    :math:`\sum_j w_{ij} m_{ij} / c(\sum_j w_{ij})` with :func:`smooth_count` ``c``, so that the result is
    continuous when an edge crosses the cutoff (a plain mean jumps with the neighbour count)."""
    if weight is None:
        return scatter(msg, index, dim=0, dim_size=num_nodes, reduce=reduce)
    if reduce not in ("sum", "mean"):
        raise ConfigError(f"aggregate: weighted aggregation supports 'sum' and 'mean', got {reduce!r}")
    w = weight.to(msg.dtype).reshape(weight.shape + (1,) * (msg.dim() - 1))
    total = scatter(msg * w, index, dim=0, dim_size=num_nodes, reduce="sum")
    if reduce == "sum":
        return total
    count = scatter(weight.to(msg.dtype), index, dim=0, dim_size=num_nodes, reduce="sum")
    return total / smooth_count(count).reshape(count.shape + (1,) * (msg.dim() - 1))

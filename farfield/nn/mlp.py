"""Small building blocks: MLPs, activations and aggregation (PyG's pure-torch ``scatter``)."""
from __future__ import annotations

import math

from torch import Tensor, nn
from torch_geometric.utils import scatter

from farfield.errors import ConfigError

__all__ = ["ACTIVATIONS", "activation", "MLP", "ShiftedSoftplus", "aggregate"]


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


def aggregate(msg: Tensor, index: Tensor, num_nodes: int, reduce: str = "sum") -> Tensor:
    """Aggregate edge messages ``msg`` [E, ...] onto targets ``index`` [E] -> [num_nodes, ...]."""
    return scatter(msg, index, dim=0, dim_size=num_nodes, reduce=reduce)

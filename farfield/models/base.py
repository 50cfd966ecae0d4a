"""The backbone contract shared by every model family.

A backbone maps a PyG batch from :class:`farfield.data.Featuriser` (fields in :mod:`farfield.data.fields`)
to per-node outputs::

    out = backbone(batch)          # BackboneOutput
    out.s    # [N, d]      invariant node scalars (always)
    out.v    # [N, c, 3]   equivariant node vectors, Cartesian x, y, z (or None)
    out.t    # [N, D]      higher-order spherical features in e3nn layout, described by backbone.irreps_t (or None)
    out.pos  # [N, 3]      updated coordinates (EGNN with coordinate updates; else None)

Every backbone is built from an :class:`InputSpec` (widths of ``x_s``, ``x_v``, ``edge_s``), runs
``embed -> layers -> output`` and lets callers act around layers through ``forward(batch, between=...)``
(long-range modules hook in there): ``between`` is either a function ``between(i, state, batch) -> state``
called after layer ``i`` with the :class:`NodeState` (``s`` [N, d], ``v`` [N, c, 3] or None, ``pos``
[N, 3]), or a :class:`LayerHooks` object whose ``start`` / ``before`` / ``after`` are called after the
embedding and before / after every layer.

Each class declares the symmetry group it claims in ``symmetry`` (:data:`GROUPS`); the check in
:mod:`farfield.symmetry` holds it to that claim. Every backbone is permutation equivariant.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, ClassVar

import torch
from torch import Tensor, nn

from farfield.data import fields as F
from farfield.errors import ConfigError, InputError

__all__ = ["GROUPS", "InputSpec", "NodeState", "BackboneOutput", "EdgeGeometry", "Backbone", "LayerHooks",
           "edge_geometry", "default_radial"]

#: symmetry claims: E(3) = rotations, reflections, translations; SE(3) = rotations, translations;
#: T(3) = translations only; none = no geometric claim. Permutation equivariance is always claimed.
GROUPS = {
    "E(3)": ("rotation", "reflection", "translation", "permutation"),
    "SE(3)": ("rotation", "translation", "permutation"),
    "T(3)": ("translation", "permutation"),
    "none": ("permutation",),
}


@dataclass(frozen=True)
class InputSpec:
    """Widths of a batch's inputs: node scalars ``x_s`` [N, node_s], node vectors ``x_v`` [N, node_v, 3],
    edge scalars ``edge_s`` [E, edge_s] (0 where absent)."""

    node_s: int
    node_v: int = 0
    edge_s: int = 0

    @classmethod
    def from_data(cls, data) -> "InputSpec":
        if getattr(data, F.X_S, None) is None:
            raise InputError(str(getattr(data, F.NAME, "graph")), "has no node scalar features 'x_s'")
        xv = getattr(data, F.X_V, None)
        es = getattr(data, F.EDGE_S, None)
        return cls(int(data[F.X_S].shape[-1]), 0 if xv is None else int(xv.shape[1]),
                   0 if es is None else int(es.shape[-1]))


@dataclass
class NodeState:
    """What flows between layers: ``s`` [N, d], ``v`` [N, c, 3] or None, ``pos`` [N, 3], and for spherical
    models the higher-order block ``t`` [N, D] (e3nn layout) or None."""

    s: Tensor
    v: Tensor | None
    pos: Tensor
    t: Tensor | None = None

    def replace(self, **kw) -> "NodeState":
        return replace(self, **kw)


@dataclass
class BackboneOutput:
    s: Tensor
    v: Tensor | None = None
    t: Tensor | None = None
    pos: Tensor | None = None


@dataclass
class EdgeGeometry:
    """Per-edge geometry, computed once per forward (or per layer when positions move).

    ``edge_index`` [2, E] (row 0 = source j, row 1 = target i), ``vec`` [E, 3] = pos_j - pos_i,
    ``dist`` [E], ``unit`` [E, 3] (zero for zero-length edges), ``rbf`` [E, K] radial basis of ``dist``,
    ``edge_s`` [E, F_e] or None, ``batch`` [N], ``num_nodes``."""

    edge_index: Tensor
    vec: Tensor
    dist: Tensor
    unit: Tensor
    rbf: Tensor | None
    edge_s: Tensor | None
    batch: Tensor
    num_nodes: int


def edge_geometry(pos: Tensor, batch, radial: nn.Module | None) -> EdgeGeometry:
    """Edge vectors, lengths, unit vectors and radial features of ``batch.edge_index`` on ``pos``."""
    ei = batch[F.EDGE_INDEX]
    src, tgt = ei
    vec = pos[src] - pos[tgt]
    dist = vec.norm(dim=-1)
    unit = vec / dist.clamp(min=1e-9).unsqueeze(-1)
    unit = torch.where((dist > 1e-9).unsqueeze(-1), unit, torch.zeros_like(unit))
    b = getattr(batch, "batch", None)
    n = pos.shape[0]
    if b is None:
        b = torch.zeros(n, dtype=torch.long, device=pos.device)
    es = getattr(batch, F.EDGE_S, None)
    return EdgeGeometry(ei, vec, dist, unit, radial(dist) if radial is not None else None,
                        None if es is None else es.to(pos.dtype), b, n)


def default_radial(cutoff: float, num_basis: int = 16, envelope: bool = False) -> nn.Module:
    """Gaussian RBF on [0, cutoff]; raises on edges beyond the cutoff (nothing is zeroed silently)."""
    from farfield.features.radial import CosineEnvelope, GaussianRBF
    return GaussianRBF(cutoff, num_basis, envelope=CosineEnvelope(cutoff) if envelope else None)


class LayerHooks:
    """Callbacks around a backbone's layers (see the module docstring). ``start`` is called once per forward
    pass after the embedding (frame averaging calls the backbone once per frame, so per-pass state must be
    reset there); ``before(i, state, batch)`` and ``after(i, state, batch)`` return the (possibly updated)
    state. The defaults do nothing."""

    def start(self, state: "NodeState", batch) -> None:
        pass

    def before(self, i: int, state: "NodeState", batch) -> "NodeState":
        return state

    def after(self, i: int, state: "NodeState", batch) -> "NodeState":
        return state


class Backbone(nn.Module):
    """Base class: subclasses set ``symmetry``, ``hidden_s``, ``hidden_v`` (0 when the model has no node
    vectors), build ``self.layers`` and implement :meth:`embed`, :meth:`geometry`, :meth:`layer` and
    :meth:`output`."""

    symmetry: ClassVar[str] = "E(3)"
    #: backbones that read coordinates (False for 2D graph baselines)
    uses_positions: ClassVar[bool] = True
    irreps_t = None  # e3nn Irreps of ``t`` outputs (spherical models)

    def __init__(self, spec: InputSpec):
        super().__init__()
        if not isinstance(spec, InputSpec):
            raise ConfigError(f"{type(self).__name__}: expected an InputSpec, got {type(spec).__name__}")
        self.spec = spec
        self.hidden_s = 0
        self.hidden_v = 0

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    # -- steps -------------------------------------------------------------------------------------
    def embed(self, batch) -> NodeState:
        raise NotImplementedError

    def geometry(self, state: NodeState, batch) -> EdgeGeometry:
        return edge_geometry(state.pos, batch, getattr(self, "radial", None))

    def layer(self, i: int, state: NodeState, geom: EdgeGeometry) -> NodeState:
        return self.layers[i](state, geom)

    def output(self, state: NodeState, batch) -> BackboneOutput:
        return BackboneOutput(s=state.s, v=state.v, t=state.t)

    #: True when layers move ``pos`` so geometry must be recomputed per layer
    moves_positions: bool = False

    def forward(self, batch, between: LayerHooks | Callable[[int, NodeState, object], NodeState] | None = None
                ) -> BackboneOutput:
        self._check_batch(batch)
        hooks = between if isinstance(between, LayerHooks) else None
        after = hooks.after if hooks is not None else between
        state = self.embed(batch)
        if hooks is not None:
            hooks.start(state, batch)
        geom = self.geometry(state, batch)
        for i in range(self.num_layers):
            if i and self.moves_positions:
                geom = self.geometry(state, batch)
            if hooks is not None:
                state = hooks.before(i, state, batch)
            state = self.layer(i, state, geom)
            if after is not None:
                state = after(i, state, batch)
        return self.output(state, batch)

    def _check_batch(self, batch) -> None:
        name = getattr(batch, F.NAME, None) or "batch"
        name = name if isinstance(name, str) else "batch"
        xs = getattr(batch, F.X_S, None)
        if xs is None or xs.shape[-1] != self.spec.node_s:
            raise InputError(name, f"{type(self).__name__} expects x_s of width {self.spec.node_s}, got "
                                   f"{None if xs is None else tuple(xs.shape)}")
        param = next(self.parameters(), None)
        if param is not None and xs.dtype != param.dtype:
            raise InputError(name, f"node features are {str(xs.dtype).replace('torch.', '')} but {type(self).__name__} "
                                   f"is {str(param.dtype).replace('torch.', '')}; cast the model (model.double() / "
                                   "model.float()) or featurise with the matching dtype")
        if self.uses_positions and getattr(batch, F.POS, None) is None:
            raise InputError(name, f"{type(self).__name__} needs coordinates 'pos'")
        if self.spec.edge_s:
            es = getattr(batch, F.EDGE_S, None)
            if es is None or es.shape[-1] != self.spec.edge_s:
                raise InputError(name, f"{type(self).__name__} expects edge_s of width {self.spec.edge_s}, got "
                                       f"{None if es is None else tuple(es.shape)}")
        if self.spec.node_v:
            xv = getattr(batch, F.X_V, None)
            if xv is None or xv.shape[1] != self.spec.node_v:
                raise InputError(name, f"{type(self).__name__} expects x_v with {self.spec.node_v} channels, got "
                                       f"{None if xv is None else tuple(xv.shape)}")

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

Smoothness at the cutoff: every distance-based backbone multiplies each whole edge message by the
envelope weight ``EdgeGeometry.weight`` [E] of its radial basis (cosine by default, option
``envelope='cosine' | 'polynomial' | None``), so its outputs are continuous (C^1 envelopes) when an atom
crosses the cutoff of a radius graph, as in SchNet (Schuett et al., 2018) and DimeNet (Gasteiger et al.,
2020). Mean aggregations use the smooth weighted count of :func:`farfield.nn.mlp.aggregate`.
``envelope=None`` gives the published, unweighted messages.

Two ranges: with ``long_cutoff`` a backbone's radial basis is a
:class:`~farfield.features.radial.TwoRangeRadial`: local edges (``edge_type == 0``) get exactly the
features and weight of the plain local model, long-range edges a basis of their own on
``[0, long_cutoff]``; :func:`two_range_options` gives the options for a graph with long-range edges.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, ClassVar

import math

import torch
from torch import Tensor, nn

from farfield.data import fields as F
from farfield.errors import ConfigError, InputError

__all__ = ["GROUPS", "InputSpec", "NodeState", "BackboneOutput", "EdgeGeometry", "Backbone", "LayerHooks",
           "edge_geometry", "default_radial", "two_range_options", "lattice_offsets", "is_periodic", "refuse_periodic",
           "LOW_PRECISION", "at_least_float32", "full_precision"]

#: floating dtypes that mixed-precision training (``run.precision=bf16-mixed``) computes in under autocast
LOW_PRECISION = (torch.float16, torch.bfloat16)


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` in float32 when it is bfloat16 / float16 (an autocast output), unchanged otherwise (float32 and
    float64 inputs keep their precision)."""
    return t.float() if t.dtype in LOW_PRECISION else t


def full_precision(like: Tensor):
    """A context that turns autocast off on ``like``'s device type (``torch.autocast(enabled=False)``): inside,
    matrix products run in their inputs' dtype, so sums that need float32 (Ewald structure factors, Coulomb
    potentials, pooled extensive targets) are not rounded to bfloat16 (8-bit mantissa, relative error 2^-9)
    under ``run.precision=bf16-mixed``. Inputs must be upcast first (:func:`at_least_float32`)."""
    return torch.autocast(device_type=like.device.type, enabled=False)

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
    #: per-node energy [N] of a long-range mechanism with an energy readout (``latent_charges(energy=True)``):
    #: graph-level regression heads add it to their per-node output before sum pooling
    node_energy: Tensor | None = None


@dataclass
class EdgeGeometry:
    """Per-edge geometry, computed once per forward (or per layer when positions move).

    ``edge_index`` [2, E] (row 0 = source j, row 1 = target i), ``vec`` [E, 3] = pos_j - pos_i (+ the
    lattice offset ``cell_shift @ cell`` in periodic batches, :func:`lattice_offsets`),
    ``dist`` [E], ``unit`` [E, 3] (zero for zero-length edges), ``rbf`` [E, K] radial basis of ``dist``
    (without its envelope), ``edge_s`` [E, F_e] or None, ``batch`` [N], ``num_nodes``, ``weight`` [E]: the
    envelope weight every layer multiplies its whole edge message by (None = unweighted messages)."""

    edge_index: Tensor
    vec: Tensor
    dist: Tensor
    unit: Tensor
    rbf: Tensor | None
    edge_s: Tensor | None
    batch: Tensor
    num_nodes: int
    weight: Tensor | None = None


def lattice_offsets(batch, edge_graph: Tensor, dtype) -> Tensor | float:
    """The periodic part of the edge vectors: ``cell_shift @ cell`` [E, 3] of each edge's graph (``edge_graph``
    [E]), or 0 for an aperiodic batch (no ``cell_shift``). Rotating ``pos`` and ``cell`` together rotates it."""
    shift = getattr(batch, F.CELL_SHIFT, None)
    if shift is None:
        return 0.0
    cell = getattr(batch, F.CELL, None)
    if cell is None:
        name = getattr(batch, F.NAME, None)
        raise InputError(name if isinstance(name, str) else "batch", "has lattice shifts 'cell_shift' but no 'cell'")
    cell = cell.reshape(-1, 3, 3).to(dtype)
    return torch.einsum("ea,eab->eb", shift.to(dtype), cell.index_select(0, edge_graph))


def is_periodic(batch) -> bool:
    """Whether ``batch`` carries a periodic cell (:data:`farfield.data.fields.CELL`)."""
    return getattr(batch, F.CELL, None) is not None


def refuse_periodic(batch, who: str, why: str) -> None:
    """Raise :class:`InputError` naming the batch when it is periodic: ``who`` cannot handle a cell (``why``)."""
    if is_periodic(batch):
        name = getattr(batch, F.NAME, None)
        if not isinstance(name, str):
            name = ", ".join(name[:3]) if isinstance(name, (list, tuple)) and name else "batch"
        raise InputError(name, f"is periodic (has a cell); {who} {why}")


def edge_geometry(pos: Tensor, batch, radial: nn.Module | None) -> EdgeGeometry:
    """Edge vectors, lengths, unit vectors, radial features and envelope weights of ``batch.edge_index`` on
    ``pos``. A radial module with ``edge_features(dist, edge_type)`` (every basis in
    :mod:`farfield.features.radial`) gives ``(rbf, weight)``; it is passed ``batch.edge_type`` when present
    (:class:`~farfield.features.radial.TwoRangeRadial` needs it). Any other callable gives ``rbf`` only."""
    ei = batch[F.EDGE_INDEX]
    src, tgt = ei
    vec = pos.index_select(0, src) - pos.index_select(0, tgt)
    b = getattr(batch, "batch", None)
    n = pos.shape[0]
    if b is None:
        b = torch.zeros(n, dtype=torch.long, device=pos.device)
    if getattr(batch, F.CELL_SHIFT, None) is not None:       # periodic: + cell_shift @ cell (nothing otherwise)
        vec = vec + lattice_offsets(batch, b.index_select(0, tgt), pos.dtype)
    dist = vec.norm(dim=-1)
    unit = vec / dist.clamp(min=1e-9).unsqueeze(-1)
    unit = torch.where((dist > 1e-9).unsqueeze(-1), unit, torch.zeros_like(unit))
    es = getattr(batch, F.EDGE_S, None)
    if radial is None:
        rbf, weight = None, None
    elif hasattr(radial, "edge_features"):
        rbf, weight = radial.edge_features(dist, getattr(batch, F.EDGE_TYPE, None))
    else:
        rbf, weight = radial(dist), None
    return EdgeGeometry(ei, vec, dist, unit, rbf, None if es is None else es.to(pos.dtype), b, n,
                        None if weight is None else weight.to(pos.dtype))


def default_radial(cutoff: float, num_basis: int = 16, envelope: str | bool | None = "cosine",
                   beyond: str = "error") -> nn.Module:
    """Gaussian RBF on [0, cutoff] with an envelope (``'cosine'`` (also ``True``), ``'polynomial'``, or
    None / False); raises on edges beyond the cutoff unless ``beyond`` says otherwise (nothing is zeroed
    silently)."""
    from farfield.features.radial import GaussianRBF, make_envelope
    kind = "cosine" if envelope is True else (None if envelope is False else envelope)
    return GaussianRBF(cutoff, num_basis, envelope=make_envelope(kind, cutoff), beyond=beyond)


def build_radial(owner: str, radial: nn.Module | None, cutoff: float, num_basis: int,
                 envelope: str | None = "cosine", long_cutoff: float | None = None,
                 beyond: str = "error") -> nn.Module:
    """The radial module of a distance-based backbone: ``radial`` if given (its own envelope, if any, sets
    the edge weights), else :func:`default_radial`; with ``long_cutoff`` wrapped in a
    :class:`~farfield.features.radial.TwoRangeRadial` whose long-range basis is a Gaussian basis of the same
    size on [0, long_cutoff] without envelope (weight 1)."""
    from farfield.features.radial import GaussianRBF, TwoRangeRadial, make_envelope
    make_envelope(envelope, 1.0)                                  # validates the name
    if radial is None:
        radial = default_radial(cutoff, num_basis, envelope, beyond)
    elif envelope is not None and getattr(radial, "envelope", "n/a") is None:
        raise ConfigError(f"{owner}: the radial basis {radial!r} has no envelope, so messages would not vanish at "
                          f"its cutoff; give it one (e.g. envelope=CosineEnvelope(cutoff)) or pass envelope=None "
                          "for unweighted messages")
    if long_cutoff is not None:
        if isinstance(radial, TwoRangeRadial):
            raise ConfigError(f"{owner}: long_cutoff given together with a TwoRangeRadial")
        radial = TwoRangeRadial(radial, GaussianRBF(float(long_cutoff), int(radial.num_basis)))
    return radial


def two_range_options(backbone_name: str, local_cutoff: float, max_edge_length: float, margin: float = 1.0,
                      **backbone_options) -> dict:
    """Backbone options for a graph with local edges (``edge_type == 0``, e.g. ``radius:5``) and long-range
    edges (``edge_type >= 1``, e.g. ``+random:8``) up to ``max_edge_length`` Angstrom.

    Local edges keep exactly the radial features and envelope weight of the plain local model
    (``cutoff=local_cutoff``, same basis and envelope); long edges get their own Gaussian basis on
    ``[0, ceil(max_edge_length + margin)]`` with weight 1 (see
    :class:`~farfield.features.radial.TwoRangeRadial`). Returns ``{**backbone_options, 'cutoff':
    local_cutoff, 'long_cutoff': L}`` (plain numbers: configs and checkpoints rebuild the model from them);
    2D baselines get ``backbone_options`` without ``cutoff``."""
    from farfield.models import BACKBONES, _options
    if backbone_name not in BACKBONES:
        raise ConfigError(f"unknown model {backbone_name!r}; choose from {sorted(BACKBONES)}")
    opts = dict(backbone_options)
    if "long_cutoff" not in _options(BACKBONES[backbone_name]):
        opts.pop("cutoff", None)
        return opts
    if max_edge_length <= 0 or local_cutoff <= 0:
        raise ConfigError(f"two_range_options: local_cutoff and max_edge_length must be > 0, got {local_cutoff}, "
                          f"{max_edge_length}")
    if opts.get("radial") is not None:
        raise ConfigError("two_range_options: pass num_basis / envelope, not a radial module")
    opts["cutoff"] = float(local_cutoff)
    opts["long_cutoff"] = float(math.ceil(max(max_edge_length, local_cutoff) + margin))
    return opts


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

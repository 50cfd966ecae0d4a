"""The long-range contract: one :class:`LongRange` mechanism serves every layer of any backbone.

A mechanism reads the invariant node scalars ``s`` [N, d] (and, for Ewald, coordinates) and returns an
invariant update ``ds`` [N, d] that is added with a residual and a scale::

    placement 'after':     s <- s_out + scale * M_i(s_out)     (after layer i; Neural Atoms on 2D graphs)
    placement 'parallel':  s <- s_out + scale * M_i(s_in)      (in parallel with layer i: Ewald, GPS, the
                                                                OGB virtual node, Neural Atoms in 3D)

where ``s_in`` is layer i's input and ``s_out`` its output. Because ``M`` sees only invariant scalars (and
coordinates through invariant constructions), a backbone's symmetry is preserved; vectors ``v`` and
higher-order features ``t`` pass through untouched. :class:`WithLongRange` wraps a backbone and a mechanism
into a backbone with the same contract, so heads, the symmetry check and frame averaging work unchanged.

Batch layout (one place): PyG batches have nodes sorted by graph; ``batch`` [N] is the graph of every
node, ``num_graphs`` B. Mechanisms work per graph (dense padding with masks, or scatter), so a graph's
output never depends on the other graphs of its batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from farfield.data import fields as F
from farfield.errors import ConfigError, InputError
from farfield.models.base import Backbone, BackboneOutput, LayerHooks, NodeState

__all__ = ["PLACEMENTS", "Context", "LongRange", "WithLongRange"]

PLACEMENTS = ("after", "parallel")


@dataclass
class Context:
    """Per-forward-pass state shared by a mechanism's layers: ``batch`` [N], ``num_graphs``, ``counts`` [B]
    (nodes per graph), ``cell`` [B, 3, 3] (periodic batches: rows are lattice vectors; None otherwise) and
    ``memory`` for the mechanism's own state (the virtual nodes, cached frames)."""

    batch: Tensor
    num_graphs: int
    counts: Tensor
    memory: dict = field(default_factory=dict)
    cell: Tensor | None = None


class LongRange(nn.Module):
    """Base class of long-range mechanisms.

    Subclasses set ``name``, ``default_placement``, ``needs_positions`` (and ``supports_cell`` when they read
    coordinates in a way that respects a periodic cell: ``ctx.cell``) and implement
    :meth:`update` ``(i, s [N, d], pos [N, 3], ctx) -> ds [N, d]`` (or None for no update at layer i).

    Args:
        dim: width of the backbone's node scalars (``backbone.hidden_s``).
        num_layers: the backbone's number of layers (one update per layer).
        scale: the residual scale of every update.
        placement: ``'after'`` or ``'parallel'`` (default: the mechanism's published placement).
    """

    name: ClassVar[str] = "none"
    default_placement: ClassVar[str] = "after"
    needs_positions: ClassVar[bool] = False
    supports_cell: ClassVar[bool] = False

    def __init__(self, dim: int, num_layers: int, scale: float = 1.0, placement: str | None = None):
        super().__init__()
        if dim < 1 or num_layers < 1:
            raise ConfigError(f"{type(self).__name__}: dim and num_layers must be >= 1, got {dim}, {num_layers}")
        placement = placement or self.default_placement
        if placement not in PLACEMENTS:
            raise ConfigError(f"{type(self).__name__}: placement must be one of {PLACEMENTS}, got {placement!r}")
        self.dim, self.num_layers, self.scale, self.placement = dim, num_layers, float(scale), placement

    def start(self, ctx: Context, state: NodeState) -> None:
        """Called once per forward pass after the embedding (reset per-pass state in ``ctx.memory``)."""

    def update(self, i: int, s: Tensor, pos: Tensor | None, ctx: Context) -> Tensor | None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_layers={self.num_layers}, scale={self.scale:g}, placement={self.placement!r}"


class _Hooks(LayerHooks):
    def __init__(self, mechanism: LongRange, inner=None):
        self.m, self.inner, self.ctx, self.s_in, self.pos_in = mechanism, inner, None, None, None

    def start(self, state: NodeState, batch) -> None:
        b = getattr(batch, "batch", None)
        n = state.s.shape[0]
        if b is None:
            b = torch.zeros(n, dtype=torch.long, device=state.s.device)
        B = int(batch.num_graphs) if hasattr(batch, "num_graphs") else (int(b.max()) + 1 if n else 0)
        cell = getattr(batch, F.CELL, None)
        self.ctx = Context(b, B, torch.bincount(b, minlength=B),
                           cell=None if cell is None else cell.reshape(-1, 3, 3).to(state.s.dtype))
        self.m.start(self.ctx, state)
        if isinstance(self.inner, LayerHooks):
            self.inner.start(state, batch)

    def before(self, i: int, state: NodeState, batch) -> NodeState:
        if isinstance(self.inner, LayerHooks):
            state = self.inner.before(i, state, batch)
        self.s_in, self.pos_in = state.s, state.pos
        return state

    def after(self, i: int, state: NodeState, batch) -> NodeState:
        if self.m.placement == "parallel":
            ds = self.m.update(i, self.s_in, self.pos_in, self.ctx)
        else:
            ds = self.m.update(i, state.s, state.pos, self.ctx)
        if ds is not None:
            state = state.replace(s=state.s + self.m.scale * ds)
        if isinstance(self.inner, LayerHooks):
            state = self.inner.after(i, state, batch)
        elif self.inner is not None:
            state = self.inner(i, state, batch)
        return state


def _drop_layer_aliases(state_dict, prefix, *args) -> None:
    """Load checkpoints written while wrappers aliased ``layers = backbone.layers``: drop the duplicate
    ``layers.*`` keys when the same tensor is present under ``backbone.layers.*``."""
    for key in [k for k in state_dict if k.startswith(prefix + "layers.")]:
        if prefix + "backbone." + key[len(prefix):] in state_dict:
            del state_dict[key]


class WithLongRange(Backbone):
    """A backbone with a long-range mechanism: same contract and symmetry claim as ``backbone``.

    Args:
        backbone: any :class:`~farfield.models.Backbone` (including frame-averaged ones).
        mechanism: a :class:`LongRange` built for ``backbone.hidden_s`` and ``backbone.num_layers``.
    """

    def __init__(self, backbone: Backbone, mechanism: LongRange):
        super().__init__(backbone.spec)
        if mechanism.dim != backbone.hidden_s:
            raise ConfigError(f"{type(mechanism).__name__} has width {mechanism.dim} but the backbone's node scalars "
                              f"have width {backbone.hidden_s}")
        if mechanism.num_layers != backbone.num_layers:
            raise ConfigError(f"{type(mechanism).__name__} was built for {mechanism.num_layers} layers, the backbone "
                              f"has {backbone.num_layers}")
        self.backbone, self.long_range = backbone, mechanism
        self.symmetry = backbone.symmetry
        self.irreps_t = getattr(backbone, "irreps_t", None)
        self.hidden_s, self.hidden_v = backbone.hidden_s, backbone.hidden_v
        self.uses_positions = backbone.uses_positions or mechanism.needs_positions
        # no ``self.layers = backbone.layers`` alias: it registered every layer twice in the state dict
        self._register_load_state_dict_pre_hook(_drop_layer_aliases)

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def forward(self, batch, between=None) -> BackboneOutput:
        if self.long_range.needs_positions and getattr(batch, F.POS, None) is None:
            name = getattr(batch, F.NAME, None)
            raise InputError(name if isinstance(name, str) else "batch",
                             f"long-range mechanism {self.long_range.name!r} needs coordinates 'pos'")
        if (self.long_range.needs_positions and not self.long_range.supports_cell
                and getattr(batch, F.CELL, None) is not None):
            name = getattr(batch, F.NAME, None)
            raise InputError(name if isinstance(name, str) else "batch",
                             f"is periodic (has a cell) but long-range mechanism {self.long_range.name!r} reads "
                             "coordinates without periodic images; use latent_charges (Ewald / PME in the cell) or "
                             "a mechanism that reads node features only (virtual_node, attention)")
        hooks = _Hooks(self.long_range, between)
        out = self.backbone(batch, between=hooks)
        energy = hooks.ctx.memory.get("node_energy") if hooks.ctx is not None else None
        if energy is not None:
            out = dataclasses.replace(out, node_energy=energy)
        return out

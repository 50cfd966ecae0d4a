"""Long-range strategies behind one interface: graph construction (random long-range edges, the fully
connected graph) and modules acting on any backbone (virtual node(s), Neural Atoms, Ewald message passing,
global attention). See :mod:`farfield.models.long_range.base` for the contract.

==================  ==========================================  =======================  ===========
strategy            what                                        where                    cost
==================  ==========================================  =======================  ===========
``none``            the backbone's short-range graph only       -                        O(E)
``random``          + random long-range edges (Gumbel-top-k)    graph (edge spec)        O(N n)
``full``            fully connected graph                       graph (edge spec)        O(N^2)
``virtual_node``    one virtual node per graph (OGB)            :class:`VirtualNode`     O(N d)
``virtual_nodes``   K fully connected virtual nodes             :class:`VirtualNode`     O(N K d)
``neural_atoms``    Neural Atoms (Li et al. 2024)               :class:`NeuralAtoms`     O(N K d)
``ewald``           Ewald message passing, aperiodic            :class:`EwaldMP`         O(N |k| d)
``attention``       global multi-head attention (GPS)           :class:`GlobalAttention` O(N^2 d)
``latent_charges``  learned latent charges, exact screened      :class:`LatentCharges`   O(N^2 C) /
                    Coulomb potential (after LES, Cheng 2025);                           PME O(N log N)
                    periodic cells via torch-pme
==================  ==========================================  =======================  ===========

Graph strategies need radial features that span their edges: :meth:`Strategy.backbone_options` sets the
backbone's radial cutoff to the longest edge (plus a margin), never silently zeroing long edges.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from functools import partial

from farfield.errors import ConfigError
from farfield.models.long_range.attention import GlobalAttention
from farfield.models.long_range.base import PLACEMENTS, Context, LongRange, WithLongRange
from farfield.models.long_range.ewald import EwaldMP, k_grid, k_shells, svd_frame_coordinates
from farfield.models.long_range.latent_charges import LatentCharges
from farfield.models.long_range.neural_atoms import NeuralAtomBlock, NeuralAtoms
from farfield.models.long_range.virtual_node import VirtualNode

__all__ = ["MECHANISMS", "GRAPH_STRATEGIES", "STRATEGIES", "PLACEMENTS", "Context", "EwaldMP", "GlobalAttention",
           "LatentCharges", "LongRange", "NeuralAtomBlock", "NeuralAtoms", "Strategy", "VirtualNode", "WithLongRange",
           "build_strategy", "k_grid", "k_shells", "spanning_cutoff", "svd_frame_coordinates"]

#: module mechanisms: name -> constructor ``f(dim, num_layers, **options)``
MECHANISMS = {
    "virtual_node": VirtualNode,
    "virtual_nodes": partial(VirtualNode, num_virtual=5),
    "neural_atoms": NeuralAtoms,
    "ewald": EwaldMP,
    "attention": GlobalAttention,
    "latent_charges": LatentCharges,
}

#: graph strategies: name -> (default options, how the local edge spec changes)
GRAPH_STRATEGIES = {
    "random": {"n": 8, "law": "inverse_cubic"},
    "full": {},
}

#: every strategy, the baseline first
STRATEGIES = ("none", *GRAPH_STRATEGIES, *MECHANISMS)


def spanning_cutoff(max_edge_length: float, margin: float = 1.0) -> float:
    """A radial cutoff that spans edges up to ``max_edge_length`` (Angstrom) with a margin, so that cutoff
    envelopes do not vanish on the longest edges."""
    return float(math.ceil(max_edge_length + margin))


def _default_cutoff(backbone: str) -> float:
    """The default radial cutoff of a registered backbone (5 A when it has none)."""
    from farfield.models import BACKBONES, MPNN
    ctor = BACKBONES.get(backbone)
    while isinstance(ctor, partial):
        if "cutoff" in ctor.keywords:
            return float(ctor.keywords["cutoff"])
        ctor = ctor.func
    target = ctor if inspect.isclass(ctor) else MPNN      # frame-averaged models wrap MPNN
    p = inspect.signature(target).parameters.get("cutoff")
    return float(p.default) if p is not None and p.default is not inspect.Parameter.empty else 5.0


def _ctor_options(ctor) -> tuple[set[str], dict]:
    fixed = dict(ctor.keywords) if isinstance(ctor, partial) else {}
    target = ctor.func if isinstance(ctor, partial) else ctor
    return set(inspect.signature(target).parameters) - {"self", "dim", "num_layers"}, fixed


@dataclass(frozen=True)
class Strategy:
    """A long-range strategy with its options: how it changes the graph and what it adds to a backbone.

    ``edge_spec(local)`` gives the edge spec to featurise with; ``backbone_options(max_edge_length)`` the
    backbone options it needs (a spanning radial cutoff for graph strategies); ``wrap(backbone)`` returns the
    backbone with the mechanism (or the backbone itself).

    Backbone-dependent defaults: on backbones without coordinates (``uses_positions`` False: the 2D
    baselines gcn, gine, gatedgcn) ``neural_atoms`` follows the reference's 2D code (Li et al. 2024):
    placement ``'after'`` each layer and heads summed in back-projection (``head_reduce='sum'``); on 3D
    backbones it runs in parallel with each layer and averages heads. Explicit options always win."""

    name: str
    options: dict = field(default_factory=dict)

    @property
    def is_graph(self) -> bool:
        return self.name in GRAPH_STRATEGIES

    @property
    def is_module(self) -> bool:
        return self.name in MECHANISMS

    def edge_spec(self, local: str) -> str:
        if self.name == "random":
            o = self.options
            return f"{local}+random:{int(o['n'])},law={o['law']}"
        if self.name == "full":
            return "full"
        return local

    def backbone_options(self, max_edge_length: float | None = None, backbone: str | None = None,
                         options: dict | None = None) -> dict:
        """Backbone options this strategy needs, given the backbone's name and its own ``options``.

        ``random``: the local edges (the first builder of the spec) keep exactly the plain model's radial basis
        and envelope (cutoff = ``options['cutoff']`` or the backbone's default), and the long-range edges get a
        basis of their own spanning ``max_edge_length``
        (:func:`farfield.models.two_range_options`), so adding long edges changes nothing else. ``full``: one
        kind of edge, so the basis spans the longest edge (:func:`spanning_cutoff`)."""
        options = dict(options or {})
        if not self.is_graph:
            return options
        if max_edge_length is None:
            raise ConfigError(f"strategy {self.name!r} needs the longest edge length of the data to size the radial "
                              "basis (max_edge_length)")
        if self.name == "random" and backbone is not None:
            from farfield.models import two_range_options
            local = options.get("cutoff")
            return two_range_options(backbone, float(local if local is not None else _default_cutoff(backbone)),
                                     max_edge_length, **options)
        return {**options, "cutoff": spanning_cutoff(max_edge_length)}

    def mechanism(self, dim: int, num_layers: int, uses_positions: bool = True) -> LongRange | None:
        """The mechanism for a backbone of width ``dim`` and ``num_layers`` layers; ``uses_positions`` False
        (a 2D backbone) selects the reference's 2D defaults where they differ (see the class docstring)."""
        if not self.is_module:
            return None
        opts = dict(self.options)
        if self.name == "neural_atoms" and not uses_positions:
            opts.setdefault("placement", "after")
            opts.setdefault("head_reduce", "sum")
        if self.name == "attention" and "heads" not in opts:
            opts["heads"] = next(h for h in (4, 2, 1) if dim % h == 0)
        if self.name == "neural_atoms" and "heads" in opts and dim % int(opts["heads"]):
            raise ConfigError(f"neural_atoms: heads={opts['heads']} does not divide the backbone width {dim}")
        return MECHANISMS[self.name](dim, num_layers, **opts)

    def wrap(self, backbone):
        m = self.mechanism(backbone.hidden_s, backbone.num_layers, bool(getattr(backbone, "uses_positions", True)))
        return backbone if m is None else WithLongRange(backbone, m)

    def label(self) -> str:
        return self.name if not self.options else self.name + "(" + ", ".join(
            f"{k}={v}" for k, v in sorted(self.options.items())) + ")"


def build_strategy(name: str, **options) -> Strategy:
    """Validate ``name`` and ``options`` (unknown ones raise :class:`ConfigError` listing the accepted ones)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown long-range strategy {name!r}; choose from {list(STRATEGIES)}")
    if name == "none":
        if options:
            raise ConfigError(f"strategy 'none' takes no options, got {sorted(options)}")
        return Strategy("none")
    if name in GRAPH_STRATEGIES:
        allowed = GRAPH_STRATEGIES[name]
        unknown = set(options) - set(allowed)
        if unknown:
            raise ConfigError(f"strategy {name!r} has no option(s) {sorted(unknown)}; options: {sorted(allowed)}")
        return Strategy(name, {**allowed, **options})
    allowed, fixed = _ctor_options(MECHANISMS[name])
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(f"strategy {name!r} has no option(s) {sorted(unknown)}; options: {sorted(allowed)}")
    return Strategy(name, {**options})

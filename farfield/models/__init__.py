"""Backbones (one contract, :mod:`farfield.models.base`) and readouts.

================  ================================  ========  =============================================
name              class                             symmetry  family
================  ================================  ========  =============================================
``schnet``        :class:`SchNet`                   E(3)      invariant
``egnn``          :class:`EGNN`                     E(3)      Cartesian-equivariant (coordinates)
``gvp``           :class:`GVPGNN`                   E(3)      Cartesian-equivariant (vector channels)
``painn``         :class:`PaiNN`                    E(3)      Cartesian-equivariant
``tfn``           :class:`TFN`                      E(3)      spherical (e3nn)
``tfn_products``  :class:`TFN` (correlation 3)      E(3)      spherical, body order 4 (MACE-like, not MACE)
``tfn_se3``       :class:`TFN` (parity=False)       SE(3)     spherical, chirality-aware
``segnn``         :class:`SEGNN`                    E(3)      spherical, steerable MLPs
``mpnn``          :class:`MPNN`                     T(3)      unconstrained (not rotation invariant)
``fa_mpnn``       FrameAveraging(MPNN, O(3))        E(3)      unconstrained + frame averaging
``sfa_mpnn``      FrameAveraging(MPNN, stochastic)  E(3)      unconstrained + stochastic FA
``fa_mpnn_so3``   FrameAveraging(MPNN, SO(3))       SE(3)     unconstrained + chirality-aware FA
``gcn``           :class:`GCN`                      (2D)      LRGB baseline
``gine``          :class:`GINE`                     (2D)      LRGB baseline
``gatedgcn``      :class:`GatedGCN`                 (2D)      LRGB baseline
================  ================================  ========  =============================================

:func:`build_backbone` builds any of them by name from an :class:`InputSpec` and keyword options.

Every distance-based backbone multiplies its whole edge messages by the envelope of its radial basis
(``envelope='cosine'`` by default; None for the published unweighted messages), so outputs are continuous
when an atom crosses the cutoff; :func:`two_range_options` gives options for graphs with long-range edges.

``mace`` is not registered: ``tfn_products`` is a TFN with fully connected tensor-product correlations, not
MACE (Batatia et al., NeurIPS 2022: symmetric contraction with element-dependent weights, polynomial
envelope, data-derived neighbour normalisation). ``build_backbone('mace', ...)`` says so.
"""
from __future__ import annotations

import inspect
from functools import partial

from farfield.errors import ConfigError
from farfield.models.base import (GROUPS, Backbone, BackboneOutput, EdgeGeometry, InputSpec, NodeState,
                                  default_radial, edge_geometry, two_range_options)
from farfield.models.egnn import EGNN
from farfield.models.graph2d import GCN, GINE, GatedGCN
from farfield.models.gvp_gnn import GVPGNN
from farfield.models.mpnn import MPNN
from farfield.models.painn import PaiNN
from farfield.models.readout import GIGP, POOLINGS, TASK_POOLINGS, ScalarReadout, VectorReadout, pool
from farfield.models.schnet import SchNet
from farfield.models.segnn import SEGNN
from farfield.models.tfn import TFN

__all__ = [
    "BACKBONES", "Backbone", "BackboneOutput", "EGNN", "EdgeGeometry", "GCN", "GIGP", "GINE", "GROUPS", "GVPGNN",
    "GatedGCN", "InputSpec", "MPNN", "NodeState", "POOLINGS", "PaiNN", "SEGNN", "ScalarReadout", "SchNet",
    "TASK_POOLINGS", "TFN", "VectorReadout", "build_backbone", "default_radial", "edge_geometry", "pool",
    "two_range_options",
]


def _fa(group: str, stochastic: bool, spec: InputSpec, **kw) -> Backbone:
    from farfield.symmetry.frames import FrameAveraging
    return FrameAveraging(MPNN(spec, **kw), group=group, stochastic=stochastic)


#: name -> constructor ``f(spec, **options)``
BACKBONES = {
    "schnet": SchNet,
    "egnn": EGNN,
    "gvp": GVPGNN,
    "painn": PaiNN,
    "tfn": TFN,
    "tfn_products": partial(TFN, correlation=3),
    "tfn_se3": partial(TFN, parity=False),
    "segnn": SEGNN,
    "mpnn": MPNN,
    "fa_mpnn": partial(_fa, "O(3)", False),
    "sfa_mpnn": partial(_fa, "O(3)", True),
    "fa_mpnn_so3": partial(_fa, "SO(3)", False),
    "gcn": GCN,
    "gine": GINE,
    "gatedgcn": GatedGCN,
}

_GEOMETRIC_ONLY = {"gcn", "gine", "gatedgcn"}

#: names refused with an explanation (not in BACKBONES, so ``--model all`` and loops over BACKBONES skip them)
_NOT_PROVIDED = {
    "mace": "farfield has no MACE: the former 'mace' was a TFN with fully connected tensor-product correlations "
            "(no symmetric contraction, no element-dependent weights, fixed neighbour normaliser) and is now "
            "called 'tfn_products'. The mace-torch package (0.3.x) pins e3nn==0.4.4 (farfield uses e3nn 0.6) and "
            "imports its training stack (ase, matscipy, torch-ema, ...) with its blocks, so it is not used here; "
            "use 'tfn_products' or the mace-torch package directly",
}


def _options(ctor) -> set[str]:
    target = ctor
    if isinstance(ctor, partial):
        target = ctor.func
        if target is _fa:
            target = MPNN
    return set(inspect.signature(target).parameters) - {"spec", "self"}


def build_backbone(name: str, spec: InputSpec, **options) -> Backbone:
    """Build backbone ``name`` (see :data:`BACKBONES`) for inputs ``spec``. Unknown names and options
    raise :class:`ConfigError` listing what is accepted. The generic options ``hidden``, ``num_layers`` and
    ``cutoff`` are translated for models that spell them differently (GVP's ``node_dims``, e3nn models'
    ``channels``); 2D baselines ignore ``cutoff``."""
    if name in _NOT_PROVIDED:
        raise ConfigError(f"model {name!r} is not available: {_NOT_PROVIDED[name]}")
    if name not in BACKBONES:
        raise ConfigError(f"unknown model {name!r}; choose from {sorted(BACKBONES)}")
    ctor = BACKBONES[name]
    allowed = _options(ctor)
    opts = dict(options)
    if "hidden" in opts and "hidden" not in allowed:
        h = opts.pop("hidden")
        if "node_dims" in allowed:
            opts.setdefault("node_dims", (h, max(h // 8, 1)))
        elif "channels" in allowed:
            opts.setdefault("channels", max(h // 8, 1))
    if name in _GEOMETRIC_ONLY:
        opts.pop("cutoff", None)
    unknown = set(opts) - allowed
    if unknown:
        raise ConfigError(f"model {name!r} has no option(s) {sorted(unknown)}; options: {sorted(allowed)}")
    return ctor(spec, **opts)

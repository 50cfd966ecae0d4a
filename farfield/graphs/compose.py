"""Composition of edge builders, and the readable edge-spec strings of the CLI and configs.

Spec grammar (whitespace ignored)::

    spec     := builder ('+' builder)*
    builder  := name [':' arg (',' arg)*]
    arg      := value | key '=' value

====================  ==================================================================================
builder               spec examples
====================  ==================================================================================
radius                ``radius:4.5``, ``radius:10,max=40``, ``radius:8,chain=1``
knn                   ``knn:30``
seq                   ``seq:2`` (offsets +-1, +-2), ``seq:offsets=-1/1/3``
full                  ``full``
random                ``random:10``, ``random:40,law=exponential,T=0.5,exclude=0,dir=outgoing,seed=3``
====================  ==================================================================================

``chain=1`` restricts a builder to edges within a chain. Example: ``radius:4.5,max=32+random:10``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence as Seq

import numpy as np
import torch
from torch import Tensor

from farfield.errors import ConfigError
from farfield.graphs import neighbours_torch as T
from farfield.graphs.builders import (KNN, EdgeBuilder, Full, GraphContext, RandomLongRange, Radius, Sequence,
                                      TorchGraphContext)

__all__ = ["Edges", "GraphBuilder", "parse_edge_spec", "BUILDER_NAMES", "BACKENDS"]

BUILDER_NAMES = ("radius", "knn", "seq", "full", "random")

#: where edges are computed: 'auto' (the host for CPU tensors and arrays, the device otherwise), 'host'
#: (NumPy / scipy cKDTree), 'device' (torch kernels on the positions' device; also runs on the CPU)
BACKENDS = ("auto", "host", "device")


@dataclass
class Edges:
    """Result of a :class:`GraphBuilder`.

    Attributes:
        edge_index: long [2, E], row 0 = source, row 1 = target.
        edge_type: long [E], index into ``type_names`` of the builder that made each edge.
        type_names: spec string of each builder (plus 'self' when self-loops were asked for).
    """

    edge_index: Tensor
    edge_type: Tensor
    type_names: tuple[str, ...]

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def counts(self) -> dict[str, int]:
        c = torch.bincount(self.edge_type.cpu(), minlength=len(self.type_names)).tolist()
        return dict(zip(self.type_names, c))


def _to_numpy(x, dtype) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


class GraphBuilder:
    """Composes edge builders into one edge set.

    Edges are the union of the builders' edges, **deduplicated**: an edge produced by several builders
    keeps the type of the first of them (in the order given). Builders run in order and see the edges
    built so far (``RandomLongRange(exclude_existing=True)`` uses them). Self-loops are added, with type
    'self', only if ``self_loops=True``.

    Args:
        builders: edge builders, or a spec string (see :func:`parse_edge_spec`).
        self_loops: add an edge i -> i for every node.

    Call with ``pos`` [N, 3] (tensor or array, any device), optional ``batch`` [N], ``chain`` [N] (any
    integer labels) and ``graph_key`` [B]; returns :class:`Edges` on ``pos``'s device. Building on a batch
    equals building on each graph and concatenating (with node offsets).

    ``backend`` (:data:`BACKENDS`): the host path (scipy's cKDTree) and the device path (torch kernels of
    :mod:`farfield.graphs.neighbours_torch`, no copy to the host) give the same edge sets, ties included
    (the edge order may differ); 'auto' keeps CPU positions on the host and builds on the device otherwise.
    """

    def __init__(self, builders: Seq[EdgeBuilder] | str, self_loops: bool = False):
        if isinstance(builders, str):
            builders = parse_edge_spec(builders).builders
        self.builders = tuple(builders)
        if not self.builders and not self_loops:
            raise ConfigError("GraphBuilder needs at least one edge builder")
        for b in self.builders:
            if not isinstance(b, EdgeBuilder):
                raise ConfigError(f"GraphBuilder: {b!r} is not an edge builder")
        self.self_loops = bool(self_loops)

    @property
    def type_names(self) -> tuple[str, ...]:
        names = tuple(b.spec() for b in self.builders)
        return names + (("self",) if self.self_loops else ())

    def spec(self) -> str:
        return "+".join(b.spec() for b in self.builders)

    def __repr__(self) -> str:
        return f"GraphBuilder({self.spec()!r}, self_loops={self.self_loops})"

    def __call__(self, pos, batch=None, chain=None, graph_key=None, backend: str = "auto") -> Edges:
        if backend not in BACKENDS:
            raise ConfigError(f"GraphBuilder: backend must be one of {BACKENDS}, got {backend!r}")
        on_device = isinstance(pos, Tensor) and pos.device.type != "cpu"
        if backend == "device" or (backend == "auto" and on_device):
            return self._call_torch(pos, batch, chain, graph_key)
        device = pos.device if isinstance(pos, Tensor) else torch.device("cpu")
        p = _to_numpy(pos, np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ConfigError(f"GraphBuilder: pos must have shape [N, 3], got {tuple(p.shape)}")
        if not np.isfinite(p).all():
            raise ConfigError("GraphBuilder: pos contains NaN or Inf coordinates")
        n = len(p)
        b = _to_numpy(batch, np.int64) if batch is not None else np.zeros(n, dtype=np.int64)
        c = _to_numpy(chain, np.int64) if chain is not None else None
        if len(b) != n or (c is not None and len(c) != n):
            raise ConfigError(f"GraphBuilder: batch/chain must have one entry per node ({n})")
        ctx = GraphContext(pos=p, batch=b, chain=c, graph_key=_to_numpy(graph_key, np.int64))
        parts, types = [], []
        for t, builder in enumerate(self.builders):
            e = builder.build(ctx)
            parts.append(e)
            # np.zeros maps fresh zero pages (no write pass over E entries); only later types are filled
            types.append(np.zeros(e.shape[1], dtype=np.int64) if t == 0 else np.full(e.shape[1], t, dtype=np.int64))
            if len(self.builders) > 1:
                ctx.existing = np.concatenate(parts, axis=1)
        if self.self_loops:
            parts.append(np.stack([np.arange(n), np.arange(n)]).astype(np.int64))
            types.append(np.full(n, len(self.builders), dtype=np.int64))
        if len(parts) == 1:  # the common single-builder case: no copy of the edge list
            edges, etype = parts[0], types[0]
        else:
            edges = np.concatenate(parts, axis=1) if parts else np.zeros((2, 0), dtype=np.int64)
            etype = np.concatenate(types) if types else np.zeros(0, dtype=np.int64)
        if len(parts) > 1 and edges.shape[1]:
            key = edges[0] * n + edges[1]
            _, first = np.unique(key, return_index=True)   # first occurrence = earliest builder
            if len(first) < len(key):
                first.sort()
                edges, etype = edges[:, first], etype[first]
        return Edges(torch.from_numpy(np.ascontiguousarray(edges)).to(device),
                     torch.from_numpy(etype).to(device), self.type_names)

    def _call_torch(self, pos, batch, chain, graph_key) -> Edges:
        """The device path: every builder's :meth:`~farfield.graphs.builders.EdgeBuilder.build_torch`."""
        p = torch.as_tensor(pos).detach().to(torch.float64)
        dev = p.device
        if p.ndim != 2 or p.shape[1] != 3:
            raise ConfigError(f"GraphBuilder: pos must have shape [N, 3], got {tuple(p.shape)}")
        if not bool(torch.isfinite(p).all()):
            raise ConfigError("GraphBuilder: pos contains NaN or Inf coordinates")
        n = p.shape[0]
        b = torch.as_tensor(batch, device=dev).reshape(-1).long() if batch is not None else torch.zeros(
            n, dtype=torch.long, device=dev)
        c = torch.as_tensor(chain, device=dev).reshape(-1).long() if chain is not None else None
        if b.numel() != n or (c is not None and c.numel() != n):
            raise ConfigError(f"GraphBuilder: batch/chain must have one entry per node ({n})")
        key = torch.as_tensor(graph_key, device=dev).reshape(-1).long() if graph_key is not None else None
        ctx = TorchGraphContext(pos=p, batch=b, chain=c, graph_key=key)
        parts, types = [], []
        for t, builder in enumerate(self.builders):
            e = builder.build_torch(ctx)
            parts.append(e)
            types.append(torch.full((e.shape[1],), t, dtype=torch.long, device=dev))
            if len(self.builders) > 1:
                ctx.existing = torch.cat(parts, dim=1)
        if self.self_loops:
            ar = torch.arange(n, device=dev)
            parts.append(torch.stack([ar, ar]))
            types.append(torch.full((n,), len(self.builders), dtype=torch.long, device=dev))
        edges, etype = torch.cat(parts, dim=1), torch.cat(types)
        if len(parts) > 1 and edges.shape[1]:
            first = T.first_occurrence(edges[0] * n + edges[1])
            if first.numel() < edges.shape[1]:
                edges, etype = edges[:, first], etype[first]
        return Edges(edges.contiguous(), etype, self.type_names)

    def apply(self, data, backend: str = "auto"):
        """Build edges for a PyG ``Data`` / ``Batch`` (``pos``, optional ``batch``, ``chain_index``,
        ``graph_key``) and store ``edge_index`` and ``edge_type`` on it; returns it."""
        from farfield.data.fields import CELL, CHAIN_INDEX, GRAPH_KEY

        if getattr(data, CELL, None) is not None:
            return self._apply_periodic(data)
        e = self(data.pos, getattr(data, "batch", None), getattr(data, CHAIN_INDEX, None),
                 getattr(data, GRAPH_KEY, None), backend=backend)
        data.edge_index, data.edge_type = e.edge_index, e.edge_type
        return data


    def _apply_periodic(self, data):
        """A periodic ``data`` (``cell`` [1 or B, 3, 3]): every image within the radius of a single plain ``radius``
        builder (:func:`farfield.graphs.periodic.periodic_radius_graph`), lattice shifts in ``cell_shift``."""
        from farfield.data.fields import CELL, CELL_SHIFT, NAME
        from farfield.errors import InputError
        from farfield.graphs.periodic import periodic_radius_graph
        b = self.builders
        if len(b) != 1 or not isinstance(b[0], Radius) or b[0].max_neighbours or b[0].within_chain \
                or self.self_loops:
            name = getattr(data, NAME, None)
            raise InputError(name if isinstance(name, str) else "graph",
                             f"is periodic (has a cell); periodic graphs are built with a single plain radius "
                             f"builder (e.g. edges='radius:5'), not {self.spec()!r}")
        cell = data[CELL].reshape(-1, 3, 3)
        ei, shift = periodic_radius_graph(data.pos, cell.to(torch.float64), b[0].r, getattr(data, "batch", None))
        data.edge_index, data.edge_type = ei, torch.zeros(ei.shape[1], dtype=torch.long, device=ei.device)
        data[CELL_SHIFT] = shift
        return data


def _parse_bool(v: str, where: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where}: expected a boolean (0/1), got {v!r}")


def _num(v: str, where: str, kind=float):
    try:
        return kind(v)
    except ValueError:
        raise ConfigError(f"{where}: expected {'an integer' if kind is int else 'a number'}, got {v!r}") from None


_KEYS = {
    "radius": {"r": "r", "max": "max_neighbours", "chain": "within_chain"},
    "knn": {"k": "k", "chain": "within_chain"},
    "seq": {"k": "k", "offsets": "offsets"},
    "full": {"chain": "within_chain"},
    "random": {"n": "n", "law": "law", "T": "temperature", "exclude": "exclude_existing", "dir": "direction",
               "seed": "seed", "scale": "length_scale", "chain": "within_chain"},
}
_POSITIONAL = {"radius": "r", "knn": "k", "seq": "k", "random": "n"}
_ALIASES = {"sequence": "seq", "rand": "random", "random_long_range": "random", "kNN": "knn"}


def _parse_one(text: str) -> EdgeBuilder:
    name, _, rest = text.partition(":")
    name = _ALIASES.get(name.strip(), name.strip())
    if name not in _KEYS:
        raise ConfigError(f"edge spec {text!r}: unknown builder {name!r}; known: {list(BUILDER_NAMES)}")
    where = f"edge spec {text!r}"
    kw: dict[str, str] = {}
    for i, arg in enumerate(a for a in rest.split(",") if a.strip()):
        k, eq, v = arg.partition("=")
        if not eq:
            if i != 0 or name not in _POSITIONAL:
                raise ConfigError(f"{where}: positional value {arg!r} not allowed here; use key=value with keys "
                                  f"{sorted(_KEYS[name])}")
            k, v = _POSITIONAL[name], arg
        k, v = k.strip(), v.strip()
        if k not in _KEYS[name]:
            raise ConfigError(f"{where}: unknown option {k!r} for {name}; allowed: {sorted(_KEYS[name])}")
        kw[k] = v
    if name == "radius":
        if "r" not in kw:
            raise ConfigError(f"{where}: radius needs a cutoff, e.g. radius:4.5")
        return Radius(_num(kw["r"], where), _num(kw["max"], where, int) if "max" in kw else None,
                      _parse_bool(kw.get("chain", "0"), where))
    if name == "knn":
        if "k" not in kw:
            raise ConfigError(f"{where}: knn needs k, e.g. knn:30")
        return KNN(_num(kw["k"], where, int), _parse_bool(kw.get("chain", "0"), where))
    if name == "seq":
        if "offsets" in kw:
            offs = tuple(_num(o, where, int) for o in kw["offsets"].split("/") if o)
        else:
            k = _num(kw.get("k", "1"), where, int)
            if k < 1:
                raise ConfigError(f"{where}: seq:K needs K >= 1")
            offs = tuple(range(-k, 0)) + tuple(range(1, k + 1))
        return Sequence(offs)
    if name == "full":
        return Full(_parse_bool(kw.get("chain", "0"), where))
    if "n" not in kw:
        raise ConfigError(f"{where}: random needs a number of edges per node, e.g. random:10")
    return RandomLongRange(
        n=_num(kw["n"], where, int), law=kw.get("law", "inverse_cubic"),
        temperature=_num(kw.get("T", "1"), where), exclude_existing=_parse_bool(kw.get("exclude", "1"), where),
        direction=kw.get("dir", "incoming"), seed=_num(kw.get("seed", "0"), where, int),
        length_scale=_num(kw.get("scale", "3"), where), within_chain=_parse_bool(kw.get("chain", "0"), where))


def parse_edge_spec(spec: str, self_loops: bool = False) -> GraphBuilder:
    """Parse a spec string (module docstring) into a :class:`GraphBuilder`; :class:`ConfigError` names
    the bad part and the allowed values."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"edge spec must be a non-empty string like 'radius:4.5,max=32+random:10', got {spec!r}")
    parts = [p for p in spec.replace(" ", "").split("+")]
    if any(not p for p in parts):
        raise ConfigError(f"edge spec {spec!r}: empty builder between '+' signs")
    return GraphBuilder([_parse_one(p) for p in parts], self_loops=self_loops)

"""Edge builders: positions (+ batch, chain) -> directed edges.

Every builder is a small frozen dataclass (so it is typed, comparable and serialisable by its
:meth:`spec` string) whose :meth:`build` takes a :class:`GraphContext` and returns int64 edges
[2, E] with row 0 = source j and row 1 = target i (PyG's ``source_to_target`` flow: messages go
``edge_index[0] -> edge_index[1]``). Builders never create self-loops and never connect two graphs of a
batch; with ``within_chain=True`` (and always for :class:`Sequence`) they never connect two chains.
Compose them with :class:`farfield.graphs.GraphBuilder`.

============================  =========================================================================
builder                       edges
============================  =========================================================================
``Radius(r, max_neighbours)`` all pairs within ``r`` (both directions); with a cap, each target keeps
                              its nearest ``max_neighbours`` sources, ties to the lower source index
                              (torch_cluster's cap keeps an arbitrary subset)
``KNN(k)``                    each target receives edges from its ``k`` nearest nodes
``Sequence(offsets)``         target i receives from i + o for each offset o, within a chain
``Full()``                    all ordered pairs of a graph
``RandomLongRange(n, ...)``   Gumbel-top-k sampling without replacement, ``log p = -3 log d`` by
                              default (Chroma; the L45 study), see the class docstring
============================  =========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch

from farfield.errors import ConfigError
from farfield.graphs import neighbours_torch as T
from farfield.graphs.neighbours import (cap_per_target, dense_labels, full_pairs, knn_pairs, radius_pairs, sq_dist,
                                        symmetrise)

__all__ = ["GraphContext", "TorchGraphContext", "EdgeBuilder", "Radius", "KNN", "Sequence", "Full", "RandomLongRange",
           "LAWS"]

LAWS = ("inverse_cubic", "exponential", "uniform")


@dataclass
class GraphContext:
    """What builders see: NumPy views of one batch.

    Attributes:
        pos: float64 [N, 3].
        batch: int64 [N] graph index of each node (zeros for a single graph).
        chain: int64 [N] chain label of each node, or None.
        graph_key: int64 [B] a key per graph for random builders (default: the graph's index in the batch).
        existing: int64 [2, E] edges built so far by earlier builders of a composition.
    """

    pos: np.ndarray
    batch: np.ndarray
    chain: np.ndarray | None = None
    graph_key: np.ndarray | None = None
    existing: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int64))

    @property
    def num_nodes(self) -> int:
        return len(self.pos)

    def groups(self, within_chain: bool, who: str) -> np.ndarray:
        """Dense group labels: graphs, or (graph, chain) pairs when ``within_chain``."""
        if not within_chain:
            return dense_labels(self.batch)
        if self.chain is None:
            raise ConfigError(f"{who}: within_chain=True needs chain labels (pass chain=... or use a residue/atom "
                              "pipeline that records chains)")
        return dense_labels(self.batch, self.chain)


@dataclass
class TorchGraphContext:
    """What builders see on the device path: tensors of one batch, all on one device.

    Attributes:
        pos: float64 [N, 3].
        batch: int64 [N].
        chain: int64 [N] or None.
        graph_key: int64 [B] or None.
        existing: int64 [2, E] edges built so far by earlier builders of a composition.
    """

    pos: torch.Tensor
    batch: torch.Tensor
    chain: torch.Tensor | None = None
    graph_key: torch.Tensor | None = None
    existing: torch.Tensor | None = None

    @property
    def num_nodes(self) -> int:
        return int(self.pos.shape[0])

    def groups(self, within_chain: bool, who: str) -> torch.Tensor:
        """Dense group labels (the same as :meth:`GraphContext.groups`)."""
        if not within_chain:
            return T.dense_labels(self.batch)
        if self.chain is None:
            raise ConfigError(f"{who}: within_chain=True needs chain labels (pass chain=... or use a residue/atom "
                              "pipeline that records chains)")
        return T.dense_labels(self.batch, self.chain)


def _as_torch(ctx: GraphContext) -> TorchGraphContext:
    """The host context as CPU tensors (no copy), for builders whose one implementation is the torch one."""
    t = (lambda a: None if a is None else torch.from_numpy(a))
    return TorchGraphContext(pos=t(ctx.pos), batch=t(ctx.batch), chain=t(ctx.chain), graph_key=t(ctx.graph_key),
                             existing=t(ctx.existing))


class EdgeBuilder:
    """Base class: subclasses implement :meth:`build` (host: NumPy / cKDTree), :meth:`build_torch` (any torch
    device; the same edge set) and :meth:`spec`."""

    kind: ClassVar[str] = ""

    def build(self, ctx: GraphContext) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def build_torch(self, ctx: TorchGraphContext) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def spec(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def __str__(self) -> str:
        return self.spec()


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Radius(EdgeBuilder):
    """Radius graph: j -> i for every pair with ``|x_i - x_j| <= r`` (both directions).

    Args:
        r: cutoff in Angstrom.
        max_neighbours: if set, each target keeps only its nearest ``max_neighbours`` sources, ties in
            distance going to the lower source index; the result is then no longer symmetric.
        within_chain: only connect nodes of the same chain.
    """

    r: float
    max_neighbours: int | None = None
    within_chain: bool = False
    kind: ClassVar[str] = "radius"

    def __post_init__(self):
        if not self.r > 0:
            raise ConfigError(f"radius: r must be > 0, got {self.r}")
        if self.max_neighbours is not None and self.max_neighbours < 1:
            raise ConfigError(f"radius: max must be >= 1, got {self.max_neighbours}")

    def build(self, ctx: GraphContext) -> np.ndarray:
        group = ctx.groups(self.within_chain, "radius")
        edges = symmetrise(radius_pairs(ctx.pos, group, float(self.r)))
        if self.max_neighbours is not None and edges.shape[1]:
            d2 = sq_dist(ctx.pos, edges[0], edges[1])
            edges = edges[:, cap_per_target(edges, d2, self.max_neighbours)]
        return edges

    def build_torch(self, ctx: TorchGraphContext) -> torch.Tensor:
        edges = T.radius_edges(ctx.pos, ctx.groups(self.within_chain, "radius"), float(self.r))
        if self.max_neighbours is not None and edges.shape[1]:
            d2 = T.sq_dist(ctx.pos, edges[0], edges[1])
            edges = edges[:, T.cap_per_target(edges, d2, self.max_neighbours)]
        return edges

    def spec(self) -> str:
        s = f"radius:{_fmt(self.r)}"
        if self.max_neighbours is not None:
            s += f",max={self.max_neighbours}"
        return s + (",chain=1" if self.within_chain else "")


@dataclass(frozen=True)
class KNN(EdgeBuilder):
    """k-nearest-neighbour graph: each target i receives edges from its ``k`` nearest other nodes of
    the same graph (all of them if the graph is smaller). Ties at the k-th distance go to the lower source
    index (squared distances compared exactly in float64), on the host and on the device alike."""

    k: int
    within_chain: bool = False
    kind: ClassVar[str] = "knn"

    def __post_init__(self):
        if self.k < 1:
            raise ConfigError(f"knn: k must be >= 1, got {self.k}")

    def build(self, ctx: GraphContext) -> np.ndarray:
        return knn_pairs(ctx.pos, ctx.groups(self.within_chain, "knn"), int(self.k))

    def build_torch(self, ctx: TorchGraphContext) -> torch.Tensor:
        return T.knn_edges(ctx.pos, ctx.groups(self.within_chain, "knn"), int(self.k))

    def spec(self) -> str:
        return f"knn:{self.k}" + (",chain=1" if self.within_chain else "")


@dataclass(frozen=True)
class Sequence(EdgeBuilder):
    """Sequence edges: target i receives an edge from node i + o for every offset o, when both are in the
    same graph and chain. Node order is sequence order (as the residue pipeline produces it); each chain
    must occupy a contiguous run of nodes.

    Args:
        offsets: non-zero integer offsets, e.g. ``(-2, -1, 1, 2)``; the spec ``seq:2`` means +-1..+-2.
    """

    offsets: tuple[int, ...] = (-1, 1)
    kind: ClassVar[str] = "seq"

    def __post_init__(self):
        offs = tuple(int(o) for o in self.offsets)
        if not offs or 0 in offs:
            raise ConfigError(f"seq: offsets must be non-empty and non-zero, got {self.offsets}")
        object.__setattr__(self, "offsets", tuple(sorted(set(offs))))

    def build(self, ctx: GraphContext) -> np.ndarray:
        return self.build_torch(_as_torch(ctx)).numpy()

    def build_torch(self, ctx: TorchGraphContext) -> torch.Tensor:
        n, dev = ctx.num_nodes, ctx.pos.device
        group = T.dense_labels(ctx.batch, ctx.chain) if ctx.chain is not None else T.dense_labels(ctx.batch)
        if n and int((group[1:] != group[:-1]).sum()) + 1 != int(group.max()) + 1:
            raise ConfigError("seq: every chain must be a contiguous run of nodes (sort nodes by graph, chain, "
                              "sequence position)")
        idx = torch.arange(n, device=dev)
        out = []
        for o in self.offsets:
            src = idx + o
            ok = (src >= 0) & (src < n)
            t, s_ = idx[ok], src[ok]
            ok2 = group[t] == group[s_]
            out.append(torch.stack([s_[ok2], t[ok2]]))
        return torch.cat(out, dim=1)

    def spec(self) -> str:
        k = max(abs(o) for o in self.offsets)
        if self.offsets == tuple(sorted(set(range(-k, 0)) | set(range(1, k + 1)))):
            return f"seq:{k}"
        return "seq:offsets=" + "/".join(str(o) for o in self.offsets)


@dataclass(frozen=True)
class Full(EdgeBuilder):
    """Fully connected graph: every ordered pair (j != i) of the same graph (or chain)."""

    within_chain: bool = False
    kind: ClassVar[str] = "full"

    def build(self, ctx: GraphContext) -> np.ndarray:
        return full_pairs(ctx.groups(self.within_chain, "full"))

    def build_torch(self, ctx: TorchGraphContext) -> torch.Tensor:
        return T.full_edges(ctx.groups(self.within_chain, "full"))

    def spec(self) -> str:
        return "full" + (":chain=1" if self.within_chain else "")


@dataclass(frozen=True)
class RandomLongRange(EdgeBuilder):
    r"""Random long-range edges by Gumbel-top-k sampling without replacement (Chroma's ProteinGraph
    ``random_log``; the L45 study of GVP-GNN on GO).

    For each node i, candidates j (same graph, j != i, and not already connected when
    ``exclude_existing``) get keys :math:`\log p_{ij} / T + G_{ij}` with
    :math:`G = -\log(-\log U)` i.i.d. Gumbel noise, and the ``n`` largest keys are taken; with ``n = 1``
    this draws j with probability :math:`\propto p_{ij}^{1/T}`. Laws:

    * ``inverse_cubic``: :math:`\log p = -3 \log d` (distances below 1e-3 A are treated as 1e-3 A);
    * ``exponential``: :math:`\log p = -d / \ell` with ``length_scale`` :math:`\ell` = 3 A (Chroma's
      ``random_linear``);
    * ``uniform``: constant.

    ``direction='incoming'``: every node *receives* n edges (Chroma); ``'outgoing'``: every node *sends*
    n edges (L45). A graph with fewer than n candidates gives all of them.

    Reproducibility: the uniform behind :math:`G_{ij}` is a counter-based hash (a 32-bit xorshift-multiply finaliser) of
    (``seed``, ``graph_key[b]``, the rank of i's chain in its graph, the positions of i and j within their graph),
    not a sequential generator, so the same graph with the same key gets the same edges alone or in any batch, on
    the host or on any device, in any chunking; the edge set is invariant to rotations and translations (the
    noise is indexed by node, the weights by distance). ``graph_key`` defaults to the graph's index in the batch:
    pass a per-sample key (e.g. dataset index) and vary ``seed`` per epoch to resample during training.

    Cost: dense per graph, O(n_g^2) time and O(chunk x max_g n_g) memory (rows padded to the largest graph and
    processed in chunks); the host and device paths run the same torch code.
    """

    n: int
    law: Literal["inverse_cubic", "exponential", "uniform"] = "inverse_cubic"
    temperature: float = 1.0
    exclude_existing: bool = True
    direction: Literal["incoming", "outgoing"] = "incoming"
    seed: int = 0
    length_scale: float = 3.0
    within_chain: bool = False
    kind: ClassVar[str] = "random"

    def __post_init__(self):
        if self.n < 1:
            raise ConfigError(f"random: n must be >= 1, got {self.n}")
        if self.law not in LAWS:
            raise ConfigError(f"random: law must be one of {LAWS}, got {self.law!r}")
        if not self.temperature > 0:
            raise ConfigError(f"random: temperature must be > 0, got {self.temperature}")
        if self.direction not in ("incoming", "outgoing"):
            raise ConfigError(f"random: dir must be 'incoming' or 'outgoing', got {self.direction!r}")
        if not self.length_scale > 0:
            raise ConfigError(f"random: length_scale must be > 0, got {self.length_scale}")

    def log_weight(self, d: torch.Tensor) -> torch.Tensor:
        """Unnormalised log-probability of an edge of length ``d`` under the law."""
        if self.law == "inverse_cubic":
            return -3.0 * torch.log(d.clamp_min(1e-3))
        if self.law == "exponential":
            return -d / self.length_scale
        return torch.zeros_like(d)

    def _bases(self, ctx: TorchGraphContext, group: torch.Tensor, order: torch.Tensor, ptr: torch.Tensor):
        """Per group: a 32-bit hash of (seed, graph key * 1024 + rank of the group within its graph)."""
        dev = group.device
        gb = ctx.batch[order[ptr[:-1]]]                                   # graph of each group
        ng = gb.numel()
        idx = torch.arange(ng, device=dev)
        new = torch.ones(ng, dtype=torch.bool, device=dev)
        new[1:] = gb[1:] != gb[:-1]
        chain_rank = idx - torch.cummax(torch.where(new, idx, torch.zeros_like(idx)), 0).values
        keys = ctx.graph_key.to(dev).long() if ctx.graph_key is not None else torch.arange(
            int(ctx.batch.max()) + 1, device=dev)
        kg = keys[gb] * 1024 + chain_rank
        b = T.mix32(torch.full_like(kg, (int(self.seed) & 0xFFFFFFFF) ^ 0x5EED))
        b = T.mix32(b ^ (kg & 0xFFFFFFFF))
        return T.mix32(b ^ ((kg >> 32) & 0xFFFFFFFF))

    def build(self, ctx: GraphContext) -> np.ndarray:
        return self.build_torch(_as_torch(ctx)).numpy()

    def build_torch(self, ctx: TorchGraphContext) -> torch.Tensor:
        group = ctx.groups(self.within_chain, "random")
        n, dev = ctx.num_nodes, ctx.pos.device
        if n < 2:
            return torch.zeros((2, 0), dtype=torch.long, device=dev)
        order, counts, ptr, local = T._group_layout(group)
        width = int(counts.max())
        k = min(self.n, width - 1)
        if k < 1:
            return torch.zeros((2, 0), dtype=torch.long, device=dev)
        base = self._bases(ctx, group, order, ptr)
        inv_order = torch.empty_like(order)
        inv_order[order] = torch.arange(n, device=dev)
        incoming = self.direction == "incoming"
        ex = ctx.existing
        ex_pos = ex_loc = None
        if self.exclude_existing and ex is not None and ex.shape[1]:
            ex_row, ex_col = (ex[1], ex[0]) if incoming else (ex[0], ex[1])
            same = group[ex_row] == group[ex_col]
            ex_pos, ex_loc = inv_order[ex_row[same]], local[ex_col[same]]
            o = torch.argsort(ex_pos)
            ex_pos, ex_loc = ex_pos[o], ex_loc[o]
        ar = torch.arange(width, device=dev)
        col = T.column_code(ar)[None, :]
        ps = ctx.pos.index_select(0, order)                              # coordinates in group order
        xyz = [ps[:, c].contiguous() for c in range(3)]
        out_rows, out_cols = [], []
        for r0, r1 in T._row_chunks(order, width):
            rows = order[r0:r1]                                           # nodes that receive (or send) edges
            g = group[rows]
            cols = (ptr[g][:, None] + ar[None, :]).clamp_max(n - 1)       # sorted positions of the candidates
            valid = ar[None, :] < counts[g][:, None]
            flat = cols.reshape(-1)
            d2 = None
            for c in range(3):                                            # the arithmetic of sq_dist, per axis
                dc = xyz[c].index_select(0, flat).view(len(rows), width) - xyz[c][r0:r1, None]
                d2 = dc * dc if d2 is None else d2 + dc * dc
            u = T.hash_uniform(base[g][:, None], local[rows][:, None], ar[None, :], col)
            if self.law == "inverse_cubic":          # -3 log d = -1.5 log d^2 (d clamped at 1e-3 A): no square root
                logw = d2.clamp_min(1e-6).log_().mul_(-1.5 / self.temperature)
            else:
                logw = self.log_weight(torch.sqrt(d2)).div_(self.temperature)
            key = logw.sub_(u.log_().neg_().log_())
            valid &= ar[None, :] != local[rows][:, None]
            key.masked_fill_(~valid, -torch.inf)
            if ex_pos is not None:
                a, b = torch.searchsorted(ex_pos, torch.tensor([r0, r1], device=dev)).tolist()
                if b > a:
                    key[ex_pos[a:b] - r0, ex_loc[a:b]] = -torch.inf
            top_val, top_idx = torch.topk(key, k, dim=1)
            ok = torch.isfinite(top_val)
            out_rows.append(rows[:, None].expand_as(top_idx)[ok])
            out_cols.append(order[cols.gather(1, top_idx)[ok]])
        rows, cols = torch.cat(out_rows), torch.cat(out_cols)
        return torch.stack([cols, rows] if incoming else [rows, cols])

    def spec(self) -> str:
        s = f"random:{self.n}"
        if self.law != "inverse_cubic":
            s += f",law={self.law}"
        if self.temperature != 1.0:
            s += f",T={_fmt(self.temperature)}"
        if not self.exclude_existing:
            s += ",exclude=0"
        if self.direction != "incoming":
            s += f",dir={self.direction}"
        if self.seed:
            s += f",seed={self.seed}"
        if self.length_scale != 3.0:
            s += f",scale={_fmt(self.length_scale)}"
        return s + (",chain=1" if self.within_chain else "")

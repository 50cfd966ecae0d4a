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
from farfield.graphs.neighbours import (cap_per_target, dense_labels, full_pairs, knn_pairs, radius_pairs,
                                        symmetrise)

__all__ = ["GraphContext", "EdgeBuilder", "Radius", "KNN", "Sequence", "Full", "RandomLongRange", "LAWS"]

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


class EdgeBuilder:
    """Base class: subclasses implement :meth:`build` and :meth:`spec`."""

    kind: ClassVar[str] = ""

    def build(self, ctx: GraphContext) -> np.ndarray:  # pragma: no cover - interface
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
            d = np.linalg.norm(ctx.pos[edges[0]] - ctx.pos[edges[1]], axis=1)
            edges = edges[:, cap_per_target(edges, d, self.max_neighbours)]
        return edges

    def spec(self) -> str:
        s = f"radius:{_fmt(self.r)}"
        if self.max_neighbours is not None:
            s += f",max={self.max_neighbours}"
        return s + (",chain=1" if self.within_chain else "")


@dataclass(frozen=True)
class KNN(EdgeBuilder):
    """k-nearest-neighbour graph: each target i receives edges from its ``k`` nearest other nodes of
    the same graph (all of them if the graph is smaller). Ties at the k-th distance are broken by the
    KD-tree, deterministically for a given input."""

    k: int
    within_chain: bool = False
    kind: ClassVar[str] = "knn"

    def __post_init__(self):
        if self.k < 1:
            raise ConfigError(f"knn: k must be >= 1, got {self.k}")

    def build(self, ctx: GraphContext) -> np.ndarray:
        return knn_pairs(ctx.pos, ctx.groups(self.within_chain, "knn"), int(self.k))

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
        n = ctx.num_nodes
        group = dense_labels(ctx.batch, ctx.chain) if ctx.chain is not None else dense_labels(ctx.batch)
        if n and (np.count_nonzero(group[1:] != group[:-1]) + 1) != group.max() + 1:
            raise ConfigError("seq: every chain must be a contiguous run of nodes (sort nodes by graph, chain, "
                              "sequence position)")
        idx = np.arange(n)
        out = []
        for o in self.offsets:
            src = idx + o
            ok = (src >= 0) & (src < n)
            t, s_ = idx[ok], src[ok]
            ok2 = group[t] == group[s_]
            out.append(np.stack([s_[ok2], t[ok2]]))
        return np.concatenate(out, axis=1) if out else np.zeros((2, 0), dtype=np.int64)

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

    Reproducibility: graph b of a batch draws its noise from a generator seeded by
    (``seed``, ``graph_key[b]``), where ``graph_key`` defaults to the graph's index in the batch, so the same
    graph with the same key gets the same edges alone or in any batch, and the edge set is invariant to
    rotations and translations (the noise is indexed by node, the weights by distance). Pass a per-sample
    key (e.g. dataset index) and vary ``seed`` per epoch to resample during training.

    Cost: dense per graph, O(n_g^2) time and O(chunk x n_g) memory (rows are processed in chunks).
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
    chunk_elements: ClassVar[int] = 1 << 22

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

    def _generator(self, key: int) -> torch.Generator:
        s = np.random.SeedSequence([int(self.seed) & 0xFFFFFFFF, int(key) & 0xFFFFFFFFFFFF, 0x5EED])
        g = torch.Generator()
        g.manual_seed(int(s.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
        return g

    def build(self, ctx: GraphContext) -> np.ndarray:
        group = ctx.groups(self.within_chain, "random")
        n = ctx.num_nodes
        if n < 2:
            return np.zeros((2, 0), dtype=np.int64)
        keys = ctx.graph_key if ctx.graph_key is not None else np.arange(int(ctx.batch.max()) + 1)
        order = np.argsort(group, kind="stable")
        counts = np.bincount(group)
        ptr = np.r_[0, np.cumsum(counts)]
        # existing edges as (row, col) in the sampling matrix: row = the node that receives (incoming)
        # or sends (outgoing) the random edges
        ex = ctx.existing
        incoming = self.direction == "incoming"
        ex_row, ex_col = (ex[1], ex[0]) if incoming else (ex[0], ex[1])
        pos = torch.from_numpy(ctx.pos)
        out_rows, out_cols = [], []
        chain_rank = np.zeros(len(counts), dtype=np.int64)  # rank of a group within its graph
        gb = ctx.batch[order[ptr[:-1]]]
        for gi in range(1, len(counts)):
            chain_rank[gi] = chain_rank[gi - 1] + 1 if gb[gi] == gb[gi - 1] else 0
        local = np.empty(n, dtype=np.int64)
        local[order] = np.arange(n) - np.repeat(ptr[:-1], counts)
        if self.exclude_existing and ex.shape[1]:
            same = group[ex_row] == group[ex_col]
            ex_group, ex_r, ex_c = group[ex_row[same]], local[ex_row[same]], local[ex_col[same]]
            ex_sort = np.argsort(ex_group, kind="stable")
            ex_group, ex_r, ex_c = ex_group[ex_sort], ex_r[ex_sort], ex_c[ex_sort]
            ex_ptr = np.searchsorted(ex_group, np.arange(len(counts) + 1))
        else:
            ex_ptr = None
        for g_idx in range(len(counts)):
            m = int(counts[g_idx])
            if m < 2:
                continue
            nodes = order[ptr[g_idx]:ptr[g_idx + 1]]
            gen = self._generator(int(keys[gb[g_idx]]) * 1024 + int(chain_rank[g_idx]))
            x = pos[nodes]
            k = min(self.n, m - 1)
            rows_per = max(1, self.chunk_elements // m)
            excl = None
            if ex_ptr is not None and ex_ptr[g_idx + 1] > ex_ptr[g_idx]:
                sl = slice(ex_ptr[g_idx], ex_ptr[g_idx + 1])
                excl = (torch.from_numpy(ex_r[sl]), torch.from_numpy(ex_c[sl]))
            for r0 in range(0, m, rows_per):
                r1 = min(m, r0 + rows_per)
                d = torch.cdist(x[r0:r1], x, compute_mode="donot_use_mm_for_euclid_dist")
                noise = torch.empty_like(d).exponential_(generator=gen)
                key = self.log_weight(d) / self.temperature - torch.log(noise)
                ar = torch.arange(r0, r1)
                key[ar - r0, ar] = -torch.inf
                if excl is not None:
                    sel = (excl[0] >= r0) & (excl[0] < r1)
                    key[excl[0][sel] - r0, excl[1][sel]] = -torch.inf
                top_val, top_idx = torch.topk(key, k, dim=1)
                ok = torch.isfinite(top_val)
                rows = ar.unsqueeze(1).expand_as(top_idx)[ok]
                out_rows.append(nodes[rows.numpy()])
                out_cols.append(nodes[top_idx[ok].numpy()])
        if not out_rows:
            return np.zeros((2, 0), dtype=np.int64)
        rows, cols = np.concatenate(out_rows), np.concatenate(out_cols)
        return np.stack([cols, rows] if incoming else [rows, cols]).astype(np.int64)

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

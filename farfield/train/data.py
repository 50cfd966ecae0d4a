"""Data for training: dataset loading (lists or lazy graph sequences), edges per strategy (random long-range
edges resampled every epoch; per component for pair items), fixed splits (official, or by group where the
dataset has groups), target scaling, Noisy Nodes position noise on training items, and batches bounded by
total atoms."""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torch_geometric.loader import DataLoader

from farfield.data import fields as F
from farfield.data.splits import split_indices
from farfield.errors import ConfigError, InputError
from farfield.graphs import GraphBuilder, parse_edge_spec

__all__ = ["AtomBudgetBatchSampler", "GraphDataModule", "EpochEdges", "LazySplit", "MarkPadded", "build_edges",
           "build_batch_edges", "epoch_builder", "split_indices", "BASELINE_PREFIX", "COMPONENT", "EDGE_EPOCH"]

#: graph field [1] set by :class:`EpochEdges` when edges are built on the device: the epoch whose random draw the
#: batch's edges take (-1: the fixed evaluation draw); read and removed by :meth:`GraphDataModule.on_after_batch_transfer`
EDGE_EPOCH = "edge_epoch"

# graph / node attributes holding the features of a reference baseline (``baseline_<name>``), and the node field
# [N] of pair items (0 = the original structure, 1 = the mutated one, ATOM3D MSP): defined once in fields
BASELINE_PREFIX, COMPONENT = F.BASELINE_PREFIX, F.COMPONENT


class AtomBudgetBatchSampler(Sampler):
    """Batches of at most ``batch_size`` graphs **and** at most ``max_atoms`` atoms (a graph larger than the
    budget gets a batch of its own). Shuffled per epoch from ``seed`` + epoch when ``shuffle`` (Lightning
    calls :meth:`set_epoch`, so a resumed run sees the same order). Under distributed training each rank takes
    every ``world_size``-th batch; training batches are padded by repetition so that every rank runs the same
    number of steps (``pad=True``). Evaluation batches (``pad=False``) are padded too, because every rank must
    run at least one batch, but the copies carry indices shifted by ``len(sizes)``: :class:`MarkPadded` turns
    them into graphs with ``eval_weight`` 0, which the metrics leave out, so every graph counts exactly once."""

    def __init__(self, sizes, batch_size: int, max_atoms: int, shuffle: bool, seed: int = 0, pad: bool = True,
                 blocks=None):
        self.sizes = np.asarray(sizes)
        self.batch_size, self.max_atoms, self.shuffle, self.seed, self.pad = batch_size, max_atoms, shuffle, seed, pad
        #: optional block id per item (the shard of a lazy store): shuffling permutes the blocks, then the items
        #: within each block, so that an epoch reads every shard once instead of once per item
        self.blocks = None if blocks is None else np.asarray(blocks)
        self.epoch = 0

    def _order(self) -> np.ndarray:
        n = len(self.sizes)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng(self.seed + self.epoch)
        if self.blocks is None:
            return rng.permutation(n)
        ids = np.unique(self.blocks)
        return np.concatenate([rng.permutation(np.flatnonzero(self.blocks == b)) for b in rng.permutation(ids)])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        order = self._order()
        out, cur, atoms = [], [], 0
        for i in order:
            s = int(self.sizes[i])
            if cur and (len(cur) == self.batch_size or atoms + s > self.max_atoms):
                out.append(cur)
                cur, atoms = [], 0
            cur.append(int(i))
            atoms += s
        if cur:
            out.append(cur)
        return out

    def _rank(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __iter__(self):
        batches = self._batches()
        rank, world = self._rank()
        if world > 1:
            per = math.ceil(len(batches) / world)
            n, extra = len(self.sizes), per * world - len(batches)
            copies = (batches * world)[len(batches): len(batches) + extra]
            batches = batches + (copies if self.pad else [[i + n for i in b] for b in copies])
            batches = batches[rank::world]
        return iter(batches)

    def __len__(self) -> int:
        rank, world = self._rank()
        return math.ceil(len(self._batches()) / world)


class MarkPadded(Dataset):
    """``data[i]`` with ``eval_weight`` 1 for i < n, and a copy of ``data[i - n]`` with ``eval_weight`` 0 for the
    padding indices of :class:`AtomBudgetBatchSampler` (``pad=False``)."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return 2 * len(self.data)

    def __getitem__(self, i):
        n = len(self.data)
        g = copy.copy(self.data[i % n])
        g.eval_weight = torch.tensor([0.0 if i >= n else 1.0])
        return g


def build_edges(builder: GraphBuilder, g, pair: bool = False):
    """Store ``builder``'s edges (``edge_index``, ``edge_type``) on ``g``; with ``pair`` each component
    (node field :data:`COMPONENT`, sorted: original nodes first) is built as its own graph, so that no edge
    crosses the two structures (graph keys ``2 k`` and ``2 k + 1`` for a graph of key ``k``)."""
    if not pair:
        return builder.apply(g)
    comp = getattr(g, COMPONENT, None)
    name = str(getattr(g, F.NAME, "graph"))
    if comp is None:
        raise InputError(name, "a pair dataset's graphs need the node field 'component' (0 original, 1 mutated)")
    comp = comp.reshape(-1).long()
    if comp.numel() != g.num_nodes or (comp.numel() and (bool((comp[1:] < comp[:-1]).any())
                                                         or not set(comp.unique().tolist()) <= {0, 1})):
        raise InputError(name, "'component' must be 0 (original) then 1 (mutated) per node, sorted")
    if not (bool((comp == 0).any()) and bool((comp == 1).any())):
        raise InputError(name, "a pair item needs both structures (component 0 and component 1 nodes)")
    key = getattr(g, F.GRAPH_KEY, None)
    key = None if key is None else torch.stack([key.reshape(-1)[0] * 2, key.reshape(-1)[0] * 2 + 1])
    e = builder(g.pos, comp, getattr(g, F.CHAIN_INDEX, None), key)
    g.edge_index, g.edge_type = e.edge_index, e.edge_type
    return g


def epoch_builder(builder: GraphBuilder, seed: int, epoch: int | None) -> GraphBuilder:
    """``builder`` with its random parts seeded by (run ``seed``, ``epoch``); ``epoch`` None: the fixed draw used
    for evaluation."""
    salt = 0 if epoch is None else int(epoch) + 1
    parts = [replace(b, seed=(int(seed) * 1_000_003 + salt) & 0x7FFFFFFF) if b.kind == "random" else b
             for b in builder.builders]
    return GraphBuilder(parts, self_loops=builder.self_loops)


def build_batch_edges(builder: GraphBuilder, batch, pair: bool = False, backend: str = "device"):
    """Store ``builder``'s edges on a collated ``batch`` (on any device; by default with the torch kernels, no copy
    to the host): the same edge sets as :func:`build_edges` on each item, offsets included. ``pair``: each (graph,
    component) is its own graph, keyed ``2 k`` / ``2 k + 1``."""
    if getattr(batch, F.CELL, None) is not None:      # periodic: images within the radius (GraphBuilder.apply)
        return builder.apply(batch)
    n = batch.num_nodes
    vec = getattr(batch, "batch", None)
    if vec is None:
        vec = torch.zeros(n, dtype=torch.long, device=batch.pos.device)
    key = getattr(batch, F.GRAPH_KEY, None)
    # an item without a key is keyed 0 on its own (build_edges): the same here, whatever its place in the batch
    key = torch.zeros(int(batch.num_graphs), dtype=torch.long, device=vec.device) if key is None else key.reshape(-1)
    if pair:
        comp = getattr(batch, COMPONENT, None)
        if comp is None:
            raise InputError("batch", "a pair dataset's graphs need the node field 'component' (0 original, 1 mutated)")
        vec = vec * 2 + comp.reshape(-1).long()
        key = torch.stack([key * 2, key * 2 + 1], 1).reshape(-1)
    e = builder(batch.pos, vec, getattr(batch, F.CHAIN_INDEX, None), key, backend=backend)
    batch.edge_index, batch.edge_type = e.edge_index, e.edge_type
    return batch


class EpochEdges(Dataset):
    """Graphs whose edges include random long-range edges drawn anew every epoch (and, for Noisy Nodes,
    whose positions get fresh noise every epoch).

    ``graphs`` (a list, or a :class:`LazySplit` whose items are loaded on access) carry their fixed (local)
    edges already; ``builder`` is the full :class:`GraphBuilder` (local + random). Item i of epoch e is
    graph i with the builder's random parts seeded by ``(seed, e)`` (the random builder itself keys each
    graph by ``graph_key``), so a run sees fresh long-range edges every epoch and the same ones when it is
    repeated or resumed. ``epoch_of()`` returns the epoch (None: a fixed draw, for evaluation).

    ``noise_std`` > 0: positions become ``pos + noise_std * eps`` with ``eps`` drawn from ``(seed, epoch,
    i)`` and stored as ``noise_target`` (:func:`farfield.models.denoising.add_position_noise`; Godwin et al.
    2022); all edges are then built on the noisy positions. ``pair``: edges per component
    (:func:`build_edges`).

    ``transform(g, generator) -> g``: a corruption applied to every item before its edges are built (the
    pretraining tasks of :mod:`farfield.pretrain.tasks`), with a generator seeded by ``(seed, epoch, i)``: a
    fresh draw every training epoch, and for evaluation (epoch None) one fixed draw per item, so that a
    validation loss is comparable across epochs and runs.

    ``on_device``: build no edges here; mark each item with its epoch (graph field :data:`EDGE_EPOCH`) so that
    :meth:`GraphDataModule.on_after_batch_transfer` builds the same edges on the batch's device."""

    def __init__(self, graphs, builder: GraphBuilder, seed: int, epoch_of, noise_std: float = 0.0,
                 pair: bool = False, transform=None, on_device: bool = False):
        self.graphs, self.builder, self.seed, self.epoch_of = graphs, builder, int(seed), epoch_of
        self.noise_std, self.pair, self.transform = float(noise_std), bool(pair), transform
        self.on_device = bool(on_device)

    def __len__(self) -> int:
        return len(self.graphs)

    def builder_for(self, epoch: int | None) -> GraphBuilder:
        return epoch_builder(self.builder, self.seed, epoch)

    def __getitem__(self, i):
        raw = getattr(self.graphs, "raw", None)
        g = copy.copy(raw(i) if raw is not None else self.graphs[i])
        epoch = self.epoch_of()
        if self.noise_std > 0:
            from farfield.models.denoising import add_position_noise
            gen = torch.Generator().manual_seed(
                hash((self.seed, -1 if epoch is None else int(epoch), int(i))) & 0x7FFFFFFFFFFF)
            g = add_position_noise(g, self.noise_std, gen)
        if self.transform is not None:
            gen = torch.Generator().manual_seed(
                hash((self.seed, 7, -1 if epoch is None else int(epoch), int(i))) & 0x7FFFFFFFFFFF)
            g = self.transform(g, gen)
        if self.on_device:
            g[EDGE_EPOCH] = torch.tensor([-1 if epoch is None else int(epoch)])
            g.edge_index = g.edge_type = None
            return g
        if self.builder is None:
            return g
        return build_edges(self.builder_for(epoch), g, self.pair)


class LazySplit(Dataset):
    """The items ``indices`` of a lazy graph sequence (``seq[i]`` loads one graph), loaded on access and
    given edges by ``builder`` (the fixed, non-random part of the edge spec; ``None``: the graphs bring
    their own). ``sizes`` [n] are the node counts from ``seq.index['num_nodes']``; slicing gives a list;
    :meth:`raw` returns an item without building edges."""

    def __init__(self, seq, indices, builder: GraphBuilder | None, pair: bool = False):
        self.seq, self.indices, self.builder, self.pair = seq, np.asarray(indices, dtype=np.int64), builder, pair
        self.sizes = np.asarray(seq.index["num_nodes"], dtype=np.int64)[self.indices]
        shard = seq.index.get("shard") if isinstance(seq.index, dict) else None
        #: the shard of each item when the sequence says (block shuffling), else None
        self.blocks = None if shard is None else np.asarray(shard, dtype=np.int64)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, i: int):
        return self.seq[int(self.indices[i])]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        g = self.raw(i)
        return g if self.builder is None else build_edges(self.builder, copy.copy(g), self.pair)

    def __iter__(self):
        return (self[k] for k in range(len(self)))

    def __add__(self, other):
        return list(self) + list(other)

    def __radd__(self, other):
        return list(other) + list(self)


def limited(n: int, limit: int, official=None) -> np.ndarray:
    """Indices of the items ``data.limit`` keeps (all when ``limit`` is 0): the first ``limit`` items, or with
    an official split (``official`` [n] of 0/1/2) the first items of each split in proportion to its size, so
    that a slice of an ordered corpus (training chains first) still has validation and test items."""
    if not limit or limit >= n:
        return np.arange(n)
    if official is None:
        return np.arange(limit)
    official = np.asarray(official)
    parts = [np.flatnonzero(official == k) for k in range(3)]
    quota = [math.ceil(limit * len(p) / n) if len(p) else 0 for p in parts]
    while sum(quota) > limit:                                # ceil may overshoot by a few: trim the largest
        quota[int(np.argmax(quota))] -= 1
    return np.sort(np.concatenate([p[:q] for p, q in zip(parts, quota)]))


def _has_random(builder: GraphBuilder) -> bool:
    return any(b.kind == "random" for b in builder.builders)


def _first(x) -> int:
    return int(x.reshape(-1)[0])


class GraphDataModule(L.LightningDataModule):
    """Loads ``config.data.dataset``, builds edges with ``edge_spec`` (the local spec as changed by the
    model's long-range strategy), splits, and scales regression targets with the training statistics.

    The split is the dataset's official one when every graph has ``split``; otherwise it is drawn with
    ``data.split_seed`` and is the same for every run seed; when every graph has a ``group`` (e.g. the
    conformers of one sequence) whole groups go to one split. Random long-range edges are resampled every
    training epoch from the run ``seed`` (:class:`EpochEdges`); evaluation uses one fixed draw.

    Lazy datasets: a loader may return, instead of a list, a lazy graph sequence (``len(seq)``, ``seq[i]``
    loads one graph, ``seq.index``: per-item ``num_nodes`` and optionally ``split`` / ``group`` arrays). The
    split and the batches then come from the index without loading graphs; edges are built per item on
    access (:class:`LazySplit`); target mean / std and ``max_edge_length`` come from one streaming pass.

    Pair datasets (loader ``info['pair']``): each item holds two structures (node field ``component``);
    edges are built per component, never across (:func:`build_edges`).

    After :meth:`setup`: ``train`` / ``val`` / ``test`` (lists of Data, or :class:`LazySplit`),
    ``target_mean`` / ``target_std``, ``max_edge_length`` (for strategies that need a spanning radial basis:
    the longest edge, or for random edges the longest intra-graph distance), ``input_spec``, ``baselines``
    (names of the reference-baseline features the dataset provides), ``grouped`` (every graph has a
    ``group``), ``pair``, ``has_positions``. :meth:`with_noise` gives the Noisy Nodes view of the same data."""

    def __init__(self, data_cfg, edge_spec: str, seed: int = 0, standardize: bool = True, noise_std: float = 0.0,
                 labelled: bool = True):
        super().__init__()
        self.cfg, self.edge_spec, self.seed, self.standardize = data_cfg, edge_spec, seed, standardize
        self.noise_std = float(noise_std)
        #: False for unlabelled corpora (pretraining): graphs need no ``y``, and there are no target moments
        self.labelled = bool(labelled)
        #: a corruption ``transform(g, generator) -> g`` applied to every item of every split (:meth:`with_transform`)
        self.transform = None
        self._ready = False

    def with_transform(self, transform) -> "GraphDataModule":
        """A shallow copy (sharing the loaded graphs) whose items of every split pass through ``transform(g,
        generator) -> g`` before their edges are built (:class:`EpochEdges`: fresh draws per training epoch, one
        fixed draw per evaluation item)."""
        self.setup()
        out = copy.copy(self)
        out.transform = transform
        return out

    def with_noise(self, noise_std: float) -> "GraphDataModule":
        """A shallow copy (sharing the loaded graphs) whose training batches carry position noise of std
        ``noise_std`` Angstrom and its draw ``noise_target`` (Noisy Nodes, Godwin et al. 2022); validation
        and test batches stay clean. Raises :class:`ConfigError` for datasets without coordinates."""
        self.setup()
        if noise_std > 0 and not self.has_positions:
            raise ConfigError(f"task.noisy_nodes needs 3D coordinates; dataset {self.cfg.dataset!r} has none (a 2D "
                              "graph dataset)")
        out = copy.copy(self)
        out.noise_std = float(noise_std)
        return out

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        from farfield.datasets import DATASETS

        kw = {"hydrogens": self.cfg.hydrogens, **dict(self.cfg.options)}
        if self.cfg.target is not None:
            kw["target"] = self.cfg.target
        loader = DATASETS[self.cfg.dataset]
        graphs = loader(self.cfg.path, **kw)
        info = getattr(loader, "info", {}) or {}
        #: 2D datasets come with their own edges (bonds): no edge spec is applied to them
        self.provides_edges = bool(info.get("provides_edges", False))
        self.pair = bool(info.get("pair", False))
        self.builder = parse_edge_spec(self.edge_spec)
        self.random = _has_random(self.builder) and not self.provides_edges
        if self.provides_edges and self.edge_spec != self.cfg.edges:
            raise ConfigError(f"dataset {self.cfg.dataset!r} provides its own edges (bonds); graph strategies that "
                              f"change the edge spec ({self.edge_spec!r}) do not apply to it")
        self.fixed = GraphBuilder([b for b in self.builder.builders if b.kind != "random"],
                                  self_loops=self.builder.self_loops) if self.random else self.builder
        if isinstance(graphs, list):
            self._setup_list(graphs)
        else:
            self._setup_lazy(graphs)
        self._ready = True

    def _where(self) -> str:
        return self.cfg.path or self.cfg.dataset

    def _check(self, g) -> None:
        y = getattr(g, F.Y, None)
        if self.labelled and y is None:
            raise InputError(str(g.name), f"has no target 'y': dataset {self.cfg.dataset!r} is unlabelled (a corpus "
                                          "is for `farfield pretrain`)")
        if (g.pos is not None and not torch.isfinite(g.pos).all()) or not torch.isfinite(g.x_s).all() \
                or (y is not None and not torch.isfinite(y).all()):
            raise InputError(str(g.name), "contains NaN or infinite values")

    def _longest(self, g, build: bool) -> float:
        """The longest edge of ``g`` (building its edges in place when ``build``), or for random edges its
        longest intra-graph distance."""
        if self.provides_edges:
            return 0.0
        if self.random:
            pos = g.pos.double()
            if self.pair:
                comp = getattr(g, COMPONENT).reshape(-1)
                return max(float(torch.pdist(pos[comp == c]).max()) if int((comp == c).sum()) > 1 else 0.0
                           for c in (0, 1))
            return float(torch.pdist(pos).max()) if g.num_nodes > 1 else 0.0
        if build:
            build_edges(self.fixed, g, self.pair)
        if g.edge_index is None or not g.edge_index.shape[1]:
            return 0.0
        src, tgt = g.edge_index
        return float((g.pos[src] - g.pos[tgt]).norm(dim=-1).max())

    def _split(self, n: int, groups, official):
        #: which split is used: ``'official'`` (the dataset's own; ``data.split`` / ``split_seed`` do not apply)
        #: or ``'seeded'`` (drawn from ``data.split`` with ``data.split_seed``, by group where there are groups)
        self.split_source = "official" if official is not None else "seeded"
        if official is not None:                        # the dataset's official split
            return tuple(np.flatnonzero(official == k) for k in range(3))
        return split_indices(n, self.cfg.split, self.cfg.split_seed, groups)

    def _check_parts(self, n: int, groups) -> None:
        unit = "groups" if groups is not None else "items"
        n_units = len(np.unique(groups)) if groups is not None else n
        for name, part in (("training", self.train), ("validation", self.val)):
            if not len(part):
                raise InputError(self._where(),
                                 f"the {name} split is empty ({n_units} {unit} split {list(self.cfg.split)}); use "
                                 "more data (data.limit) or larger fractions (data.split)")

    def _setup_list(self, graphs) -> None:
        from farfield.models import InputSpec
        if self.cfg.limit:
            official = [getattr(g, F.SPLIT, None) for g in graphs]
            official = np.array([_first(x) for x in official]) if all(x is not None for x in official) else None
            graphs = [graphs[i] for i in limited(len(graphs), self.cfg.limit, official)]
        if len(graphs) < 3:
            raise InputError(self._where(), f"has {len(graphs)} samples; need at least 3 to split")
        longest = 0.0
        for g in graphs:
            self._check(g)
            if self.random:
                longest = max(longest, self._longest(g, False))
                EpochEdges([g], self.builder, self.seed, lambda: None, pair=self.pair)[0]   # validates
                build_edges(self.builder, g, self.pair)   # a fixed draw, for direct use of the lists (loaders redraw)
            elif not self.provides_edges:
                longest = max(longest, self._longest(g, True))
        self.max_edge_length = longest
        groups = [getattr(g, F.GROUP, None) for g in graphs]
        groups = None if any(x is None for x in groups) else np.array([_first(x) for x in groups])
        official = [getattr(g, F.SPLIT, None) for g in graphs]
        official = np.array([_first(x) for x in official]) if all(x is not None for x in official) else None
        tr, va, te = self._split(len(graphs), groups, official)
        self.train, self.val, self.test = ([graphs[i] for i in idx] for idx in (tr, va, te))
        self._check_parts(len(graphs), groups)
        self.grouped = groups is not None
        y = torch.cat([g.y for g in self.train]) if self.labelled else torch.zeros(1, 1)
        self.target_mean = y.mean(0) if self.standardize else torch.zeros(y.shape[1])
        # one training graph has no spread: scale 1 (std would be NaN)
        self.target_std = torch.nan_to_num(y.std(0), nan=1.0).clamp(min=1e-8) if self.standardize \
            else torch.ones(y.shape[1])
        if not self.labelled:
            self.target_mean = self.target_std = None
        self.input_spec = InputSpec.from_data(graphs[0])
        self.has_positions = all(g.pos is not None for g in graphs) and not self.provides_edges
        self.baselines = sorted(k[len(BASELINE_PREFIX):] for k in graphs[0].keys() if k.startswith(BASELINE_PREFIX))

    def _setup_lazy(self, seq) -> None:
        """Split from ``seq.index`` and one streaming pass (checks, longest edge, training target moments);
        no graph is kept."""
        from farfield.models import InputSpec
        index = getattr(seq, "index", None)
        if not isinstance(index, dict) or "num_nodes" not in index:
            raise InputError(self._where(), "a lazy dataset must have an 'index' dict with per-item 'num_nodes' "
                                            f"(got {type(seq).__name__} without one); loaders return a list or a "
                                            "lazy graph sequence")
        n = len(seq)
        index = {k: np.asarray(v) for k, v in index.items()}
        for k, v in index.items():
            if k in ("num_nodes", "split", "group") and v.shape != (n,):
                raise InputError(self._where(), f"index[{k!r}] has shape {v.shape}, expected ({n},)")
        keep = limited(n, self.cfg.limit, index["split"] if "split" in index else None)
        if len(keep) < 3:
            raise InputError(self._where(), f"has {len(keep)} samples; need at least 3 to split")
        groups = index["group"][keep].astype(np.int64) if "group" in index else None
        official = index["split"][keep].astype(np.int64) if "split" in index else None
        tr, va, te = (keep[i] for i in self._split(len(keep), groups, official))
        builder = None if self.provides_edges else self.fixed
        self.train, self.val, self.test = (LazySplit(seq, idx, builder, self.pair) for idx in (tr, va, te))
        self._check_parts(len(keep), groups)
        self.grouped = groups is not None
        is_train = np.zeros(n, dtype=bool)
        is_train[tr] = True
        longest, count, s1, s2, first, positions = 0.0, 0, None, None, None, True
        for i in keep:                                  # the one streaming pass
            g = copy.copy(seq[int(i)])
            self._check(g)
            if first is None:
                first = g
            positions = positions and g.pos is not None
            longest = max(longest, self._longest(g, True))
            if is_train[i] and self.labelled:
                y = g.y.double().reshape(-1, g.y.shape[-1])
                s1 = y.sum(0) if s1 is None else s1 + y.sum(0)
                s2 = (y * y).sum(0) if s2 is None else s2 + (y * y).sum(0)
                count += y.shape[0]
        self.max_edge_length = longest
        if not self.labelled:
            self.target_mean = self.target_std = None
            self.input_spec = InputSpec.from_data(first)
            self.has_positions = positions and not self.provides_edges
            self.baselines = []
            return
        mean = s1 / count
        var = (s2 - count * mean * mean) / max(count - 1, 1)           # unbiased, as torch.std
        self.target_mean = mean.float() if self.standardize else torch.zeros(mean.shape[0])
        self.target_std = var.clamp(min=0).sqrt().clamp(min=1e-8).float() if self.standardize \
            else torch.ones(mean.shape[0])
        self.input_spec = InputSpec.from_data(first)
        self.has_positions = positions and not self.provides_edges
        self.baselines = sorted(k[len(BASELINE_PREFIX):] for k in first.keys() if k.startswith(BASELINE_PREFIX))

    def _splits(self):
        return (("train", self.train), ("val", self.val), ("test", self.test))

    @staticmethod
    def _raw_items(graphs):
        """The items of a split one at a time as loaded (a lazy split's items without building edges)."""
        if isinstance(graphs, LazySplit):
            for i in range(len(graphs)):
                yield graphs.raw(i)
        else:
            yield from graphs

    def split_targets(self) -> dict[str, np.ndarray]:
        """``y`` of each split (float64 [rows, k], unscaled), streamed item by item without building edges."""
        out = {}
        for s, gs in self._splits():
            rows = [g.y.double().reshape(-1, g.y.shape[-1]).numpy() for g in self._raw_items(gs)]
            out[s] = np.concatenate(rows) if rows else np.zeros((0, 1))
        return out

    def baseline_arrays(self, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(features, targets) of reference baseline ``name`` per split, rows aligned with ``y``; streamed: only
        the two arrays are kept, not the graphs (a lazy store is read item by item)."""
        key = BASELINE_PREFIX + name
        out = {}
        for s, gs in self._splits():
            xs, ys = [], []
            for g in self._raw_items(gs):
                xs.append(g[key].double().reshape(-1, g[key].shape[-1]).numpy())
                ys.append(g.y.double().reshape(-1, g.y.shape[-1]).numpy())
            out[s] = (np.concatenate(xs), np.concatenate(ys)) if xs else (np.zeros((0, 1)), np.zeros((0, 1)))
        return out

    def _loader(self, graphs, shuffle: bool) -> DataLoader:
        if not len(graphs):
            return DataLoader([], batch_size=1)
        lazy = isinstance(graphs, LazySplit)
        sizes = graphs.sizes if lazy else [g.num_nodes for g in graphs]
        sampler = AtomBudgetBatchSampler(sizes, self.cfg.batch_size, self.cfg.max_atoms, shuffle, self.seed,
                                         pad=shuffle, blocks=graphs.blocks if lazy else None)
        data = graphs
        noise = self.noise_std if shuffle else 0.0
        rebuilt = self.random or noise > 0 or self.transform is not None
        on_device = self.edges_on_device() and (rebuilt or lazy)
        if rebuilt or on_device:
            builder = self.builder if not self.provides_edges else None
            data = EpochEdges(graphs, builder, self.seed, (lambda: sampler.epoch) if shuffle else (lambda: None),
                              noise_std=noise, pair=self.pair, transform=self.transform, on_device=on_device)
        if not shuffle:
            data = MarkPadded(data)
        return DataLoader(data, batch_sampler=sampler, num_workers=self.cfg.num_workers)

    def edges_on_device(self) -> bool:
        """Whether edges that change during training are built on the batch's device (``data.edges_on``; 'auto':
        when the attached trainer runs on an accelerator). Needs an attached trainer: the edges are built in its
        batch-transfer hook (:meth:`on_after_batch_transfer`); without one the loader builds them."""
        mode = getattr(self.cfg, "edges_on", "auto")
        trainer = getattr(self, "_trainer", None)
        if self.provides_edges or mode == "loader" or trainer is None:
            return False
        return mode == "device" or trainer.strategy.root_device.type != "cpu"

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Lightning hook, after the batch reached its device: items marked by :class:`EpochEdges` get their edges
        here (the epoch's random draw, on Noisy Nodes' noisy or corrupted positions), with the torch kernels of
        :mod:`farfield.graphs.neighbours_torch` on the batch's device."""
        epoch = getattr(batch, EDGE_EPOCH, None)
        if epoch is None:
            return batch
        e = int(epoch.reshape(-1)[0])
        del batch[EDGE_EPOCH]
        return build_batch_edges(epoch_builder(self.builder, self.seed, None if e < 0 else e), batch, self.pair)

    def train_dataloader(self):
        return self._loader(self.train, True)

    def val_dataloader(self):
        return self._loader(self.val, False)

    def test_dataloader(self):
        return self._loader(self.test, False)

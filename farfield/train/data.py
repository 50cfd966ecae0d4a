"""Data for training: dataset loading, edges per strategy (random long-range edges resampled every epoch),
fixed splits (by group where the dataset has groups), target scaling and batches bounded by total atoms."""
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
from farfield.errors import InputError
from farfield.graphs import GraphBuilder, parse_edge_spec

__all__ = ["AtomBudgetBatchSampler", "GraphDataModule", "EpochEdges", "MarkPadded", "split_indices", "BASELINE_PREFIX"]

#: graph / node attributes holding the features of a reference baseline (``baseline_<name>``)
BASELINE_PREFIX = "baseline_"


class AtomBudgetBatchSampler(Sampler):
    """Batches of at most ``batch_size`` graphs **and** at most ``max_atoms`` atoms (a graph larger than the
    budget gets a batch of its own). Shuffled per epoch from ``seed`` + epoch when ``shuffle`` (Lightning
    calls :meth:`set_epoch`, so a resumed run sees the same order). Under distributed training each rank takes
    every ``world_size``-th batch; training batches are padded by repetition so that every rank runs the same
    number of steps (``pad=True``). Evaluation batches (``pad=False``) are padded too, because every rank must
    run at least one batch, but the copies carry indices shifted by ``len(sizes)``: :class:`MarkPadded` turns
    them into graphs with ``eval_weight`` 0, which the metrics leave out, so every graph counts exactly once."""

    def __init__(self, sizes, batch_size: int, max_atoms: int, shuffle: bool, seed: int = 0, pad: bool = True):
        self.sizes = np.asarray(sizes)
        self.batch_size, self.max_atoms, self.shuffle, self.seed, self.pad = batch_size, max_atoms, shuffle, seed, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        order = (np.random.default_rng(self.seed + self.epoch).permutation(len(self.sizes)) if self.shuffle
                 else np.arange(len(self.sizes)))
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


class EpochEdges(Dataset):
    """Graphs whose edges include random long-range edges drawn anew every epoch.

    ``graphs`` carry their fixed (local) edges already; ``builder`` is the full :class:`GraphBuilder` (local +
    random). Item i of epoch e is graph i with the builder's random parts seeded by ``(seed, e)`` (the random
    builder itself keys each graph by ``graph_key``), so a run sees fresh long-range edges every epoch and the
    same ones when it is repeated or resumed. ``epoch_of()`` returns the epoch (None: a fixed draw, for
    evaluation)."""

    def __init__(self, graphs, builder: GraphBuilder, seed: int, epoch_of):
        self.graphs, self.builder, self.seed, self.epoch_of = graphs, builder, int(seed), epoch_of

    def __len__(self) -> int:
        return len(self.graphs)

    def builder_for(self, epoch: int | None) -> GraphBuilder:
        salt = 0 if epoch is None else int(epoch) + 1
        parts = [replace(b, seed=(self.seed * 1_000_003 + salt) & 0x7FFFFFFF) if b.kind == "random" else b
                 for b in self.builder.builders]
        return GraphBuilder(parts, self_loops=self.builder.self_loops)

    def __getitem__(self, i):
        g = copy.copy(self.graphs[i])
        self.builder_for(self.epoch_of()).apply(g)
        return g


def _has_random(builder: GraphBuilder) -> bool:
    return any(b.kind == "random" for b in builder.builders)


class GraphDataModule(L.LightningDataModule):
    """Loads ``config.data.dataset``, builds edges with ``edge_spec`` (the local spec as changed by the
    model's long-range strategy), splits, and scales regression targets with the training statistics.

    The split is drawn with ``data.split_seed`` and is the same for every run seed; when every graph has a
    ``group`` (e.g. the conformers of one sequence) whole groups go to one split. Random long-range edges are
    resampled every training epoch from the run ``seed`` (:class:`EpochEdges`); evaluation uses one fixed draw.

    After :meth:`setup`: ``train`` / ``val`` / ``test`` lists of Data, ``target_mean`` / ``target_std``,
    ``max_edge_length`` (for strategies that need a spanning radial basis: the longest edge, or for random
    edges the longest intra-graph distance), ``input_spec`` and ``baselines`` (names of the reference-baseline
    features the dataset provides)."""

    def __init__(self, data_cfg, edge_spec: str, seed: int = 0, standardize: bool = True):
        super().__init__()
        self.cfg, self.edge_spec, self.seed, self.standardize = data_cfg, edge_spec, seed, standardize
        self._ready = False

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        from farfield.datasets import DATASETS
        from farfield.models import InputSpec

        kw = {"hydrogens": self.cfg.hydrogens, **dict(self.cfg.options)}
        if self.cfg.target is not None:
            kw["target"] = self.cfg.target
        loader = DATASETS[self.cfg.dataset]
        graphs = loader(self.cfg.path, **kw)
        #: 2D datasets come with their own edges (bonds): no edge spec is applied to them
        self.provides_edges = bool(getattr(loader, "info", {}).get("provides_edges", False))
        if self.cfg.limit:
            graphs = graphs[: self.cfg.limit]
        if len(graphs) < 3:
            raise InputError(self.cfg.path or self.cfg.dataset, f"has {len(graphs)} samples; need at least 3 to split")
        self.builder = parse_edge_spec(self.edge_spec)
        self.random = _has_random(self.builder) and not self.provides_edges
        if self.provides_edges and self.edge_spec != self.cfg.edges:
            from farfield.errors import ConfigError
            raise ConfigError(f"dataset {self.cfg.dataset!r} provides its own edges (bonds); graph strategies that "
                              f"change the edge spec ({self.edge_spec!r}) do not apply to it")
        fixed = GraphBuilder([b for b in self.builder.builders if b.kind != "random"], self_loops=self.builder.self_loops) \
            if self.random else self.builder
        longest = 0.0
        for g in graphs:
            if (g.pos is not None and not torch.isfinite(g.pos).all()) or not torch.isfinite(g.x_s).all() \
                    or not torch.isfinite(g.y).all():
                raise InputError(str(g.name), "contains NaN or infinite values")
            if self.provides_edges:
                continue
            if self.random:
                longest = max(longest, float(torch.pdist(g.pos.double()).max()) if g.num_nodes > 1 else 0.0)
                EpochEdges([g], self.builder, self.seed, lambda: None)[0]      # validates; fixed draw below
                self.builder.apply(g)           # a fixed draw, for direct use of the lists (loaders redraw)
            else:
                fixed.apply(g)
                if g.edge_index.shape[1]:
                    src, tgt = g.edge_index
                    longest = max(longest, float((g.pos[src] - g.pos[tgt]).norm(dim=-1).max()))
        self.max_edge_length = longest
        groups = [getattr(g, F.GROUP, None) for g in graphs]
        groups = None if any(x is None for x in groups) else np.array([int(x.reshape(-1)[0]) for x in groups])
        official = [getattr(g, F.SPLIT, None) for g in graphs]
        if all(x is not None for x in official):       # the dataset's official split
            official = np.array([int(x.reshape(-1)[0]) for x in official])
            tr, va, te = (np.flatnonzero(official == k) for k in range(3))
        else:
            tr, va, te = split_indices(len(graphs), self.cfg.split, self.cfg.split_seed, groups)
        self.train, self.val, self.test = ([graphs[i] for i in idx] for idx in (tr, va, te))
        unit = "groups" if groups is not None else "items"
        n_units = len(np.unique(groups)) if groups is not None else len(graphs)
        for name, part in (("training", self.train), ("validation", self.val)):
            if not part:
                raise InputError(self.cfg.path or self.cfg.dataset,
                                 f"the {name} split is empty ({n_units} {unit} split {list(self.cfg.split)}); use "
                                 "more data (data.limit) or larger fractions (data.split)")
        y = torch.cat([g.y for g in self.train])
        self.target_mean = y.mean(0) if self.standardize else torch.zeros(y.shape[1])
        self.target_std = y.std(0).clamp(min=1e-8) if self.standardize else torch.ones(y.shape[1])
        self.input_spec = InputSpec.from_data(graphs[0])
        self.baselines = sorted(k[len(BASELINE_PREFIX):] for k in graphs[0].keys() if k.startswith(BASELINE_PREFIX))
        self._ready = True

    def baseline_arrays(self, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(features, targets) of reference baseline ``name`` per split, rows aligned with ``y``."""
        key = BASELINE_PREFIX + name
        return {s: (torch.cat([g[key] for g in gs]).double().numpy() if gs else np.zeros((0, 1)),
                    torch.cat([g.y for g in gs]).double().numpy() if gs else np.zeros((0, 1)))
                for s, gs in (("train", self.train), ("val", self.val), ("test", self.test))}

    def _loader(self, graphs, shuffle: bool) -> DataLoader:
        if not graphs:
            return DataLoader([], batch_size=1)
        sampler = AtomBudgetBatchSampler([g.num_nodes for g in graphs], self.cfg.batch_size, self.cfg.max_atoms,
                                         shuffle, self.seed, pad=shuffle)
        data = graphs
        if self.random:
            data = EpochEdges(graphs, self.builder, self.seed, (lambda: sampler.epoch) if shuffle else (lambda: None))
        if not shuffle:
            data = MarkPadded(data)
        return DataLoader(data, batch_sampler=sampler, num_workers=self.cfg.num_workers)

    def train_dataloader(self):
        return self._loader(self.train, True)

    def val_dataloader(self):
        return self._loader(self.val, False)

    def test_dataloader(self):
        return self._loader(self.test, False)

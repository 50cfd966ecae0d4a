"""Data for training: dataset loading, edges per strategy, fixed splits, target scaling and batches bounded
by total atoms."""
from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler
from torch_geometric.loader import DataLoader

from farfield.errors import InputError
from farfield.graphs import parse_edge_spec

__all__ = ["AtomBudgetBatchSampler", "GraphDataModule", "split_indices"]


def split_indices(n: int, fractions, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random train / val / test split of ``range(n)`` (the same for every run seed)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_tr = int(round(fractions[0] * n))
    n_va = int(round(fractions[1] * n))
    return perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]


class AtomBudgetBatchSampler(Sampler):
    """Batches of at most ``batch_size`` graphs **and** at most ``max_atoms`` atoms (a graph larger than the
    budget gets a batch of its own). Shuffled per epoch from ``seed`` + epoch when ``shuffle``. Under
    distributed training each rank takes every ``world_size``-th batch (padded by repetition so every rank
    runs the same number of steps)."""

    def __init__(self, sizes, batch_size: int, max_atoms: int, shuffle: bool, seed: int = 0):
        self.sizes = np.asarray(sizes)
        self.batch_size, self.max_atoms, self.shuffle, self.seed = batch_size, max_atoms, shuffle, seed
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
            batches = (batches * world)[: per * world]
            batches = batches[rank::world]
        self.epoch += 1 if self.shuffle else 0
        return iter(batches)

    def __len__(self) -> int:
        rank, world = self._rank()
        return math.ceil(len(self._batches()) / world)


class GraphDataModule(L.LightningDataModule):
    """Loads ``config.data.dataset``, builds edges with ``edge_spec`` (the local spec as changed by the
    model's long-range strategy), splits, and scales regression targets with the training statistics.

    After :meth:`setup`: ``train`` / ``val`` / ``test`` lists of Data, ``target_mean`` / ``target_std``,
    ``max_edge_length`` (for strategies that need a spanning radial basis) and ``input_spec``."""

    def __init__(self, data_cfg, edge_spec: str, seed: int = 0, standardize: bool = True):
        super().__init__()
        self.cfg, self.edge_spec, self.seed, self.standardize = data_cfg, edge_spec, seed, standardize
        self._ready = False

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        from farfield.datasets import DATASETS
        from farfield.models import InputSpec

        kw = {"hydrogens": self.cfg.hydrogens, "target": self.cfg.target}
        graphs = DATASETS[self.cfg.dataset](self.cfg.path, **kw)
        if self.cfg.limit:
            graphs = graphs[: self.cfg.limit]
        if len(graphs) < 3:
            raise InputError(self.cfg.path or self.cfg.dataset, f"has {len(graphs)} samples; need at least 3 to split")
        builder = parse_edge_spec(self.edge_spec)
        longest = 0.0
        for g in graphs:
            if not torch.isfinite(g.pos).all() or not torch.isfinite(g.x_s).all() or not torch.isfinite(g.y).all():
                raise InputError(str(g.name), "contains NaN or infinite values")
            builder.apply(g)
            if g.edge_index.shape[1]:
                src, tgt = g.edge_index
                longest = max(longest, float((g.pos[src] - g.pos[tgt]).norm(dim=-1).max()))
        self.max_edge_length = longest
        tr, va, te = split_indices(len(graphs), self.cfg.split, self.cfg.split_seed)
        self.train, self.val, self.test = ([graphs[i] for i in idx] for idx in (tr, va, te))
        y = torch.cat([g.y for g in self.train])
        self.target_mean = y.mean(0) if self.standardize else torch.zeros(y.shape[1])
        self.target_std = y.std(0).clamp(min=1e-8) if self.standardize else torch.ones(y.shape[1])
        self.input_spec = InputSpec.from_data(graphs[0])
        self._ready = True

    def _loader(self, graphs, shuffle: bool) -> DataLoader:
        if not graphs:
            return DataLoader([], batch_size=1)
        sampler = AtomBudgetBatchSampler([g.num_nodes for g in graphs], self.cfg.batch_size, self.cfg.max_atoms,
                                         shuffle, self.seed)
        return DataLoader(graphs, batch_sampler=sampler, num_workers=self.cfg.num_workers)

    def train_dataloader(self):
        return self._loader(self.train, True)

    def val_dataloader(self):
        return self._loader(self.val, False)

    def test_dataloader(self):
        return self._loader(self.test, False)

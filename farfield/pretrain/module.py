"""The Lightning module of pretraining: one backbone (+ long-range strategy), one head per task, weighted losses.

``loss = sum_t w_t L_t`` over the tasks of :mod:`farfield.pretrain.tasks`; every task's loss and metrics are
logged on their own (``train/<task>``, ``val/<task>``, ``val/<task>/acc`` ...), the total as ``train/loss`` /
``val/loss`` (the monitored value). Training throughput in residues per second is logged every epoch
(``train/residues_per_sec``).
"""
from __future__ import annotations

import time

import lightning as L
import torch
from torch import nn

from farfield.errors import ConfigError
from farfield.models.base import BackboneOutput

__all__ = ["PretrainModule"]


class PretrainModule(L.LightningModule):
    """``model``: a backbone (possibly wrapped by a long-range strategy) returning a
    :class:`~farfield.models.base.BackboneOutput`; ``tasks``: :class:`~farfield.pretrain.tasks.PretrainTask` list;
    ``optim``: an :class:`~farfield.train.config.OptimConfig`; ``config``: plain data saved in checkpoints."""

    def __init__(self, model: nn.Module, tasks: list, optim, config: dict | None = None, vectors: int = 0):
        super().__init__()
        self.model, self.tasks, self.optim = model, list(tasks), optim
        d = model.hidden_s
        self.heads = nn.ModuleDict({t.name: t.head(d, int(vectors)) for t in self.tasks})
        self.monitor, self.mode = "loss", "min"
        self._residues, self._t0 = 0, None
        if config is not None:
            from farfield.train.module import plain_data
            self.save_hyperparameters({"config": plain_data(config, "config")})

    def forward(self, batch) -> BackboneOutput:
        out = self.model(batch)
        if not isinstance(out, BackboneOutput):
            raise ConfigError(f"{type(self.model).__name__} does not return a BackboneOutput")
        return out

    def _step(self, batch, stage: str):
        out = self(batch)
        total = None
        n = int(batch.num_graphs) if hasattr(batch, "num_graphs") else 1
        for t in self.tasks:
            loss, metrics = t.loss(self.heads[t.name], out, batch)
            total = t.weight * loss if total is None else total + t.weight * loss
            self.log(f"{stage}/{t.name}", loss, batch_size=n, on_epoch=True, on_step=False,
                     sync_dist=True)
            for k, v in metrics.items():
                self.log(f"{stage}/{t.name}/{k}", v, batch_size=n, on_epoch=True, on_step=False, sync_dist=True)
        self.log(f"{stage}/loss", total, batch_size=n, on_epoch=True, on_step=False, sync_dist=True,
                 prog_bar=stage != "test")
        return total

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        if not torch.isfinite(loss.detach()):
            from farfield.train.module import NonFiniteLossError
            raise NonFiniteLossError(f"pretraining loss became NaN or infinite in epoch {self.current_epoch} (batch "
                                     f"{batch_idx}); the last good checkpoint is kept (lower optim.lr)")
        self._residues += int(batch.num_nodes)
        return loss

    def on_train_epoch_start(self):
        self._residues, self._t0 = 0, time.perf_counter()

    def on_train_epoch_end(self):
        if self._t0 is not None:
            dt = time.perf_counter() - self._t0
            self.log("train/residues_per_sec", self._residues / max(dt, 1e-9), sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        from farfield.train.module import optimizers
        return optimizers(self, self.optim, "val/loss", "min")

"""The Lightning module: backbone (+ long-range strategy) -> task head -> loss and torchmetrics metrics."""
from __future__ import annotations

import lightning as L
import torch
import torchmetrics
from torch import nn

from farfield.errors import FarfieldError
from farfield.models.readout import pool
from farfield.nn.mlp import MLP

__all__ = ["TaskModule", "NonFiniteLossError", "LabelAveragePrecision"]


class NonFiniteLossError(FarfieldError):
    """The training loss became NaN or infinite."""


def _metrics(kind: str, n: int) -> torchmetrics.MetricCollection:
    if kind in ("graph_regression", "node_regression"):
        return torchmetrics.MetricCollection({"mae": torchmetrics.MeanAbsoluteError(),
                                              "rmse": torchmetrics.MeanSquaredError(squared=False)})
    if kind == "binary":
        return torchmetrics.MetricCollection({"auroc": torchmetrics.AUROC(task="binary"),
                                              "acc": torchmetrics.Accuracy(task="binary")})
    if kind == "multiclass":
        return torchmetrics.MetricCollection({"acc": torchmetrics.Accuracy(task="multiclass", num_classes=n)})
    return torchmetrics.MetricCollection({"ap": LabelAveragePrecision(),
                                          "f1": torchmetrics.F1Score(task="multilabel", num_labels=n)})


class LabelAveragePrecision(torchmetrics.Metric):
    """Multilabel average precision as LRGB computes it (Dwivedi et al. 2022): the AP of every label column over
    its non-NaN rows, averaged over the columns with at least one positive and one negative (the others are
    skipped, not counted as 0). States are concatenated across processes, so distributed evaluation is exact."""

    full_state_update = False
    higher_is_better = True

    def __init__(self):
        super().__init__()
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores, labels):
        self.scores.append(scores.detach().float())
        self.labels.append(labels.detach().float())

    def compute(self):
        from torchmetrics.utilities import dim_zero_cat

        from farfield.datasets.lrgb import lrgb_average_precision
        s, y = dim_zero_cat(self.scores), dim_zero_cat(self.labels)
        try:
            return torch.tensor(lrgb_average_precision(y, s))
        except ValueError:
            return torch.tensor(float("nan"))


#: the metric that selects the best checkpoint, and its direction
MONITOR = {"graph_regression": ("mae", "min"), "node_regression": ("mae", "min"), "binary": ("auroc", "max"),
           "multiclass": ("acc", "max"), "multilabel": ("ap", "max")}


class TaskModule(L.LightningModule):
    """Graph- or node-level prediction from a backbone's invariant scalars.

    Head: node MLP ``d -> d -> num_outputs``, pooled per graph (``task.pooling``) for graph tasks. Losses:
    MSE on standardized targets (regression), BCE-with-logits (binary, multilabel), cross-entropy
    (multiclass). Metrics are computed in the target's own units. A NaN/Inf loss raises
    :class:`NonFiniteLossError` (the last good checkpoint is kept by the trainer)."""

    def __init__(self, model: nn.Module, task, optim, target_mean=None, target_std=None, config: dict | None = None):
        super().__init__()
        self.model, self.task, self.optim = model, task, optim
        d = model.hidden_s
        self.head = MLP([d, d, task.num_outputs], act="silu")
        k = task.num_outputs
        self.register_buffer("y_mean", torch.zeros(k) if target_mean is None else torch.as_tensor(target_mean).reshape(k).float())
        self.register_buffer("y_std", torch.ones(k) if target_std is None else torch.as_tensor(target_std).reshape(k).float())
        self.metrics = nn.ModuleDict({f"{s}_": _metrics(task.kind, k).clone(prefix=f"{s}/") for s in ("train", "val", "test")})
        self.monitor, self.mode = MONITOR[task.kind]
        self._bad_flag = None
        if config is not None:
            self.save_hyperparameters({"config": config})

    @property
    def regression(self) -> bool:
        return self.task.kind in ("graph_regression", "node_regression")

    def forward(self, batch):
        out = self.head(self.model(batch).s)
        if self.task.kind != "node_regression":
            out = pool(out, batch.batch, self.task.pooling, batch.num_graphs)
        return out

    def predict_units(self, batch):
        out = self(batch)
        return out * self.y_std + self.y_mean if self.regression else out

    def _step(self, batch, stage: str):
        out = self(batch)
        y = batch.y
        kind = self.task.kind
        w = getattr(batch, "eval_weight", None)
        if w is not None and stage != "train" and bool((w == 0).any()):
            # padding copies of a distributed evaluation (AtomBudgetBatchSampler): leave them out
            keep = w > 0 if kind != "node_regression" else (w > 0)[batch.batch]
            out, y = out[keep], (y[keep] if y.shape[0] == keep.shape[0] else y.reshape(keep.shape[0], -1)[keep])
            if not len(out):
                return None
        if self.regression:
            y = y.reshape(out.shape).to(out.dtype)
            loss = nn.functional.mse_loss(out, (y - self.y_mean) / self.y_std)
            self.metrics[stage + "_"].update(out.detach() * self.y_std + self.y_mean, y)
        elif kind == "multiclass":
            y = y.reshape(-1).long()
            loss = nn.functional.cross_entropy(out, y)
            self.metrics[stage + "_"].update(out.detach(), y)
        else:
            y = y.reshape(out.shape)
            loss = nn.functional.binary_cross_entropy_with_logits(out, y.float())
            self.metrics[stage + "_"].update(torch.sigmoid(out.detach()).squeeze(-1) if kind == "binary" else
                                       torch.sigmoid(out.detach()), y.long().squeeze(-1) if kind == "binary" else y.long())
        # evaluation shards may hold only padding on some rank: the metrics (synchronised torchmetrics) are exact,
        # the logged evaluation loss is the one of rank 0's shard
        self.log(f"{stage}/loss", loss, batch_size=int(y.shape[0]), on_epoch=True, on_step=False,
                 sync_dist=stage == "train", prog_bar=stage != "test")
        return loss

    #: the loss is checked for NaN / Inf every this many steps (and at the end of each epoch): a check reads the
    #: value on the host, which would otherwise synchronise every step on an accelerator
    check_every: int = 25

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        bad = ~torch.isfinite(loss.detach())
        self._bad_flag = bad if batch_idx == 0 or self._bad_flag is None else self._bad_flag | bad
        if batch_idx % self.check_every == 0:
            self._raise_if_non_finite(batch_idx)
        return loss

    def _raise_if_non_finite(self, where) -> None:
        if self._bad_flag is not None and bool(self._bad_flag):
            raise NonFiniteLossError(f"training loss became NaN or infinite in epoch {self.current_epoch} (by batch "
                                     f"{where}); the last good checkpoint is kept (lower optim.lr or check the data)")

    def on_validation_epoch_start(self):
        if self.training or self.trainer.state.fn == "fit":
            self._raise_if_non_finite("the end of the epoch")     # before any checkpoint of this epoch is saved

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _epoch_end(self, stage):
        m = self.metrics[stage + "_"]
        self.log_dict(dict(m.compute()), sync_dist=True, prog_bar=stage == "val")
        m.reset()

    def on_train_epoch_end(self):
        self._raise_if_non_finite("the end of the epoch")
        self._epoch_end("train")

    def on_validation_epoch_end(self):
        self._epoch_end("val")

    def on_test_epoch_end(self):
        self._epoch_end("test")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        if self.optim.scheduler == "none":
            return opt
        if self.optim.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.optim.epochs)
            return {"optimizer": opt, "lr_scheduler": sched}
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=self.mode, factor=0.5, patience=5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": f"val/{self.monitor}"}}

"""The Lightning module: backbone (+ long-range strategy) -> task head -> loss and torchmetrics metrics
(+ the Noisy Nodes denoising head, pair items, LapPE sign flips)."""
from __future__ import annotations

import copy
import math
from functools import partial

import lightning as L
import torch
import torchmetrics
from torch import nn

from farfield.data import fields as F
from farfield.errors import ConfigError, FarfieldError, InputError
from farfield.models.base import BackboneOutput, at_least_float32, refuse_periodic
from farfield.models.denoising import NOISE_TARGET, DenoisingHead, denoising_loss
from farfield.models.readout import GIGP, pool
from farfield.train.config import TASK_METRICS
from farfield.train.data import COMPONENT
from farfield.nn.mlp import MLP

__all__ = ["TaskModule", "optimizers", "NonFiniteLossError", "LabelAveragePrecision", "NumpyMetric", "ColumnError", "MONITOR",
           "plain_data", "head_dims", "head_parameter_count", "warmup_factor"]


def warmup_factor(epoch: int, warmup: int, epochs: int, cosine: bool = True) -> float:
    """Learning-rate factor of epoch ``epoch`` (0-based) under ``optim.warmup_epochs=warmup``: linear warm-up
    ``max(1e-6, epoch / warmup)`` for ``epoch < warmup``, then a half cosine from 1 to 0 over the remaining
    ``epochs - warmup`` epochs (``cosine``) or 1 (GraphGPS's ``cosine_with_warmup``, Rampasek et al. 2022, the
    schedule of the tuned LRGB baselines, Toenshoff et al. 2023)."""
    if epoch < warmup:
        return max(1e-6, epoch / max(1, warmup))
    if not cosine:
        return 1.0
    progress = (epoch - warmup) / max(1, epochs - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def head_dims(task, hidden: int, num_outputs: int, pair: bool = False) -> list[int]:
    """Widths of the task head MLP :class:`TaskModule` builds: ``[d, d, k]`` for ``task.head_layers`` 2 (the
    default), ``[d] * head_layers + [k]`` in general, the first width ``2 d`` for pair items. ``task``: a
    :class:`~farfield.train.config.TaskConfig`, a mapping of its fields, or None (the defaults)."""
    layers = task.get("head_layers", 2) if isinstance(task, dict) else getattr(task, "head_layers", 2)
    d = int(hidden)
    return [2 * d if pair else d] + [d] * (int(layers) - 1) + [int(num_outputs)]


def head_parameter_count(task_cfg, hidden: int, num_outputs: int, pair: bool) -> int:
    """Parameters of the task head :class:`TaskModule` builds for ``task_cfg`` (weights and biases of its linear
    layers, :func:`head_dims`): ``(2d or d) * d + d + d * k + k`` for the default two layers."""
    dims = head_dims(task_cfg, hidden, num_outputs, pair)
    n = sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
    if getattr(task_cfg, "pooling", None) == "gigp" and task_cfg.kind != "node_regression":
        n += sum(p.numel() for p in GIGP(hidden if pair else num_outputs).parameters())   # the orbit network
    return n


def _name(batch) -> str:
    n = getattr(batch, F.NAME, None)
    return n if isinstance(n, str) else (str(n[0]) if isinstance(n, (list, tuple)) and n else "batch")


class NonFiniteLossError(FarfieldError):
    """The training loss became NaN or infinite."""


def _metrics(kind: str, n: int, grouped: bool = False) -> torchmetrics.MetricCollection:
    """The metrics of task ``kind`` (names as in :data:`farfield.train.config.TASK_METRICS`). Regression with
    ``n > 1`` targets also reports each target's error, ``mae_<i>`` and ``rmse_<i>`` (the pooled ``mae``
    averages targets that may be in different units)."""
    if kind in ("graph_regression", "node_regression"):
        m = {"mae": torchmetrics.MeanAbsoluteError(), "rmse": torchmetrics.MeanSquaredError(squared=False),
             "pearson": NumpyMetric("pearson"), "spearman": NumpyMetric("spearman")}
        if n > 1:
            for i in range(n):
                m[f"mae_{i}"] = ColumnError(i)
                m[f"rmse_{i}"] = ColumnError(i, squared=True)
        if grouped and kind == "graph_regression":
            m["group_spearman"] = NumpyMetric("per_group_spearman", groups=True)
        return torchmetrics.MetricCollection(m, compute_groups=False)
    if kind == "binary":
        return torchmetrics.MetricCollection({"auroc": torchmetrics.AUROC(task="binary"),
                                              "acc": torchmetrics.Accuracy(task="binary")})
    if kind == "multiclass":
        return torchmetrics.MetricCollection({"acc": torchmetrics.Accuracy(task="multiclass", num_classes=n)})
    return torchmetrics.MetricCollection({"ap": LabelAveragePrecision(), "fmax": NumpyMetric("fmax", columns=False),
                                          "aupr": NumpyMetric("pair_aupr", columns=False),
                                          # torchmetrics' multilabel F1 needs >= 2 labels; one label is binary
                                          "f1": torchmetrics.F1Score(task="multilabel", num_labels=n) if n > 1
                                          else torchmetrics.F1Score(task="binary")},
                                         compute_groups=False)


class ColumnError(torchmetrics.Metric):
    """The mean absolute error (or, ``squared=True``, the root mean squared error) of one target column of a
    multi-target regression, over the column's finite targets; sums are reduced across processes, so
    distributed evaluation is exact."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, column: int, squared: bool = False):
        super().__init__()
        self.column, self.squared = int(column), bool(squared)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds, target):
        p, t = preds.detach().double()[:, self.column], target.detach().double()[:, self.column]
        ok = torch.isfinite(t)
        e = (p[ok] - t[ok])
        self.total += (e * e).sum() if self.squared else e.abs().sum()
        self.count += ok.sum()

    def compute(self):
        if self.count == 0:
            return torch.tensor(float("nan"), device=self.device)
        v = self.total / self.count
        return (v.sqrt() if self.squared else v).float()


class NumpyMetric(torchmetrics.Metric):
    """A torchmetrics wrapper around a numpy metric of :mod:`farfield.metrics` (``fn(a, b)`` or, with
    ``groups``, ``fn(a, b, groups)``). Predictions [M, k] (or [M]), targets alike, and per-row ``groups`` [M]
    are concatenated across batches and processes (``dist_reduce_fx='cat'``), so distributed evaluation is
    exact. ``columns=True`` applies ``fn`` to every target column (over its finite rows) and averages the
    columns whose value is finite (Pearson / Spearman of multi-target regression); ``columns=False`` passes
    the whole matrices (``fmax`` returns (Fmax, threshold): the first is reported). NaN when undefined."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, fn: str, columns: bool = True, groups: bool = False):
        super().__init__()
        self.fn, self.columns, self.uses_groups = fn, columns, groups
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        if groups:
            self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, preds, target, groups=None):
        p, t = preds.detach().double(), target.detach().double()
        self.preds.append(p.flatten(1) if p.ndim > 1 else p.reshape(-1, 1))
        self.target.append(t.flatten(1) if t.ndim > 1 else t.reshape(-1, 1))
        if self.uses_groups:
            if groups is None:
                raise ValueError(f"metric {self.fn} needs the batch's groups")
            self.groups.append(groups.detach().reshape(-1).long())

    def compute(self):
        import numpy as np
        from torchmetrics.utilities import dim_zero_cat

        from farfield import metrics
        fn = getattr(metrics, self.fn)
        if isinstance(self.preds, list) and not self.preds:       # no update (synchronised states are tensors)
            return torch.tensor(float("nan"), device=self.device)
        p, t = dim_zero_cat(self.preds).cpu().numpy(), dim_zero_cat(self.target).cpu().numpy()
        g = dim_zero_cat(self.groups).cpu().numpy() if self.uses_groups else None
        if not self.columns:
            try:
                v = fn(t, p)
            except (ValueError, FarfieldError):          # e.g. labels that are not all 0 / 1
                return torch.tensor(float("nan"), device=self.device)
            return torch.tensor(float(v[0] if isinstance(v, tuple) else v), device=self.device)
        vals = []
        for c in range(p.shape[1]):
            ok = np.isfinite(t[:, c])
            args = (p[ok, c], t[ok, c]) + ((g[ok],) if g is not None else ())
            with np.errstate(all="ignore"):
                try:
                    vals.append(float(fn(*args)))
                except (ValueError, FarfieldError):
                    vals.append(float("nan"))
        vals = [v for v in vals if np.isfinite(v)]
        return torch.tensor(float(np.mean(vals)) if vals else float("nan"), device=self.device)


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
            return torch.tensor(lrgb_average_precision(y, s), device=self.device)
        except ValueError:
            return torch.tensor(float("nan"), device=self.device)


#: the default metric that selects the best checkpoint per task kind (``task.monitor`` overrides it)
MONITOR = {"graph_regression": "mae", "node_regression": "mae", "binary": "auroc", "multiclass": "acc",
           "multilabel": "ap"}


def plain_data(x, where: str = "value"):
    """``x`` as plain data - dicts with string keys, lists, str, int, float, bool, None (tuples become lists) -
    what ``torch.load(weights_only=True)`` reads back without unpickling arbitrary objects (the hyper-parameters
    a checkpoint stores). Anything else is a :class:`ConfigError` naming where it sits."""
    if isinstance(x, dict):
        bad = [k for k in x if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"{where} has a non-string key {bad[0]!r}; a checkpoint stores plain data only")
        return {k: plain_data(v, f"{where}.{k}") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain_data(v, f"{where}[{i}]") for i, v in enumerate(x)]
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    raise ConfigError(f"{where} is a {type(x).__name__} ({x!r}); a checkpoint stores plain data only (dicts, "
                      "lists, strings, numbers, booleans, None)")


class TaskModule(L.LightningModule):
    """Graph- or node-level prediction from a backbone's invariant scalars.

    Head: node MLP ``d -> d -> num_outputs`` (``task.head_layers`` linear layers, SiLU between them;
    :func:`head_dims`), pooled per graph (``task.pooling`` as resolved against the dataset;
    a config resolved here, without one, pools with ``mean``) for graph tasks. ``task.pooling=gigp`` pools with
    :class:`~farfield.models.readout.GIGP` over the graphs' coordinates (``self.gigp``, width ``num_outputs``, or
    ``d`` for pair items; parameters beyond :func:`head_parameter_count`); a backbone that does not read
    coordinates is refused with a :class:`ConfigError`. Losses:
    MSE on standardized targets (regression), BCE-with-logits (binary, multilabel), cross-entropy
    (multiclass). Metrics are computed in the target's own units (:func:`_metrics`; ``group_spearman`` when
    ``grouped``: every graph carries ``group``). A NaN/Inf loss raises :class:`NonFiniteLossError` (the last
    good checkpoint is kept by the trainer).

    Options (keywords):

    * ``pair``: every item holds two structures (node field ``component`` [N]: 0 original, 1 mutated; the
      ATOM3D MSP layout of Townshend et al. 2021). Each component is its own graph for the backbone and the
      long-range module (batch index ``2 b + component``); the head pools each component and maps the
      concatenation ``[pool(orig), pool(mutated)]`` [B, 2d] through an MLP ``2d -> d -> num_outputs``.
    * ``sign_flip``: columns of ``x_s`` holding Laplacian eigenvectors; training batches get an independent
      random sign per graph and eigenvector (Dwivedi et al. 2022), drawn from ``seed`` and the global step.
    * ``task.noisy_nodes`` > 0: Noisy Nodes (Godwin et al. 2022; :mod:`farfield.models.denoising`): training
      batches must carry :data:`~farfield.models.denoising.NOISE_TARGET` (the data module's ``with_noise``);
      loss = main + ``noisy_nodes`` * MSE(eps_hat, eps), the denoising term logged as ``train/denoise``.
    """

    def __init__(self, model: nn.Module, task, optim, target_mean=None, target_std=None, config: dict | None = None,
                 *, grouped: bool = False, pair: bool = False, sign_flip: slice | None = None, seed: int = 0):
        super().__init__()
        if task.kind == "auto" or task.num_outputs is None or task.pooling == "auto":
            task = task.resolve()
        self.model, self.task, self.optim = model, task, optim
        self.pair, self.sign_flip, self.seed = bool(pair), sign_flip, int(seed)
        d = model.hidden_s
        k = task.num_outputs
        if self.pair and task.kind == "node_regression":
            raise ConfigError("pair datasets (two structures per item) have graph-level labels; task.kind="
                              "node_regression does not apply")
        self.head = MLP(head_dims(task, d, k, self.pair), act="silu")
        if task.pooling == "gigp" and task.kind != "node_regression":
            if not getattr(model, "uses_positions", True):
                raise ConfigError(f"task.pooling=gigp needs 3D coordinates (pos); {type(model).__name__} does not "
                                  "read coordinates (choose task.pooling=sum, mean or max for a 2D backbone)")
            # only here, so that modules of the other poolings keep their parameters (and checkpoints)
            self.gigp = GIGP(d if self.pair else k)
        from farfield.models.long_range import LatentCharges
        self.energy_readout = any(isinstance(m, LatentCharges) and m.energy for m in model.modules())
        if self.energy_readout and (task.kind != "graph_regression" or task.pooling != "sum" or self.pair
                                    or k != 1):
            raise ConfigError("latent_charges(energy=true) adds the latent charges' Coulomb energy to a graph-level "
                              "prediction: it needs task.kind=graph_regression with one target, task.pooling=sum and "
                              f"single-structure items (got kind {task.kind}, {k} output(s), pooling {task.pooling}"
                              f"{', pairs' if self.pair else ''})")
        self.denoiser = None
        if task.noisy_nodes > 0:
            if not getattr(model, "uses_positions", True):
                raise ConfigError(f"task.noisy_nodes={task.noisy_nodes} needs a 3D backbone; "
                                  f"{type(model).__name__} does not read coordinates")
            self.denoiser = DenoisingHead(d)
        self.register_buffer("y_mean", torch.zeros(k) if target_mean is None else torch.as_tensor(target_mean).reshape(k).float())
        self.register_buffer("y_std", torch.ones(k) if target_std is None else torch.as_tensor(target_std).reshape(k).float())
        self.grouped = bool(grouped) and task.kind == "graph_regression"
        self.metrics = nn.ModuleDict({f"{s}_": _metrics(task.kind, k, self.grouped).clone(prefix=f"{s}/")
                                      for s in ("train", "val", "test")})
        self.monitor = task.monitor or MONITOR[task.kind]
        names = TASK_METRICS[task.kind]
        if self.monitor not in names or (self.monitor == "group_spearman" and not self.grouped):
            raise ConfigError(f"task.monitor={self.monitor!r} is not reported for task {task.kind}"
                              f"{' without groups' if self.monitor == 'group_spearman' else ''}; choose from "
                              f"{[m for m in names if m != 'group_spearman' or self.grouped]}")
        self.mode = "max" if names[self.monitor] else "min"
        self._bad_flag = None
        if config is not None:
            # plain data only, so that checkpoints load with torch.load(weights_only=True)
            self.save_hyperparameters({"config": plain_data(config, "config")})

    @property
    def regression(self) -> bool:
        return self.task.kind in ("graph_regression", "node_regression")

    # -- forward -----------------------------------------------------------------------------------
    def _graphs(self, batch):
        """The batch the backbone sees: for pairs, a shallow copy whose graphs are the components (graph
        ``2 b + component``); returns (batch, number of graphs)."""
        n = int(batch.num_graphs) if hasattr(batch, "num_graphs") else 1
        if not self.pair:
            return batch, n
        comp = getattr(batch, COMPONENT, None)
        if comp is None:
            raise InputError(_name(batch), "a pair dataset's graphs need the node field 'component' (0 / 1)")
        b = getattr(batch, "batch", None)
        b = torch.zeros_like(comp) if b is None else b
        view = copy.copy(batch)
        view.batch = b * 2 + comp.long()
        counts = torch.bincount(view.batch, minlength=2 * n)
        view.ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        view.__dict__["_num_graphs"] = 2 * n
        return view, 2 * n

    def _encode(self, batch):
        """-> (the backbone's batch view, number of graphs, node scalars s [N, d], per-node energy [N] or None)."""
        view, n = self._graphs(batch)
        if self.task.pooling == "gigp":
            refuse_periodic(view, "task.pooling=gigp", "pools radial shells about the centroid, without images")
        if self.denoiser is not None:
            refuse_periodic(view, "task.noisy_nodes", "denoises coordinates without periodic images")
        out = self.model(view)
        energy = out.node_energy if isinstance(out, BackboneOutput) else None
        if self.energy_readout and energy is None:
            raise ConfigError("the model has a latent-charge energy readout (latent_charges(energy=true)) but its "
                              "output carries no node_energy (a wrapper dropped it?)")
        return view, n, out.s, energy

    def _pool(self, x, view, n):
        """Pool node rows ``x`` [N, c] of ``view`` per graph -> [n, c] with ``task.pooling``."""
        batch = getattr(view, "batch", None)
        if self.task.pooling != "gigp":
            return pool(x, batch, self.task.pooling, n)
        pos = getattr(view, F.POS, None)
        if pos is None:
            raise InputError(_name(view), "task.pooling=gigp needs 3D coordinates (pos) of the nodes; the batch has "
                                          "none (choose task.pooling=sum, mean or max)")
        return self.gigp(x, pos, batch, n)

    def node_outputs(self, s, energy=None):
        """The head's per-node output [N, k] (before pooling), plus the latent-charge energy [N] when the model
        has an energy readout."""
        out = self.head(s)
        return out if energy is None else out + energy.unsqueeze(-1).to(out.dtype)

    def _head(self, view, n, s, energy=None):
        if self.pair:
            z = self._pool(s, view, n)                                      # [2B, d]: orig, mutated, orig, ...
            return self.head(z.reshape(n // 2, -1))                         # [B, 2d] -> [B, k]
        out = self.node_outputs(s, energy)
        if self.task.kind != "node_regression":
            out = self._pool(out, view, n)
        return out

    def forward(self, batch):
        return self._head(*self._encode(batch))

    def predict_units(self, batch):
        out = self(batch)
        return out * self.y_std + self.y_mean if self.regression else out

    def denoise(self, batch):
        """The denoising head's prediction of the normalised noise ``eps`` [N, 3] for ``batch``'s positions."""
        if self.denoiser is None:
            raise ConfigError("denoise() needs task.noisy_nodes > 0")
        view, n, s, _ = self._encode(batch)
        return self.denoiser(s, view.pos, view.edge_index)

    def _augment(self, batch):
        """Training-time input augmentation: random LapPE signs (``sign_flip``), seeded by seed and step."""
        if self.sign_flip is None:
            return batch
        from farfield.features.positional import random_sign_flip
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + int(self.global_step)) & 0x7FFFFFFFFFFF)
        batch.x_s = random_sign_flip(batch.x_s, getattr(batch, "batch", None), self.sign_flip, gen)
        return batch

    def _update(self, stage: str, empty: bool, *args, **kwargs) -> None:
        """Update the stage's metrics; on an empty shard only those with concatenated (list) states, which
        must take part in the synchronisation (sum states sync zeros; stat-score metrics reject empty input)."""
        coll = self.metrics[stage + "_"]
        if not empty:
            coll.update(*args, **kwargs)
            return
        for m in coll.values():
            if any(isinstance(getattr(m, k), list) for k in m._defaults):
                m.update(*args, **m._filter_kwargs(**kwargs))

    def _step(self, batch, stage: str):
        view, n, s, energy = self._encode(batch)
        out = at_least_float32(self._head(view, n, s, energy))     # losses and metrics in float32 under autocast
        denoise = None
        if stage == "train" and self.denoiser is not None:
            eps = getattr(batch, NOISE_TARGET, None)
            if eps is None:
                raise ConfigError(f"task.noisy_nodes={self.task.noisy_nodes} but the training batch carries no "
                                  "position noise; train with GraphDataModule.with_noise(task.noise_std)")
            denoise = denoising_loss(at_least_float32(self.denoiser(s, view.pos, view.edge_index)), eps)
        y = batch.y
        kind = self.task.kind
        groups = getattr(batch, F.GROUP, None) if self.grouped else None
        w = getattr(batch, "eval_weight", None)
        if w is not None and stage != "train" and bool((w == 0).any()):
            # padding copies of a distributed evaluation (AtomBudgetBatchSampler): leave them out
            keep = w > 0 if kind != "node_regression" else (w > 0)[batch.batch]
            out, y = out[keep], (y[keep] if y.shape[0] == keep.shape[0] else y.reshape(keep.shape[0], -1)[keep])
            groups = groups.reshape(-1)[w > 0] if groups is not None else None
        # a shard of only padding still updates the metrics (with nothing), so that every process takes part
        # in the metrics' synchronisation; its loss is not logged
        empty = not len(out)
        zero = out.sum() * 0
        if self.regression:
            y = y.reshape(out.shape).to(out.dtype)
            loss = zero if empty else nn.functional.mse_loss(out, (y - self.y_mean) / self.y_std)
            extra = {"groups": groups.reshape(-1)} if groups is not None else {}
            self._update(stage, empty, out.detach() * self.y_std + self.y_mean, y, **extra)
        elif kind == "multiclass":
            y = y.reshape(-1).long()
            loss = zero if empty else nn.functional.cross_entropy(out, y)
            self._update(stage, empty, out.detach(), y)
        else:
            y = y.reshape(out.shape)
            loss = zero if empty else nn.functional.binary_cross_entropy_with_logits(out, y.float())
            p = torch.sigmoid(out.detach())
            self._update(stage, empty, *((p.squeeze(-1), y.long().squeeze(-1)) if kind == "binary" else (p, y.long())))
        if empty:
            return None
        if denoise is not None:
            self.log("train/denoise", denoise, batch_size=int(y.shape[0]), on_epoch=True, on_step=False, sync_dist=True)
            loss = loss + self.task.noisy_nodes * denoise
        # evaluation shards may hold only padding on some rank: the metrics (synchronised torchmetrics) are exact,
        # the logged evaluation loss is the one of rank 0's shard
        self.log(f"{stage}/loss", loss, batch_size=int(y.shape[0]), on_epoch=True, on_step=False,
                 sync_dist=stage == "train", prog_bar=stage != "test")
        return loss

    #: the loss is checked for NaN / Inf every this many steps (and at the end of each epoch): a check reads the
    #: value on the host, which would otherwise synchronise every step on an accelerator
    check_every: int = 25

    def training_step(self, batch, batch_idx):
        loss = self._step(self._augment(batch), "train")
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
        return optimizers(self, self.optim, f"val/{self.monitor}", self.mode)


def optimizers(module, optim, monitor: str, mode: str):
    """AdamW over ``module``'s trainable parameters with ``optim``'s schedule, in Lightning's format. With
    ``optim.backbone_lr`` the parameters of ``module.model`` (backbone, long-range module, canonicaliser) get that
    rate and the rest (heads) ``optim.lr``. Schedules: linear warm-up then cosine / constant
    (:func:`warmup_factor`), cosine to 0 over ``optim.epochs``, none, or plateau (halve after 5 epochs without
    improvement of ``monitor``, ``mode`` min / max)."""
    params = [p for p in module.parameters() if p.requires_grad]
    blr = getattr(optim, "backbone_lr", None)
    if blr is not None:
        own = {id(p) for p in module.model.parameters()}
        params = [{"params": [p for p in params if id(p) in own], "lr": blr},
                  {"params": [p for p in params if id(p) not in own]}]
    opt = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    warmup = int(getattr(optim, "warmup_epochs", 0) or 0)
    if warmup and optim.scheduler in ("cosine", "none"):
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, partial(warmup_factor, warmup=warmup, epochs=optim.epochs, cosine=optim.scheduler == "cosine"))
        return {"optimizer": opt, "lr_scheduler": sched}
    if optim.scheduler == "none":
        return opt
    if optim.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=optim.epochs)
        return {"optimizer": opt, "lr_scheduler": sched}
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=5)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": monitor}}

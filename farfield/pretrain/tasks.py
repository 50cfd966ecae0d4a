"""Pretraining tasks on residue graphs: corruptions of the input, their targets, heads and losses.

The set of ProteinWorkshop (Jamasb et al., "Evaluating representation learning on the protein structure
universe", ICLR 2024): sequence denoising, structure denoising, sequence + structure denoising, torsional
denoising, edge distance prediction, pLDDT prediction, and inverse folding. Every task is two parts:

* a **corruption** of one residue graph (data side, :class:`Corruption`, run in the data loader before the
  graph's edges are built, so edges follow the corrupted coordinates), which stores the task's targets on the
  graph as node / pair fields prefixed ``pt_``;
* a **head** and a **loss** (model side, :meth:`PretrainTask.head` / :meth:`PretrainTask.loss`) on the
  backbone's output (:class:`farfield.models.base.BackboneOutput`).

Any set of tasks combines with any backbone and long-range strategy (:class:`farfield.pretrain.module.PretrainModule`
sums the weighted losses and logs each). Corruptions compose in a fixed order: sequence (residue types), then
coordinates (Cartesian noise or torsion noise), then the node features are recomputed from the corrupted residue
types and backbone with the corpus's feature preset (:func:`farfield.features.residues.residue_node_features`),
then inverse folding hides the residue types. So a model never sees a clean feature of what it must predict:
dihedrals and orientation vectors come from the noisy backbone, the residue one-hot (the first 21 columns of
``x_s`` in every preset) from the corrupted sequence.

Definitions (noise is drawn per item from the loader's generator: fresh every training epoch, one fixed draw per
evaluation item, :class:`farfield.train.data.EpochEdges`):

=============================  =======================================================================================
task                           corruption -> target, loss
=============================  =======================================================================================
``sequence_denoising``         a fraction ``rate`` (0.25) of the residues, chosen uniformly, get a residue type drawn
                               uniformly from the 20 amino acids (``strategy: mutate``) or the unknown type, one-hot all
                               zero (``strategy: mask``) -> their original type (20 classes); cross-entropy over the
                               corrupted residues
``structure_denoising``        every backbone atom moves by ``std * eps`` (0.1 A, eps ~ N(0, I)) -> eps of CA [N, 3];
                               MSE. The head is equivariant: ``sum_c w_c v_c`` of the backbone's vector channels when
                               it has them (GVP, PaiNN, TFN ...), else the EGNN-style coordinate head of
                               :class:`farfield.models.denoising.DenoisingHead` (invariant backbones)
``sequence_structure_denoising``  both of the above (weights and options per part)
``torsional_denoising``        phi / psi / omega get ``std * eps`` (radians, default 0.1) and the backbone is rebuilt with
                               every bond length and angle kept (NeRF, :mod:`farfield.pretrain.nerf`) -> eps [N, 3] where
                               the torsion exists; MSE from the invariant scalars. (A torsion's sign flips under a
                               mirror: a reflection-invariant backbone cannot tell +eps from -eps.)
``edge_distance_prediction``   ``fraction`` (0.25, at most ``max_pairs`` 256 per graph) of the graph's edges, drawn
                               uniformly, are sampled *before* their geometry is hidden: their endpoints' coordinates get
                               Gaussian noise ``std`` (1 A) -> the clean CA-CA distance of each sampled pair (A); MSE
                               on ``d / 10``, from the MLP of ``[s_i * s_j, s_i + s_j]`` (symmetric in i, j)
``plddt_prediction``           none -> the residue's pLDDT / 100 [N]; MSE; needs a corpus with pLDDT (AlphaFold models)
``inverse_folding``            every residue type hidden (one-hot all zero) -> the type (20 classes); cross-entropy,
                               accuracy (sequence recovery) and perplexity
=============================  =======================================================================================

Residues of unknown type (class 20) are never targets.

Where this differs from ProteinWorkshop 0.2.5 (read from its configs and code): sequence denoising there draws
positions with replacement (about 22% distinct residues at rate 0.25) and replacement types from all 23 classes
(possibly the same type); here exactly ``round(rate * N)`` distinct residues get one of the 20 amino acids. Its
torsional target is (cos, sin) of the noise [N, 6] and it rebuilds N, CA, C only; here the target is the normalised
noise and O is rebuilt too. Its edge distance prediction removes 256 sampled edges per batch from a kNN-16 graph,
which leaves the reverse edge (and the coordinates) in the input, so the answer leaks (and its transform is never
built, through a dotted ``cfg.get`` look-up that returns None); here the sampled residues' coordinates are noised
instead, so the clean distance is not in the input. Task weights are applied here (there the auxiliary weights are
looked up with the same broken ``cfg.get`` and never applied). A graph without pLDDT in a ``plddt_prediction`` run is an
:class:`~farfield.errors.InputError` naming it.

Shapes: node fields ``pt_res_type`` [N] long (original types), ``pt_seq_mask`` [N] bool (the residue is a target
of a sequence task), ``pt_pos_eps`` [N, 3], ``pt_torsion_eps`` [N, 3], ``pt_torsion_mask`` [N, 3] bool,
``pt_plddt`` [N]; pairs ``pt_pair_index`` [2, K] (batched like ``edge_index``) and ``pt_pair_dist`` [K].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from farfield.data import fields as F
from farfield.errors import ConfigError, InputError
from farfield.features.residues import NUM_RESIDUE_TYPES, PRESETS, residue_node_features
from farfield.models.denoising import DenoisingHead
from farfield.nn.mlp import MLP

__all__ = ["TASKS", "PretrainTask", "Corruption", "build_tasks", "SequenceDenoising", "StructureDenoising",
           "SequenceStructureDenoising", "TorsionalDenoising", "EdgeDistancePrediction", "PLDDTPrediction",
           "InverseFolding", "NUM_AMINO_ACIDS", "UNKNOWN"]

#: residue classes that are targets (the 20 amino acids); class 20 is unknown / masked
NUM_AMINO_ACIDS = 20
UNKNOWN = 20
#: target fields: ``pt_`` + name
RES_TYPE, SEQ_MASK, POS_EPS = "pt_res_type", "pt_seq_mask", "pt_pos_eps"
TORSION_EPS, TORSION_MASK, PLDDT = "pt_torsion_eps", "pt_torsion_mask", "pt_plddt"
PAIR_INDEX, PAIR_DIST = "pt_pair_index", "pt_pair_dist"


def _name(g) -> str:
    n = getattr(g, F.NAME, None)
    return n if isinstance(n, str) else "graph"


def _number(task, key, value, lo=0.0, hi=None, open_lo=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > lo if open_lo else value >= lo) and (hi is None or value <= hi)
    if not ok:
        rng = f"{'>' if open_lo else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ConfigError(f"pretrain.tasks.{task}.{key} must be a number {rng}, got {value!r}")
    return float(value)


class PretrainTask:
    """One pretraining task: options, the part of the corruption it asks for, a head and a loss.

    Subclasses set ``name``, ``sequence`` (changes residue identities), ``structure`` (moves coordinates),
    ``needs_plddt``, implement :meth:`head` and :meth:`loss`, and declare their options with defaults in
    ``defaults``."""

    name: str = ""
    sequence: bool = False
    structure: bool = False
    needs_plddt: bool = False
    defaults: dict = {}

    def __init__(self, weight: float = 1.0, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ConfigError(f"pretrain.tasks.{self.name}: unknown option(s) {unknown}; options: "
                              f"{sorted(self.defaults) + ['weight']}")
        self.weight = _number(self.name, "weight", weight, open_lo=True)
        self.options = {**self.defaults, **options}
        self.validate()

    def validate(self) -> None:
        """Check ``self.options`` (ConfigError naming the option)."""

    def head(self, dim: int, vectors: int) -> nn.Module:
        raise NotImplementedError

    def loss(self, head: nn.Module, out, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, {metric: value}) of ``head`` on the backbone output ``out`` for ``batch``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight}, {self.options})"


def _classifier(dim: int) -> nn.Module:
    return MLP([dim, dim, NUM_AMINO_ACIDS], act="silu")


def _ce_metrics(logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    if not len(target):
        z = logits.sum() * 0
        return z, {}
    loss = nn.functional.cross_entropy(logits, target)
    acc = (logits.argmax(-1) == target).float().mean()
    return loss, {"acc": acc, "perplexity": loss.detach().exp()}


class SequenceDenoising(PretrainTask):
    name = "sequence_denoising"
    sequence = True
    defaults = {"rate": 0.25, "strategy": "mutate"}

    def validate(self):
        _number(self.name, "rate", self.options["rate"], 0.0, 1.0, open_lo=True)
        if self.options["strategy"] not in ("mutate", "mask"):
            raise ConfigError(f"pretrain.tasks.{self.name}.strategy must be 'mutate' or 'mask', got "
                              f"{self.options['strategy']!r}")

    def head(self, dim, vectors):
        return _classifier(dim)

    def loss(self, head, out, batch):
        mask = batch[SEQ_MASK] & (batch[RES_TYPE] < NUM_AMINO_ACIDS)
        return _ce_metrics(head(out.s[mask]), batch[RES_TYPE][mask])


class InverseFolding(PretrainTask):
    name = "inverse_folding"
    sequence = True
    defaults = {}

    def head(self, dim, vectors):
        return _classifier(dim)

    def loss(self, head, out, batch):
        mask = batch[RES_TYPE] < NUM_AMINO_ACIDS
        return _ce_metrics(head(out.s[mask]), batch[RES_TYPE][mask])


class _VectorHead(nn.Module):
    """Equivariant noise prediction: ``sum_c w_c v_c`` [N, 3] from the backbone's vector channels ``v`` [N, c, 3]
    (Jing et al. 2021's GVP outputs, PaiNN's vectors ...), or, for backbones without vectors, the EGNN-style head
    of :class:`~farfield.models.denoising.DenoisingHead` on the invariant scalars, the positions and the edges."""

    def __init__(self, dim: int, vectors: int):
        super().__init__()
        self.vectors = int(vectors)
        if self.vectors:
            self.w = nn.Linear(self.vectors, 1, bias=False)
        else:
            self.egnn = DenoisingHead(dim)

    def forward(self, out, batch) -> Tensor:
        if self.vectors:
            if out.v is None or out.v.shape[1] != self.vectors:
                raise ConfigError("structure denoising: the backbone's output lost its vector channels")
            return self.w(out.v.transpose(1, 2)).squeeze(-1)
        return self.egnn(out.s, batch.pos, batch.edge_index)


class StructureDenoising(PretrainTask):
    name = "structure_denoising"
    structure = True
    defaults = {"std": 0.1}

    def validate(self):
        _number(self.name, "std", self.options["std"], open_lo=True)

    def head(self, dim, vectors):
        return _VectorHead(dim, vectors)

    def loss(self, head, out, batch):
        pred = head(out, batch)
        eps = batch[POS_EPS].to(pred.dtype)
        loss = nn.functional.mse_loss(pred, eps)
        return loss, {"rmse_A": (loss.detach() * 3).sqrt() * self.options["std"] / math.sqrt(3)}


class SequenceStructureDenoising(PretrainTask):
    """Sequence and structure denoising at once (ProteinWorkshop's ``sequence_structure_denoising``): the loss
    is ``sequence_weight * CE + structure_weight * MSE``."""

    name = "sequence_structure_denoising"
    sequence = True
    structure = True
    defaults = {"rate": 0.25, "strategy": "mutate", "std": 0.1, "sequence_weight": 1.0, "structure_weight": 1.0}

    def validate(self):
        self.seq = SequenceDenoising(rate=self.options["rate"], strategy=self.options["strategy"])
        self.struct = StructureDenoising(std=self.options["std"])
        for k in ("sequence_weight", "structure_weight"):
            _number(self.name, k, self.options[k])

    def head(self, dim, vectors):
        return nn.ModuleDict({"sequence": self.seq.head(dim, vectors), "structure": self.struct.head(dim, vectors)})

    def loss(self, head, out, batch):
        ls, ms = self.seq.loss(head["sequence"], out, batch)
        lx, mx = self.struct.loss(head["structure"], out, batch)
        loss = self.options["sequence_weight"] * ls + self.options["structure_weight"] * lx
        return loss, {**ms, **mx, "sequence_loss": ls.detach(), "structure_loss": lx.detach()}


class TorsionalDenoising(PretrainTask):
    name = "torsional_denoising"
    structure = True
    defaults = {"std": 0.1}

    def validate(self):
        _number(self.name, "std", self.options["std"], open_lo=True)

    def head(self, dim, vectors):
        return MLP([dim, dim, 3], act="silu")

    def loss(self, head, out, batch):
        mask = batch[TORSION_MASK]
        pred = head(out.s)
        if not bool(mask.any()):
            return pred.sum() * 0, {}
        loss = nn.functional.mse_loss(pred[mask], batch[TORSION_EPS].to(pred.dtype)[mask])
        return loss, {"rmse_rad": loss.detach().sqrt() * self.options["std"]}


class _PairHead(nn.Module):
    """MLP of ``[s_i * s_j, s_i + s_j]`` -> one number: symmetric in the two residues."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = MLP([2 * dim, dim, 1], act="silu")

    def forward(self, s: Tensor, pairs: Tensor) -> Tensor:
        a, b = s[pairs[0]], s[pairs[1]]
        return self.mlp(torch.cat([a * b, a + b], dim=-1)).squeeze(-1)


class EdgeDistancePrediction(PretrainTask):
    name = "edge_distance_prediction"
    structure = True
    defaults = {"fraction": 0.25, "max_pairs": 256, "std": 1.0}

    def validate(self):
        _number(self.name, "fraction", self.options["fraction"], 0.0, 1.0, open_lo=True)
        mp = self.options["max_pairs"]
        if not isinstance(mp, int) or isinstance(mp, bool) or mp < 1:
            raise ConfigError(f"pretrain.tasks.{self.name}.max_pairs must be an integer >= 1, got {mp!r}")
        _number(self.name, "std", self.options["std"], open_lo=True)

    def head(self, dim, vectors):
        return _PairHead(dim)

    def loss(self, head, out, batch):
        pairs = batch[PAIR_INDEX]
        pred = head(out.s, pairs)
        if not pairs.shape[1]:
            return pred.sum() * 0, {}
        d = batch[PAIR_DIST].to(pred.dtype)
        loss = nn.functional.mse_loss(pred, d / 10.0)
        return loss, {"mae_A": (pred.detach() * 10.0 - d).abs().mean()}


class PLDDTPrediction(PretrainTask):
    name = "plddt_prediction"
    needs_plddt = True
    defaults = {}

    def head(self, dim, vectors):
        return MLP([dim, dim, 1], act="silu")

    def loss(self, head, out, batch):
        pred = head(out.s).squeeze(-1)
        y = batch[PLDDT].to(pred.dtype) / 100.0
        loss = nn.functional.mse_loss(pred, y)
        return loss, {"mae": (pred.detach() - y).abs().mean() * 100.0}


#: name -> task class
TASKS = {c.name: c for c in (SequenceDenoising, StructureDenoising, SequenceStructureDenoising, TorsionalDenoising,
                             EdgeDistancePrediction, PLDDTPrediction, InverseFolding)}


def build_tasks(spec) -> list[PretrainTask]:
    """Tasks from a mapping ``{name: weight}`` or ``{name: {weight: w, option: value, ...}}`` (or a list of names,
    weight 1). Refuses unknown names and combinations that would corrupt one thing twice: two sequence tasks (e.g.
    inverse folding with sequence denoising) or two coordinate corruptions."""
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    if isinstance(spec, (list, tuple)):
        spec = {n: 1.0 for n in spec}
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"pretrain.tasks must name at least one task of {sorted(TASKS)} (a mapping name -> weight "
                          f"or -> options), got {spec!r}")
    out = []
    for name, opts in spec.items():
        if name not in TASKS:
            raise ConfigError(f"unknown pretraining task {name!r}; choose from {sorted(TASKS)}")
        if opts is None:
            opts = {}
        if isinstance(opts, (int, float)) and not isinstance(opts, bool):
            opts = {"weight": opts}
        if not isinstance(opts, dict):
            raise ConfigError(f"pretrain.tasks.{name} must be a weight or a mapping of options, got {opts!r}")
        out.append(TASKS[name](**opts))
    seq = [t.name for t in out if t.sequence]
    struct = [t.name for t in out if t.structure]
    if len(seq) > 1:
        raise ConfigError(f"pretraining tasks {seq} both change residue types; combine sequence and structure "
                          "denoising with sequence_structure_denoising, and use one sequence task at a time")
    if len(struct) > 1:
        raise ConfigError(f"pretraining tasks {struct} both corrupt coordinates; use one at a time")
    return out


@dataclass
class Corruption:
    """The data-side corruption of a set of tasks, ``corruption(g, generator) -> g`` (a new ``Data``; the input
    is not modified). ``preset``: the residue feature preset the graphs were made with (their features are
    recomputed from the corrupted input)."""

    tasks: list
    preset: str = "gvp"
    _opts: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown residue feature preset {self.preset!r}; choose from {sorted(PRESETS)}")
        p = PRESETS[self.preset]
        names = {t.name for t in self.tasks}
        if p.needs_sidechain and any(t.structure or t.sequence for t in self.tasks):
            raise ConfigError(f"preset {self.preset!r} has side-chain torsion features: they reveal the residue type "
                              f"and are not recomputed from a corrupted backbone; pretrain {sorted(names)} with a "
                              "preset without side chains (gvp, parity_even, ca, ca_seq, ca_angles, ca_bb)")
        for t in self.tasks:
            o = dict(t.options)
            if t.name == "sequence_structure_denoising":
                self._opts["sequence"] = {"rate": o["rate"], "strategy": o["strategy"]}
                self._opts["position"] = {"std": o["std"]}
            elif t.name == "sequence_denoising":
                self._opts["sequence"] = o
            elif t.name == "structure_denoising":
                self._opts["position"] = o
            elif t.name == "torsional_denoising":
                self._opts["torsion"] = o
            elif t.name == "edge_distance_prediction":
                self._opts["pairs"] = o
            elif t.name == "inverse_folding":
                self._opts["hide_sequence"] = True
            elif t.name == "plddt_prediction":
                self._opts["plddt"] = True

    def __call__(self, g, gen: torch.Generator):
        import copy
        g = copy.copy(g)
        o = self._opts
        n = int(g.num_nodes)
        res = getattr(g, F.RES_TYPE, None)
        bb, mask = getattr(g, F.BACKBONE, None), getattr(g, F.BACKBONE_MASK, None)
        if res is None or bb is None or mask is None:
            raise InputError(_name(g), "pretraining corrupts residue graphs: it needs res_type, backbone and "
                                       "backbone_mask (a structure corpus, data.dataset=corpus)")
        if "plddt" in o:
            p = getattr(g, F.PLDDT, None)
            if p is None:
                raise InputError(_name(g), "has no pLDDT (plddt_prediction needs AlphaFold / ESMFold models, whose "
                                           "B-factor column holds pLDDT; build the corpus with plddt=true or filter "
                                           "the items without it)")
            g[PLDDT] = p.reshape(-1).to(torch.float32)
        g[RES_TYPE] = res.clone()
        g[SEQ_MASK] = torch.zeros(n, dtype=torch.bool)
        new_res = res.clone()
        if "sequence" in o and n:
            k = max(1, int(round(o["sequence"]["rate"] * n)))
            pick = torch.randperm(n, generator=gen)[:k]
            if o["sequence"]["strategy"] == "mutate":
                new_res[pick] = torch.randint(0, NUM_AMINO_ACIDS, (k,), generator=gen)
            else:
                new_res[pick] = UNKNOWN
            g[SEQ_MASK][pick] = True
        seg = getattr(g, F.SEGMENT, None)
        moved = any(k in o for k in ("position", "torsion", "pairs"))
        if moved and seg is None:
            raise InputError(_name(g), "has no 'segment' field (backbone segments), which structure corruptions "
                                       "need to recompute the features; rebuild the corpus with farfield.datasets.corpus")
        full = torch.where(mask.unsqueeze(-1), bb.double(), torch.full_like(bb, float("nan"), dtype=torch.float64))
        new_bb = full
        if "position" in o:
            eps = torch.randn((n, 4, 3), generator=gen, dtype=torch.float64)
            new_bb = full + o["position"]["std"] * eps
            g[POS_EPS] = eps[:, 1].to(torch.float32)
        if "torsion" in o:
            from farfield.pretrain.nerf import rebuild_backbone, torsion_mask
            tmask = torch.from_numpy(torsion_mask(full.numpy(), seg.numpy()))
            eps = torch.randn((n, 3), generator=gen, dtype=torch.float64) * tmask
            new_bb = torch.from_numpy(rebuild_backbone(full.numpy(), seg.numpy(),
                                                       (o["torsion"]["std"] * eps).numpy()))
            g[TORSION_EPS], g[TORSION_MASK] = eps.to(torch.float32), tmask
        if "pairs" in o:
            g = self._pairs(g, gen, full, o["pairs"])
            new_bb = full.clone()
            pts = g[PAIR_INDEX].reshape(-1).unique()
            if len(pts):
                new_bb[pts] = full[pts] + o["pairs"]["std"] * torch.randn((len(pts), 4, 3), generator=gen,
                                                                           dtype=torch.float64)
        if "sequence" in o and not moved:               # only the residue one-hot changes
            x_s = g.x_s.clone()
            x_s[:, :NUM_RESIDUE_TYPES] = nn.functional.one_hot(new_res, NUM_RESIDUE_TYPES).to(x_s.dtype)
            g[F.X_S], g[F.RES_TYPE] = x_s, new_res
        if moved:
            dtype = g.x_s.dtype
            x_s, x_v = residue_node_features(new_res, new_bb, seg if seg is not None else torch.zeros(n, dtype=torch.long),
                                             self.preset, seq_index=getattr(g, F.SEQ_INDEX, None))
            g[F.X_S] = x_s.to(dtype)
            if x_v.shape[1]:
                g[F.X_V] = x_v.to(dtype)
            filled = torch.where(mask.unsqueeze(-1), new_bb, new_bb[:, 1:2].expand_as(new_bb))
            g[F.BACKBONE] = filled.to(bb.dtype)
            g[F.POS] = new_bb[:, 1].to(g.pos.dtype)
            g[F.RES_TYPE] = new_res
        if "sequence" in o and o["sequence"]["strategy"] == "mask":     # masked residues: one-hot all zero
            x_s = g.x_s.clone()
            x_s[g[SEQ_MASK], :NUM_RESIDUE_TYPES] = 0
            g[F.X_S] = x_s
        if "hide_sequence" in o:
            x_s = g.x_s.clone()
            x_s[:, :NUM_RESIDUE_TYPES] = 0
            g[F.X_S] = x_s
            g[F.RES_TYPE] = torch.full_like(res, UNKNOWN)
        return g

    @staticmethod
    def _pairs(g, gen, full, opts):
        """Sample pairs of residues among the radius-10 A CA neighbours (the edges a residue graph of
        ProteinWorkshop's ``eps_r`` kind has), their clean CA-CA distances as targets."""
        n = int(g.num_nodes)
        ca = full[:, 1]
        if n < 2:
            g[PAIR_INDEX], g[PAIR_DIST] = torch.zeros((2, 0), dtype=torch.long), torch.zeros(0)
            return g
        d = torch.cdist(ca, ca)
        i, j = torch.triu_indices(n, n, 1)
        near = torch.isfinite(d[i, j]) & (d[i, j] <= 10.0)
        i, j = i[near], j[near]
        k = min(len(i), max(1, int(round(opts["fraction"] * len(i)))), int(opts["max_pairs"]))
        pick = torch.randperm(len(i), generator=gen)[:k]
        g[PAIR_INDEX] = torch.stack([i[pick], j[pick]])
        g[PAIR_DIST] = d[i[pick], j[pick]].to(torch.float32)
        return g

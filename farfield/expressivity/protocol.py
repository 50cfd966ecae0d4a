"""The expressivity protocol of the geometric WL study (Joshi, Bodnar, Mathis, Cohen & Lio, "On the Expressive
Power of Geometric Graph Neural Networks", ICML 2023, Sec. 5): can a model tell the two graphs of a pair apart?

Two modes:

* :func:`readout_distance` (training-free): the relative distance between the two graphs' readouts
  under a freshly initialised model, ``|r0 - r1| / (|r0| + |r1|)``. Zero (to float64 round-off) means the
  model *cannot* distinguish the pair whatever its weights; a clearly positive value means it can. Each
  result carries a ``margin`` (the distance over the detection threshold ``max(1e-14, 1e3 * floor)``) and a
  ``verdict``: 'distinguished' (margin >= 10), 'near floor' (a positive distance within 10x of the
  threshold, either side: a weak yes or an inconclusive one) or 'not distinguished' (exactly zero). Deep
  models at their threshold depth are often near the floor at initialisation (GVP, PaiNN, TFN and the
  TFN-products model on 5- and 6-chains), so a bare yes/no would overstate what was measured.
* :func:`train_pair`: the published protocol: a classifier (backbone + readout + MLP) trained on the two
  graphs (Adam 1e-4, batch 1, ReduceLROnPlateau(max, 0.9, patience 25)) and scored by the accuracy at the
  best epoch; 50% = not distinguished. The model is re-initialised for every seed (the reference reuses it).
  It runs in float64 by default: a pair that the model cannot separate maps to readouts equal up to
  round-off, and training drives both logits towards a tie, so in float32 round-off differences
  (~1e-7) can flip one argmax and report 100% on a pair the theory says is inseparable.

The readout is invariant (sum of node scalars) except for ``star:*`` tests, which ask for the
*orientation* of a symmetric star: there the readout is the sum of all node features, vector and
higher-order components included (as the GWL study's equivariant readout).

:func:`theory` states what the GWL analysis predicts for a model x test x depth, so results can be
checked against it.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn
from torch_geometric.data import Batch

from farfield.errors import ConfigError
from farfield.expressivity.generators import make_pair
from farfield.models import BACKBONES, InputSpec, build_backbone, pool

__all__ = ["ExpressivityClassifier", "readout_distance", "train_pair", "theory", "build_model", "chain_depth", "family",
           "ExpressivityResult", "run_expressivity", "DEFAULT_MODELS", "MODEL_OPTIONS", "DISTINCT", "NEAR_FLOOR"]

#: relative readout distance above which a pair can count as distinguished (float64 round-off is ~1e-16;
#: genuine but weak signals of freshly initialised models go down to ~1e-13)
DISTINCT = 1e-14
#: margins (distance / detection threshold) below this are reported as 'near floor'
NEAR_FLOOR = 10.0


def family(name: str) -> str:
    """The architecture family of backbone ``name``, read from its constructor in
    :data:`farfield.models.BACKBONES` (so renamed entries keep their theory): 'schnet', 'egnn', 'gvp',
    'painn', 'tfn', 'tfn_products' (TFN with correlation > 1), 'tfn_se3' (TFN without parity), 'segnn',
    'mpnn', 'fa' / 'fa_so3' (frame-averaged), '2d' (no coordinates), or 'other'."""
    from farfield.models import EGNN, GVPGNN, MPNN, SEGNN, TFN, PaiNN, SchNet
    ctor = BACKBONES.get(name)
    if ctor is None:
        raise ConfigError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    func, args, kw = (ctor.func, ctor.args, ctor.keywords) if isinstance(ctor, partial) else (ctor, (), {})
    if func is TFN:
        if int(kw.get("correlation", 1)) > 1:
            return "tfn_products"
        return "tfn" if kw.get("parity", True) else "tfn_se3"
    simple = {SchNet: "schnet", EGNN: "egnn", GVPGNN: "gvp", PaiNN: "painn", SEGNN: "segnn", MPNN: "mpnn"}
    if func in simple:
        return simple[func]
    if getattr(func, "__name__", "") == "_fa":
        return "fa_so3" if args and args[0] == "SO(3)" else "fa"
    if not getattr(func, "uses_positions", True):
        return "2d"
    return "other"


def _names(*families: str, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(n for n in BACKBONES if family(n) in families and n not in exclude)


#: one model per family (stochastic FA and the unconstrained MPNN left out)
DEFAULT_MODELS = _names("schnet", "egnn", "gvp", "painn", "tfn", "tfn_products", "segnn", "fa", "fa_so3",
                        exclude=("sfa_mpnn",))
_FAMILY_OPTIONS = {
    "schnet": {"hidden": 32}, "egnn": {"hidden": 32}, "mpnn": {"hidden": 32},
    "gvp": {"node_dims": (32, 8), "edge_dims": (16, 1), "dropout": 0.0}, "painn": {"hidden": 32},
    "tfn": {"channels": 8, "max_l": 2, "envelope": None}, "tfn_products": {"channels": 8, "max_l": 2, "envelope": None},
    "tfn_se3": {"channels": 8, "max_l": 2, "envelope": None}, "segnn": {"channels": 8, "max_l": 2},
    "fa": {"hidden": 32}, "fa_so3": {"hidden": 32},
}
# TFN-type models run without the cutoff envelope (the published unweighted messages): the envelope is a
# positive per-edge weight (0.5 on the 5 A chain edges at cutoff 10) that cannot change what a model can
# separate but shrinks fresh-init signals geometrically with depth, pushing deep chain separations (TFN at
# 7 layers on 6-chains) below float64 resolution.
#: small widths for the expressivity runs (the question is what a model *can* represent)
MODEL_OPTIONS = {n: dict(_FAMILY_OPTIONS[family(n)]) for n in BACKBONES if family(n) in _FAMILY_OPTIONS}
_SPHERICAL = {"tfn", "tfn_products", "tfn_se3", "segnn"}     # families
_INVARIANT = {"schnet", "egnn"}             # EGNN with fixed coordinates: invariant node features only
_CARTESIAN = {"gvp", "painn"}
_FA = {"fa", "fa_so3"}


def build_model(name: str, num_layers: int, cutoff: float = 10.0, **options):
    """A backbone for the expressivity pairs (1 scalar input feature, no edge features)."""
    opts = {**MODEL_OPTIONS.get(name, {}), **options, "num_layers": num_layers, "cutoff": cutoff}
    return build_backbone(name, InputSpec(1), **opts)


class ExpressivityClassifier(nn.Module):
    """Backbone -> graph readout (invariant, or all components when ``equivariant``) -> MLP -> 2 logits."""

    def __init__(self, backbone, equivariant: bool):
        super().__init__()
        self.backbone = backbone
        self.equivariant = equivariant
        width = self.readout_width()
        self.head = nn.Sequential(nn.Linear(width, 64), nn.SiLU(), nn.Linear(64, 2))

    def readout_width(self) -> int:
        b = self.backbone
        if not self.equivariant:
            return b.hidden_s
        t = getattr(b, "irreps_t", None)
        return b.hidden_s + 3 * b.hidden_v + (t.dim if t is not None else 0)

    def readout(self, batch):
        out = self.backbone(batch)
        parts = [out.s]
        if self.equivariant:
            if out.v is not None:
                parts.append(out.v.flatten(1))
            if out.t is not None:
                parts.append(out.t)
        return pool(torch.cat(parts, dim=-1), batch.batch, "sum", batch.num_graphs)

    def forward(self, batch):
        return self.head(self.readout(batch))


def _classifier(name: str, test: str, layers: int, seed: int, dtype=torch.float64) -> ExpressivityClassifier:
    torch.manual_seed(seed)
    return ExpressivityClassifier(build_model(name, layers), equivariant=test.startswith("star")).to(dtype)


def _null_partner(test: str, g):
    """A copy of ``g`` that every model in scope must map to the same readout: for stars, ``g`` rotated by
    one symmetry step 2 pi / fold (the same star, nodes permuted); otherwise a random proper rotation."""
    from farfield.symmetry.transforms import random_rotation
    h = g.clone()
    if test.startswith("star:"):
        a = 2 * math.pi / int(test.split(":")[1])
        Q = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]],
                         dtype=torch.float64)
    else:
        Q = random_rotation(torch.Generator().manual_seed(1234))
    h.pos = g.pos @ Q.T
    return h


def _rel(a, b) -> float:
    return float((a - b).norm() / ((a.norm() + b.norm()).clamp(min=1e-30)))


def readout_distance(name: str, test: str, layers: int, seed: int = 0) -> tuple[float, float]:
    """Training-free: the relative distance between the readouts of the pair's two graphs (float64), and
    the noise floor: the same distance between graph 0 and a symmetric copy of it (:func:`_null_partner`),
    which is round-off only. Normalisation layers can amplify round-off on symmetric inputs (GVP's vector
    norm on the cancelling vectors of a star; frame averaging on degenerate frames), so a pair counts as
    distinguished only when the distance clears the floor: ``d > max(1e-12, 1e3 * floor)``."""
    model = _classifier(name, test, layers, seed).eval()
    g0, g1 = make_pair(test)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")          # FA on symmetric stars warns about degenerate frames
        r0, r1, rn = (model.readout(Batch.from_data_list([g])) for g in (g0, g1, _null_partner(test, g0)))
    return _rel(r0, r1), _rel(r0, rn)


def train_pair(name: str, test: str, layers: int, seed: int = 0, epochs: int = 100, lr: float = 1e-4,
               dtype: torch.dtype = torch.float64) -> float:
    """The published protocol for one seed; returns the accuracy (0, 0.5 or 1) at the best epoch.

    ``dtype`` float64 (default) keeps round-off (~1e-16) far below what 100 epochs of Adam at 1e-4 can
    amplify into an argmax flip; with float32 an inseparable pair can score 100% by round-off alone (see
    the module docstring)."""
    model = _classifier(name, test, layers, seed, dtype)
    pair = [g.clone() for g in make_pair(test)]
    for g in pair:
        for k in ("pos", "x_s"):
            g[k] = g[k].to(dtype)
    batches = [Batch.from_data_list([g]) for g in pair]
    both = Batch.from_data_list(pair)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.9, patience=25)
    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            model.train()
            for i in torch.randperm(2, generator=gen).tolist():
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(batches[i]), batches[i].y)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                acc = float((model(both).argmax(-1) == both.y).float().mean())
            sched.step(acc)
            best = max(best, acc)
            if best == 1.0:
                break
    return best


def _max_degree(name: str, options: dict | None = None) -> int:
    fam = family(name)
    if fam in _SPHERICAL:
        return int((options or {}).get("max_l", MODEL_OPTIONS[name]["max_l"]))
    return 1 if fam in _CARTESIAN | _FA | {"egnn", "mpnn"} else 0


def chain_depth(name: str, k: int) -> int | None:
    """Layers a model needs to separate the k-chain pair (None: never, or no prediction)."""
    fam = family(name)
    if fam in ("gvp", "painn", "tfn_products"):
        return k // 2 + 1
    if fam in ("tfn", "tfn_se3"):
        return k + 1
    if fam == "segnn":
        return k - 1
    return None


def theory(name: str, test: str, layers: int) -> bool | None:
    """What the geometric WL analysis predicts: True (distinguishable), False (provably not), or None
    (no prediction: the unconstrained ``mpnn`` is not invariant; frame-averaged models lie outside the GWL
    hierarchy except where a symmetry argument settles it).

    Models are looked up by family (:func:`family`), so renamed backbones keep their row. Depths below
    were measured in distance mode for K = 2..6 (exactly zero one layer below the threshold, positive at
    it; :func:`chain_depth`).

    * chain:K: invariant models never (every node sees the same distances at every depth). Models that
      multiply two *aggregated* geometric features at a node (GVP and PaiNN through vector norms and dot
      products, the TFN-products model through products of aggregated features) need floor(K/2) + 1
      layers, the pair's hop depth: both ends' orientations reach the middle of the chain and meet there.
      TFN (correlation 1, with or without parity) also separates the pair, but only at K + 1 layers: its
      messages are linear in the neighbour's features (a tensor product with the edge direction), so no
      node can multiply two aggregated directions; the far end's orientation instead travels along the
      chain in the vector features, and a tensor product with the *edge* direction at the near end node
      (K + 1 hops away) couples it to the near end's direction. SEGNN needs K - 1 layers: its steerable
      products multiply the features only by geometric attributes (the edge's and the node's own
      neighbourhood directions), so one end's orientation must travel to the node whose attribute sees the
      other end.
    * star:FOLD: the orientation of a FOLD-fold symmetric star is visible only to features of degree
      l >= FOLD (lower-degree spherical harmonics sum to zero over the star); readouts that stop at l = 1
      (Cartesian models, frame averaging with vector outputs) fail for every FOLD >= 2.
    * 2body: invariant 2-body models never; GVP / PaiNN / MACE / SEGNN form products of aggregated
      directions at 1 layer; TFN needs 2 layers (its 1-layer scalars are sums of radial functions).
    * 3body: needs more than 3-body correlations at a node: MACE (correlation 3) and SEGNN (repeated
      steerable products with the node attribute) at 1 layer; GVP / PaiNN / TFN at 2 layers (nonlinear
      functions of a spoke's aggregated neighbourhood); invariant models never.
    * chiral (the published pair): its graphs are rotations of each other (see
      :mod:`farfield.expressivity.generators`), so no rotation-invariant model separates them.
    * handed (a true chiral pair): E(3) models never; FA with SO(3) frames at 1 layer; TFN without parity
      needs three distinct neighbour directions in one chain of tensor products: 4 layers on a star.
    """
    fam = family(name)
    if fam in ("mpnn", "2d", "other"):
        return None
    kind, _, arg = test.partition(":")
    if kind == "star":
        return _max_degree(name) >= int(arg)
    if kind == "chiral":
        return False
    if kind == "handed":
        return {"fa_so3": True, "tfn_se3": layers >= 4}.get(fam, False)
    if fam in _INVARIANT:
        return False
    if fam in _FA:
        return None
    if kind == "chain":
        return layers >= chain_depth(name, int(arg))
    if kind == "2body":
        return layers >= 2 if fam in ("tfn", "tfn_se3") else True
    if kind == "3body":
        return True if fam in ("tfn_products", "segnn") else layers >= 2
    return None


@dataclass
class ExpressivityResult:
    model: str
    test: str
    layers: int
    mode: str                       # 'train' or 'distance'
    values: list[float] = field(default_factory=list)
    theory: bool | None = None
    floors: list[float] = field(default_factory=list)   # distance mode: round-off floor per seed

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float:
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / max(len(self.values) - 1, 1))

    @property
    def margin(self) -> float | None:
        """Distance mode: the smallest (over seeds) distance over its detection threshold
        ``max(DISTINCT, 1e3 * floor)``; >= 1 counts as distinguished."""
        if self.mode == "train":
            return None
        return min(d / max(DISTINCT, 1e3 * f) for d, f in zip(self.values, self.floors))

    @property
    def verdict(self) -> str:
        """'distinguished', 'near floor' or 'not distinguished' (distance mode: see the module docstring)."""
        if self.mode == "train":
            return "distinguished" if self.distinguished else "not distinguished"
        if all(d == 0.0 for d in self.values):
            return "not distinguished"
        return "distinguished" if self.margin >= NEAR_FLOOR else "near floor"

    @property
    def distinguished(self) -> bool:
        if self.mode == "train":
            return self.mean > 0.99
        return self.margin >= 1.0

    @property
    def agrees(self) -> bool | None:
        """True / False, or None where the theory makes no prediction or a predicted separation was measured
        only near the round-off floor (distance mode: inconclusive rather than a contradiction)."""
        if self.theory is None:
            return None
        if self.mode == "train":
            # training can fail to find a distinguishing function; it can never beat the theory
            return self.distinguished == self.theory or (self.theory and self.mean > 0.5)
        if self.theory and not self.distinguished and self.verdict == "near floor":
            return None
        return self.distinguished == self.theory

    def to_dict(self) -> dict:
        return {"model": self.model, "test": self.test, "layers": self.layers, "mode": self.mode,
                "values": self.values, "noise_floor": self.floors or None, "mean": self.mean, "std": self.std,
                "distinguished": self.distinguished, "margin": self.margin, "verdict": self.verdict,
                "near_floor": self.verdict == "near floor", "theory": self.theory, "agrees": self.agrees}


def run_expressivity(models, tests, layers, seeds: int = 10, epochs: int = 100, mode: str = "train",
                     progress: bool = False) -> list[ExpressivityResult]:
    """Every model x test x depth, over ``seeds`` seeds (each re-initialises the model)."""
    if mode not in ("train", "distance"):
        raise ConfigError(f"mode must be 'train' or 'distance', got {mode!r}")
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    for t in tests:
        make_pair(t)                      # validate names early
    for m in models:
        build_model(m, 1)
    jobs = [(m, t, L) for m in models for t in tests for L in layers]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs) * seeds, desc="expressivity", unit="run")
    results = []
    for m, t, L in jobs:
        r = ExpressivityResult(m, t, L, mode, theory=theory(m, t, L))
        for seed in range(seeds):
            if mode == "train":
                r.values.append(train_pair(m, t, L, seed, epochs))
            else:
                d, floor = readout_distance(m, t, L, seed)
                r.values.append(d)
                r.floors.append(floor)
            if bar is not None:
                bar.update(1)
        results.append(r)
    if bar is not None:
        bar.close()
    return results

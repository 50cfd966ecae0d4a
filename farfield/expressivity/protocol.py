"""The expressivity protocol (methods reference s.7): can a model tell the two graphs of a pair apart?

Two modes:

* :func:`readout_distance` (training-free): the relative distance between the two graphs' readouts
  under a freshly initialised model, ``|r0 - r1| / (|r0| + |r1|)``. Zero (to float64 round-off) means the
  model *cannot* distinguish the pair whatever its weights; a clearly positive value means it can.
* :func:`train_pair`: the published protocol: a classifier (backbone + readout + MLP) trained on the two
  graphs (Adam 1e-4, batch 1, ReduceLROnPlateau(max, 0.9, patience 25)) and scored by the accuracy at the
  best epoch; 50% = not distinguished. The model is re-initialised for every seed (the reference reuses it).

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

import torch
from torch import nn
from torch_geometric.data import Batch

from farfield.errors import ConfigError
from farfield.expressivity.generators import make_pair
from farfield.models import InputSpec, build_backbone, pool

__all__ = ["ExpressivityClassifier", "readout_distance", "train_pair", "theory", "build_model",
           "ExpressivityResult", "run_expressivity", "DEFAULT_MODELS", "MODEL_OPTIONS", "DISTINCT"]

#: relative readout distance above which a pair can count as distinguished (float64 round-off is ~1e-16;
#: genuine but weak signals of freshly initialised models go down to ~1e-13)
DISTINCT = 1e-14
DEFAULT_MODELS = ("schnet", "egnn", "gvp", "painn", "tfn", "mace", "segnn", "fa_mpnn", "fa_mpnn_so3")
#: small widths for the expressivity runs (the question is what a model *can* represent)
MODEL_OPTIONS = {
    "schnet": {"hidden": 32}, "egnn": {"hidden": 32}, "mpnn": {"hidden": 32},
    "gvp": {"node_dims": (32, 8), "edge_dims": (16, 1), "dropout": 0.0}, "painn": {"hidden": 32},
    "tfn": {"channels": 8, "max_l": 2}, "mace": {"channels": 8, "max_l": 2}, "tfn_se3": {"channels": 8, "max_l": 2},
    "segnn": {"channels": 8, "max_l": 2}, "fa_mpnn": {"hidden": 32}, "sfa_mpnn": {"hidden": 32},
    "fa_mpnn_so3": {"hidden": 32},
}
_SPHERICAL = {"tfn", "mace", "tfn_se3", "segnn"}
_INVARIANT = {"schnet", "egnn"}             # EGNN with fixed coordinates: invariant node features only
_CARTESIAN = {"gvp", "painn"}
_FA = {"fa_mpnn", "sfa_mpnn", "fa_mpnn_so3"}


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


def train_pair(name: str, test: str, layers: int, seed: int = 0, epochs: int = 100, lr: float = 1e-4) -> float:
    """The published protocol for one seed; returns the accuracy (0, 0.5 or 1) at the best epoch."""
    model = _classifier(name, test, layers, seed, torch.float32)
    pair = [g.clone() for g in make_pair(test)]
    for g in pair:
        for k in ("pos", "x_s"):
            g[k] = g[k].float()
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
    if name in _SPHERICAL:
        return int((options or {}).get("max_l", MODEL_OPTIONS[name]["max_l"]))
    return 1 if name in _CARTESIAN | _FA | {"egnn", "mpnn"} else 0


def theory(name: str, test: str, layers: int) -> bool | None:
    """What the geometric WL analysis predicts: True (distinguishable), False (provably not), or None
    (no prediction: the unconstrained ``mpnn`` is not invariant; frame-averaged models lie outside the GWL
    hierarchy except where a symmetry argument settles it).

    * chain:K: invariant models never (every node sees the same distances at every depth). Models that
      can multiply two geometric features *at a node* (GVP and PaiNN through vector norms and dot
      products, MACE through products of aggregated features, SEGNN through steerable products) need
      floor(K/2) + 1 layers, the pair's hop depth. TFN (correlation 1) never does: its messages are linear
      in neighbour features (tensor products with the *edge* direction only) and its gates are invariant,
      so it cannot form the dot product of the two end directions that tells the chains apart.
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
    if name == "mpnn":
        return None
    kind, _, arg = test.partition(":")
    if kind == "star":
        return _max_degree(name) >= int(arg)
    if kind == "chiral":
        return False
    if kind == "handed":
        return {"fa_mpnn_so3": True, "tfn_se3": layers >= 4}.get(name, False)
    if name in _INVARIANT:
        return False
    if name in _FA:
        return None
    if kind == "chain":
        return False if name in ("tfn", "tfn_se3") else layers >= int(arg) // 2 + 1
    if kind == "2body":
        return layers >= 2 if name in ("tfn", "tfn_se3") else True
    if kind == "3body":
        return True if name in ("mace", "segnn") else layers >= 2
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
    def distinguished(self) -> bool:
        if self.mode == "train":
            return self.mean > 0.99
        return all(d > max(DISTINCT, 1e3 * f) for d, f in zip(self.values, self.floors))

    @property
    def agrees(self) -> bool | None:
        if self.theory is None:
            return None
        if self.mode == "train":
            # training can fail to find a distinguishing function; it can never beat the theory
            return self.distinguished == self.theory or (self.theory and self.mean > 0.5)
        return self.distinguished == self.theory

    def to_dict(self) -> dict:
        return {"model": self.model, "test": self.test, "layers": self.layers, "mode": self.mode,
                "values": self.values, "noise_floor": self.floors or None, "mean": self.mean, "std": self.std, "distinguished": self.distinguished,
                "theory": self.theory, "agrees": self.agrees}


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

"""The symmetry check: hold any model (or layer) to the symmetry group it claims, exactly.

For a model returning a :class:`~farfield.models.BackboneOutput` (or a tensor, treated as invariant
scalars), :func:`check_symmetry` transforms the inputs in float64 (by default) and reports the maximum
error of every output under

* ``rotation``: random rotation Q of coordinates and vectors; scalars must not change, vectors must
  become ``v Q^T``, higher-order features ``t D(Q)^T`` (e3nn Wigner matrices), coordinates ``x Q^T``;
* ``reflection``: the same with an improper rotation (det -1), for E(3) claims;
* ``translation``: coordinates shifted by a random vector;
* ``permutation``: nodes shuffled within their graphs (edges relabelled); outputs must be shuffled alike;
* ``batching``: the batched outputs must equal each graph's outputs computed alone;
* ``lattice`` (periodic batches only, those with a ``cell``): random atoms moved by random integer
  combinations of their cell's lattice vectors (the lattice shifts of their edges adjusted so every edge
  joins the same images); invariant outputs must not change, coordinate outputs move with their atoms.

Periodic batches: rotations and reflections act on the cell too (``cell Q^T``, rows are lattice vectors),
so the check covers cell-consistent rigid motions; lattice translations are claimed with ``translation``.

An output passes when ``max |error| <= tol * max(1, max |reference|)`` (tol 1e-9 in float64, 1e-4 in
float32). Tests the model does not claim are reported but cannot fail (``claimed = False``).

:func:`check_symmetry` transforms the featurised batch, so it checks the model alone.
:func:`check_pipeline` transforms the raw inputs and featurises them again, so it checks what a user runs:
a model claiming E(3) fed chiral features (sin of dihedrals, GVP-GNN's side-chain vector; see
:mod:`farfield.features.residues`) is only SE(3)-invariant end to end, and the report says so.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor
from torch_geometric.data import Batch

from farfield.errors import ConfigError
from farfield.models._irreps import restore_wigner
from farfield.models.base import GROUPS, BackboneOutput
from farfield.symmetry.transforms import (cast_batch, lattice_translate, permute_batch, random_rotation, reflection,
                                          transform_batch, within_graph_permutation)

__all__ = ["TESTS", "TOLERANCES", "SymmetryResult", "SymmetryReport", "check_pipeline", "check_symmetry"]

TESTS = ("rotation", "reflection", "translation", "permutation", "batching", "lattice")
TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-4}


@dataclass
class SymmetryResult:
    test: str
    output: str
    error: float
    scale: float
    tolerance: float
    claimed: bool
    where: str = ""     # the graph with the largest error, when known

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance * max(1.0, self.scale)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@dataclass
class SymmetryReport:
    model: str
    group: str
    dtype: str
    results: list[SymmetryResult] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)   # test -> why it is not claimed (pipeline checks)
    model_group: str = ""                                  # the model's own claim, when ``group`` is narrower
    #: test -> measured error of a symmetry the model claims only approximately (:func:`_approximate_error`)
    approximate: dict[str, dict] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results if r.claimed)

    def failures(self) -> list[SymmetryResult]:
        return [r for r in self.results if r.claimed and not r.passed]

    def to_dict(self) -> dict:
        return {"model": self.model, "group": self.group, "model_group": self.model_group or self.group,
                "dtype": self.dtype, "ok": self.ok, "notes": dict(self.notes), "approximate": dict(self.approximate),
                "results": [r.to_dict() for r in self.results]}

    def error(self, test: str, output: str = "s") -> float:
        for r in self.results:
            if r.test == test and r.output == output:
                return r.error
        raise KeyError((test, output))


def _outputs(out) -> dict[str, Tensor]:
    if torch.is_tensor(out):
        return {"s": out}
    if isinstance(out, BackboneOutput):
        return {k: getattr(out, k) for k in ("s", "v", "t", "pos", "node_energy") if getattr(out, k) is not None}
    raise ConfigError(f"check_symmetry: model returned {type(out).__name__}; expected a tensor or BackboneOutput")


def _expected(name: str, ref: Tensor, Q: Tensor, t: Tensor | None, irreps_t) -> Tensor:
    if name in ("s", "node_energy"):
        return ref
    if name == "v":
        return ref @ Q.T
    if name == "t":
        if irreps_t is None:
            raise ConfigError("check_symmetry: model returns 't' but declares no irreps_t")
        return ref @ irreps_t.D_from_matrix(Q).to(ref).T
    if name == "pos":
        return ref @ Q.T + (t if t is not None else 0)
    raise KeyError(name)


def check_symmetry(model, batch, dtype: torch.dtype = torch.float64, seed: int = 0, group: str | None = None,
                   tests: tuple[str, ...] = TESTS, tolerance: float | None = None,
                   name: str | None = None, n_approx: int = 8) -> SymmetryReport:
    """Check ``model`` on ``batch`` (a PyG Batch or Data from the featuriser).

    The geometric fields of the *featurised* batch are transformed (coordinates, vectors); this checks the
    model, not the featurisation. To check what a user runs, structure -> features -> graph -> model, use
    :func:`check_pipeline`.

    Args:
        model: a backbone (or any module ``model(batch)`` returning a tensor / BackboneOutput). It is
            copied, cast to ``dtype`` and put in eval mode; the original is untouched.
        batch: inputs; float fields are cast to ``dtype``.
        dtype: torch.float64 (default) or torch.float32.
        seed: seeds the random rotation, reflection, translation and permutation.
        group: the claim to check (default: ``model.symmetry``; one of ``E(3)``, ``SE(3)``, ``T(3)``, ``none``).
        tests: subset of :data:`TESTS`.
        tolerance: overrides :data:`TOLERANCES`.
        n_approx: random transformations over which a symmetry the model claims only approximately
            (``model.approximate``, e.g. a learned non-equivariant canonicaliser) is measured
            (:attr:`SymmetryReport.approximate`) instead of being passed or failed.
    """
    group = _validate(model, group, tests)
    if not isinstance(batch, Batch):
        batch = Batch.from_data_list([batch])
    batch = cast_batch(batch, dtype)   # transform in the checked precision

    def build(Q, t):
        return batch if Q is None else transform_batch(batch, Q, t)

    with _default_dtype(dtype):   # e3nn creates some constants at call time in the default dtype
        return _check(model, build, dtype, seed, group, set(GROUPS[group]), {}, tests, tolerance, name, n_approx)


def check_pipeline(model, build, dtype: torch.dtype = torch.float64, seed: int = 0, group: str | None = None,
                   pipeline_group: str = "E(3)", chiral_features: tuple[str, ...] = (),
                   tests: tuple[str, ...] = TESTS, tolerance: float | None = None,
                   name: str | None = None, n_approx: int = 8) -> SymmetryReport:
    """Check the end-to-end pipeline: the *raw inputs* are transformed, then featurised and batched again.

    Args:
        model: as in :func:`check_symmetry`.
        build: ``build(Q, t) -> Batch``: reads / featurises the inputs with every coordinate moved to
            ``x Q^T + t`` (``Q`` [3, 3] float64, ``t`` [3] float64 or None; ``build(None, None)`` is the
            untransformed batch). Features are recomputed, so chiral features show up as errors.
        pipeline_group: the group the featurisation respects (``Featuriser.symmetry``); the claim checked
            is the intersection of the model's group and this one. Tests outside it are reported (with
            their error) but not claimed, with the reason in :attr:`SymmetryReport.notes`.
        chiral_features: names of the features that break reflection symmetry (for the note).
        group, dtype, seed, tests, tolerance, name, n_approx: as in :func:`check_symmetry`.
    """
    group = _validate(model, group, tests)
    if pipeline_group not in GROUPS:
        raise ConfigError(f"unknown pipeline symmetry group {pipeline_group!r}; choose from {sorted(GROUPS)}")
    claims = set(GROUPS[group]) & set(GROUPS[pipeline_group])
    notes = {}
    for test in set(GROUPS[group]) - claims:
        why = f"chiral features {', '.join(chiral_features)}" if chiral_features else f"group {pipeline_group}"
        notes[test] = f"not claimed by the pipeline: {why}"
    effective = next(g for g, ts in GROUPS.items() if set(ts) == claims)
    with _default_dtype(dtype):
        report = _check(model, build, dtype, seed, effective, claims, notes, tests, tolerance, name, n_approx)
    report.model_group = group
    return report


def _validate(model, group, tests) -> str:
    group = group or getattr(model, "symmetry", "none")
    if group not in GROUPS:
        raise ConfigError(f"unknown symmetry group {group!r}; choose from {sorted(GROUPS)}")
    unknown = set(tests) - set(TESTS)
    if unknown:
        raise ConfigError(f"unknown symmetry tests {sorted(unknown)}; choose from {TESTS}")
    return group


@contextlib.contextmanager
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _where(err: Tensor, batch) -> str:
    """Name of the graph holding the largest error (per-node or per-graph outputs), else ''."""
    if err.dim() == 0 or err.numel() == 0:
        return ""
    per_row = err.reshape(err.shape[0], -1).max(dim=1).values
    names = getattr(batch, "name", None)
    if per_row.shape[0] == batch.num_nodes:
        g = int(batch.batch[int(per_row.argmax())])
    elif per_row.shape[0] == batch.num_graphs:
        g = int(per_row.argmax())
    else:
        return ""
    if isinstance(names, (list, tuple)) and g < len(names):
        return f"{names[g]} (graph {g})"
    return f"graph {g}"


def _approximate_error(model, make, ref, gen, test, irreps_t, dtype, degen, batch, n: int) -> dict:
    """The measured error of an approximately claimed ``test`` (rotation / reflection) over ``n`` random
    transformations Q: per Q, ``mean |f(Qx) - Q f(x)| / mean |f(x)|`` and ``max |f(Qx) - Q f(x)| / max |f(x)|``
    over every output entry of the non-degenerate graphs; returned as their mean and max over the Qs (the seed
    study's "rotation invariance error", Duval et al. 2024, measured in the checked precision)."""
    rel_mean, rel_max = [], []
    for _ in range(n):
        Q = random_rotation(gen, torch.float64) if test == "rotation" else reflection(gen, torch.float64)
        got = _outputs(model(make(Q, None)))
        num = den = 0.0
        mx = sc = 0.0
        for k, r in ref.items():
            e = _expected(k, r, Q.to(dtype), None, irreps_t)
            diff = (got[k] - e).abs()
            if degen is not None and e.shape[:1] == batch.batch.shape:
                keep = ~degen[batch.batch]
                diff, e = diff[keep], e[keep]
            if not e.numel():
                continue
            num += float(diff.sum())
            den += float(e.abs().sum())
            mx, sc = max(mx, float(diff.max())), max(sc, float(e.abs().max()))
        rel_mean.append(num / max(den, 1e-300))
        rel_max.append(mx / max(sc, 1e-300))
    t = torch.tensor(rel_mean, dtype=torch.float64)
    return {"transformations": n, "mean": float(t.mean()), "max": float(max(rel_max)),
            "mean_per_transformation": rel_mean, "max_per_transformation": rel_max}


def _check(model, build, dtype, seed, group, claims, notes, tests, tolerance, name, n_approx=8) -> SymmetryReport:
    claims = set(claims) | {"batching"} | ({"lattice"} if "translation" in claims else set())
    tol = tolerance if tolerance is not None else TOLERANCES.get(dtype, 1e-4)
    model = restore_wigner(copy.deepcopy(model).to(dtype)).eval()

    def make(Q=None, t=None):
        b = build(Q, t)
        if not isinstance(b, Batch):
            b = Batch.from_data_list([b])
        return cast_batch(b, dtype)

    batch = make()
    irreps_t = getattr(model, "irreps_t", None)
    # frame averaging and canonicalisation claim their group only where their frames are defined: graphs with
    # degenerate frames (symmetric, planar, linear shapes) are reported separately, as not claimed (the
    # wrappers warn about them at run time)
    # nested wrappers (a canonicaliser around a frame-averaged backbone) each have their own frames: a graph is
    # set apart when any of them is ill-defined (eigen-gaps and vanishing vectors are rotation invariant, so
    # asking an inner wrapper on the original coordinates gives the answer it meets on canonical ones)
    framed = [m for m in model.modules() if hasattr(m, "degenerate_graphs")]
    degen = None
    if framed and batch.pos is not None:
        d = framed[0].degenerate_graphs(batch)
        for m in framed[1:]:
            d = d | m.degenerate_graphs(batch)
        degen = d if bool(d.any()) else None
    approx = getattr(model, "approximate", None)
    gen = torch.Generator().manual_seed(seed)
    report = SymmetryReport(name or type(model).__name__, group, str(dtype).replace("torch.", ""), notes=notes)
    with torch.no_grad():
        ref = _outputs(model(batch))

        def add(test, got: dict[str, Tensor], expect: dict[str, Tensor], where_batch):
            for k, e in expect.items():
                if k not in got:
                    raise ConfigError(f"check_symmetry: output {k!r} missing after {test}")
                if got[k].shape != e.shape:
                    raise ConfigError(f"check_symmetry: output {k!r} has shape {tuple(got[k].shape)} after {test}, "
                                      f"expected {tuple(e.shape)} (did the transformed input build another graph?)")
                diff = (got[k] - e).abs()
                rows = degen[where_batch.batch] if degen is not None and e.shape[:1] == where_batch.batch.shape \
                    and test in ("rotation", "reflection", "translation", "permutation", "batching", "lattice") else None
                if rows is not None:
                    for name, sel, claimed in ((test, ~rows, test in claims),
                                               (f"{test} (degenerate frames)", rows, False)):
                        de, ee = diff[sel], e[sel]
                        report.results.append(SymmetryResult(
                            name, k, float(de.max()) if de.numel() else 0.0, float(ee.abs().max()) if ee.numel() else 0.0,
                            tol, claimed, _where(diff * sel.reshape(-1, *[1] * (diff.dim() - 1)), where_batch)))
                    report.notes[f"{test} (degenerate frames)"] = (
                        "frame averaging / canonicalisation is not claimed on graphs whose frame is ill-defined "
                        "(degenerate covariance eigenvalues or vanishing equivariant vectors; FrameDegeneracyWarning)")
                    continue
                err = float(diff.max()) if e.numel() else 0.0
                report.results.append(SymmetryResult(test, k, err, float(e.abs().max()) if e.numel() else 0.0,
                                                     tol, test in claims, _where(diff, where_batch)))

        for test in tests:
            if test in ("rotation", "reflection", "translation"):
                Q = (random_rotation(gen, torch.float64) if test == "rotation" else reflection(gen, torch.float64)
                     if test == "reflection" else torch.eye(3, dtype=torch.float64))
                t = torch.randn(3, generator=gen, dtype=torch.float64) * 10 if test == "translation" else None
                got = _outputs(model(make(Q, t)))
                Qd, td = Q.to(dtype), None if t is None else t.to(dtype)
                add(test, got, {k: _expected(k, r, Qd, td, irreps_t) for k, r in ref.items()}, batch)
                if approx is not None and test in GROUPS[approx] and test not in claims:
                    report.approximate[test] = _approximate_error(model, make, ref, gen, test, irreps_t, dtype,
                                                                  degen, batch, n_approx)
                    report.notes[test] = (f"approximate: {type(model).__name__} claims {approx} only approximately; "
                                          f"error measured over {n_approx} random transformations")
            elif test == "permutation":
                perm = within_graph_permutation(batch.batch, gen)
                got = _outputs(model(permute_batch(batch, perm)))
                add(test, got, {k: r[perm] for k, r in ref.items()}, batch)
            elif test == "lattice":
                if getattr(batch, "cell", None) is None:
                    continue
                moved, offset = lattice_translate(batch, gen)
                got = _outputs(model(moved))
                add(test, got, {k: (r + offset.to(r.dtype) if k == "pos" else r) for k, r in ref.items()}, batch)
            elif test == "batching":
                if batch.num_graphs < 2:
                    continue
                parts = [_outputs(model(Batch.from_data_list([d]))) for d in batch.to_data_list()]
                add(test, {k: torch.cat([p[k] for p in parts]) for k in ref}, ref, batch)
    return report

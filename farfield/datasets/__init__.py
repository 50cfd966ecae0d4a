"""Datasets farfield ships or reads, as lists of PyG ``Data`` in the featuriser's field layout.

Every dataset is a loader ``f(path=None, *, hydrogens=False, target=None, **options) -> list[Data]`` (or a
lazily loading sequence of ``Data``) registered by name in :data:`DATASETS`. A loader may carry attributes:

* ``info`` (dict): ``provides_edges`` (the graphs bring their own edges, e.g. bonds), ``task`` (the task the
  dataset defines, e.g. ``{"kind": "multilabel", "num_outputs": 538}``), ...
* ``units`` (dict target -> unit, for reports) and ``default_target`` (the target returned when none is named).

Built in:

* ``peptide_electrostatics`` - the built-in benchmark that isolates long-range geometry: charge-balanced
  peptides, several conformers per sequence, exact united-atom electrostatic targets and reference-baseline
  features (:mod:`farfield.datasets.peptide_electrostatics`).
* ``peptides_func``, ``peptides_struct`` - LRGB Peptides (Dwivedi et al. 2022), 2D graphs with bond edges
  (:mod:`farfield.datasets.lrgb`).
* ``qm9``, ``smp`` - QM9 (Ramakrishnan et al. 2014) from raw XYZ / ASE db, and ATOM3D SMP LMDBs
  (:mod:`farfield.datasets.qm9`).
* ``ec``, ``go-mf``, ``go-bp``, ``go-cc`` - DeepFRI protein function sets (Gligorijevic et al. 2021)
  (:mod:`farfield.datasets.deepfri`).
* ``psr``, ``msp``, ``lba``, ``rsr`` - ATOM3D protein tasks (Townshend et al. 2021)
  (:mod:`farfield.datasets.atom3d_tasks`).
* ``folder`` - your own structures plus a CSV of labels (:mod:`farfield.datasets.custom`).
* ``corpus`` - an unlabelled corpus for pretraining: a folder of structure files or a Foldcomp database,
  featurised once into a lazily read sharded store (:mod:`farfield.datasets.corpus`).

Modules other than the first two are imported on first use (:class:`LazyLoader`), so that importing
farfield stays fast and a missing optional dependency only fails the dataset that needs it.

:func:`target_units` gives the unit of a dataset's target, for reports.
"""
from __future__ import annotations

import importlib

# The benchmark's module and its loader share a name; the package keeps the *module* under that name (so that
# ``import farfield.datasets.peptide_electrostatics as P`` gives the module) and registers the loader in DATASETS.
from farfield.datasets import peptide_electrostatics
from farfield.datasets.lrgb import peptides_func, peptides_struct

__all__ = ["DATASETS", "DEFAULT_TARGETS", "UNITS", "LazyLoader", "dataset_info", "peptide_electrostatics",
           "peptides_func", "peptides_struct", "target_units"]


class LazyLoader:
    """A registry entry ``module:function`` imported on first call or attribute access."""

    def __init__(self, module: str, function: str):
        self.module, self.function = module, function
        self._fn = None

    def resolve(self):
        if self._fn is None:
            self._fn = getattr(importlib.import_module(self.module), self.function)
        return self._fn

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("_") or name in ("module", "function"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        return f"LazyLoader({self.module}:{self.function})"


#: name -> loader ``f(path=None, **options) -> list[Data]``
DATASETS = {
    "peptide_electrostatics": peptide_electrostatics.peptide_electrostatics,
    "peptides_func": peptides_func,
    "peptides_struct": peptides_struct,
    "qm9": LazyLoader("farfield.datasets.qm9", "qm9"),
    "smp": LazyLoader("farfield.datasets.qm9", "smp"),
    "ec": LazyLoader("farfield.datasets.deepfri", "ec"),
    "go-mf": LazyLoader("farfield.datasets.deepfri", "go_mf"),
    "go-bp": LazyLoader("farfield.datasets.deepfri", "go_bp"),
    "go-cc": LazyLoader("farfield.datasets.deepfri", "go_cc"),
    "psr": LazyLoader("farfield.datasets.atom3d_tasks", "psr"),
    "msp": LazyLoader("farfield.datasets.atom3d_tasks", "msp"),
    "lba": LazyLoader("farfield.datasets.atom3d_tasks", "lba"),
    "rsr": LazyLoader("farfield.datasets.atom3d_tasks", "rsr"),
    "folder": LazyLoader("farfield.datasets.custom", "folder"),
    "corpus": LazyLoader("farfield.datasets.corpus", "corpus"),
}

#: dataset -> target -> unit (datasets registered lazily carry their own ``units`` attribute)
UNITS = {
    "peptide_electrostatics": {"energy": "kcal/mol", "energy_near": "kcal/mol", "energy_far": "kcal/mol",
                               "potential": "kcal/(mol e)", "potential_far": "kcal/(mol e)"},
}


#: dataset -> the target its loader returns when none is named
DEFAULT_TARGETS = {"peptide_electrostatics": "energy"}


def dataset_info(dataset: str) -> dict:
    """The ``info`` dict of a registered loader ({} when it has none)."""
    try:
        return dict(getattr(DATASETS[dataset], "info", {}) or {})
    except (ImportError, AttributeError):
        return {}


def target_units(dataset: str, target: str | None = None) -> str:
    """The unit of ``target`` (default: the dataset's default target) of ``dataset`` ('' when unknown)."""
    units, default = UNITS.get(dataset), DEFAULT_TARGETS.get(dataset)
    if units is None and dataset in DATASETS:
        try:
            units = getattr(DATASETS[dataset], "units", None)
            default = getattr(DATASETS[dataset], "default_target", None)
        except (ImportError, AttributeError):
            units = None
    return (units or {}).get(target or default, "")

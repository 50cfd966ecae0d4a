"""Datasets farfield ships or reads, as lists of PyG ``Data`` in the featuriser's field layout.

* :func:`peptide_electrostatics` - the built-in benchmark that isolates long-range geometry: charge-balanced
  peptides, several conformers per sequence, exact united-atom electrostatic targets and reference-baseline
  features (:mod:`farfield.datasets.peptide_electrostatics`).
* :func:`peptides_func`, :func:`peptides_struct` - LRGB Peptides (Dwivedi et al. 2022), 2D graphs with bond
  edges (:mod:`farfield.datasets.lrgb`).

:func:`target_units` gives the unit of a dataset's target, for reports.
"""
from __future__ import annotations

from farfield.datasets.lrgb import peptides_func, peptides_struct
from farfield.datasets.peptide_electrostatics import peptide_electrostatics

__all__ = ["DATASETS", "DEFAULT_TARGETS", "UNITS", "peptide_electrostatics", "peptides_func", "peptides_struct", "target_units"]

#: name -> loader ``f(path=None, **options) -> list[Data]``
DATASETS = {"peptide_electrostatics": peptide_electrostatics, "peptides_func": peptides_func,
            "peptides_struct": peptides_struct}

#: dataset -> target -> unit
UNITS = {
    "peptide_electrostatics": {"energy": "kcal/mol", "energy_near": "kcal/mol", "energy_far": "kcal/mol",
                               "potential": "kcal/(mol e)", "potential_far": "kcal/(mol e)"},
}


#: dataset -> the target its loader returns when none is named
DEFAULT_TARGETS = {"peptide_electrostatics": "energy"}


def target_units(dataset: str, target: str | None = None) -> str:
    """The unit of ``target`` (default: the dataset's default target) of ``dataset`` ('' when unknown)."""
    return UNITS.get(dataset, {}).get(target or DEFAULT_TARGETS.get(dataset), "")

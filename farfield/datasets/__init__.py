"""Datasets farfield ships or reads, as lists of PyG ``Data`` in the featuriser's field layout.

* :func:`peptide_electrostatics` - the built-in benchmark that isolates long-range geometry: charge-balanced
  peptides, several conformers per sequence, exact united-atom electrostatic targets and reference-baseline
  features (:mod:`farfield.datasets.peptide_electrostatics`).
* :func:`peptide_coulomb` - the earlier long-range benchmark (:mod:`farfield.datasets.peptide_coulomb`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from farfield.data import fields as F
from farfield.datasets.peptide_coulomb import DEFAULT_PATH, card, load
from farfield.datasets.peptide_electrostatics import peptide_electrostatics

__all__ = ["DATASETS", "PEPTIDE_ELEMENTS", "peptide_coulomb", "peptide_electrostatics", "card", "load"]

PEPTIDE_ELEMENTS = (1, 6, 7, 8, 16)   # H C N O S


def peptide_coulomb(path: Path | str | None = None, hydrogens: bool = False, target: str = "energy",
                    dtype: torch.dtype = torch.float32) -> list[Data]:
    """The peptide Coulomb benchmark as graphs without edges (build them with an edge spec).

    Node scalars ``x_s`` [n, 6]: element one-hot (H, C, N, O, S) and the partial charge. Without hydrogens
    (default) nodes are heavy atoms carrying the summed charge of their hydrogens (united atoms), so the
    total charge and the target are unchanged. ``y`` [1, 1] = ``target`` (``energy`` or ``energy_far``),
    kcal/mol. ``graph_key`` is the peptide's index."""
    d = load(path or DEFAULT_PATH)
    if target not in ("energy", "energy_far"):
        from farfield.errors import ConfigError
        raise ConfigError(f"peptide_coulomb: target must be 'energy' or 'energy_far', got {target!r}")
    off, out = d["offsets"], []
    for i in range(len(off) - 1):
        a, b = int(off[i]), int(off[i + 1])
        z, pos, q = d["numbers"][a:b], d["pos"][a:b], d["charge"][a:b].astype(np.float64)
        if not hydrogens:
            heavy = np.flatnonzero(z > 1)
            remap = -np.ones(b - a, dtype=np.int64)
            remap[heavy] = np.arange(len(heavy))
            q = np.bincount(remap[d["heavy_of"][a:b]], weights=q, minlength=len(heavy))
            z, pos = z[heavy], pos[heavy]
        onehot = (z[:, None] == np.array(PEPTIDE_ELEMENTS)[None]).astype(np.float64)
        x = np.concatenate([onehot, q[:, None]], 1)
        data = Data(pos=torch.tensor(pos, dtype=dtype), y=torch.tensor([[float(d[target][i])]], dtype=dtype))
        data[F.X_S] = torch.tensor(x, dtype=dtype)
        data[F.GRAPH_KEY] = torch.tensor([i])
        data[F.NAME] = f"peptide_{i}:{d['sequence'][i]}"
        out.append(data)
    return out


#: name -> loader ``f(path=None, **options) -> list[Data]``
DATASETS = {"peptide_coulomb": peptide_coulomb, "peptide_electrostatics": peptide_electrostatics}

# LRGB Peptides-func / Peptides-struct (Dwivedi et al. 2022), 2D graphs with their own bond edges
from farfield.datasets.lrgb import peptides_func, peptides_struct  # noqa: E402

DATASETS.update({"peptides_func": peptides_func, "peptides_struct": peptides_struct})

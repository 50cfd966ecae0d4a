"""Atom-level features: element one-hot over a configurable vocabulary with an 'other' class."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from farfield.errors import ConfigError

__all__ = ["ElementVocabulary", "ATOM3D_ELEMENTS", "ELEMENT_PRESETS"]

#: ATOM3D's 9-class element set (H C N O F S Cl P + other), as used by GVP-GNN's ATOM3D models
ATOM3D_ELEMENTS = ("H", "C", "N", "O", "F", "S", "Cl", "P")
#: QM9's elements
QM9_ELEMENTS = ("H", "C", "N", "O", "F")
#: common organic and biological elements
ORGANIC_ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I", "Se", "B", "Si")
ELEMENT_PRESETS = {"atom3d": ATOM3D_ELEMENTS, "qm9": QM9_ELEMENTS, "organic": ORGANIC_ELEMENTS}


@dataclass(frozen=True)
class ElementVocabulary:
    """Maps element symbols to indices ``0..len(symbols)-1``, and everything else to the 'other' class
    ``len(symbols)`` (when ``other`` is True; otherwise unknown elements raise :class:`ConfigError`).

    ``ElementVocabulary.preset('atom3d')`` gives ATOM3D's 9 classes. Symbols are matched
    case-insensitively ('CL' == 'Cl').
    """

    symbols: tuple[str, ...] = ATOM3D_ELEMENTS
    other: bool = True

    @classmethod
    def preset(cls, name: str) -> "ElementVocabulary":
        if name not in ELEMENT_PRESETS:
            raise ConfigError(f"unknown element vocabulary {name!r}; presets: {sorted(ELEMENT_PRESETS)}")
        return cls(ELEMENT_PRESETS[name])

    @property
    def size(self) -> int:
        return len(self.symbols) + int(self.other)

    def index(self, elements: Sequence[str] | np.ndarray) -> Tensor:
        """[N] long: class index of each element."""
        lookup = {s.upper(): i for i, s in enumerate(self.symbols)}
        fallback = len(self.symbols)
        out = np.empty(len(elements), dtype=np.int64)
        for k, e in enumerate(elements):
            i = lookup.get(str(e).upper(), fallback)
            if i == fallback and not self.other:
                raise ConfigError(f"element {e!r} is not in the vocabulary {self.symbols} (and other=False)")
            out[k] = i
        return torch.from_numpy(out)

    def one_hot(self, elements: Sequence[str] | np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
        """[N, size] one-hot encoding."""
        return torch.nn.functional.one_hot(self.index(elements), self.size).to(dtype)

"""Featurisation pipeline: a :class:`Structure` -> a PyG ``Data`` (field names in
:mod:`farfield.data.fields`), driven by a plain, typed, serialisable :class:`FeaturiserConfig` whose
:meth:`~FeaturiserConfig.key` will key on-disk caches.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch_geometric.data import Data

from farfield._config import check_keys
from farfield.data import fields as F
from farfield.errors import ConfigError
from farfield.features.atoms import ELEMENT_PRESETS, ElementVocabulary
from farfield.features.residues import RESIDUE_FEATURE_PRESETS, residue_node_features, sequence_offset_encoding
from farfield.graphs.compose import GraphBuilder, parse_edge_spec
from farfield.io.readers import read_structure
from farfield.io.residues import ResidueView
from farfield.io.structure import ReadOptions, Structure

__all__ = ["FeaturiserConfig", "Featuriser", "LEVELS"]

LEVELS = ("atom", "residue")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class FeaturiserConfig:
    """How a structure becomes a graph.

    Attributes:
        level: ``'atom'`` (nodes = atoms) or ``'residue'`` (nodes = amino acids at CA).
        edges: edge spec (:func:`farfield.graphs.parse_edge_spec`), e.g. ``'radius:4.5,max=32'`` at atom
            level or ``'knn:30'`` at residue level.
        elements: element vocabulary: a preset name (``atom3d``, ``qm9``, ``organic``) or a list of
            symbols; unknown elements go to an 'other' class.
        read: atom selection (:class:`ReadOptions`); by default waters are dropped.
        residue_features: residue node-feature preset (:data:`farfield.features.residues.RESIDUE_FEATURE_PRESETS`):
            ``'gvp'`` (default; GVP-GNN's features, chiral: the pipeline is SE(3)-invariant only) or
            ``'parity_even'`` (cos of the dihedrals and polar vectors only: E(3)).
        seq_offset_dim: size of the sinusoidal sequence-offset edge encoding at residue level (0 = none).
        self_loops: add i -> i edges.
        dtype: ``'float32'`` or ``'float64'`` for floating-point fields.
    """

    level: Literal["atom", "residue"] = "atom"
    edges: str = "radius:4.5"
    elements: str | tuple[str, ...] = "atom3d"
    read: ReadOptions = field(default_factory=lambda: ReadOptions(waters=False))
    residue_features: str = "gvp"
    seq_offset_dim: int = 16
    self_loops: bool = False
    dtype: Literal["float32", "float64"] = "float32"

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ConfigError(f"level must be one of {LEVELS}, got {self.level!r}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}")
        if isinstance(self.elements, str) and self.elements not in ELEMENT_PRESETS:
            raise ConfigError(f"elements must be one of the presets {sorted(ELEMENT_PRESETS)} or a list of "
                              f"symbols, got {self.elements!r}")
        if not isinstance(self.elements, str):
            object.__setattr__(self, "elements", tuple(self.elements))
        if self.residue_features not in RESIDUE_FEATURE_PRESETS:
            raise ConfigError(f"residue_features must be one of {sorted(RESIDUE_FEATURE_PRESETS)}, got "
                              f"{self.residue_features!r}")
        if self.seq_offset_dim < 0 or self.seq_offset_dim % 2:
            raise ConfigError(f"seq_offset_dim must be an even number >= 0, got {self.seq_offset_dim}")
        if isinstance(self.read, dict):
            object.__setattr__(self, "read", ReadOptions.from_dict(self.read))
        parse_edge_spec(self.edges)  # validate early, with the spec's own error message

    def to_dict(self) -> dict:
        d = asdict(self)
        d["read"] = self.read.to_dict()
        if not isinstance(self.elements, str):
            d["elements"] = list(self.elements)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeaturiserConfig":
        check_keys(cls, d, "featuriser")
        d = dict(d)
        if isinstance(d.get("elements"), list):
            d["elements"] = tuple(d["elements"])
        return cls(**d)

    def key(self) -> str:
        """Stable short hash of the configuration (for caches)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


class Featuriser:
    """Turns structures into graphs according to a :class:`FeaturiserConfig`.

    ``Featuriser(config)(structure_or_path)`` returns a ``Data`` with the fields of
    :mod:`farfield.data.fields`. Atom level: ``x_s`` = element one-hot. Residue level (preset ``gvp``):
    ``x_s`` = [residue one-hot (21) | cos, sin of phi, psi, omega (6)], ``x_v`` = [forward, backward, side
    chain]; preset ``parity_even``: ``x_s`` = [one-hot (21) | cos phi, psi, omega (3)], ``x_v`` = [forward,
    backward, N-CA-C bisector]; ``edge_s`` = sequence-offset encoding (zero between chains).

    :attr:`symmetry` is the group the featurisation itself respects (``'E(3)'``, or ``'SE(3)'`` when it
    produces chiral features, listed in :attr:`chiral_features`): a model's claim holds end to end only
    within it.
    """

    def __init__(self, config: FeaturiserConfig | None = None, graph: GraphBuilder | None = None):
        self.config = config or FeaturiserConfig()
        self.graph = graph or parse_edge_spec(self.config.edges, self_loops=self.config.self_loops)
        el = self.config.elements
        self.vocab = ElementVocabulary.preset(el) if isinstance(el, str) else ElementVocabulary(tuple(el))
        self.dtype = _DTYPES[self.config.dtype]

    @property
    def chiral_features(self) -> tuple[str, ...]:
        """Features that a mirror image changes other than as the mirror prescribes (empty: none)."""
        if self.config.level == "atom":
            return ()
        return RESIDUE_FEATURE_PRESETS[self.config.residue_features].chiral_features

    @property
    def symmetry(self) -> str:
        """``'E(3)'`` when every feature is parity-even, ``'SE(3)'`` otherwise (see :attr:`chiral_features`)."""
        return "SE(3)" if self.chiral_features else "E(3)"

    def __call__(self, item: Structure | str | Path) -> Data:
        s = item if isinstance(item, Structure) else read_structure(item, self.config.read)
        data = self.atom_graph(s) if self.config.level == "atom" else self.residue_graph(s)
        e = self.graph(data.pos, chain=data[F.CHAIN_INDEX])
        data.edge_index, data.edge_type = e.edge_index, e.edge_type
        data[F.EDGE_TYPES] = "+".join(e.type_names)
        if self.config.level == "residue" and self.config.seq_offset_dim:
            src, tgt = e.edge_index
            data[F.EDGE_S] = sequence_offset_encoding(
                data[F.SEQ_INDEX][src] - data[F.SEQ_INDEX][tgt], self.config.seq_offset_dim,
                data[F.CHAIN_INDEX][src] == data[F.CHAIN_INDEX][tgt], dtype=self.dtype)
        data[F.NAME] = s.name
        return data

    def atom_graph(self, s: Structure) -> Data:
        chain_labels = {c: i for i, c in enumerate(s.chains)}
        return Data(
            pos=torch.from_numpy(s.coords).to(self.dtype),
            atom_type=self.vocab.index(s.element),
            x_s=self.vocab.one_hot(s.element, self.dtype),
            chain_index=torch.tensor([chain_labels[c] for c in s.chain_id], dtype=torch.long),
            residue_index=torch.from_numpy(s.residue_index()),
            num_nodes=len(s),
        )

    def residue_graph(self, s: Structure) -> Data:
        rv = ResidueView.from_structure(s)
        bb = torch.from_numpy(rv.backbone)                       # float64 [L, 4, 3], NaN where missing
        seg = torch.from_numpy(rv.segment_index)
        chain = torch.from_numpy(rv.chain_index)
        x_s, x_v = residue_node_features(torch.from_numpy(rv.res_type), bb, seg, self.config.residue_features)
        # position along each chain: 0, 1, 2, ... restarting at every chain
        starts = np.r_[0, np.flatnonzero(rv.chain_index[1:] != rv.chain_index[:-1]) + 1]
        seq_index = np.arange(len(rv)) - np.repeat(starts, np.diff(np.r_[starts, len(rv)]))
        mask = torch.from_numpy(rv.backbone_mask)
        filled = torch.where(mask.unsqueeze(-1), bb, bb[:, 1:2].expand_as(bb))
        return Data(
            pos=bb[:, 1].to(self.dtype), res_type=torch.from_numpy(rv.res_type), x_s=x_s.to(self.dtype),
            x_v=x_v.to(self.dtype), chain_index=chain, seq_index=torch.from_numpy(seq_index),
            backbone=filled.to(self.dtype), backbone_mask=mask, num_nodes=len(rv),
        )

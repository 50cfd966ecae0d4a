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
from farfield.errors import ConfigError, InputError
from farfield.features.atoms import ELEMENT_PRESETS, ElementVocabulary
from farfield.features.residues import (PRESETS, chi_atom_coords, residue_node_features,
                                        sequence_offset_encoding)
from farfield.graphs.compose import GraphBuilder, parse_edge_spec
from farfield.io.readers import read_structure
from farfield.io.residues import ResidueView
from farfield.io.structure import ReadOptions, Structure

__all__ = ["FeaturiserConfig", "Featuriser", "LEVELS", "FEATURES_VERSION"]

#: the version of what the featuriser computes from a structure, part of run keys of datasets that featurise
#: structures on the fly (``info["version"]``); bump when the graphs change. 2: residue chain breaks by the
#: peptide bond (C(i-1)-N(i) > 2.5 A), not CA-CA > 4.2 A.
FEATURES_VERSION = 2

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
        residue_features: residue node-feature preset, a name in :data:`farfield.features.residues.PRESETS`:
            ``'gvp'`` (default; GVP-GNN's features, chiral: the pipeline is SE(3)-invariant only),
            ``'parity_even'`` (cos of the dihedrals and polar vectors only: E(3)), or the ProteinWorkshop-style
            schemes ``'ca'``, ``'ca_seq'`` (E(3)), ``'ca_angles'``, ``'ca_bb'``, ``'ca_sc'`` (SE(3)); widths and
            the parity of every feature in ``str(PRESETS[name])``. Used at residue level only.
        preset: the same setting under its new name (``FeaturiserConfig(level="residue", preset="ca_sc")``);
            when given it wins over ``residue_features``, which must then be left at its default or agree.
            :attr:`residue_preset` is the preset in effect.
        seq_offset_dim: size of the sinusoidal sequence-offset edge encoding at residue level (0 = none).
        self_loops: add i -> i edges.
        dtype: ``'float32'`` or ``'float64'`` for floating-point fields.
    """

    level: Literal["atom", "residue"] = "atom"
    edges: str = "radius:4.5"
    elements: str | tuple[str, ...] = "atom3d"
    read: ReadOptions = field(default_factory=lambda: ReadOptions(waters=False))
    residue_features: str = "gvp"
    preset: str | None = None
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
        if self.residue_features not in PRESETS:
            raise ConfigError(f"residue_features must be one of {sorted(PRESETS)}, got {self.residue_features!r}")
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ConfigError(f"preset must be one of the residue feature presets {sorted(PRESETS)}, got "
                                  f"{self.preset!r}")
            if self.residue_features not in ("gvp", self.preset):
                raise ConfigError(f"preset={self.preset!r} and residue_features={self.residue_features!r} disagree; "
                                  "give only preset")
        if self.seq_offset_dim < 0 or self.seq_offset_dim % 2:
            raise ConfigError(f"seq_offset_dim must be an even number >= 0, got {self.seq_offset_dim}")
        if isinstance(self.read, dict):
            object.__setattr__(self, "read", ReadOptions.from_dict(self.read))
        parse_edge_spec(self.edges)  # validate early, with the spec's own error message

    @property
    def residue_preset(self) -> str:
        """The residue feature preset in effect: ``preset`` when given, else ``residue_features``."""
        return self.preset if self.preset is not None else self.residue_features

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["preset"] is None:     # configurations written before presets existed keep their key
            del d["preset"]
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
    backward, N-CA-C bisector]; the ``ca*`` presets as :data:`farfield.features.residues.PRESETS` describes
    (``ca``, ``ca_seq``, ``ca_angles`` have no ``x_v``); ``edge_s`` = sequence-offset encoding (zero between
    chains).

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
        return PRESETS[self.config.residue_preset].chiral_features

    @property
    def symmetry(self) -> str:
        """``'E(3)'`` when every feature is parity-even, ``'SE(3)'`` otherwise (see :attr:`chiral_features`)."""
        return "SE(3)" if self.chiral_features else "E(3)"

    def __call__(self, item: Structure | str | Path) -> Data:
        s = item if isinstance(item, Structure) else read_structure(item, self.config.read)
        data = self.atom_graph(s) if self.config.level == "atom" else self.residue_graph(s)
        if getattr(s, "cell", None) is not None:
            return self._periodic(s, data)
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

    def _periodic(self, s: Structure, data: Data) -> Data:
        """A periodic structure (``s.cell``): every image within the radius of the edge spec (one plain ``radius``
        builder, :meth:`farfield.graphs.GraphBuilder.apply`), lattice shifts in ``cell_shift``, the cell in
        ``cell`` [1, 3, 3]; atom level only."""
        if self.config.level != "atom":
            raise InputError(s.source, f"is periodic (has a cell); periodic graphs are built at atom level, not "
                                       f"level={self.config.level!r}")
        data[F.CELL] = torch.from_numpy(s.cell).to(self.dtype).reshape(1, 3, 3)
        data[F.NAME] = s.name
        try:
            self.graph.apply(data)
        except InputError as e:
            raise InputError(s.source, f"is periodic (has a cell); periodic graphs are built at atom level with a "
                                       f"single plain radius builder (e.g. edges='radius:5'), not "
                                       f"edges={self.config.edges!r}") from e
        data[F.EDGE_TYPES] = self.graph.builders[0].spec()
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
        # position along each chain: 0, 1, 2, ... restarting at every chain
        starts = np.r_[0, np.flatnonzero(rv.chain_index[1:] != rv.chain_index[:-1]) + 1]
        seq_index = torch.from_numpy(np.arange(len(rv)) - np.repeat(starts, np.diff(np.r_[starts, len(rv)])))
        preset = PRESETS[self.config.residue_preset]
        sidechain = torch.from_numpy(chi_atom_coords(s, rv)) if preset.needs_sidechain else None
        x_s, x_v = residue_node_features(torch.from_numpy(rv.res_type), bb, seg, preset.name,
                                         seq_index=seq_index, sidechain=sidechain)
        mask = torch.from_numpy(rv.backbone_mask)
        filled = torch.where(mask.unsqueeze(-1), bb, bb[:, 1:2].expand_as(bb))
        data = Data(
            pos=bb[:, 1].to(self.dtype), res_type=torch.from_numpy(rv.res_type), x_s=x_s.to(self.dtype),
            chain_index=chain, seq_index=seq_index, backbone=filled.to(self.dtype), backbone_mask=mask,
            num_nodes=len(rv),
        )
        if x_v.shape[1]:                 # presets without vector features leave x_v out, as at atom level
            data[F.X_V] = x_v.to(self.dtype)
        return data

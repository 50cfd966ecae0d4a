"""Residue-level features (GVP-GNN, Jing et al. 2021; ProteinWorkshop, Jamasb et al. 2024), computed on tensors
so that they run on CPU or GPU. Undefined quantities (at chain ends, across chain breaks, with missing atoms)
are **zero**, never NaN, and never computed across a segment boundary (gvp-pytorch computes dihedrals and
orientations across chain breaks; farfield does not).

Shapes: ``backbone`` [L, 4, 3] (N, CA, C, O; NaN where missing), ``segment`` [L] long (contiguous
segments, see :class:`farfield.io.ResidueView`), ``seq_index`` [L] long (position along the chain),
``sidechain`` [L, 4, 4, 3] (the four atoms of chi1..chi4 per residue, :func:`chi_atom_coords`; NaN where
absent).

Parity. Under an improper rotation ``x -> x Q^T`` (det Q = -1, a mirror image) a feature is

* an *even scalar* if it does not change (residue type, cos of a dihedral, bond angles, sequence position);
* an *odd scalar* (pseudo-scalar) if it changes sign: sin of a dihedral, since mirroring negates every
  dihedral angle;
* a *polar vector* if it becomes ``v Q^T`` like a coordinate difference (CA -> CA directions);
* *chiral* otherwise: GVP-GNN's imputed side-chain direction contains the cross product ``c x n``, which
  becomes ``det(Q) (c x n) Q^T``, so the mirrored vector is not the mirror of the vector.

A model claiming E(3) (rotations *and* reflections) is reflection-invariant end to end only on parity-even
inputs: even scalars and polar vectors. All features are rotation-invariant (scalars) or rotation-equivariant
(vectors), so every preset is at least SE(3). :data:`PRESETS` (alias :data:`RESIDUE_FEATURE_PRESETS`) maps a
name to its :class:`ResidueFeaturePreset`; ``str(PRESETS[name])`` is its description with every feature's
width and parity:

=============== =============================================================== ============================
preset          x_s [L, F] | x_v [L, V, 3]                                      pipeline symmetry
=============== =============================================================== ============================
``gvp``         one-hot (21) + cos/sin phi, psi, omega (6) = 27 |               SE(3): sin terms odd, side
                forward, backward CA (polar) + side chain (chiral), V = 3       chain chiral
                -- GVP-GNN's features (Jing et al. 2021)
``parity_even`` one-hot (21) + cos phi, psi, omega (3) = 24 |                   E(3)
                forward, backward (polar) + minus the N-CA-C bisector (polar)
``ca``          one-hot (21) | none                                             E(3)
``ca_seq``      ``ca`` + sinusoidal position along the chain (16) = 37 | none   E(3)
``ca_angles``   ``ca_seq`` + cos/sin phi, psi, omega (6) + cos/sin kappa (2)    SE(3): sin phi, psi, omega,
                + cos/sin alpha (2) = 47 | none                                 alpha are odd
``ca_bb``       ``ca_angles`` (47) | forward, backward (polar) + side chain     SE(3)
                (chiral), V = 3
``ca_sc``       ``ca_bb`` + cos/sin chi1..chi4 (8) + chi masks (4) = 59 |       SE(3): sin chi odd too
                as ``ca_bb``
=============== =============================================================== ============================

The ``ca*`` presets follow the cumulative featurisation schemes of ProteinWorkshop (Jamasb et al., "Evaluating
representation learning on the protein structure universe", ICLR 2024), with two differences: ProteinWorkshop's
``ca_angles`` has only kappa and alpha and its ``ca_bb`` adds the dihedrals (here ``ca_angles`` has both and
``ca_bb`` adds the orientation vectors of GVP-GNN), and the one-hot has 21 classes (20 amino acids + unknown).
Definitions: kappa_i = angle(CA_{i-1}, CA_i, CA_{i+1}) (virtual bond angle, in [0, pi], so cos and sin are both
even), alpha_i = dihedral(CA_{i-1}, CA_i, CA_{i+1}, CA_{i+2}) (virtual torsion; Kabsch & Sander 1983, DSSP),
chi_k the side-chain torsions of IUPAC-IUB (1970) with the atoms of :data:`CHI_ATOMS` (as AlphaFold,
Jumper et al. 2021); a chi that a residue type does not have, or whose atoms are missing, is 0 with mask 0.
Chi angles of symmetric groups (Asp chi2, Glu chi3, Phe/Tyr chi2, Leu chi2, Val chi1, Arg chi4...) depend on
the file's atom naming, as in ProteinWorkshop.

``parity_even`` and ``ca`` / ``ca_seq`` cannot tell a structure from its mirror image (an alpha helix from a
left-handed one): that is what reflection invariance means; use them when the task should not depend on
handedness, or to test an E(3) claim end to end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["residue_one_hot", "dihedral_features", "orientation_vectors", "sidechain_direction",
           "bisector_direction", "virtual_angle_features", "chi_atom_coords", "sidechain_torsion_features",
           "residue_node_features", "sequence_offset_encoding", "NUM_RESIDUE_TYPES", "CHI_ATOMS", "PRESETS",
           "RESIDUE_FEATURE_PRESETS", "ResidueFeaturePreset", "SEQ_ENCODING_DIM"]

NUM_RESIDUE_TYPES = 21  # 20 amino acids + unknown
SEQ_ENCODING_DIM = 16   # width of the sinusoidal sequence-position encoding of the ``ca_seq`` presets


def residue_one_hot(res_type: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """[L] long -> [L, 21] one-hot (20 amino acids + unknown)."""
    return F.one_hot(res_type.long().clamp(0, NUM_RESIDUE_TYPES - 1), NUM_RESIDUE_TYPES).to(dtype)


def _normalize(v: Tensor, eps: float = 1e-12) -> Tensor:
    """Unit vectors; zero (not NaN) for zero or NaN input."""
    v = torch.nan_to_num(v, nan=0.0)
    n = v.norm(dim=-1, keepdim=True)
    return torch.where(n > eps, v / n.clamp_min(eps), torch.zeros_like(v))


def _dihedral(p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor) -> tuple[Tensor, Tensor]:
    """(angle, valid) of the dihedral p0-p1-p2-p3 ([..., 3] each), IUPAC sign convention."""
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1 = torch.cross(b0, b1, dim=-1)
    n2 = torch.cross(b1, b2, dim=-1)
    # atan2(|b1| b0 . (b1 x b2), (b0 x b1) . (b1 x b2))  (Blondel & Karplus 1996)
    x = (n1 * n2).sum(-1)
    y = b1.norm(dim=-1) * (b0 * n2).sum(-1)
    valid = torch.isfinite(x) & torch.isfinite(y) & ((x.abs() + y.abs()) > 1e-12)
    ang = torch.atan2(torch.nan_to_num(y), torch.nan_to_num(x))
    return ang, valid


def dihedral_features(backbone: Tensor, segment: Tensor) -> Tensor:
    """[L, 6]: (cos, sin) of phi, psi, omega per residue; zeros where undefined.

    phi_i = dihedral(C_{i-1}, N_i, CA_i, C_i); psi_i = dihedral(N_i, CA_i, C_i, N_{i+1});
    omega_i = dihedral(CA_i, C_i, N_{i+1}, CA_{i+1}) (gvp-pytorch's convention for omega's index).
    """
    L = backbone.shape[0]
    N, CA, C = backbone[:, 0], backbone[:, 1], backbone[:, 2]
    out = backbone.new_zeros(L, 6)
    if L < 2:
        return out
    same = segment[1:] == segment[:-1]  # [L-1]: residues i and i+1 are bonded
    phi, vphi = _dihedral(C[:-1], N[1:], CA[1:], C[1:])  # for residues 1..L-1
    psi, vpsi = _dihedral(N[:-1], CA[:-1], C[:-1], N[1:])  # for residues 0..L-2
    omg, vomg = _dihedral(CA[:-1], C[:-1], N[1:], CA[1:])  # for residues 0..L-2
    vphi, vpsi, vomg = vphi & same, vpsi & same, vomg & same
    out[1:, 0] = torch.where(vphi, torch.cos(phi), 0.0)
    out[1:, 1] = torch.where(vphi, torch.sin(phi), 0.0)
    out[:-1, 2] = torch.where(vpsi, torch.cos(psi), 0.0)
    out[:-1, 3] = torch.where(vpsi, torch.sin(psi), 0.0)
    out[:-1, 4] = torch.where(vomg, torch.cos(omg), 0.0)
    out[:-1, 5] = torch.where(vomg, torch.sin(omg), 0.0)
    return out


def orientation_vectors(ca: Tensor, segment: Tensor) -> Tensor:
    """[L, 2, 3]: unit vectors CA_i -> CA_{i+1} (forward) and CA_i -> CA_{i-1} (backward); zero at segment
    ends."""
    L = ca.shape[0]
    out = ca.new_zeros(L, 2, 3)
    if L < 2:
        return out
    same = (segment[1:] == segment[:-1]).unsqueeze(-1)
    fwd = _normalize(ca[1:] - ca[:-1])
    out[:-1, 0] = torch.where(same, fwd, 0.0)
    out[1:, 1] = torch.where(same, -fwd, 0.0)
    return out


def sidechain_direction(backbone: Tensor) -> Tensor:
    """[L, 3]: imputed side-chain direction from N, CA, C (GVP-GNN):
    ``-bisector * sqrt(1/3) - perp * sqrt(2/3)`` with ``c = unit(C - CA)``, ``n = unit(N - CA)``,
    ``bisector = unit(c + n)``, ``perp = unit(c x n)``; zero where N or C is missing."""
    N, CA, C = backbone[:, 0], backbone[:, 1], backbone[:, 2]
    c, n = _normalize(C - CA), _normalize(N - CA)
    bisector = _normalize(c + n)
    perp = _normalize(torch.cross(c, n, dim=-1))
    vec = -bisector * math.sqrt(1 / 3) - perp * math.sqrt(2 / 3)
    ok = torch.isfinite(N).all(-1) & torch.isfinite(C).all(-1) & torch.isfinite(CA).all(-1)
    return torch.where(ok.unsqueeze(-1), vec, torch.zeros_like(vec))


def bisector_direction(backbone: Tensor) -> Tensor:
    """[L, 3]: ``-unit(unit(C - CA) + unit(N - CA))``, the in-plane part of the imputed side-chain
    direction: a polar vector (parity-even), unlike :func:`sidechain_direction`; zero where N, CA or C is
    missing."""
    N, CA, C = backbone[:, 0], backbone[:, 1], backbone[:, 2]
    vec = -_normalize(_normalize(C - CA) + _normalize(N - CA))
    ok = torch.isfinite(N).all(-1) & torch.isfinite(C).all(-1) & torch.isfinite(CA).all(-1)
    return torch.where(ok.unsqueeze(-1), vec, torch.zeros_like(vec))


def virtual_angle_features(ca: Tensor, segment: Tensor) -> Tensor:
    """[L, 4]: cos, sin of the virtual bond angle kappa_i = angle(CA_{i-1}, CA_i, CA_{i+1}) and cos, sin of the
    virtual torsion alpha_i = dihedral(CA_{i-1}, CA_i, CA_{i+1}, CA_{i+2}) (Kabsch & Sander 1983); zeros where
    the residues are not all in one segment (chain ends, chain breaks)."""
    L = ca.shape[0]
    out = ca.new_zeros(L, 4)
    if L >= 3:
        same = (segment[:-2] == segment[1:-1]) & (segment[1:-1] == segment[2:])        # for residues 1..L-2
        u, w = ca[:-2] - ca[1:-1], ca[2:] - ca[1:-1]
        kappa = torch.atan2(torch.cross(u, w, dim=-1).norm(dim=-1), (u * w).sum(-1))
        ok = same & torch.isfinite(kappa) & (u.norm(dim=-1) > 1e-12) & (w.norm(dim=-1) > 1e-12)
        out[1:-1, 0] = torch.where(ok, torch.cos(kappa), 0.0)
        out[1:-1, 1] = torch.where(ok, torch.sin(kappa), 0.0)
    if L >= 4:
        same = (segment[:-3] == segment[1:-2]) & (segment[1:-2] == segment[2:-1]) & (segment[2:-1] == segment[3:])
        alpha, ok = _dihedral(ca[:-3], ca[1:-2], ca[2:-1], ca[3:])                      # for residues 1..L-3
        ok = ok & same
        out[1:-2, 2] = torch.where(ok, torch.cos(alpha), 0.0)
        out[1:-2, 3] = torch.where(ok, torch.sin(alpha), 0.0)
    return out


#: residue name -> the four atoms of each side-chain torsion chi1..chi4 (IUPAC-IUB 1970; AlphaFold's table)
CHI_ATOMS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "ALA": (), "GLY": (),
    "ARG": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "NE"), ("CG", "CD", "NE", "CZ")),
    "ASN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "ASP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "CYS": (("N", "CA", "CB", "SG"),),
    "GLN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "GLU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "HIS": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "ND1")),
    "ILE": (("N", "CA", "CB", "CG1"), ("CA", "CB", "CG1", "CD1")),
    "LEU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "LYS": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "CE"), ("CG", "CD", "CE", "NZ")),
    "MET": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "SD"), ("CB", "CG", "SD", "CE")),
    "PHE": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "PRO": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD")),
    "SER": (("N", "CA", "CB", "OG"),),
    "THR": (("N", "CA", "CB", "OG1"),),
    "TRP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "TYR": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "VAL": (("N", "CA", "CB", "CG1"),),
}
_ATOM_ALIASES = {"MSE": {"SD": "SE"}}   # selenomethionine: Se in place of Met's S


def chi_atom_coords(structure, view) -> np.ndarray:
    """float64 [L, 4, 4, 3]: coordinates of the four atoms of chi1..chi4 of every residue of ``view`` (a
    :class:`farfield.io.ResidueView` of ``structure``, a :class:`farfield.io.Structure`), NaN where the residue
    type has no such torsion (:data:`CHI_ATOMS`; unknown residues have none; modified residues use their parent's
    atoms) or the atom is missing. The first atom of each name in a residue is used (altlocs are resolved when
    the file is read)."""
    from farfield.io.residues import AMINO_ACIDS

    L = len(view)
    out = np.full((L, 4, 4, 3), np.nan)
    atoms: dict[tuple[int, str], int] = {}
    for i in np.flatnonzero(view.atom_residue >= 0)[::-1]:          # reversed: the first occurrence wins
        atoms[(int(view.atom_residue[i]), str(structure.atom_name[i]))] = int(i)
    for r in range(L):
        t = int(view.res_type[r])
        if t >= len(AMINO_ACIDS):
            continue
        alias = _ATOM_ALIASES.get(str(view.res_name[r]), {})
        for k, names in enumerate(CHI_ATOMS[AMINO_ACIDS[t]]):
            for p, name in enumerate(names):
                j = atoms.get((r, alias.get(name, name)))
                if j is not None:
                    out[r, k, p] = structure.coords[j]
    return out


def sidechain_torsion_features(sidechain: Tensor) -> Tensor:
    """[L, 4, 4, 3] chi atoms (:func:`chi_atom_coords`) -> [L, 12]: cos chi1, sin chi1, ..., cos chi4, sin chi4
    (8), then the masks of chi1..chi4 (4; 1 where the torsion exists and all four atoms are present). Absent
    torsions are 0 (cos and sin) with mask 0."""
    chi, ok = _dihedral(sidechain[:, :, 0], sidechain[:, :, 1], sidechain[:, :, 2], sidechain[:, :, 3])   # [L, 4]
    ok = ok & torch.isfinite(sidechain).all(-1).all(-1)
    cs = torch.stack([torch.where(ok, torch.cos(chi), 0.0), torch.where(ok, torch.sin(chi), 0.0)], dim=-1)
    return torch.cat([cs.reshape(len(sidechain), 8), ok.to(sidechain.dtype)], dim=-1)


# --- presets -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Inputs:
    res_type: Tensor
    backbone: Tensor
    segment: Tensor
    seq_index: Tensor | None
    sidechain: Tensor | None


def _need(x: Tensor | None, what: str, block: str) -> Tensor:
    if x is None:
        raise ValueError(f"residue feature block {block!r} needs {what}; pass it to residue_node_features")
    return x


def _dih_parity() -> tuple:
    return tuple((f"{f} {a}", 1, "even" if f == "cos" else "odd") for a in ("phi", "psi", "omega")
                 for f in ("cos", "sin"))


#: scalar blocks: name -> (layout ((feature, width, parity), ...), compute(inputs) -> [L, width])
_SCALAR_BLOCKS: dict[str, tuple[tuple, Callable[[_Inputs], Tensor]]] = {
    "one_hot": ((("residue one-hot", NUM_RESIDUE_TYPES, "even"),),
                lambda i: residue_one_hot(i.res_type, torch.float64)),
    "dihedrals": (_dih_parity(), lambda i: dihedral_features(i.backbone, i.segment)),
    "cos_dihedrals": ((("cos phi", 1, "even"), ("cos psi", 1, "even"), ("cos omega", 1, "even")),
                      lambda i: dihedral_features(i.backbone, i.segment)[:, 0::2]),
    "sequence_position": ((("sequence position encoding", SEQ_ENCODING_DIM, "even"),),
                          lambda i: sequence_offset_encoding(_need(i.seq_index, "seq_index", "sequence_position"),
                                                             SEQ_ENCODING_DIM, dtype=torch.float64)),
    "virtual_angles": ((("cos kappa", 1, "even"), ("sin kappa", 1, "even"), ("cos alpha", 1, "even"),
                        ("sin alpha", 1, "odd")),
                       lambda i: virtual_angle_features(i.backbone[:, 1], i.segment)),
    "sidechain_torsions": (tuple((f"{f} chi{k}", 1, "even" if f == "cos" else "odd") for k in range(1, 5)
                                 for f in ("cos", "sin")) + (("chi1-4 masks", 4, "even"),),
                           lambda i: sidechain_torsion_features(_need(i.sidechain, "sidechain (chi atoms)",
                                                                      "sidechain_torsions"))),
}
#: vector blocks: name -> (layout ((feature, parity), ...), compute(inputs) -> [L, V, 3])
_VECTOR_BLOCKS: dict[str, tuple[tuple, Callable[[_Inputs], Tensor]]] = {
    "orientation": ((("forward CA direction", "polar"), ("backward CA direction", "polar")),
                    lambda i: orientation_vectors(i.backbone[:, 1], i.segment)),
    "sidechain_direction": ((("side-chain direction", "chiral"),),
                            lambda i: sidechain_direction(i.backbone).unsqueeze(1)),
    "bisector": ((("N-CA-C bisector", "polar"),), lambda i: bisector_direction(i.backbone).unsqueeze(1)),
}


@dataclass(frozen=True)
class ResidueFeaturePreset:
    """A residue node-feature layout: the blocks that make ``x_s`` and ``x_v`` in order, and from them the name,
    width and parity (``'even'``, ``'odd'``, ``'polar'`` or ``'chiral'``; see the module docstring) of each
    feature. ``str(preset)`` describes it in words."""

    name: str
    scalar_blocks: tuple[str, ...]
    vector_blocks: tuple[str, ...] = ()
    summary: str = ""

    def __post_init__(self):
        for b in self.scalar_blocks:
            if b not in _SCALAR_BLOCKS:
                raise ValueError(f"unknown scalar block {b!r}; choose from {sorted(_SCALAR_BLOCKS)}")
        for b in self.vector_blocks:
            if b not in _VECTOR_BLOCKS:
                raise ValueError(f"unknown vector block {b!r}; choose from {sorted(_VECTOR_BLOCKS)}")

    @property
    def scalars(self) -> tuple[tuple[str, int, str], ...]:
        """(feature, width, parity) of the ``x_s`` columns in order."""
        return tuple(f for b in self.scalar_blocks for f in _SCALAR_BLOCKS[b][0])

    @property
    def vectors(self) -> tuple[tuple[str, str], ...]:
        """(feature, parity) of the ``x_v`` channels in order."""
        return tuple(f for b in self.vector_blocks for f in _VECTOR_BLOCKS[b][0])

    @property
    def num_scalars(self) -> int:
        return sum(w for _, w, _ in self.scalars)

    @property
    def num_vectors(self) -> int:
        return len(self.vectors)

    @property
    def needs_sequence(self) -> bool:
        return "sequence_position" in self.scalar_blocks

    @property
    def needs_sidechain(self) -> bool:
        return "sidechain_torsions" in self.scalar_blocks

    @property
    def chiral_features(self) -> tuple[str, ...]:
        """Features that change under a mirror image other than as the mirror prescribes."""
        return tuple([f"{n} (x_s)" for n, _, p in self.scalars if p == "odd"]
                     + [f"{n} (x_v)" for n, p in self.vectors if p == "chiral"])

    @property
    def symmetry(self) -> str:
        """The group the features respect: ``'E(3)'`` when all are parity-even, else ``'SE(3)'``."""
        return "SE(3)" if self.chiral_features else "E(3)"

    def __str__(self) -> str:
        s = "; ".join(f"{n} ({w}, {p})" for n, w, p in self.scalars)
        v = "; ".join(f"{n} ({p})" for n, p in self.vectors) or "none"
        return (f"{self.name}: {self.summary} x_s [L, {self.num_scalars}]: {s}. x_v [L, {self.num_vectors}, 3]: "
                f"{v}. Symmetry {self.symmetry}"
                + (f" (chiral: {', '.join(self.chiral_features)})." if self.chiral_features else "."))

    def compute(self, inputs: _Inputs) -> tuple[Tensor, Tensor]:
        L = len(inputs.res_type)
        xs = [_SCALAR_BLOCKS[b][1](inputs).to(torch.float64) for b in self.scalar_blocks]
        xv = [_VECTOR_BLOCKS[b][1](inputs).to(torch.float64) for b in self.vector_blocks]
        x_s = torch.cat(xs, dim=-1) if xs else inputs.backbone.new_zeros(L, 0)
        x_v = torch.cat(xv, dim=1) if xv else inputs.backbone.new_zeros(L, 0, 3)
        return x_s, x_v


_CA_ANGLES = ("one_hot", "sequence_position", "dihedrals", "virtual_angles")
#: name -> :class:`ResidueFeaturePreset` (``str()`` of each describes every feature with its parity)
PRESETS: dict[str, ResidueFeaturePreset] = {
    "gvp": ResidueFeaturePreset("gvp", ("one_hot", "dihedrals"), ("orientation", "sidechain_direction"),
                                "GVP-GNN's residue features (Jing et al. 2021)."),
    "parity_even": ResidueFeaturePreset("parity_even", ("one_hot", "cos_dihedrals"), ("orientation", "bisector"),
                                        "GVP-GNN's features restricted to parity-even ones (E(3))."),
    "ca": ResidueFeaturePreset("ca", ("one_hot",), (), "Residue type only at CA (ProteinWorkshop ca_base)."),
    "ca_seq": ResidueFeaturePreset("ca_seq", ("one_hot", "sequence_position"), (),
                                   "Residue type and sinusoidal position along the chain."),
    "ca_angles": ResidueFeaturePreset("ca_angles", _CA_ANGLES, (),
                                      "ca_seq plus backbone dihedrals and CA virtual bond / torsion angles."),
    "ca_bb": ResidueFeaturePreset("ca_bb", _CA_ANGLES, ("orientation", "sidechain_direction"),
                                  "ca_angles plus GVP-GNN's orientation and side-chain vectors."),
    "ca_sc": ResidueFeaturePreset("ca_sc", _CA_ANGLES + ("sidechain_torsions",), ("orientation", "sidechain_direction"),
                                  "ca_bb plus side-chain torsions chi1-4 with masks."),
}
#: the same registry under its older name
RESIDUE_FEATURE_PRESETS = PRESETS


def residue_node_features(res_type: Tensor, backbone: Tensor, segment: Tensor, preset: str = "gvp",
                          dtype: torch.dtype = torch.float64, *, seq_index: Tensor | None = None,
                          sidechain: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(x_s [L, F], x_v [L, V, 3]) in the layout of :data:`PRESETS` ``[preset]`` (V = 0 for presets without
    vectors). ``seq_index`` [L] (position along the chain) is needed by the ``ca_seq`` family, ``sidechain``
    [L, 4, 4, 3] (:func:`chi_atom_coords`) by ``ca_sc``. Computed in float64, returned in ``dtype``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown residue feature preset {preset!r}; choose from {sorted(PRESETS)}")
    bb = backbone.to(torch.float64)
    inputs = _Inputs(res_type, bb, segment, seq_index,
                     None if sidechain is None else torch.as_tensor(sidechain, dtype=torch.float64))
    x_s, x_v = PRESETS[preset].compute(inputs)
    return x_s.to(dtype), x_v.to(dtype)


def sequence_offset_encoding(offset: Tensor, num: int = 16, same_chain: Tensor | None = None,
                             dtype: torch.dtype = torch.float32) -> Tensor:
    r"""[E] sequence offsets (j - i) -> [E, num] sinusoidal encodings (Transformer-style, as GVP-GNN):
    :math:`[\cos(o \omega_k), \sin(o \omega_k)]` with :math:`\omega_k = \exp(-2k \log(10^4) / num)`,
    k = 0..num/2-1. Edges between different chains (``same_chain`` False) get all-zero encodings:
    an offset between chains has no meaning.
    """
    if num % 2:
        raise ValueError(f"num must be even, got {num}")
    freq = torch.exp(torch.arange(0, num, 2, dtype=torch.float64, device=offset.device)
                     * (-math.log(10000.0) / num))
    ang = offset.to(torch.float64).unsqueeze(-1) * freq
    enc = torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)
    if same_chain is not None:
        enc = enc * same_chain.unsqueeze(-1).to(enc.dtype)
    return enc.to(dtype)

"""Residue-level features (GVP-GNN, Jing et al. 2021; gvp-pytorch data.py), computed on tensors so that
they run on CPU or GPU. Undefined quantities (at chain ends, across chain breaks, with missing backbone
atoms) are **zero**, never NaN, and never computed across a segment boundary (gvp-pytorch computes
dihedrals and orientations across chain breaks; farfield does not).

Shapes: ``backbone`` [L, 4, 3] (N, CA, C, O; NaN where missing), ``segment`` [L] long (contiguous
segments, see :class:`farfield.io.ResidueView`).

Parity. Under an improper rotation ``x -> x Q^T`` (det Q = -1, a mirror image) a feature is

* an *even scalar* if it does not change (residue type, cos of a dihedral, distances);
* an *odd scalar* (pseudo-scalar) if it changes sign: sin of a dihedral, since mirroring negates every
  dihedral angle;
* a *polar vector* if it becomes ``v Q^T`` like a coordinate difference (CA -> CA directions);
* *chiral* otherwise: GVP-GNN's imputed side-chain direction contains the cross product ``c x n``, which
  becomes ``det(Q) (c x n) Q^T``, so the mirrored vector is not the mirror of the vector.

A model claiming E(3) (rotations *and* reflections) is reflection-invariant end to end only on parity-even
inputs: even scalars and polar vectors. :data:`RESIDUE_FEATURE_PRESETS` lists two layouts:

=============== ============================================================== =========================
preset          x_s [L, F] / x_v [L, 3, 3]                                     pipeline symmetry
=============== ============================================================== =========================
``gvp``         one-hot (21, even) | cos, sin of phi, psi, omega (6; cos       SE(3): the sin terms and
                even, sin odd) / forward, backward (polar) | side chain        the side-chain vector are
                (chiral) -- GVP-GNN's features (Jing et al. 2021)              chiral
``parity_even`` one-hot (21, even) | cos phi, cos psi, cos omega (3, even) /   E(3)
                forward, backward (polar) | minus the N-CA-C bisector (polar)
=============== ============================================================== =========================

``parity_even`` cannot tell a structure from its mirror image (an alpha helix from a left-handed one):
that is what reflection invariance means; use it when the task should not depend on handedness, or to
test an E(3) claim end to end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["residue_one_hot", "dihedral_features", "orientation_vectors", "sidechain_direction",
           "bisector_direction", "residue_node_features", "sequence_offset_encoding", "NUM_RESIDUE_TYPES",
           "RESIDUE_FEATURE_PRESETS", "ResidueFeaturePreset"]

NUM_RESIDUE_TYPES = 21  # 20 amino acids + unknown


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


@dataclass(frozen=True)
class ResidueFeaturePreset:
    """A residue node-feature layout: the name of each ``x_s`` block and ``x_v`` channel with its parity
    (``'even'``, ``'odd'``, ``'polar'`` or ``'chiral'``; see the module docstring)."""

    name: str
    scalars: tuple[tuple[str, int, str], ...]    # (feature, width, parity)
    vectors: tuple[tuple[str, str], ...]         # (feature, parity)

    @property
    def chiral_features(self) -> tuple[str, ...]:
        """Features that change under a mirror image other than as the mirror prescribes."""
        return tuple([f"{n} (x_s)" for n, _, p in self.scalars if p == "odd"]
                     + [f"{n} (x_v)" for n, p in self.vectors if p == "chiral"])

    @property
    def symmetry(self) -> str:
        """The group the features respect: ``'E(3)'`` when all are parity-even, else ``'SE(3)'``."""
        return "SE(3)" if self.chiral_features else "E(3)"


RESIDUE_FEATURE_PRESETS = {
    "gvp": ResidueFeaturePreset(
        "gvp",
        scalars=(("residue one-hot", NUM_RESIDUE_TYPES, "even"), ("cos phi", 1, "even"), ("sin phi", 1, "odd"),
                 ("cos psi", 1, "even"), ("sin psi", 1, "odd"), ("cos omega", 1, "even"), ("sin omega", 1, "odd")),
        vectors=(("forward CA direction", "polar"), ("backward CA direction", "polar"),
                 ("side-chain direction", "chiral"))),
    "parity_even": ResidueFeaturePreset(
        "parity_even",
        scalars=(("residue one-hot", NUM_RESIDUE_TYPES, "even"), ("cos phi", 1, "even"), ("cos psi", 1, "even"),
                 ("cos omega", 1, "even")),
        vectors=(("forward CA direction", "polar"), ("backward CA direction", "polar"),
                 ("N-CA-C bisector", "polar"))),
}


def residue_node_features(res_type: Tensor, backbone: Tensor, segment: Tensor, preset: str = "gvp",
                          dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """(x_s [L, F], x_v [L, 3, 3]) in the layout of :data:`RESIDUE_FEATURE_PRESETS` ``[preset]``."""
    if preset not in RESIDUE_FEATURE_PRESETS:
        raise ValueError(f"unknown residue feature preset {preset!r}; choose from {sorted(RESIDUE_FEATURE_PRESETS)}")
    dih = dihedral_features(backbone, segment)                               # cos, sin of phi, psi, omega
    orient = orientation_vectors(backbone[:, 1], segment)
    if preset == "gvp":
        x_s = torch.cat([residue_one_hot(res_type, torch.float64), dih], dim=-1)
        x_v = torch.cat([orient, sidechain_direction(backbone).unsqueeze(1)], dim=1)
    else:
        x_s = torch.cat([residue_one_hot(res_type, torch.float64), dih[:, 0::2]], dim=-1)
        x_v = torch.cat([orient, bisector_direction(backbone).unsqueeze(1)], dim=1)
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

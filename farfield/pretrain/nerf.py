"""Backbone torsions and their rebuilding: perturb phi / psi / omega and place the atoms again (NeRF).

Natural Extension Reference Frame (Parsons et al., J. Comput. Chem. 2005): given three placed atoms a, b, c and
the internal coordinates of the next atom d (bond length ``|d - c|``, bond angle ``angle(b, c, d)`` and torsion
``dihedral(a, b, c, d)``), ``d = c + R [-|cd| cos(theta), |cd| sin(theta) cos(tau), |cd| sin(theta) sin(tau)]``
with ``R = [bc_hat, n x bc_hat, n]``, ``n = (ab x bc_hat) / |ab x bc_hat|``.

The backbone of a segment is the atom chain N_0 CA_0 C_0 N_1 CA_1 C_1 ...; each atom after the third is placed
from its three predecessors with its own bond length and angle (kept from the input) and a torsion that is the
input's plus noise: the torsion placing N_{i+1} is psi_i, CA_{i+1} omega_i (CA_i, C_i, N_{i+1}, CA_{i+1}, the
index convention of :func:`farfield.features.residues.dihedral_features`), C_{i+1} phi_{i+1}. O_i keeps its
bond, angle and torsion about (N_i, CA_i, C_i) relative to psi_i, so the peptide plane turns with psi_i as a
rigid body. The first residue of every segment stays where it is. Residues of segments with a missing backbone
atom are not perturbed (their torsion mask is 0).

Shapes: ``backbone`` [L, 4, 3] float64 (N, CA, C, O; NaN where missing), ``segment`` [L] long, torsion noise
[L, 3] (phi_i, psi_i, omega_i) in radians, masks [L, 3] bool (the torsion exists: phi of a segment's first
residue, psi and omega of its last, do not).
"""
from __future__ import annotations

import numpy as np

__all__ = ["backbone_torsions", "rebuild_backbone", "torsion_mask"]


def _dihedral(p0, p1, p2, p3):
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    x = (n1 * n2).sum(-1)
    y = np.linalg.norm(b1, axis=-1) * (b0 * n2).sum(-1)
    return np.arctan2(y, x)


def _angle(a, b, c):
    u, v = a - b, c - b
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _place(a, b, c, bond, theta, tau):
    """NeRF: the atom after a, b, c with bond length ``bond``, angle ``theta`` at c, torsion ``tau``."""
    bc = c - b
    bc = bc / np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n = n / np.linalg.norm(n)
    m = np.stack([bc, np.cross(n, bc), n], axis=-1)           # columns
    d2 = np.array([-bond * np.cos(theta), bond * np.sin(theta) * np.cos(tau), bond * np.sin(theta) * np.sin(tau)])
    return c + m @ d2


def _segments(segment: np.ndarray):
    """(start, stop) of every run of equal segment ids."""
    L = len(segment)
    if not L:
        return []
    cut = np.flatnonzero(segment[1:] != segment[:-1]) + 1
    starts = np.r_[0, cut]
    return list(zip(starts, np.r_[cut, L]))


def torsion_mask(backbone: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """[L, 3] bool: phi_i, psi_i, omega_i exist and can be perturbed (within a segment whose every backbone atom
    is present, phi from its second residue, psi and omega up to its second last)."""
    L = len(segment)
    out = np.zeros((L, 3), dtype=bool)
    complete = np.isfinite(backbone).all(axis=(1, 2))
    for a, b in _segments(np.asarray(segment)):
        if b - a < 2 or not complete[a:b].all():
            continue
        out[a + 1:b, 0] = True
        out[a:b - 1, 1] = True
        out[a:b - 1, 2] = True
    return out


def backbone_torsions(backbone: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """[L, 3] float64 (phi_i, psi_i, omega_i) in radians, NaN where :func:`torsion_mask` is False."""
    bb = np.asarray(backbone, dtype=np.float64)
    L = len(bb)
    out = np.full((L, 3), np.nan)
    if L >= 2:
        N, CA, C = bb[:, 0], bb[:, 1], bb[:, 2]
        out[1:, 0] = _dihedral(C[:-1], N[1:], CA[1:], C[1:])
        out[:-1, 1] = _dihedral(N[:-1], CA[:-1], C[:-1], N[1:])
        out[:-1, 2] = _dihedral(CA[:-1], C[:-1], N[1:], CA[1:])
    out[~torsion_mask(bb, segment)] = np.nan
    return out


def rebuild_backbone(backbone: np.ndarray, segment: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The backbone with torsions phi_i / psi_i / omega_i changed by ``delta`` [L, 3] (radians; entries where
    :func:`torsion_mask` is False are ignored), every bond length and bond angle kept (module docstring).

    Returns float64 [L, 4, 3]; residues of segments that cannot be perturbed are returned unchanged."""
    bb = np.asarray(backbone, dtype=np.float64)
    out = bb.copy()
    mask = torsion_mask(bb, segment)
    delta = np.where(mask, np.asarray(delta, dtype=np.float64), 0.0)
    for a, b in _segments(np.asarray(segment)):
        if not mask[a:b].any():
            continue
        chain = bb[a:b, :3].reshape(-1, 3)                    # N0 CA0 C0 N1 ...
        n = len(chain)
        k = np.arange(3, n)
        bond = np.linalg.norm(chain[k] - chain[k - 1], axis=-1)
        theta = _angle(chain[k - 2], chain[k - 1], chain[k])
        tau = _dihedral(chain[k - 3], chain[k - 2], chain[k - 1], chain[k])
        # atom k = 3 r + j (residue r of the segment, j = 0 N, 1 CA, 2 C): N_r <- psi_{r-1}, CA_r <- omega_{r-1},
        # C_r <- phi_r
        r, j = k // 3, k % 3
        add = np.where(j == 0, delta[a + r - 1, 1], np.where(j == 1, delta[a + r - 1, 2], delta[a + r, 0]))
        new = chain.copy()
        for t, kk in enumerate(k):
            new[kk] = _place(new[kk - 3], new[kk - 2], new[kk - 1], bond[t], theta[t], tau[t] + add[t])
        res = new.reshape(-1, 3, 3)
        # O_i: same bond, angle and torsion about (N_i, CA_i, C_i), turned with psi_i
        o = bb[a:b, 3]
        o_bond = np.linalg.norm(o - bb[a:b, 2], axis=-1)
        o_theta = _angle(bb[a:b, 1], bb[a:b, 2], o)
        o_tau = _dihedral(bb[a:b, 0], bb[a:b, 1], bb[a:b, 2], o) + delta[a:b, 1]
        for i in range(b - a):
            out[a + i, :3] = res[i]
            out[a + i, 3] = _place(res[i, 0], res[i, 1], res[i, 2], o_bond[i], o_theta[i], o_tau[i])
    return out

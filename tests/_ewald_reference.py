"""A float64 brute-force reference for the periodic screened-Coulomb potential of latent charges, independent of
torch-pme: phi_i = sum_j sum_n' q_j erf(|r_j - r_i + n| / (sqrt 2 sigma)) / |r_j - r_i + n| with a neutralising
background, evaluated by a second Ewald split at a wider width sigma2 > sigma:

    phi = [k-space sum with sigma2 - self(sigma2) - background(sigma2)]
          + sum_{(j, n) != (i, 0)} q_j (erf(r / (sqrt 2 sigma)) - erf(r / (sqrt 2 sigma2))) / r

The real-space difference decays like erfc(r / (sqrt 2 sigma2)) and the k-space sum like exp(-sigma2^2 k^2 / 2);
both are summed far beyond float64 round-off (explicit loops over images and k-vectors)."""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf


def reference_periodic_potential(q, pos, cell, sigma: float, sigma2: float | None = None) -> np.ndarray:
    q, pos, cell = (np.asarray(x, dtype=np.float64) for x in (q, pos, cell))
    q = q.reshape(len(pos), -1)
    sigma2 = sigma2 or 2.0 * sigma
    vol = abs(np.linalg.det(cell))
    # real space: images with |r| < 8 sqrt(2) sigma2 (erfc(8) ~ 1e-29)
    rmax = 8.0 * math.sqrt(2.0) * sigma2
    widths = vol / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    m = np.ceil(rmax / widths).astype(int) + 1
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in m], indexing="ij"), -1).reshape(-1, 3)
    shifts = grid @ cell                                                          # [S, 3]
    d = pos[None, :, None, :] - pos[:, None, None, :] + shifts[None, None]       # [i, j, S, 3]
    r = np.linalg.norm(d, axis=-1)
    zero = r < 1e-12
    rs = np.where(zero, 1.0, r)
    kern = (erf(rs / (math.sqrt(2) * sigma)) - erf(rs / (math.sqrt(2) * sigma2))) / rs
    kern = np.where(zero | (r > rmax), 0.0, kern)
    phi = np.einsum("ijs,jc->ic", kern, q)
    # k space with sigma2: |k| up to sqrt(2 * 80) / sigma2 (exp(-80) ~ 2e-35)
    recip = 2 * math.pi * np.linalg.inv(cell).T
    kmax = math.sqrt(160.0) / sigma2
    nk = np.ceil(kmax * np.linalg.norm(cell, axis=1) / (2 * math.pi)).astype(int) + 1
    kg = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in nk], indexing="ij"), -1).reshape(-1, 3)
    kg = kg[np.any(kg != 0, axis=1)]
    kv = kg @ recip
    k2 = (kv ** 2).sum(-1)
    keep = k2 <= kmax ** 2
    kv, k2 = kv[keep], k2[keep]
    g = 4 * math.pi / vol * np.exp(-0.5 * sigma2 ** 2 * k2) / k2                 # [K]
    phase = pos @ kv.T                                                            # [N, K]
    c, s = np.cos(phase), np.sin(phase)
    phi += (c * g) @ (c.T @ q) + (s * g) @ (s.T @ q)
    phi -= math.sqrt(2 / math.pi) / sigma2 * q
    phi -= 2 * math.pi * sigma2 ** 2 / vol * q.sum(0, keepdims=True)
    return phi


def reference_direct_potential(q, pos, sigma: float) -> np.ndarray:
    """Aperiodic: phi_i = sum_{j != i} q_j erf(r_ij / (sqrt 2 sigma)) / r_ij, float64."""
    q, pos = np.asarray(q, dtype=np.float64), np.asarray(pos, dtype=np.float64)
    q = q.reshape(len(pos), -1)
    r = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    np.fill_diagonal(r, 1.0)
    k = erf(r / (math.sqrt(2) * sigma)) / r
    np.fill_diagonal(k, 0.0)
    return k @ q

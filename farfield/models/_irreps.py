"""Helpers shared by the e3nn-based (spherical) backbones: hidden irreps, packing a :class:`NodeState`
into an e3nn feature tensor and back, and input embedding irreps.

Layout of a hidden feature (``hidden_irreps``): scalars first (``c x 0e``, plus ``c x 0o`` without
parity), then vectors (``c x 1o``, plus ``c x 1e`` without parity), then the higher orders l = 2..L.
``s`` = the scalar block [N, c or 2c], ``v`` = the vector block [N, c or 2c, 3] in x, y, z, ``t`` = the rest.
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch
from e3nn import o3
from torch import Tensor

from farfield.errors import ConfigError

__all__ = ["hidden_irreps", "split_irreps", "pack", "unpack", "sh_irreps", "L1_TO_XYZ", "check_max_l",
           "restore_wigner", "E3nnPrecision"]


def _exact_w3j(buf: torch.Tensor) -> torch.Tensor | None:
    """The exact float64 tensor that ``buf`` is a rounded copy of, when ``buf`` is a Wigner-3j matrix
    times a constant c with c^2 rational (e3nn's folded path normalisations, e.g. sqrt(3)); else None."""
    if buf.dim() != 3 or any(d % 2 == 0 for d in buf.shape):
        return None
    l1, l2, l3 = ((d - 1) // 2 for d in buf.shape)
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        return None
    w = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    b = buf.detach().double().cpu()
    c = float((b * w).sum() / (w * w).sum())
    if c == 0 or float((b - c * w).abs().max()) > 1e-5 * max(1.0, abs(c)):
        return None
    c2 = Fraction(c * c).limit_denominator(10_000)
    exact = math.copysign(math.sqrt(c2.numerator / c2.denominator), c)
    return exact * w if abs(exact - c) <= 1e-6 * abs(c) else None


def restore_wigner(module: torch.nn.Module) -> torch.nn.Module:
    """Recompute the e3nn Wigner-3j constants of ``module`` exactly in each buffer's current dtype.

    e3nn computes these constants in the default dtype when a module is built, and ``copy.deepcopy`` of
    its generated code duplicates some of them as ``_tensor_constantN`` buffers; a model built or kept in
    float32 and cast to float64 would keep float32-rounded constants, and its equivariance error would
    stall near 1e-8 instead of 1e-15. ``_w3j_l1_l2_l3`` buffers are recomputed from their name,
    ``_tensor_constantN`` buffers only when they are a rounded copy of a Wigner-3j matrix. Called after
    every dtype change of a spherical backbone and by the symmetry check."""
    for mod in module.modules():
        for name, buf in list(mod._buffers.items()):
            if buf is None or not buf.is_floating_point():
                continue
            if name.startswith("_w3j_"):
                l1, l2, l3 = (int(x) for x in name[len("_w3j_"):].split("_"))
                w = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
            elif name.startswith("_tensor_constant"):   # created by copy.deepcopy of e3nn's generated code
                w = _exact_w3j(buf)
            else:
                continue
            if w is not None:
                mod._buffers[name] = w.to(device=buf.device, dtype=buf.dtype)
    return module


class E3nnPrecision:
    """Mixin for modules holding e3nn tensor products: keeps their Wigner-3j constants exact in the
    module's dtype across ``.to()`` / ``.double()`` / ``.float()`` (see :func:`restore_wigner`)."""

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        restore_wigner(self)
        return out


def _l1_permutation() -> list[int]:
    # e3nn's l = 1 component order (x, y, z in e3nn >= 0.5.2; y, z, x before): find it rather than assume it
    sh = o3.spherical_harmonics(1, torch.eye(3, dtype=torch.float64), normalize=False, normalization="component")
    return [int(i) for i in sh.abs().argmax(dim=0)]   # component k of e3nn's l = 1 is Cartesian axis perm[k]


_PERM = _l1_permutation()
#: index list turning e3nn's l = 1 components into x, y, z
L1_TO_XYZ = [_PERM.index(a) for a in range(3)]
_XYZ_TO_L1 = _PERM


def check_max_l(max_l: int) -> int:
    if not 0 <= int(max_l) <= 5:
        raise ConfigError(f"max_l must be between 0 and 5, got {max_l}")
    return int(max_l)


def hidden_irreps(channels: int, max_l: int, parity: bool) -> o3.Irreps:
    out = []
    for l in range(max_l + 1):
        p = (-1) ** l
        out.append((channels, (l, p)))
        if not parity:
            out.append((channels, (l, -p)))
    return o3.Irreps(out)


def sh_irreps(max_l: int) -> o3.Irreps:
    return o3.Irreps.spherical_harmonics(max_l)


def split_irreps(irreps: o3.Irreps) -> tuple[int, int, o3.Irreps | None]:
    """(scalar width, vector channels, irreps of the rest or None) for a layout as in the module docstring."""
    n_s = sum(mul for mul, ir in irreps if ir.l == 0)
    n_v = sum(mul for mul, ir in irreps if ir.l == 1)
    rest = o3.Irreps([(mul, ir) for mul, ir in irreps if ir.l >= 2])
    return n_s, n_v, (rest if rest.dim else None)


def unpack(x: Tensor, irreps: o3.Irreps) -> tuple[Tensor, Tensor | None, Tensor | None]:
    n_s, n_v, rest = split_irreps(irreps)
    s = x[:, :n_s]
    v = x[:, n_s:n_s + 3 * n_v].reshape(x.shape[0], n_v, 3)[..., L1_TO_XYZ] if n_v else None
    t = x[:, n_s + 3 * n_v:] if rest is not None else None
    return s, v, t


def pack(s: Tensor, v: Tensor | None, t: Tensor | None) -> Tensor:
    parts = [s]
    if v is not None:
        parts.append(v[..., _XYZ_TO_L1].reshape(v.shape[0], -1))
    if t is not None:
        parts.append(t)
    return torch.cat(parts, dim=-1)

"""Radial bases with an explicit cutoff envelope and an explicit policy for edges beyond the cutoff.

Two defects of the field's reference code motivate this module (methods.md s.2; anchors.md): an
unclamped cosine envelope gives far edges weight 1 (``0.5 (cos(pi d / c) + 1)`` is periodic), and a
Bessel basis multiplied by ``(d < c)`` silently zeroes them. Random long-range edges and kNN edges
routinely exceed a short cutoff, so here the behaviour for ``d > cutoff`` is never implicit:

* ``beyond='error'`` (default): any distance above the cutoff raises :class:`ConfigError`, telling
  the user how many edges are too long and how to choose.
* ``beyond='zero'``: features are exactly zero beyond the cutoff (a deliberate short-range model).
* ``beyond='clamp'``: distances are clamped to the cutoff, so long edges look like edges at the
  cutoff (non-zero, bounded). Not allowed together with an envelope, which is zero at the cutoff.

For long-range edges use a basis whose cutoff spans their distances.

Shapes: ``d`` [E] (or any shape) -> features [E, num_basis] (``d.shape + (num_basis,)``).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from farfield.errors import ConfigError

__all__ = ["CosineEnvelope", "PolynomialEnvelope", "GaussianRBF", "BesselRBF", "BEYOND_POLICIES"]

BEYOND_POLICIES = ("error", "zero", "clamp")


class CosineEnvelope(nn.Module):
    r"""Cosine cutoff (Behler; SchNet): :math:`u(d) = \tfrac12(\cos(\pi d / c) + 1)` for :math:`d \le c`,
    **clamped to 0** for :math:`d > c` (the unclamped form is periodic and gives far edges weight 1)."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, d: Tensor) -> Tensor:
        u = 0.5 * (torch.cos(d * (math.pi / self.cutoff)) + 1.0)
        return torch.where(d <= self.cutoff, u, torch.zeros_like(u))

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}"


class PolynomialEnvelope(nn.Module):
    r"""Smooth polynomial cutoff of DimeNet (Gasteiger et al., 2020), with :math:`x = d / c`:
    :math:`u(x) = 1 - \tfrac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \tfrac{p(p+1)}{2} x^{p+2}` for
    :math:`x \le 1`, 0 beyond (the polynomial grows without bound past the cutoff)."""

    def __init__(self, cutoff: float, exponent: int = 5):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = int(exponent)

    def forward(self, d: Tensor) -> Tensor:
        p = self.p
        x = d / self.cutoff
        u = (1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2))
        return torch.where(x <= 1, u, torch.zeros_like(u))

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, exponent={self.p}"


class _RadialBasis(nn.Module):
    def __init__(self, cutoff: float, num_basis: int, envelope: nn.Module | None,
                 beyond: Literal["error", "zero", "clamp"]):
        super().__init__()
        if cutoff <= 0:
            raise ConfigError(f"{type(self).__name__}: cutoff must be > 0, got {cutoff}")
        if num_basis < 1:
            raise ConfigError(f"{type(self).__name__}: num_basis must be >= 1, got {num_basis}")
        if beyond not in BEYOND_POLICIES:
            raise ConfigError(f"{type(self).__name__}: beyond must be one of {BEYOND_POLICIES}, got {beyond!r}")
        if beyond == "clamp" and envelope is not None:
            raise ConfigError(f"{type(self).__name__}: beyond='clamp' with an envelope gives long edges weight 0; "
                              "use beyond='zero' to say so, or drop the envelope")
        if envelope is not None and getattr(envelope, "cutoff", cutoff) != cutoff:
            raise ConfigError(f"{type(self).__name__}: envelope cutoff {envelope.cutoff} differs from the basis "
                              f"cutoff {cutoff}")
        self.cutoff = float(cutoff)
        self.num_basis = int(num_basis)
        self.envelope = envelope
        self.beyond = beyond

    def _basis(self, d: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, d: Tensor) -> Tensor:
        if self.beyond == "error":
            far = d > self.cutoff
            if bool(far.any()):
                raise ConfigError(
                    f"{type(self).__name__}(cutoff={self.cutoff}): {int(far.sum())} of {d.numel()} distances exceed "
                    f"the cutoff (max {float(d.max()):.3g}); choose beyond='zero' (drop them), beyond='clamp' "
                    "(treat them as at the cutoff) or a basis whose cutoff spans them")
        elif self.beyond == "clamp":
            d = d.clamp(max=self.cutoff)
        out = self._basis(d)
        if self.envelope is not None:
            out = out * self.envelope(d).unsqueeze(-1)
        if self.beyond == "zero":
            out = out * (d <= self.cutoff).unsqueeze(-1).to(out.dtype)
        return out


class GaussianRBF(_RadialBasis):
    r"""Gaussian radial basis (SchNet; GVP-GNN's ``_rbf``): :math:`\phi_k(d) = \exp(-((d-\mu_k)/\sigma)^2)`
    with centres :math:`\mu_k` evenly spaced on ``[start, cutoff]`` and :math:`\sigma = (c - start) / K`
    (GVP's choice) unless ``width`` is given.

    Args:
        cutoff: upper end of the centres and the cutoff that ``beyond`` refers to (Angstrom).
        num_basis: K.
        start: lowest centre.
        width: sigma; default ``(cutoff - start) / num_basis``.
        envelope: optional :class:`CosineEnvelope` / :class:`PolynomialEnvelope` with the same cutoff.
        beyond: ``'error'`` | ``'zero'`` | ``'clamp'`` (module docstring).
    """

    def __init__(self, cutoff: float, num_basis: int = 16, start: float = 0.0, width: float | None = None,
                 envelope: nn.Module | None = None, beyond: Literal["error", "zero", "clamp"] = "error"):
        super().__init__(cutoff, num_basis, envelope, beyond)
        self.register_buffer("centres", torch.linspace(start, cutoff, num_basis, dtype=torch.float64))
        self.width = float(width) if width is not None else (cutoff - start) / num_basis

    def _basis(self, d: Tensor) -> Tensor:
        mu = self.centres.to(d.dtype)
        return torch.exp(-(((d.unsqueeze(-1) - mu) / self.width) ** 2))

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, num_basis={self.num_basis}, width={self.width:.3g}, beyond={self.beyond!r}"


class BesselRBF(_RadialBasis):
    r"""Spherical Bessel radial basis of DimeNet (Gasteiger et al., 2020):
    :math:`\phi_n(d) = \sqrt{2/c}\, \sin(n \pi d / c) / d`, n = 1..K, with the limit
    :math:`\sqrt{2/c}\, n\pi/c` at :math:`d = 0`. Frequencies are fixed (not trained) so that the basis is
    a plain function of ``d``.

    Args: as :class:`GaussianRBF` (``cutoff``, ``num_basis``, ``envelope``, ``beyond``); ``beyond='clamp'``
    is refused because every :math:`\phi_n` is zero at the cutoff.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, envelope: nn.Module | None = None,
                 beyond: Literal["error", "zero", "clamp"] = "error"):
        if beyond == "clamp":
            raise ConfigError("BesselRBF: beyond='clamp' is not allowed: sin(n pi d / c) vanishes at d = c, so "
                              "clamped long edges would get all-zero features; use 'zero' or 'error', or a larger cutoff")
        super().__init__(cutoff, num_basis, envelope, beyond)
        self.register_buffer("freq", torch.arange(1, num_basis + 1, dtype=torch.float64) * math.pi / cutoff)

    def _basis(self, d: Tensor) -> Tensor:
        f = self.freq.to(d.dtype)
        d_ = d.unsqueeze(-1)
        norm = math.sqrt(2.0 / self.cutoff)
        small = d_.abs() < 1e-8
        safe = torch.where(small, torch.ones_like(d_), d_)
        return norm * torch.where(small, f.expand_as(safe * f), torch.sin(f * safe) / safe)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, num_basis={self.num_basis}, beyond={self.beyond!r}"

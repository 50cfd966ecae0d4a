"""Radial bases with an explicit cutoff envelope and an explicit policy for edges beyond the cutoff.

Two defects common in the field's reference code motivate this module (the Behler / SchNet cosine cutoff
written without its clamp; the DimeNet Bessel basis of Gasteiger et al. 2020 masked by ``d < c``): an
unclamped cosine envelope gives far edges weight 1 (``0.5 (cos(pi d / c) + 1)`` is periodic), and a
Bessel basis multiplied by ``(d < c)`` silently zeroes them. Random long-range edges and kNN edges
routinely exceed a short cutoff, so here the behaviour for ``d > cutoff`` is never implicit:

* ``beyond='error'`` (default): any distance above the cutoff raises :class:`ConfigError`, telling
  the user how many edges are too long and how to choose.
* ``beyond='zero'``: features are exactly zero beyond the cutoff (a deliberate short-range model).
* ``beyond='clamp'``: distances are clamped to the cutoff, so long edges look like edges at the
  cutoff (non-zero, bounded). Not allowed together with an envelope, which is zero at the cutoff.

For long-range edges use a basis whose cutoff spans their distances, or :class:`TwoRangeRadial`, which
gives short-range edges exactly the features of a local basis and long-range edges a basis of their own.

Backbones read a basis through :meth:`edge_features`, which returns the basis *without* its envelope plus
the envelope as a per-edge weight [E]; every backbone multiplies its whole edge message by that weight, so
the model is smooth (C^1 with the cosine or polynomial envelope) when an atom crosses the cutoff.
``forward`` keeps returning basis x envelope for direct use.

Shapes: ``d`` [E] (or any shape) -> features [E, num_basis] (``d.shape + (num_basis,)``).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from farfield.errors import ConfigError

__all__ = ["CosineEnvelope", "PolynomialEnvelope", "GaussianRBF", "BesselRBF", "TwoRangeRadial", "BEYOND_POLICIES",
           "ENVELOPES", "make_envelope"]

BEYOND_POLICIES = ("error", "zero", "clamp")

#: exponent arguments below this are clamped in the Gaussian basis: exp(-80) = 1.8e-35, so clamping changes
#: a feature by at most 1.8e-35 (below float32 and float64 resolution next to the O(1) features of the same
#: edge) and avoids denormal results, which make exp() several times slower.
_EXP_MIN = -80.0


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


ENVELOPES = ("cosine", "polynomial")


def make_envelope(kind: str | None, cutoff: float) -> nn.Module | None:
    """``'cosine'`` -> :class:`CosineEnvelope`, ``'polynomial'`` -> :class:`PolynomialEnvelope` (p = 5),
    None -> None."""
    if kind is None:
        return None
    if kind == "cosine":
        return CosineEnvelope(cutoff)
    if kind == "polynomial":
        return PolynomialEnvelope(cutoff)
    raise ConfigError(f"unknown envelope {kind!r}; choose from {ENVELOPES} or None")


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

    def _limit(self, d: Tensor) -> float:
        # round-off slack: an edge built at the cutoff and then rotated (frame averaging, canonicalisation) or
        # recomputed in float32 can come out a few ulps longer; that is the same edge, not a long one
        return self.cutoff * (1.0 + 1024 * torch.finfo(d.dtype).eps) if d.is_floating_point() else self.cutoff

    def _check(self, d: Tensor) -> None:
        # one reduction and one host read (eager); under torch.compile no host sync / graph break: there
        # far distances poison the features with NaN instead (see _features)
        limit = self._limit(d)
        if d.numel() and float(d.detach().max()) > limit:
            far = d > limit
            raise ConfigError(
                f"{type(self).__name__}(cutoff={self.cutoff}): {int(far.sum())} of {d.numel()} distances exceed "
                f"the cutoff (max {float(d.max()):.3g}); choose beyond='zero' (drop them), beyond='clamp' "
                "(treat them as at the cutoff) or a basis whose cutoff spans them")

    def _features(self, d: Tensor) -> Tensor:
        """The basis with the ``beyond`` policy applied, without the envelope."""
        if self.beyond == "error":
            if torch.compiler.is_compiling():
                out = self._basis(d.clamp(max=self.cutoff))
                return torch.where((d > self._limit(d)).unsqueeze(-1), torch.full_like(out, float("nan")), out)
            self._check(d)
            d = d.clamp(max=self.cutoff)          # within the round-off slack: the basis at the cutoff
        elif self.beyond == "clamp":
            d = d.clamp(max=self.cutoff)
        out = self._basis(d)
        if self.beyond == "zero":
            out = out * (d <= self.cutoff).unsqueeze(-1).to(out.dtype)
        return out

    def edge_weight(self, d: Tensor) -> Tensor | None:
        """The envelope at ``d`` [E] (zero beyond the cutoff), or None without an envelope."""
        return None if self.envelope is None else self.envelope(d)

    def edge_features(self, d: Tensor, edge_type: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``(basis [E, K] without the envelope, envelope weight [E] or None)``; what backbones use (they
        multiply whole edge messages by the weight). ``edge_type`` is ignored."""
        return self._features(d), self.edge_weight(d)

    def forward(self, d: Tensor) -> Tensor:
        out = self._features(d)
        if self.envelope is not None:
            out = out * self.envelope(d).unsqueeze(-1)
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
        # clamped at -80: exactly the same features up to 1.8e-35 (see _EXP_MIN), without denormals
        return torch.exp((-(((d.unsqueeze(-1) - mu) / self.width) ** 2)).clamp(min=_EXP_MIN))

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


class TwoRangeRadial(nn.Module):
    r"""Separate radial features for short-range (local) and long-range edges of one graph.

    For a graph whose edges come from several builders (``edge_type`` [E], 0 = the first, local builder;
    see :mod:`farfield.graphs.compose`), local edges get **exactly** the features and envelope weight of
    the ``local`` basis, as in the plain local model, and the other edges those of the ``long`` basis::

        features = [local_rbf(d) | 0]      weight = local.envelope(d)     (edge_type in local_types)
        features = [0 | long_rbf(d)]       weight = long.envelope(d) or 1 (other edges)

    so a backbone sees ``num_basis = local.num_basis + long.num_basis`` features and its filters for local
    edges act on the local block only. The local basis never sees long distances (its ``beyond`` policy
    applies to local edges only). Long edges (e.g. random long-range edges, drawn rather than selected by
    distance) need no envelope: by default their weight is 1.

    Args:
        local: the local model's basis (e.g. ``GaussianRBF(5.0, 50, envelope=CosineEnvelope(5.0))``).
        long: a basis spanning the longest edge (e.g. ``GaussianRBF(42.0, 50)``).
        local_types: edge types treated as local (default (0,)).
    """

    def __init__(self, local: nn.Module, long: nn.Module, local_types: tuple[int, ...] = (0,)):
        super().__init__()
        for name, b in (("local", local), ("long", long)):
            if not hasattr(b, "edge_features") or not hasattr(b, "num_basis"):
                raise ConfigError(f"TwoRangeRadial: {name} must be a radial basis with edge_features() and "
                                  f"num_basis, got {type(b).__name__}")
        self.local, self.long = local, long
        self.local_types = tuple(int(t) for t in local_types)
        self.num_basis = int(local.num_basis) + int(long.num_basis)
        self.cutoff = float(long.cutoff)
        self.local_cutoff = float(local.cutoff)

    def is_local(self, edge_type: Tensor) -> Tensor:
        m = edge_type == self.local_types[0]
        for t in self.local_types[1:]:
            m = m | (edge_type == t)
        return m

    def edge_features(self, d: Tensor, edge_type: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if edge_type is None:
            raise ConfigError("TwoRangeRadial needs the batch's edge_type (which builder made each edge) to tell "
                              "local from long-range edges; featurise with a composed edge spec")
        loc = self.is_local(edge_type.to(d.device))
        zero = torch.zeros_like(d)
        d_loc = torch.where(loc, d, zero)         # long edges are evaluated at 0 and then masked out
        d_long = torch.where(loc, zero, d)
        f_loc, w_loc = self.local.edge_features(d_loc)
        f_long, w_long = self.long.edge_features(d_long)
        lm = loc.unsqueeze(-1).to(d.dtype)
        feats = torch.cat([f_loc * lm, f_long * (1 - lm)], dim=-1)
        one = torch.ones_like(d)
        weight = torch.where(loc, one if w_loc is None else w_loc, one if w_long is None else w_long)
        return feats, weight

    def forward(self, d: Tensor) -> Tensor:
        raise ConfigError("TwoRangeRadial needs edge types: call edge_features(d, edge_type)")

    def extra_repr(self) -> str:
        return f"local_types={self.local_types}, num_basis={self.num_basis}"

r"""Canonicalisation: make any backbone (approximately or exactly) rotation invariant by predicting one frame
per graph and running the backbone on the coordinates expressed in it.

A canonicaliser maps a graph's coordinates :math:`X` [n, 3] to a centre :math:`c` and a frame
:math:`R(X) \in O(3)` (columns = axes). The wrapped backbone :math:`f` sees :math:`(X - c) R`, vector
inputs :math:`V R`; vector outputs are rotated back (:math:`v R^\top`), coordinate outputs rotated back and
re-centred. When the frame is *equivariant*, :math:`R(X Q^\top) = Q R(X)`, the backbone's input
:math:`(X Q^\top - Q c) Q R = (X - c) R` does not change, so the model is exactly invariant whatever
:math:`f` is (Kaba, Mondal, Zhang, Bengio, Ravanbakhsh, "Equivariance with Learned Canonicalization
Functions", ICML 2023, Sec. 3). Frame averaging (:class:`~farfield.symmetry.FrameAveraging`) averages over a
set of such frames instead of picking one.

Canonicalisers (:data:`CANONICALISERS`; every one declares ``exact`` and ``group``):

* ``signnet`` -- the seed study's "SFA + SignNet" made correct per eigenvector (Duval et al., "Improving
  Molecular Modeling with Geometric GNNs", 2024; SignNet of Lim, Robinson, Zhao, Smidt, Sra, Maron, Jegelka,
  ICLR 2023, Eq. 1): the PCA eigenvectors :math:`u_1, u_2, u_3` of the centred coordinates (descending
  eigenvalue) each pass through :math:`w_i = \phi([u_i, e_i]) + \phi([-u_i, e_i])`, which is invariant to
  the sign of each column, then Gram-Schmidt (:func:`gram_schmidt`) gives an orthonormal frame with
  det +1. Exactly sign invariant (so the 8 sign frames SFA samples from collapse to one: nothing is left
  to sample), but **not** exactly rotation invariant: :math:`\phi` reads the eigenvectors' world
  coordinates, so :math:`R(XQ^\top) \neq Q R(X)`; ``exact = False`` and ``farfield check`` measures the error.
  (Sign invariance cannot give an equivariant frame: an even function of :math:`u_i` cannot follow its sign;
  that needs sign *equivariance*, Lim et al., NeurIPS 2023 -- ``pca_sign`` below is the simplest such rule.)
  The seed's code sums over a flip of the eigenvector matrix's rows and never re-orthonormalises (see the
  README's canonicalisation section); that published variant is not reproduced here.
* ``pca_sign`` -- PCA frame with each eigenvector's sign fixed by the sign of the third moment
  :math:`\sum_n \langle x_n - c, u_i\rangle^3` (a sign-equivariant rule: flipping :math:`u_i` flips the
  moment); exactly invariant (O(3): all three signs fixed this way; SO(3): the two most skewed axes fixed
  this way, the third so that det R = +1). Parameter-free. Ill-defined where a moment or an eigen-gap vanishes (symmetric
  shapes): those graphs are reported degenerate.
* ``vn_pointnet`` / ``vn_dgcnn`` -- Vector Neuron networks (Deng et al., ICCV 2021;
  :mod:`farfield.nn.vn`) give 3 SO(3)-equivariant vectors per graph, Gram-Schmidt gives the frame: exactly
  SO(3) invariant. ``trainable=False`` freezes them at initialisation (the seed table's "untrained").
* ``learned`` -- learned canonicalisation of Kaba et al. 2023 with an E(3)-equivariant graph network
  (EGNN, Satorras et al. 2021, or any farfield backbone with vector outputs) whose node vectors are pooled
  into 2 equivariant vectors (:class:`~farfield.models.VectorReadout`) -> Gram-Schmidt: exactly SO(3)
  invariant.
* ``fa``, ``fa_so3``, ``sfa`` -- frame averaging over the PCA sign frames (exact; for comparison).

Degenerate inputs: no continuous canonicalisation of point clouds exists (Dym, Lawrence, Siegel, ICML 2024);
every canonicaliser has inputs where its frame is ill-defined (symmetric, planar or linear shapes, where
equivariant vectors vanish or become parallel). Each reports those graphs (:meth:`Canonicaliser.frames`
returns a ``degenerate`` mask), :class:`Canonicalised` warns with
:class:`~farfield.symmetry.FrameDegeneracyWarning` at run time, and the symmetry check reports them apart.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from farfield.data import fields as F
from farfield.errors import ConfigError
from farfield.models.base import refuse_periodic, Backbone, BackboneOutput
from farfield.symmetry.frames import FrameDegeneracyWarning, _in_frame

__all__ = ["CANONICALISERS", "Canonicaliser", "Canonicalised", "EquivariantNetFrame", "Frames", "PCASignFrame",
           "SignNetFrame", "VNFrame", "gram_schmidt", "wrap_canonicaliser"]


@dataclass
class Frames:
    """Per-graph canonicalisation: ``centre`` [B, 3], ``R`` [B, 3, 3] (columns = axes; the backbone sees
    ``(x - centre) @ R``) and ``degenerate`` [B] bool (frame ill-defined)."""

    centre: Tensor
    R: Tensor
    degenerate: Tensor


def gram_schmidt(vectors: Tensor, group: str = "SO(3)", tol: float = 1e-3,
                 ref: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Orthonormal frames from equivariant vectors (modified Gram-Schmidt).

    ``vectors`` [B, k, 3] (rows; k >= 2 for SO(3), k >= 3 for O(3)). :math:`e_1 = v_1/|v_1|`,
    :math:`e_2 \propto v_2 - \langle v_2, e_1\rangle e_1`; SO(3): :math:`e_3 = e_1 \times e_2` (det +1; the
    frame follows rotations only), O(3): :math:`e_3 \propto v_3 - \sum_{j<3} \langle v_3, e_j\rangle e_j`
    (det +-1; follows reflections too). Returns ``R`` [B, 3, 3] with columns :math:`e_1, e_2, e_3`, and
    ``degenerate`` [B] bool: some residual norm is below ``tol`` times the largest input vector (vanishing or
    parallel vectors), or every vector is below ``1e-6 * ref`` (``ref`` [B]: a length scale of each graph, e.g.
    its RMS radius; equivariant vectors of a symmetric shape vanish up to rounding). Equivariance:
    :math:`R(V Q^\top) = Q R(V)` for every rotation Q (and reflection in O(3) mode)."""
    if group not in ("SO(3)", "O(3)"):
        raise ConfigError(f"gram_schmidt: group must be 'SO(3)' or 'O(3)', got {group!r}")
    need = 2 if group == "SO(3)" else 3
    if vectors.dim() != 3 or vectors.shape[-1] != 3 or vectors.shape[1] < need:
        raise ConfigError(f"gram_schmidt: vectors must be [B, >={need}, 3], got {tuple(vectors.shape)}")
    tiny = torch.finfo(vectors.dtype).tiny ** 0.5
    scale = vectors[:, :need].norm(dim=-1).amax(dim=1)                                  # [B]
    bad = scale <= tiny if ref is None else scale <= 1e-6 * ref.to(scale)
    axes = []
    for k in range(need):
        u = vectors[:, k]
        for e in axes:
            u = u - (u * e).sum(-1, keepdim=True) * e
        n = u.norm(dim=-1)
        bad = bad | (n <= tol * scale)
        axes.append(u / n.clamp(min=tiny).unsqueeze(-1))
    if group == "SO(3)":
        axes.append(torch.linalg.cross(axes[0], axes[1], dim=-1))
    return torch.stack(axes, dim=-1), bad


def _rms(x: Tensor, b: Tensor, B: int) -> Tensor:
    """[B] RMS distance of centred coordinates ``x`` to their centre."""
    return scatter((x * x).sum(-1), b, dim=0, dim_size=B, reduce="mean").sqrt()


def _centre(pos: Tensor, b: Tensor, B: int) -> tuple[Tensor, Tensor]:
    c = scatter(pos, b, dim=0, dim_size=B, reduce="mean")
    return c, pos - c[b]


def _pca(x: Tensor, b: Tensor, B: int, tol: float) -> tuple[Tensor, Tensor]:
    """PCA axes [B, 3, 3] (columns, descending eigenvalue) of centred ``x`` and [B] degenerate (eigen-gap)."""
    cov = scatter(x.unsqueeze(-1) * x.unsqueeze(-2), b, dim=0, dim_size=B, reduce="sum")
    evals, evecs = torch.linalg.eigh(cov)
    evals, U = evals.flip(-1), evecs.flip(-1)
    gaps = (evals[:, :-1] - evals[:, 1:]) / evals[:, :1].clamp(min=1e-12)
    return U, (gaps < tol).any(dim=1)


class Canonicaliser(nn.Module):
    """Base class: ``frames(batch, b, B) -> Frames``. Subclasses set ``exact`` (the frame is equivariant, so the
    wrapped model is exactly invariant for ``group``) and ``group`` (``'SO(3)'``: rotations; ``'O(3)'``:
    rotations and reflections)."""

    exact: bool = True
    group: str = "SO(3)"

    def frames(self, batch, b: Tensor, B: int) -> Frames:  # pragma: no cover - abstract
        raise NotImplementedError


class SignNetFrame(Canonicaliser):
    r"""SFA + SignNet frame (see the module docstring): :math:`w_i = \phi([u_i, e_i]) + \phi([-u_i, e_i])`
    per PCA eigenvector :math:`u_i` (column), :math:`\phi` an MLP ``6 -> hidden -> hidden -> 3``, then
    :func:`gram_schmidt` on :math:`w_1, w_2` (det +1). Sign invariant exactly; rotation invariant only
    approximately (``exact = False``)."""

    exact = False

    def __init__(self, hidden: int = 32, degeneracy_tol: float = 0.1):
        super().__init__()
        from farfield.nn.mlp import MLP
        self.phi = MLP([6, hidden, hidden, 3], act="silu")
        self.degeneracy_tol = degeneracy_tol

    def sign_invariant(self, U: Tensor) -> Tensor:
        """[B, 3, 3] eigenvector columns -> [B, 3, 3] rows :math:`w_i`, invariant to the sign of each column."""
        cols = U.transpose(-1, -2)                                                  # [B, 3 (i), 3]
        idx = torch.eye(3, dtype=U.dtype, device=U.device).expand(U.shape[0], 3, 3)
        return self.phi(torch.cat([cols, idx], -1)) + self.phi(torch.cat([-cols, idx], -1))

    def frames(self, batch, b, B) -> Frames:
        c, x = _centre(batch[F.POS], b, B)
        U, degen = _pca(x, b, B, self.degeneracy_tol)
        R, bad = gram_schmidt(self.sign_invariant(U), "SO(3)")
        return Frames(c, R, degen | bad)


class PCASignFrame(Canonicaliser):
    r"""PCA frame with each axis oriented by its third moment :math:`\mathrm{sign} \sum_n \langle x_n - c,
    u_i\rangle^3` (sign equivariant, hence exactly invariant). ``group='O(3)'`` orients all three axes by
    their moments; ``'SO(3)'`` orients the two axes with the largest relative moment and the third so that
    det R = +1. Degenerate: an eigen-gap below ``degeneracy_tol`` (relative) or a used relative moment
    :math:`|\sum p^3| / \sum |p|^3` below ``moment_tol``."""

    def __init__(self, group: str = "SO(3)", degeneracy_tol: float = 0.1, moment_tol: float = 0.01):
        super().__init__()
        if group not in ("SO(3)", "O(3)"):
            raise ConfigError(f"pca_sign: group must be 'SO(3)' or 'O(3)', got {group!r}")
        self.group, self.degeneracy_tol, self.moment_tol = group, degeneracy_tol, moment_tol

    def frames(self, batch, b, B) -> Frames:
        c, x = _centre(batch[F.POS], b, B)
        U, degen = _pca(x, b, B, self.degeneracy_tol)
        p = torch.bmm(x.unsqueeze(1), U[b]).squeeze(1)                              # [N, 3] PCA coordinates
        m3 = scatter(p ** 3, b, dim=0, dim_size=B, reduce="sum")                     # [B, 3]
        a3 = scatter(p.abs() ** 3, b, dim=0, dim_size=B, reduce="sum")
        skew = m3 / a3.clamp(min=1e-300)                                             # [B, 3] in [-1, 1]
        s = torch.where(m3 >= 0, 1.0, -1.0).to(U)
        if self.group == "O(3)":
            used = skew.abs()
        else:
            # orient the two most skewed axes by their moments and the third so that det R = +1
            order = skew.abs().argsort(dim=1, descending=True)                       # [B, 3]
            used = skew.abs().gather(1, order[:, :2])
            last = order[:, 2]
            s = s.scatter(1, last.unsqueeze(1), 1.0)
            det = torch.linalg.det(U * s.unsqueeze(1))
            s = s.scatter(1, last.unsqueeze(1), torch.sign(det).unsqueeze(1))
        degen = degen | (used <= self.moment_tol).any(dim=1)
        return Frames(c, U * s.unsqueeze(1), degen)


class VNFrame(Canonicaliser):
    """Vector Neuron canonicaliser: ``network(x - c, x_s, batch, B)`` -> 3 equivariant vectors [B, 3, 3] ->
    :func:`gram_schmidt` (SO(3), first two vectors). ``kind``: ``'pointnet'`` (VN-PointNet) or ``'dgcnn'``
    (VN-DGCNN, kNN edge convolution); ``channels``, ``num_layers``, ``k`` are the network's options."""

    def __init__(self, node_s: int, kind: str = "pointnet", channels: int = 16, num_layers: int | None = None,
                 k: int = 8):
        super().__init__()
        from farfield.nn.vn import VNDGCNN, VNPointNet
        if kind == "pointnet":
            self.network = VNPointNet(node_s, channels=channels, num_layers=num_layers or 3)
        elif kind == "dgcnn":
            self.network = VNDGCNN(node_s, channels=channels, num_layers=num_layers or 2, k=k)
        else:
            raise ConfigError(f"VN canonicaliser: kind must be 'pointnet' or 'dgcnn', got {kind!r}")
        self.kind = kind

    def frames(self, batch, b, B) -> Frames:
        c, x = _centre(batch[F.POS], b, B)
        h = getattr(batch, F.X_S, None)
        vecs = self.network(x, None if h is None else h.to(x.dtype), b, B)          # [B, 3, 3]
        R, bad = gram_schmidt(vecs, "SO(3)", ref=_rms(x, b, B))
        return Frames(c, R, bad)


class EquivariantNetFrame(Canonicaliser):
    """Learned canonicalisation (Kaba et al., ICML 2023) with an E(3)-equivariant farfield backbone
    (``network``: ``'egnn'`` by default, or any backbone with vector outputs, e.g. ``'painn'``, ``'gvp'``):
    its node vectors ``v`` [N, c, 3] are pooled into 2 equivariant vectors per graph by a gated
    :class:`~farfield.models.VectorReadout`, then :func:`gram_schmidt` (SO(3))."""

    def __init__(self, spec, network: str = "egnn", hidden: int = 32, num_layers: int = 2,
                 cutoff: float = 5.0, long_cutoff: float | None = None):
        super().__init__()
        from farfield.models import build_backbone
        from farfield.models.readout import VectorReadout
        extra = {} if long_cutoff is None else {"long_cutoff": long_cutoff}
        self.network = build_backbone(network, spec, hidden=hidden, num_layers=num_layers, cutoff=cutoff, **extra)
        if self.network.symmetry not in ("E(3)", "SE(3)") or not self.network.hidden_v:
            raise ConfigError(f"learned canonicaliser: network {network!r} must be an equivariant backbone with "
                              f"vector outputs (egnn, painn, gvp); it claims {self.network.symmetry} with "
                              f"{self.network.hidden_v} vector channels")
        self.readout = VectorReadout(self.network.hidden_s, self.network.hidden_v, 2, reduce="sum")
        self.name = network

    def frames(self, batch, b, B) -> Frames:
        c, x = _centre(batch[F.POS], b, B)
        out = self.network(batch)
        vecs = self.readout(out.s, out.v, b, B)                                     # [B, 2, 3]
        R, bad = gram_schmidt(vecs, "SO(3)", ref=_rms(x, b, B))
        return Frames(c, R, bad)


class Canonicalised(Backbone):
    """Wrap any backbone with a :class:`Canonicaliser` (see the module docstring).

    Args:
        backbone: any :class:`~farfield.models.Backbone`.
        canonicaliser: the frame predictor.
        trainable: False freezes the canonicaliser at initialisation (no gradients, kept in eval mode so that
            batch-norm statistics do not move): the seed study's "untrained" canonicalisers.

    Symmetry: an exact canonicaliser claims ``E(3)`` (O(3) frames) or ``SE(3)`` (SO(3) frames), intersected with
    the backbone's own claims when those are wider. A non-exact one claims ``T(3)`` exactly (translation: the
    centre is the centroid) and :attr:`approximate` = ``'SE(3)'``: ``farfield check`` measures its rotation
    error instead of failing it. Outputs: ``s`` from the canonical coordinates; ``v`` rotated back
    (``v R^T``); ``pos`` rotated back and re-centred; ``t`` is not supported and dropped.
    """

    def __init__(self, backbone: Backbone, canonicaliser: Canonicaliser, trainable: bool = True):
        super().__init__(backbone.spec)
        self.backbone, self.canonicaliser, self.trainable = backbone, canonicaliser, bool(trainable)
        if canonicaliser.exact:
            self.symmetry = "E(3)" if canonicaliser.group == "O(3)" else "SE(3)"
            self.approximate = None
        else:
            self.symmetry, self.approximate = "T(3)", "SE(3)"
        self.hidden_s, self.hidden_v = backbone.hidden_s, backbone.hidden_v
        self.uses_positions = True
        if not self.trainable:
            for p in canonicaliser.parameters():
                p.requires_grad_(False)
            canonicaliser.eval()

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.canonicaliser.eval()
        return self

    def _index(self, batch):
        pos = batch[F.POS]
        b = getattr(batch, "batch", None)
        if b is None:
            b = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        B = int(batch.num_graphs) if hasattr(batch, "num_graphs") else int(b.max()) + 1
        return b, B

    def frames(self, batch) -> Frames:
        b, B = self._index(batch)
        return self.canonicaliser.frames(batch, b, B)

    def degenerate_graphs(self, batch) -> Tensor:
        """[B] bool: graphs whose canonical frame is ill-defined (reported apart by the symmetry check)."""
        with torch.no_grad():
            return self.frames(batch).degenerate

    def forward(self, batch, between=None) -> BackboneOutput:
        self._check_batch(batch)
        refuse_periodic(batch, "canonicalisation", "rotates coordinates into per-graph frames built from the centroid and "
                        "covariance, which a lattice translation of one atom changes")
        b, B = self._index(batch)
        fr = self.canonicaliser.frames(batch, b, B)
        if bool(fr.degenerate.any()) and not getattr(self, "_warned", False):
            self._warned = True          # once per model: training would repeat it every step
            warnings.warn(f"canonicalisation ({type(self.canonicaliser).__name__}): {int(fr.degenerate.sum())} of "
                          f"{B} graph(s) have an ill-defined frame (symmetric, planar or linear structure); their "
                          "outputs are not reliably invariant (said once per model)", FrameDegeneracyWarning, stacklevel=2)
        out = self.backbone(_in_frame(batch, fr.centre, fr.R, b), between=between)
        Rt = fr.R[b].transpose(-1, -2)
        v = None if out.v is None else torch.bmm(out.v, Rt)
        p = None if out.pos is None else torch.bmm(out.pos.unsqueeze(1), Rt).squeeze(1) + fr.centre[b]
        return BackboneOutput(s=out.s, v=v, pos=p)


def _fa(group, stochastic):
    def make(backbone, spec, **kw):
        from farfield.symmetry.frames import FrameAveraging
        if kw:
            raise ConfigError(f"canonicaliser {'sfa' if stochastic else 'fa'} has no options {sorted(kw)}")
        return FrameAveraging(backbone, group=group, stochastic=stochastic)
    return make


def _canon(factory):
    def make(backbone, spec, trainable: bool = True, **kw):
        return Canonicalised(backbone, factory(spec, **kw), trainable=trainable)
    return make


#: name -> ``make(backbone, spec, **options)``; options per canonicaliser: ``trainable`` (all but fa / sfa)
#: and the canonicaliser's own (hidden, channels, num_layers, k, network, group, ...)
CANONICALISERS = {
    "fa": _fa("O(3)", False),
    "fa_so3": _fa("SO(3)", False),
    "sfa": _fa("O(3)", True),
    "signnet": _canon(lambda spec, **kw: SignNetFrame(**kw)),
    "pca_sign": _canon(lambda spec, **kw: PCASignFrame(**kw)),
    "vn_pointnet": _canon(lambda spec, **kw: VNFrame(spec.node_s, "pointnet", **kw)),
    "vn_dgcnn": _canon(lambda spec, **kw: VNFrame(spec.node_s, "dgcnn", **kw)),
    "learned": _canon(lambda spec, **kw: EquivariantNetFrame(spec, **kw)),
}


def wrap_canonicaliser(name: str, backbone: Backbone, spec, **options) -> Backbone:
    """Wrap ``backbone`` with canonicaliser ``name`` (:data:`CANONICALISERS`; ``'none'`` returns it unchanged).
    Unknown names or options raise :class:`ConfigError` naming what is accepted."""
    if name in (None, "none"):
        if options:
            raise ConfigError(f"model.canonicaliser_options {sorted(options)} given without a canonicaliser")
        return backbone
    if name not in CANONICALISERS:
        raise ConfigError(f"unknown canonicaliser {name!r}; choose from {['none', *CANONICALISERS]}")
    if not getattr(backbone, "uses_positions", True):
        raise ConfigError(f"canonicaliser {name!r} needs a 3D backbone; {type(backbone).__name__} does not read "
                          "coordinates")
    try:
        return CANONICALISERS[name](backbone, spec, **options)
    except TypeError as e:
        raise ConfigError(f"canonicaliser {name!r}: bad options {sorted(options)} ({e})") from None

"""Frame averaging (Puny et al., "Frame Averaging for Invariant and Equivariant Network Design", ICLR
2022; stochastic FA and the PCA frames of Duval et al., "FAENet", ICML 2023).

For each graph: centre the coordinates, take the eigenvectors ``U`` of their covariance sorted by
descending eigenvalue, and form the frames ``R = U diag(s)`` for all sign vectors ``s``: 8 frames for
O(3), the 4 with det R = +1 for SO(3). The wrapped model sees ``(X - c) R`` (and vector inputs ``V R``);
invariant outputs are averaged over frames, vector outputs are rotated back (``v R^T``) and averaged,
coordinate outputs are rotated back and re-centred. Because the set of frames moves with the input, the
result is exactly invariant / equivariant (up to floating point) for any backbone, even one that is not.
Near-degenerate covariances (eigenvalues within 10% of each other: symmetric molecules, planar stars) make
the frames unstable; a :class:`FrameDegeneracyWarning` says so.
"""
from __future__ import annotations

import copy
import itertools
import warnings

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from farfield.data import fields as F
from farfield.errors import ConfigError
from farfield.models.base import refuse_periodic, Backbone, BackboneOutput

__all__ = ["FrameAveraging", "FrameDegeneracyWarning", "degenerate_frames", "pca_frames", "COORD_FIELDS", "VECTOR_FIELDS"]

#: batch fields holding Cartesian coordinates (rotated and translated) and vectors (rotated only)
COORD_FIELDS = (F.POS, F.BACKBONE)
VECTOR_FIELDS = (F.X_V,)

_SIGNS = torch.tensor(list(itertools.product([1.0, -1.0], repeat=3)))           # [8, 3]
_SIGNS_SO3 = _SIGNS[_SIGNS.prod(dim=1) > 0]                                     # [4, 3], prod +1


class FrameDegeneracyWarning(UserWarning):
    """Frames are ill-defined: two covariance eigenvalues are within the tolerance of each other."""


def degenerate_frames(pos: Tensor, batch: Tensor, num_graphs: int, degeneracy_tol: float = 0.1) -> Tensor:
    """[B] bool: graphs whose coordinate covariance has two eigenvalues within ``degeneracy_tol`` (relative to the
    largest) of each other, where PCA frames - and so frame averaging - are not well defined."""
    c = scatter(pos, batch, dim=0, dim_size=num_graphs, reduce="mean")
    x = pos - c[batch]
    cov = scatter(x.unsqueeze(-1) * x.unsqueeze(-2), batch, dim=0, dim_size=num_graphs, reduce="sum")
    evals = torch.linalg.eigvalsh(cov).flip(-1)
    gaps = (evals[:, :-1] - evals[:, 1:]) / evals[:, :1].clamp(min=1e-12)
    return (gaps < degeneracy_tol).any(dim=1)


def pca_frames(pos: Tensor, batch: Tensor, num_graphs: int, group: str = "O(3)", degeneracy_tol: float = 0.1):
    """Frames per graph. Returns (centroids [B, 3], frames [K, B, 3, 3]) with K = 8 (O(3)) or 4 (SO(3))."""
    c = scatter(pos, batch, dim=0, dim_size=num_graphs, reduce="mean")                       # [B, 3]
    x = pos - c[batch]
    cov = scatter(x.unsqueeze(-1) * x.unsqueeze(-2), batch, dim=0, dim_size=num_graphs, reduce="sum")
    evals, evecs = torch.linalg.eigh(cov)                                                    # ascending
    evals, U = evals.flip(-1), evecs.flip(-1)                                                # descending
    scale = evals[:, :1].clamp(min=1e-12)
    gaps = (evals[:, :-1] - evals[:, 1:]) / scale
    if bool((gaps < degeneracy_tol).any()):
        bad = int((gaps < degeneracy_tol).any(dim=1).sum())
        warnings.warn(f"frame averaging: {bad} of {num_graphs} graph(s) have covariance eigenvalues within "
                      f"{degeneracy_tol:.0%} of each other; their PCA frames are unstable (symmetric or planar "
                      "structure) and outputs may be noisy", FrameDegeneracyWarning, stacklevel=3)
    if group == "O(3)":
        signs = _SIGNS.to(pos)[:, None, :].expand(8, num_graphs, 3)
    elif group == "SO(3)":
        det = torch.linalg.det(U)                                                            # [B] = +-1
        fix = torch.ones(num_graphs, 3, dtype=pos.dtype, device=pos.device)
        fix[:, 2] = torch.sign(det)
        signs = _SIGNS_SO3.to(pos)[:, None, :] * fix[None]                                  # [4, B, 3]
    else:
        raise ConfigError(f"frame group must be 'O(3)' or 'SO(3)', got {group!r}")
    frames = U.unsqueeze(0) * signs.unsqueeze(-2)                                            # [K, B, 3, 3]
    return c, frames


def _in_frame(batch, c: Tensor, R: Tensor, b: Tensor):
    """Shallow copy of ``batch`` with coordinate fields as (X - c) R and vector fields as V R per graph."""
    out = copy.copy(batch)
    Rn = R[b]                                                                   # [N, 3, 3]
    for key in COORD_FIELDS:
        x = getattr(batch, key, None)
        if x is not None:
            shape = x.shape
            xs = (x.reshape(shape[0], -1, 3) - c[b].unsqueeze(1))
            out[key] = torch.bmm(xs, Rn).reshape(shape)
    for key in VECTOR_FIELDS:
        x = getattr(batch, key, None)
        if x is not None:
            out[key] = torch.bmm(x, Rn)
    return out


def _drop_layer_aliases(state_dict, prefix, *args) -> None:
    """Load checkpoints written while the wrapper aliased ``layers = backbone.layers``: drop the duplicate
    ``layers.*`` keys when the same tensor is present under ``backbone.layers.*``."""
    for key in [k for k in state_dict if k.startswith(prefix + "layers.")]:
        if prefix + "backbone." + key[len(prefix):] in state_dict:
            del state_dict[key]


class FrameAveraging(Backbone):
    """Wrap any backbone with frame averaging (see the module docstring).

    Args:
        backbone: the model to wrap (any :class:`~farfield.models.Backbone`, equivariant or not).
        group: ``'O(3)'`` (8 frames; E(3) symmetry) or ``'SO(3)'`` (4 frames; SE(3), chirality-aware).
        stochastic: stochastic FA: in training, one random frame per graph per forward pass; in evaluation
            (``model.eval()``), all frames.
        degeneracy_tol: relative eigenvalue gap below which a warning is raised.

    Outputs: ``s`` averaged over frames; ``v`` and ``pos`` rotated back into the input frame and averaged.
    ``t`` (higher-order spherical outputs) is not supported and dropped.
    """

    def __init__(self, backbone: Backbone, group: str = "O(3)", stochastic: bool = False,
                 degeneracy_tol: float = 0.1):
        super().__init__(backbone.spec)
        if group not in ("O(3)", "SO(3)"):
            raise ConfigError(f"FrameAveraging: group must be 'O(3)' or 'SO(3)', got {group!r}")
        self.backbone = backbone
        self.group = group
        self.stochastic = stochastic
        self.degeneracy_tol = degeneracy_tol
        self.symmetry = "E(3)" if group == "O(3)" else "SE(3)"
        self.hidden_s, self.hidden_v = backbone.hidden_s, backbone.hidden_v
        # no ``self.layers = backbone.layers`` alias: it registered every layer twice in the state dict
        self._register_load_state_dict_pre_hook(_drop_layer_aliases)

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def degenerate_graphs(self, batch) -> Tensor:
        """[B] bool: graphs whose PCA frames are ill-defined (reported apart by the symmetry check)."""
        pos = batch[F.POS]
        b = getattr(batch, "batch", None)
        if b is None:
            b = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        B = int(batch.num_graphs) if hasattr(batch, "num_graphs") else int(b.max()) + 1
        return degenerate_frames(pos, b, B, self.degeneracy_tol)

    def forward(self, batch, between=None) -> BackboneOutput:
        self._check_batch(batch)
        refuse_periodic(batch, "frame averaging", "rotates coordinates into per-graph frames built from the centroid and "
                        "covariance, which a lattice translation of one atom changes")
        pos = batch[F.POS]
        b = getattr(batch, "batch", None)
        if b is None:
            b = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        B = int(batch.num_graphs) if hasattr(batch, "num_graphs") else int(b.max()) + 1
        with warnings.catch_warnings():
            if getattr(self, "_warned", False):          # once per model: training would repeat it every step
                warnings.simplefilter("ignore", FrameDegeneracyWarning)
            else:
                warnings.simplefilter("always", FrameDegeneracyWarning)
            with warnings.catch_warnings(record=True) as caught:
                c, frames = pca_frames(pos, b, B, self.group, self.degeneracy_tol)
        for w in caught:
            self._warned = True
            warnings.warn(f"{w.message} (said once per model)", FrameDegeneracyWarning, stacklevel=2)
        if self.stochastic and self.training:
            pick = torch.randint(frames.shape[0], (B,), device=pos.device)
            frames = frames[pick, torch.arange(B, device=pos.device)].unsqueeze(0)          # [1, B, 3, 3]
        s_sum = v_sum = p_sum = None
        for R in frames:
            out = self.backbone(_in_frame(batch, c, R, b), between=between)
            Rt = R[b].transpose(-1, -2)
            s_sum = out.s if s_sum is None else s_sum + out.s
            if out.v is not None:
                v = torch.bmm(out.v, Rt)
                v_sum = v if v_sum is None else v_sum + v
            if out.pos is not None:
                p = torch.bmm(out.pos.unsqueeze(1), Rt).squeeze(1) + c[b]
                p_sum = p if p_sum is None else p_sum + p
        k = frames.shape[0]
        return BackboneOutput(s=s_sum / k, v=None if v_sum is None else v_sum / k,
                              pos=None if p_sum is None else p_sum / k)

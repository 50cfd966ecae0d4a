"""One place that picks a backbone, a long-range strategy and their parameters, and reports parameter counts.

Example (the same as YAML / JSON through :meth:`ModelConfig.from_dict`)::

    cfg = ModelConfig(backbone="painn", backbone_options={"hidden": 64, "num_layers": 3},
                      long_range="neural_atoms", long_range_options={"num_atoms": 8, "heads": 2})
    model = cfg.build(InputSpec.from_data(batch))
    parameter_counts(model)     # {'backbone': ..., 'long_range': ..., 'total': ...}
    cfg.edge_spec("radius:4.5") # the edges to featurise with (graph strategies change them)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from farfield._config import check_keys
from farfield.errors import ConfigError
from farfield.models import Backbone, InputSpec, build_backbone
from farfield.models.long_range import Strategy, WithLongRange, build_strategy

__all__ = ["ModelConfig", "parameter_counts"]


@dataclass(frozen=True)
class ModelConfig:
    """Backbone name and options (:func:`farfield.models.build_backbone`), long-range strategy name and
    options (:func:`farfield.models.long_range.build_strategy`), canonicaliser name and options
    (:data:`farfield.symmetry.canonical.CANONICALISERS`: ``fa``, ``sfa``, ``signnet``, ``pca_sign``,
    ``vn_pointnet``, ``vn_dgcnn``, ``learned``; ``trainable: false`` freezes one at initialisation), which wraps
    the backbone before the long-range module. Validated on construction.

    ``init``: a pretrained model to start from (``farfield pretrain``'s ``backbone.pt``, or its run directory):
    its weights are loaded after the model is built, refusing a checkpoint whose featuriser or architecture
    differs (:func:`farfield.pretrain.finetune.load_pretrained`); ``freeze``: keep the loaded weights fixed (train
    the head, and a long-range module that was not pretrained, only)."""

    backbone: str = "schnet"
    backbone_options: dict = field(default_factory=dict)
    long_range: str = "none"
    long_range_options: dict = field(default_factory=dict)
    canonicaliser: str = "none"
    canonicaliser_options: dict = field(default_factory=dict)
    init: str | None = None
    freeze: bool = False

    def __post_init__(self):
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            raise ConfigError(f"model.init must be the path of a pretrained checkpoint, got {self.init!r}")
        if not isinstance(self.freeze, bool):
            raise ConfigError(f"model.freeze must be true or false, got {self.freeze!r}")
        if self.freeze and self.init is None:
            raise ConfigError("model.freeze=true needs model.init (a pretrained checkpoint to keep fixed)")
        from farfield.symmetry.canonical import CANONICALISERS
        if self.canonicaliser != "none" and self.canonicaliser not in CANONICALISERS:
            raise ConfigError(f"unknown model.canonicaliser {self.canonicaliser!r}; choose from "
                              f"{['none', *CANONICALISERS]}")
        for k in ("backbone_options", "long_range_options", "canonicaliser_options"):
            if not isinstance(getattr(self, k), dict):
                raise ConfigError(f"model config: {k} must be a mapping, got {type(getattr(self, k)).__name__}")
        self.strategy()   # validates the strategy name and options

    def strategy(self) -> Strategy:
        return build_strategy(self.long_range, **self.long_range_options)

    def edge_spec(self, local: str) -> str:
        """The edge spec to featurise with, given the backbone's local spec."""
        return self.strategy().edge_spec(local)

    def build(self, spec: InputSpec, max_edge_length: float | None = None) -> Backbone:
        """Build the model; graph strategies need ``max_edge_length`` (longest edge in the data, Angstrom) to
        size the radial basis so that long edges are not zeroed."""
        from farfield.symmetry.canonical import wrap_canonicaliser
        st = self.strategy()
        opts = st.backbone_options(max_edge_length, self.backbone, self.backbone_options)
        model = build_backbone(self.backbone, spec, **opts)
        copts = dict(self.canonicaliser_options)
        if self.canonicaliser == "learned":          # its equivariant network reads the backbone's graph
            for k in ("cutoff", "long_cutoff"):
                if k in opts:
                    copts.setdefault(k, opts[k])
        return st.wrap(wrap_canonicaliser(self.canonicaliser, model, spec, **copts))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"model config must be a mapping, got {type(d).__name__}")
        check_keys(cls, d, "model")
        return cls(**d)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters of the backbone, of the long-range module, of the canonicaliser (0 for frame
    averaging and for frozen canonicalisers), and in total."""
    from farfield.symmetry.canonical import Canonicalised

    def n(m):
        return sum(p.numel() for p in m.parameters() if p.requires_grad)
    canon = sum(n(m.canonicaliser) for m in model.modules() if isinstance(m, Canonicalised))
    if isinstance(model, WithLongRange):
        return {"backbone": n(model.backbone) - canon, "long_range": n(model.long_range), "canonicaliser": canon,
                "total": n(model)}
    return {"backbone": n(model) - canon, "long_range": 0, "canonicaliser": canon, "total": n(model)}

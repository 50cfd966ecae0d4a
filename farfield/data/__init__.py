"""Graph data: field names (:mod:`farfield.data.fields`) and the featurisation pipeline."""
from farfield.data import fields
from farfield.data.pipeline import LEVELS, Featuriser, FeaturiserConfig

__all__ = ["Featuriser", "FeaturiserConfig", "LEVELS", "fields"]

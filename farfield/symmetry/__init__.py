"""Symmetry: exact checks of a model's claimed group (:func:`check_symmetry`), the transformations they
use, frame averaging (:class:`FrameAveraging`) and canonicalisation (:class:`Canonicalised`,
:data:`CANONICALISERS`)."""
from farfield.symmetry.check import TESTS, TOLERANCES, SymmetryReport, SymmetryResult, check_pipeline, check_symmetry
from farfield.symmetry.canonical import CANONICALISERS, Canonicalised, gram_schmidt, wrap_canonicaliser
from farfield.symmetry.frames import COORD_FIELDS, VECTOR_FIELDS, FrameAveraging, FrameDegeneracyWarning, pca_frames
from farfield.symmetry.transforms import permute_batch, random_rotation, reflection, transform_batch

__all__ = ["CANONICALISERS", "Canonicalised", "gram_schmidt", "wrap_canonicaliser", "COORD_FIELDS", "FrameAveraging", "FrameDegeneracyWarning", "SymmetryReport", "SymmetryResult", "TESTS",
           "TOLERANCES", "VECTOR_FIELDS", "check_pipeline", "check_symmetry", "pca_frames", "permute_batch", "random_rotation",
           "reflection", "transform_batch"]

"""Featurisation: atom and residue node features (with their parity), edge encodings and radial bases."""
from farfield.features.atoms import ATOM3D_ELEMENTS, ELEMENT_PRESETS, ElementVocabulary
from farfield.features.radial import (BEYOND_POLICIES, BesselRBF, CosineEnvelope, GaussianRBF, PolynomialEnvelope,
                                      TwoRangeRadial)
from farfield.features.residues import (NUM_RESIDUE_TYPES, RESIDUE_FEATURE_PRESETS, bisector_direction,
                                        dihedral_features, orientation_vectors, residue_node_features,
                                        residue_one_hot, sequence_offset_encoding, sidechain_direction)

__all__ = [
    "ATOM3D_ELEMENTS", "BEYOND_POLICIES", "BesselRBF", "CosineEnvelope", "ELEMENT_PRESETS", "ElementVocabulary",
    "GaussianRBF", "NUM_RESIDUE_TYPES", "PolynomialEnvelope", "RESIDUE_FEATURE_PRESETS", "TwoRangeRadial",
    "bisector_direction", "dihedral_features", "orientation_vectors", "residue_node_features", "residue_one_hot",
    "sequence_offset_encoding", "sidechain_direction",
]

"""Featurisation: atom and residue node features (with their parity), edge encodings, radial bases and graph
positional encodings (LapPE, RWSE)."""
from farfield.features.atoms import ATOM3D_ELEMENTS, ELEMENT_PRESETS, ElementVocabulary
from farfield.features.positional import laplacian_pe, random_sign_flip, random_walk_se
from farfield.features.radial import (BEYOND_POLICIES, BesselRBF, CosineEnvelope, GaussianRBF, PolynomialEnvelope,
                                      TwoRangeRadial)
from farfield.features.residues import (NUM_RESIDUE_TYPES, PRESETS, RESIDUE_FEATURE_PRESETS, SEQ_ENCODING_DIM,
                                        bisector_direction, chi_atom_coords, dihedral_features, orientation_vectors,
                                        residue_node_features, residue_one_hot, sequence_offset_encoding,
                                        sidechain_direction, sidechain_torsion_features, virtual_angle_features)

__all__ = [
    "ATOM3D_ELEMENTS", "BEYOND_POLICIES", "BesselRBF", "CosineEnvelope", "ELEMENT_PRESETS", "ElementVocabulary",
    "GaussianRBF", "NUM_RESIDUE_TYPES", "PRESETS", "PolynomialEnvelope", "RESIDUE_FEATURE_PRESETS",
    "SEQ_ENCODING_DIM", "TwoRangeRadial", "bisector_direction", "chi_atom_coords", "dihedral_features",
    "orientation_vectors", "residue_node_features", "residue_one_hot", "sequence_offset_encoding",
    "sidechain_direction", "sidechain_torsion_features", "virtual_angle_features", "laplacian_pe",
    "random_sign_flip", "random_walk_se",
]

"""Readers: structure and molecule files -> :class:`Structure` (see :mod:`farfield.io.readers`)."""
from farfield.io.atom3d import Atom3DLMDB, dataframe_to_structure, structure_to_dataframe, write_atom3d_lmdb
from farfield.io.example import example_path
from farfield.io.readers import FORMATS, QM9_TARGETS, detect_format, read_molecules, read_structure, read_xyz
from farfield.io.residues import AMINO_ACIDS, ResidueView, virtual_cb
from farfield.io.structure import ReadOptions, Structure, apply_options

__all__ = [
    "AMINO_ACIDS", "Atom3DLMDB", "FORMATS", "QM9_TARGETS", "ReadOptions", "ResidueView", "Structure",
    "apply_options", "dataframe_to_structure", "detect_format", "example_path", "read_molecules",
    "read_structure", "read_xyz", "structure_to_dataframe", "virtual_cb", "write_atom3d_lmdb",
]

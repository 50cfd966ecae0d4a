"""farfield: geometric graph neural networks on 3D molecules and proteins, built to answer when and how
modelling long-range interactions helps.

Data flows structure -> graph -> model -> task -> study:

* :mod:`farfield.io` reads PDB / mmCIF / BinaryCIF / SDF / XYZ / ATOM3D LMDB into :class:`Structure`.
* :mod:`farfield.features` turns atoms and residues into node and edge features, and radial bases.
* :mod:`farfield.graphs` builds edges (radius, kNN, sequence, full, random long-range) and composes them.
* :mod:`farfield.data` assembles PyG ``Data`` objects with documented field names.
* :mod:`farfield.diagnostics` measures graphs (degrees, edge lengths, hop reachability).
"""
from farfield.errors import ConfigError, FarfieldError, InputError

__version__ = "0.1.0"
__all__ = ["ConfigError", "FarfieldError", "InputError", "__version__"]

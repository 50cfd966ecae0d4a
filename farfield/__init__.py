"""farfield: geometric graph neural networks on 3D molecules and proteins, built to answer when and how
modelling long-range interactions helps.

Data flows structure -> graph -> model -> task -> study:

* :mod:`farfield.io` reads PDB / mmCIF / BinaryCIF / SDF / XYZ / ATOM3D LMDB into :class:`Structure`.
* :mod:`farfield.features` turns atoms and residues into node and edge features, and radial bases.
* :mod:`farfield.graphs` builds edges (radius, kNN, sequence, full, random long-range) and composes them.
* :mod:`farfield.data` assembles PyG ``Data`` objects with documented field names.
* :mod:`farfield.models` holds the backbones, long-range mechanisms and heads; :mod:`farfield.symmetry` checks them.
* :mod:`farfield.datasets` loads the built-in benchmark and real datasets; :mod:`farfield.train` trains one run.
* :mod:`farfield.study` compares arms (config overrides) against a control, with baselines and statistics.
* :mod:`farfield.diagnostics` says whether a task is long-range and how far a trained model looks (graph
  measures, curvature, Jacobian influence and the range measure, over-smoothing).
"""
from farfield.errors import ConfigError, FarfieldError, InputError

__version__ = "0.1.0"
__all__ = ["ConfigError", "FarfieldError", "InputError", "__version__"]

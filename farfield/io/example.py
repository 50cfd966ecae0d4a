"""The built-in example structure: a peptide that farfield builds itself (RDKit), not a fetched file.

``farfield/examples/peptide.pdb`` is the output of :func:`write_example` (run
``python -m farfield.io.example`` to regenerate it); :func:`example_path` returns its path. Its
generation is deterministic for a given RDKit version: sequence -> RDKit peptide with PDB residue
information -> explicit hydrogens -> one ETKDGv3 conformer with a fixed seed -> PDB.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["EXAMPLE_SEQUENCE", "EXAMPLE_SEED", "PERIODIC_EXAMPLES", "SYMMETRIC_SHAPES", "example_path",
           "peptide_pdb_block", "periodic_structure", "symmetric_structure", "write_example"]

EXAMPLE_SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQ"
EXAMPLE_SEED = 7


def example_path() -> Path:
    """Path of the shipped example peptide (22 residues, 379 atoms with hydrogens)."""
    return Path(__file__).resolve().parent.parent / "examples" / "peptide.pdb"


def peptide_pdb_block(sequence: str = EXAMPLE_SEQUENCE, seed: int = EXAMPLE_SEED) -> str:
    """A PDB block of one ETKDGv3 conformer of the peptide ``sequence`` (one-letter codes)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSequence(sequence)
    if mol is None:
        raise ValueError(f"RDKit cannot build a peptide from {sequence!r}")
    mol = Chem.AddHs(mol, addResidueInfo=True)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.useRandomCoords = True  # recommended by RDKit for large flexible molecules
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"ETKDG failed to embed {sequence!r} with seed {seed}")
    return Chem.MolToPDBBlock(mol, flavor=2)  # flavor 2: no CONECT records


def write_example(path: str | Path | None = None, sequence: str = EXAMPLE_SEQUENCE, seed: int = EXAMPLE_SEED) -> Path:
    path = Path(path) if path is not None else example_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"REMARK   1 farfield example peptide {sequence}, RDKit ETKDGv3 seed {seed}\n"
                    + peptide_pdb_block(sequence, seed))
    return path


#: symmetric point sets with degenerate coordinate covariances (equal or zero eigenvalues), on which
#: frame-based modules (PCA / SVD frames) are ill-defined and must still be checked
SYMMETRIC_SHAPES = ("hexagon", "octahedron", "star", "chain")
_SPACING = 3.8  # Angstrom: nearest neighbours at the CA-CA distance, so the shapes are chains at residue level


def _shape_coords(name: str) -> np.ndarray:
    d = _SPACING
    if name == "hexagon":      # planar ring (benzene-like): two equal eigenvalues, one zero
        a = np.arange(6) * math.pi / 3
        return d * np.stack([np.cos(a), np.sin(a), np.zeros(6)], axis=1)
    if name == "octahedron":   # regular octahedron: isotropic covariance, three equal eigenvalues
        a = d / math.sqrt(2)
        return a * np.concatenate([np.eye(3), -np.eye(3)])
    if name == "star":         # centre and three arms at 120 degrees in a plane (BF3-like)
        a = np.arange(3) * 2 * math.pi / 3
        return np.concatenate([np.zeros((1, 3)), d * np.stack([np.cos(a), np.sin(a), np.zeros(3)], axis=1)])
    if name == "chain":        # five collinear points: rank-1 covariance
        return d * np.stack([np.arange(5) - 2.0, np.zeros(5), np.zeros(5)], axis=1)
    raise ValueError(f"unknown shape {name!r}; choose from {SYMMETRIC_SHAPES}")


def symmetric_structure(name: str):
    """A small symmetric :class:`~farfield.io.Structure` (see :data:`SYMMETRIC_SHAPES`): carbon atoms named
    CA, one glycine residue each in chain A, so it featurises at atom level (all atoms alike) and at
    residue level (a CA-only chain: zero dihedrals and side chains, as for any CA-only structure)."""
    from farfield.io.structure import Structure

    x = _shape_coords(name)
    n = len(x)
    return Structure.from_arrays(x, ["C"] * n, atom_name=["CA"] * n, res_name=["GLY"] * n,
                                 res_seq=np.arange(1, n + 1), chain_id=["A"] * n, name=name,
                                 source=f"farfield:{name}")


#: built-in periodic systems for the symmetry check: a thermally jittered rock-salt NaCl supercell (cubic cell)
#: and a random Na/Cl box in a strongly triclinic cell (cell vectors neither orthogonal nor of equal length)
PERIODIC_EXAMPLES = ("rocksalt", "triclinic")


def periodic_structure(name: str, seed: int = 0):
    """A small periodic :class:`~farfield.io.Structure` with a ``cell`` (see :data:`PERIODIC_EXAMPLES`):
    ``rocksalt``: 2 x 2 x 2 conventional NaCl cells (a = 5.64 A, 64 ions) with 0.15 A Gaussian jitter;
    ``triclinic``: 20 ions (Na, Cl alternating) uniformly in the cell rows [[7, 0, 0], [2, 6, 0], [1, 1.5, 6.5]],
    some of them outside it (positions need not be wrapped)."""
    from farfield.io.structure import Structure
    rng = np.random.default_rng(seed)
    if name == "rocksalt":
        a = 5.64
        fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
        basis = np.concatenate([fcc, fcc + 0.5])                       # Na at fcc sites, Cl shifted by a/2
        cells = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
        x = ((basis[None] + cells).reshape(-1, 3) * a) + rng.normal(0, 0.15, (64, 3))
        el = (["Na"] * 4 + ["Cl"] * 4) * 8
        cell = np.eye(3) * 2 * a
    elif name == "triclinic":
        cell = np.array([[7.0, 0, 0], [2.0, 6.0, 0], [1.0, 1.5, 6.5]])
        x = (rng.random((20, 3)) * 1.2 - 0.1) @ cell
        el = ["Na", "Cl"] * 10
    else:
        raise ValueError(f"unknown periodic example {name!r}; choose from {PERIODIC_EXAMPLES}")
    return Structure.from_arrays(x, el, name=name, source=f"farfield:{name}", cell=cell)


if __name__ == "__main__":
    print(write_example())

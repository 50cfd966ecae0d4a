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

__all__ = ["EXAMPLE_SEQUENCE", "EXAMPLE_SEED", "SYMMETRIC_SHAPES", "example_path", "peptide_pdb_block",
           "symmetric_structure", "write_example"]

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


if __name__ == "__main__":
    print(write_example())

"""The built-in example structure: a peptide that farfield builds itself (RDKit), not a fetched file.

``farfield/examples/peptide.pdb`` is the output of :func:`write_example` (run
``python -m farfield.io.example`` to regenerate it); :func:`example_path` returns its path. Its
generation is deterministic for a given RDKit version: sequence -> RDKit peptide with PDB residue
information -> explicit hydrogens -> one ETKDGv3 conformer with a fixed seed -> PDB.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["EXAMPLE_SEQUENCE", "EXAMPLE_SEED", "example_path", "peptide_pdb_block", "write_example"]

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


if __name__ == "__main__":
    print(write_example())

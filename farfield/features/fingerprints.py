"""Extended-connectivity fingerprints (ECFP; Rogers and Hahn, "Extended-Connectivity Fingerprints", J. Chem.
Inf. Model. 50, 742-754, 2010) as RDKit's Morgan count fingerprint: every atom environment of radius 0, 1,
..., ``radius`` bonds (duplicates of the same bond set dropped, as RDKit does) is hashed and folded into
``n_bits`` bins; bin ``i`` counts the environments that land in it. ECFP4 = radius 2; here 2,048 bins.

They are the features of the ``ecfp`` reference baseline of molecular datasets: graphs carry
``baseline_ecfp`` = :func:`ecfp_baseline` of their counts, ``log(1 + c)`` as float16 [1, 2048] (4 KiB per
graph), on which a study fits its reference ridge (:func:`farfield.train.stats.ridge_baseline` /
``linear_score_baseline``): a fixed, hand-designed description of the bonded structure, no learned
representation.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from farfield.errors import InputError

__all__ = ["ECFP_RADIUS", "ECFP_BITS", "ecfp_counts", "ecfp_counts_of_mol", "ecfp_matrix", "ecfp_baseline",
           "mol_from_coordinates"]

#: ECFP4 (radius 2) folded to 2,048 bins: the common reference setting
ECFP_RADIUS = 2
ECFP_BITS = 2048


@lru_cache(maxsize=8)
def _generator(radius: int, n_bits: int):
    from rdkit.Chem import rdFingerprintGenerator
    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)


def ecfp_counts_of_mol(mol, radius: int = ECFP_RADIUS, n_bits: int = ECFP_BITS) -> np.ndarray:
    """Morgan count fingerprint [n_bits] (uint32) of an RDKit molecule:
    ``rdFingerprintGenerator.GetMorganGenerator(radius, fpSize=n_bits).GetCountFingerprintAsNumPy(mol)``."""
    return np.asarray(_generator(int(radius), int(n_bits)).GetCountFingerprintAsNumPy(mol))


def ecfp_counts(smiles: str, radius: int = ECFP_RADIUS, n_bits: int = ECFP_BITS, where: str = "SMILES") -> np.ndarray:
    """ECFP counts [n_bits] (uint32) of a SMILES string (heavy atoms with implicit hydrogens, as RDKit parses
    it). Raises :class:`InputError` naming ``where`` and the SMILES when RDKit cannot parse it."""
    from rdkit import Chem, rdBase
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(str(smiles))
    if mol is None:
        raise InputError(where, f"RDKit cannot parse the SMILES {str(smiles)[:80]!r}, so it has no ECFP")
    return ecfp_counts_of_mol(mol, radius, n_bits)


def ecfp_matrix(smiles, radius: int = ECFP_RADIUS, n_bits: int = ECFP_BITS, where: str = "SMILES",
                dtype=np.uint8) -> np.ndarray:
    """ECFP counts of many SMILES [n, n_bits] in ``dtype`` (uint8 by default, saturating at 255); an
    unparsable entry raises :class:`InputError` naming ``where`` and its index."""
    smiles = list(smiles)
    out = np.zeros((len(smiles), n_bits), dtype=dtype)
    hi = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else None
    for i, s in enumerate(smiles):
        c = ecfp_counts(s, radius, n_bits, where=f"{where} [{i}]")
        out[i] = np.minimum(c, hi) if hi is not None else c
    return out


def ecfp_baseline(counts):
    """The ``baseline_ecfp`` field of a graph: ``log(1 + counts)`` as a float16 tensor [1, n_bits] (the logarithm
    tames the long tail of the counts for a linear fit; float16 is exact to 3 significant digits)."""
    import torch
    c = torch.as_tensor(np.asarray(counts, dtype=np.float64)).reshape(1, -1)
    return torch.log1p(c).to(torch.float16)


def mol_from_coordinates(elements, coords, charge: int = 0, where: str = "molecule"):
    """An RDKit molecule (hydrogens removed, stereo ignored) perceived from 3D coordinates: connectivity from
    covalent radii and bond orders from valences (RDKit's ``rdDetermineBonds.DetermineBonds``, the xyz2mol
    method of Kim and Kim, Bull. Korean Chem. Soc. 36, 1769, 2015) for a molecule of total ``charge``.
    Returns ``(mol, orders)``: ``orders`` is False when bond orders could not be assigned and the molecule
    holds single bonds from connectivity alone (``DetermineConnectivity``). Raises :class:`InputError` when
    not even the connectivity can be perceived."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdDetermineBonds
    els = [str(e).capitalize() for e in elements]
    xyz = np.asarray(coords, dtype=np.float64).reshape(len(els), 3)
    block = f"{len(els)}\n\n" + "\n".join(f"{e} {x:.6f} {y:.6f} {z:.6f}" for e, (x, y, z) in zip(els, xyz))
    with rdBase.BlockLogs():
        raw = Chem.MolFromXYZBlock(block)
        if raw is None:
            raise InputError(where, "RDKit cannot read its elements / coordinates")
        orders = True
        mol = Chem.Mol(raw)
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=int(charge))
        except (ValueError, RuntimeError):
            orders, mol = False, Chem.Mol(raw)
            try:
                rdDetermineBonds.DetermineConnectivity(mol)
                mol.UpdatePropertyCache(strict=False)
            except (ValueError, RuntimeError) as e:
                raise InputError(where, f"RDKit cannot perceive bonds from its coordinates ({e})") from None
        Chem.RemoveStereochemistry(mol)          # 3D-perceived double-bond stereo would keep some H atoms
        params = Chem.RemoveHsParameters()
        params.removeDefiningBondStereo = True
        mol = Chem.RemoveHs(mol, params, sanitize=orders)
        if not orders:
            mol.UpdatePropertyCache(strict=False)
            Chem.FastFindRings(mol)               # ring membership is an ECFP atom invariant
    return mol, orders

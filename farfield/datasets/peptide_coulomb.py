"""The built-in long-range benchmark: electrostatic energy of random peptides.

Each sample is a random peptide (5-20 residues, uniform over the 20 standard amino acids) at neutral pH:
N-terminus NH3+, C-terminus COO-, Lys NZ+, Arg guanidinium+, Asp / Glu carboxylates-, His neutral. RDKit
builds it from the sequence, adds hydrogens and embeds one conformer with ETKDGv3 (seeded, single thread);
partial charges are Gasteiger charges of the charged molecule (they sum to the formal charge). Targets:

* ``energy``: Coulomb energy :math:`E = k \\sum_{i<j,\\ b_{ij} > 3} q_i q_j / r_{ij}` over all atom pairs more
  than three bonds apart (force fields exclude 1-2, 1-3 and 1-4 pairs), k = 332.0637 kcal A / (mol e^2), in
  kcal/mol;
* ``energy_far``: the part of it from pairs farther apart than ``cutoff`` (default 5 A).

The dataset card (:func:`card`) reports the share of the target's variance that the far part carries.
Generation takes 1-2 s per peptide on one core, so farfield ships the result
(``farfield/datasets/data/peptide_coulomb.npz``, made by ``python -m farfield.datasets.peptide_coulomb``)
with its seed and checksum; :func:`generate` reproduces any slice of it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["AMINO_ACIDS", "COULOMB_K", "DEFAULT_PATH", "Peptide", "charged_peptide", "make_peptide", "generate",
           "save", "load", "card", "checksum"]

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
COULOMB_K = 332.0637
DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "peptide_coulomb.npz"
GENERATOR_VERSION = 1


@dataclass
class Peptide:
    sequence: str
    numbers: np.ndarray       # [n] atomic numbers (uint8)
    pos: np.ndarray           # [n, 3] Angstrom (float32)
    charge: np.ndarray        # [n] Gasteiger partial charges (float32), e
    formal: np.ndarray        # [n] formal charges (int8)
    heavy_of: np.ndarray      # [n] index of the heavy atom each atom belongs to (itself for heavy atoms)
    energy: float
    energy_far: float


def charged_peptide(sequence: str):
    """RDKit molecule of ``sequence`` in its neutral-pH protonation state (no hydrogens added yet)."""
    from rdkit import Chem

    mol = Chem.MolFromSequence(sequence)
    if mol is None:
        raise ValueError(f"RDKit cannot build a peptide from sequence {sequence!r}")
    rw = Chem.RWMol(mol)
    for a in rw.GetAtoms():
        info = a.GetPDBResidueInfo()
        name, res, num = info.GetName().strip(), info.GetResidueName(), info.GetResidueNumber()
        if name == "N" and num == 1:
            a.SetFormalCharge(1)
            a.SetNumExplicitHs(2 if res == "PRO" else 3)
        elif name == "OXT" or (res == "ASP" and name == "OD2") or (res == "GLU" and name == "OE2"):
            a.SetFormalCharge(-1)
            a.SetNumExplicitHs(0)
        elif res == "LYS" and name == "NZ":
            a.SetFormalCharge(1)
            a.SetNumExplicitHs(3)
        elif res == "ARG" and name == "NH2":
            a.SetFormalCharge(1)
            a.SetNumExplicitHs(2)
    m = rw.GetMol()
    Chem.SanitizeMol(m)
    return m


def coulomb(pos: np.ndarray, q: np.ndarray, bonds_apart: np.ndarray, cutoff: float) -> tuple[float, float]:
    """(total, far) Coulomb energy over pairs more than 3 bonds apart; far = pairs with r > cutoff."""
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    iu = np.triu_indices(len(q), 1)
    r, b = d[iu], bonds_apart[iu]
    e = COULOMB_K * q[iu[0]] * q[iu[1]] / np.maximum(r, 1e-6) * (b > 3)
    return float(e.sum()), float(e[r > cutoff].sum())


def make_peptide(sequence: str, seed: int, cutoff: float = 5.0) -> Peptide:
    """Build, embed (ETKDGv3, ``seed``) and charge one peptide."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdPartialCharges

    mol = Chem.AddHs(charged_peptide(sequence))
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = 1
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise RuntimeError(f"ETKDG could not embed peptide {sequence} (seed {seed})")
    rdPartialCharges.ComputeGasteigerCharges(mol)
    q = np.array([a.GetDoubleProp("_GasteigerCharge") for a in mol.GetAtoms()])
    if not np.isfinite(q).all():
        raise RuntimeError(f"Gasteiger charges of {sequence} are not finite")
    pos = mol.GetConformer().GetPositions()
    topo = Chem.GetDistanceMatrix(mol)
    e, far = coulomb(pos, q, topo, cutoff)
    heavy_of = np.array([a.GetIdx() if a.GetAtomicNum() > 1 else a.GetNeighbors()[0].GetIdx()
                         for a in mol.GetAtoms()])
    return Peptide(sequence, np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.uint8),
                   pos.astype(np.float32), q.astype(np.float32),
                   np.array([a.GetFormalCharge() for a in mol.GetAtoms()], np.int8), heavy_of, e, far)


def _sequence(seed: int, index: int, min_len: int, max_len: int) -> str:
    rng = np.random.default_rng([seed, index])
    n = int(rng.integers(min_len, max_len + 1))
    return "".join(AMINO_ACIDS[i] for i in rng.integers(0, len(AMINO_ACIDS), n))


def _one(args):
    seed, i, min_len, max_len, cutoff = args
    return make_peptide(_sequence(seed, i, min_len, max_len), seed * 1_000_003 + i, cutoff)


def generate(n: int, seed: int = 0, start: int = 0, min_len: int = 5, max_len: int = 20, cutoff: float = 5.0,
             workers: int = 1, progress: bool = False) -> list[Peptide]:
    """Peptides ``start .. start + n - 1`` of the dataset with ``seed`` (each index has its own sequence and
    embedding seed, so any slice can be regenerated on its own)."""
    jobs = [(seed, i, min_len, max_len, cutoff) for i in range(start, start + n)]
    if workers > 1:
        from multiprocessing import Pool
        with Pool(workers) as pool:
            it = pool.imap(_one, jobs, chunksize=4)
            out = list(_bar(it, n, progress))
    else:
        out = list(_bar(map(_one, jobs), n, progress))
    return out


def _bar(it, n, progress):
    if not progress:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, total=n, desc="peptides", unit="pep")


def save(peptides: list[Peptide], path: Path, meta: dict) -> None:
    """Concatenated arrays with offsets (compressed npz) and the generation settings in ``meta``."""
    counts = np.array([len(p.numbers) for p in peptides])
    np.savez_compressed(
        path, offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        sequence=np.array([p.sequence for p in peptides]),
        numbers=np.concatenate([p.numbers for p in peptides]),
        pos=np.concatenate([p.pos for p in peptides]),
        charge=np.concatenate([p.charge for p in peptides]),
        formal=np.concatenate([p.formal for p in peptides]),
        heavy_of=np.concatenate([p.heavy_of for p in peptides]).astype(np.int16),
        energy=np.array([p.energy for p in peptides]), energy_far=np.array([p.energy_far for p in peptides]),
        meta=np.array(json.dumps(meta, sort_keys=True)))


def load(path: Path | str = DEFAULT_PATH) -> dict:
    """The arrays of a saved dataset plus ``meta`` (dict)."""
    from farfield.errors import InputError
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "dataset file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear message
        raise InputError(str(path), f"not a readable farfield dataset ({type(e).__name__}: {e})") from e
    needed = {"offsets", "numbers", "pos", "charge", "energy", "energy_far", "meta", "sequence", "heavy_of"}
    if not needed <= set(out):
        raise InputError(str(path), f"missing arrays {sorted(needed - set(out))}")
    out["meta"] = json.loads(str(out["meta"]))
    return out


def checksum(path: Path | str = DEFAULT_PATH) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def card(data: dict) -> dict:
    """Dataset card: sizes, target statistics and the variance share of pairs beyond the cutoff."""
    e, far = data["energy"], data["energy_far"]
    atoms = np.diff(data["offsets"])
    heavy = np.array([int((data["numbers"][a:b] > 1).sum()) for a, b in zip(data["offsets"][:-1], data["offsets"][1:])])
    lengths = np.array([len(s) for s in data["sequence"]])
    return {
        "peptides": int(len(e)), "residues": [int(lengths.min()), int(lengths.max())],
        "atoms_mean": float(atoms.mean()), "heavy_atoms_mean": float(heavy.mean()),
        "energy_mean": float(e.mean()), "energy_std": float(e.std()),
        "far_variance_share": float(np.var(far) / np.var(e)),
        "near_only_r2": float(1 - np.var(far) / np.var(e)),
        **data["meta"],
    }


def write_card(path: Path | str = DEFAULT_PATH) -> Path:
    """Write the dataset card (markdown) next to the dataset file."""
    path = Path(path)
    c = card(load(path))
    md = path.with_suffix(".md")
    md.write_text("\n".join([
        "# peptide_coulomb: the built-in long-range benchmark", "",
        f"{c['peptides']} random peptides of {c['residues'][0]}-{c['residues'][1]} residues (uniform over the 20 "
        "standard amino acids), neutral-pH protonation (NH3+ / COO- termini, Lys+, Arg+, Asp-, Glu-), built and "
        "embedded by RDKit (ETKDGv3, one conformer, seeded), Gasteiger partial charges.", "",
        f"* atoms per peptide: {c['atoms_mean']:.0f} with hydrogens, {c['heavy_atoms_mean']:.0f} heavy atoms "
        "(the default input: united atoms carrying their hydrogens' charge)",
        f"* target `energy`: Coulomb energy over atom pairs more than 3 bonds apart, kcal/mol; mean "
        f"{c['energy_mean']:.1f}, std {c['energy_std']:.1f}",
        f"* `energy_far`: the part from pairs farther apart than {c['cutoff']:g} A",
        f"* **share of the target's variance carried by pairs beyond {c['cutoff']:g} A: "
        f"{100 * c['far_variance_share']:.0f}%** (var(energy_far) / var(energy)): the energy of the pairs within the "
        "cutoff, taken alone, leaves this share of the variance unexplained",
        f"* generator: `python -m farfield.datasets.peptide_coulomb --n {c['peptides']} --seed {c['seed']}` "
        f"(version {c.get('generator_version', 1)}, RDKit {c.get('rdkit', '?')}); each peptide i is reproducible on "
        "its own (`generate(1, seed, start=i)`)",
        f"* file: `{path.name}`, {path.stat().st_size / 2 ** 20:.2f} MB, sha256 `{checksum(path)}`", ""]))
    return md


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="generate the built-in peptide Coulomb benchmark")
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=DEFAULT_PATH)
    a = ap.parse_args(argv)
    import rdkit
    peptides = generate(a.n, a.seed, cutoff=a.cutoff, workers=a.workers, progress=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"seed": a.seed, "cutoff": a.cutoff, "min_len": 5, "max_len": 20, "generator_version": GENERATOR_VERSION,
            "rdkit": rdkit.__version__, "method": "ETKDGv3 + Gasteiger, neutral pH, 1-4 exclusion"}
    save(peptides, a.out, meta)
    write_card(a.out)
    c = card(load(a.out))
    c["sha256"] = checksum(a.out)
    c["bytes"] = a.out.stat().st_size
    print(json.dumps(c, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

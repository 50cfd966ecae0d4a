"""A built-in benchmark that isolates long-range *geometry*: united-atom electrostatics of charge-balanced
peptide conformers.

Design (each choice removes a shortcut that lets a model - or a linear fit - score without resolving
long-range geometry):

* **Fixed charge composition.** Every peptide has 8-12 residues with exactly two basic residues (K or R),
  two acidic ones (D or E), termini NH3+ / COO- and the other positions drawn uniformly from the 16 neutral
  standard amino acids (``ACFGHILMNPQSTVWY``, His neutral); the positions of the charged residues are random.
  Net charge is 0 for every peptide, so amino-acid composition cannot explain the electrostatics.
* **Several conformers per sequence.** Each sequence is embedded ``conformers`` times with ETKDGv3
  (Wang, Witek, Landrum & Riniker, J. Chem. Inf. Model. 2020), seeded, one thread, random starting
  coordinates. Within one sequence the variance of the targets is purely geometric. Each graph carries its
  sequence index as ``group`` so that splits keep all conformers of a sequence together.
* **United atoms, exact targets.** Gasteiger-Marsili charges (Tetrahedron 1980) of the H-added molecule are
  summed onto their heavy atoms (united-atom charge Q). The model sees heavy atoms only (``x_s`` = element
  one-hot H, C, N, O, S + Q; ``pos``), and the targets are exact functions of that input (computed from the
  stored float32 coordinates and charges), over heavy-atom pairs more than three bonds apart on the
  heavy-atom bond graph, k = 332.0637 kcal A/(mol e^2). Force fields *exclude* 1-2 and 1-3 pairs and *scale*
  1-4 pairs (AMBER by 1/1.2, Cornell et al. 1995; OPLS-AA by 1/2, Jorgensen et al. 1996; CHARMM by a
  parameter-set factor, usually 1); this benchmark excludes 1-4 pairs too, a simplification that keeps every
  target free of force-field constants:

  - graph level: ``energy`` :math:`E = k \\sum_{i<j} Q_i Q_j / r_{ij}` (kcal/mol), ``energy_near``
    (pairs with :math:`r_{ij} \\le` cutoff, 5 A) and ``energy_far`` (:math:`r_{ij} >` cutoff);
  - node level: ``potential`` :math:`\\phi_i = k \\sum_j Q_j / r_{ij}` (kcal/(mol e)) and ``potential_far``
    (only :math:`r_{ij} >` cutoff: what no single-hop model with a 5 A cutoff can see).

* **Reference baselines.** :func:`reference_features` gives, for each target, the features of two ridge
  baselines: ``composition`` (counts of the 20 amino acids and the length; for node targets also the atom's
  element one-hot and Q) and ``cutoff_oracle`` (the exact within-cutoff part of the target - ``energy_near``
  for ``energy``, the near potential for ``potential`` - plus the composition features). For ``energy_far``
  and ``potential_far`` the within-cutoff part of the target is zero by construction, so the oracle features
  are just the composition features. The oracle is the best *pair-local* model (one that sums exact pair
  terms within the cutoff) up to a linear map; it is **not** a bound for deep message-passing networks,
  whose receptive field grows with the number of layers beyond one cutoff.

The dataset card (:func:`card`, written next to the data by :func:`write_card`) reports these baselines'
test-split R^2 and the variance decomposition. Generation takes about a second per conformer on one core,
so farfield ships the result (``farfield/datasets/data/peptide_electrostatics.npz``, made by
``python -m farfield.datasets.peptide_electrostatics``); :func:`generate` reproduces any sequence on its own.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


__all__ = ["AMINO_ACIDS", "COULOMB_K", "charged_peptide", "NEUTRAL", "BASIC", "ACIDIC", "TARGETS", "ELEMENTS", "DEFAULT_PATH", "SequenceRecord", "sequence",
           "make_sequence", "generate", "electrostatics", "beyond_three_bonds", "save", "load", "checksum",
           "reference_features", "ridge_r2", "card", "write_card", "peptide_electrostatics", "embedding_seed",
           "kabsch_rmsd", "min_pairwise_rmsd", "MIN_CONFORMER_RMSD"]

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
COULOMB_K = 332.0637     # kcal A / (mol e^2)
NEUTRAL = "ACFGHILMNPQSTVWY"
BASIC = "KR"
ACIDIC = "DE"
ELEMENTS = (1, 6, 7, 8, 16)   # one-hot layout of x_s (H, C, N, O, S)
#: target name -> "graph" or "node"
TARGETS = {"energy": "graph", "energy_near": "graph", "energy_far": "graph", "potential": "node",
           "potential_far": "node"}
DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "peptide_electrostatics.npz"
GENERATOR_VERSION = 2
#: conformers of one sequence must differ by at least this Kabsch RMSD (A, heavy atoms)
MIN_CONFORMER_RMSD = 0.5
DEFAULTS = {"seed": 0, "sequences": 150, "conformers": 4, "min_len": 8, "max_len": 12, "cutoff": 5.0}
SPLIT = {"fractions": (0.6, 0.2, 0.2), "seed": 0}


# -- generation -----------------------------------------------------------------------------------------------
@dataclass
class SequenceRecord:
    """One sequence and its conformers (heavy atoms only)."""
    sequence: str
    numbers: np.ndarray        # [n] atomic numbers (uint8)
    charge: np.ndarray         # [n] united-atom Gasteiger charges Q (float32), e
    residue: np.ndarray        # [n] 0-based residue index of each atom (uint8)
    bonds: np.ndarray          # [m, 2] heavy-atom bonds (int16, local indices)
    pos: np.ndarray            # [K, n, 3] Angstrom (float32)
    energy_near: np.ndarray    # [K] kcal/mol (float64)
    energy_far: np.ndarray     # [K]
    potential: np.ndarray      # [K, n] kcal/(mol e) (float64)
    potential_far: np.ndarray  # [K, n]



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

def sequence(seed: int, index: int, min_len: int = 8, max_len: int = 12) -> str:
    """Sequence ``index`` of the dataset with ``seed``: length uniform in [min_len, max_len], two residues from
    ``BASIC``, two from ``ACIDIC`` at random positions, the rest uniform over ``NEUTRAL``."""
    rng = np.random.default_rng([seed, index, 7])
    n = int(rng.integers(min_len, max_len + 1))
    res = [NEUTRAL[i] for i in rng.integers(0, len(NEUTRAL), n)]
    charged = rng.choice(n, 4, replace=False)
    for k, p in enumerate(charged):
        pool = BASIC if k < 2 else ACIDIC
        res[p] = pool[int(rng.integers(0, 2))]
    return "".join(res)


def beyond_three_bonds(bonds: np.ndarray, n: int) -> np.ndarray:
    """[n, n] bool: pairs more than three bonds apart on the graph with edges ``bonds`` ([m, 2])."""
    a = np.eye(n, dtype=np.int64)
    b = np.asarray(bonds, dtype=np.int64)
    a[b[:, 0], b[:, 1]] = 1
    a[b[:, 1], b[:, 0]] = 1
    reach = a @ a @ a    # nonzero iff within three bonds (a includes the identity)
    return reach == 0


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD of two [n, 3] point sets after optimal superposition by a proper rotation (Kabsch 1976)."""
    a = np.asarray(a, np.float64) - np.mean(a, 0)
    b = np.asarray(b, np.float64) - np.mean(b, 0)
    u, s, vt = np.linalg.svd(a.T @ b)
    s[-1] *= np.sign(np.linalg.det(u @ vt))
    return float(np.sqrt(max((a ** 2).sum() + (b ** 2).sum() - 2 * s.sum(), 0.0) / len(a)))


def min_pairwise_rmsd(pos: np.ndarray) -> float:
    """The smallest Kabsch RMSD between any two of the [K, n, 3] conformers (inf for K < 2)."""
    k = len(pos)
    return min((kabsch_rmsd(pos[i], pos[j]) for i in range(k) for j in range(i + 1, k)), default=float("inf"))


def electrostatics(pos: np.ndarray, q: np.ndarray, mask: np.ndarray, cutoff: float) -> dict:
    """Exact united-atom electrostatics of one conformer (float64): pair terms over ``mask`` (pairs more than
    three bonds apart), split at ``cutoff``. Returns ``energy``, ``energy_near``, ``energy_far`` (floats) and
    per-atom ``potential``, ``potential_near``, ``potential_far`` ([n])."""
    pos = np.asarray(pos, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    r = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    inv = np.where(mask, 1.0 / np.where(mask, np.maximum(r, 1e-6), 1.0), 0.0)
    near = r <= cutoff
    phi_near = COULOMB_K * (inv * near) @ q
    phi_far = COULOMB_K * (inv * ~near) @ q
    e_near, e_far = 0.5 * float(q @ phi_near), 0.5 * float(q @ phi_far)
    return {"energy": e_near + e_far, "energy_near": e_near, "energy_far": e_far, "potential": phi_near + phi_far,
            "potential_near": phi_near, "potential_far": phi_far}


def make_sequence(seq: str, seed: int, conformers: int = 4, cutoff: float = 5.0) -> SequenceRecord:
    """Build ``seq`` at neutral pH, embed ``conformers`` conformers (ETKDGv3, ``seed``, one thread, random
    starting coordinates), compute united-atom Gasteiger charges and the exact targets."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdPartialCharges

    if int(seed) <= 0:
        raise ValueError(f"{seq}: embedding seed must be positive (RDKit treats 0 and -1 specially), got {seed}")
    mol = Chem.AddHs(charged_peptide(seq))
    n = mol.GetNumHeavyAtoms()
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    if (z[:n] == 1).any() or (z[n:] != 1).any():
        raise RuntimeError(f"{seq}: hydrogens are not after the heavy atoms")
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = 1
    params.useRandomCoords = True   # ETKDG's eigenvalue start fails on many peptides of this size
    ids = list(AllChem.EmbedMultipleConfs(mol, int(conformers), params))
    if len(ids) != conformers:
        raise RuntimeError(f"ETKDG embedded {len(ids)} of {conformers} conformers of {seq} (seed {seed})")
    rdPartialCharges.ComputeGasteigerCharges(mol)
    q_all = np.array([a.GetDoubleProp("_GasteigerCharge") for a in mol.GetAtoms()])
    if not np.isfinite(q_all).all():
        raise RuntimeError(f"Gasteiger charges of {seq} are not finite")
    owner = np.array([a.GetIdx() if a.GetAtomicNum() > 1 else a.GetNeighbors()[0].GetIdx() for a in mol.GetAtoms()])
    q = np.bincount(owner, weights=q_all, minlength=n)[:n].astype(np.float32)
    bonds = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()
                      if b.GetBeginAtomIdx() < n and b.GetEndAtomIdx() < n], dtype=np.int16)
    mask = beyond_three_bonds(bonds, n)
    topo = Chem.GetDistanceMatrix(mol)[:n, :n]
    if not np.array_equal(mask, topo > 3):
        raise RuntimeError(f"{seq}: heavy-atom bond graph disagrees with RDKit's topological distances")
    residue = np.array([mol.GetAtomWithIdx(i).GetPDBResidueInfo().GetResidueNumber() - 1 for i in range(n)],
                       dtype=np.uint8)
    pos = np.stack([mol.GetConformer(i).GetPositions()[:n] for i in ids]).astype(np.float32)
    closest = min_pairwise_rmsd(pos)
    if closest < MIN_CONFORMER_RMSD:
        raise RuntimeError(f"{seq} (seed {seed}): two conformers are only {closest:.3f} A RMSD apart (minimum "
                           f"{MIN_CONFORMER_RMSD} A); the embedding did not produce distinct conformers")
    out = [electrostatics(p, q, mask, cutoff) for p in pos]
    return SequenceRecord(seq, z[:n].astype(np.uint8), q, residue, bonds, pos,
                          np.array([o["energy_near"] for o in out]), np.array([o["energy_far"] for o in out]),
                          np.stack([o["potential"] for o in out]), np.stack([o["potential_far"] for o in out]))


def embedding_seed(seed: int, index: int) -> int:
    """The ETKDG random seed of sequence ``index`` of the dataset with ``seed``: drawn from a
    ``SeedSequence`` of (seed, index) in [1, 2^31 - 1). Never 0 or negative: RDKit treats ``randomSeed=0`` like
    a fixed default and ``-1`` as unseeded (generator version 1 used ``seed * 1_000_003 + index``, which is 0
    for the first sequence and gave it four identical conformers)."""
    return int(np.random.default_rng([seed, index, 13]).integers(1, 2 ** 31 - 1))


def _one(args):
    seed, i, conformers, min_len, max_len, cutoff = args
    return make_sequence(sequence(seed, i, min_len, max_len), embedding_seed(seed, i), conformers, cutoff)


def generate(n: int, seed: int = 0, start: int = 0, conformers: int = 4, min_len: int = 8, max_len: int = 12,
             cutoff: float = 5.0, workers: int = 1, progress: bool = False) -> list[SequenceRecord]:
    """Sequences ``start .. start + n - 1`` of the dataset with ``seed``, each with ``conformers`` conformers.
    Every index has its own sequence and embedding seed, so any slice can be regenerated on its own."""
    jobs = [(seed, i, conformers, min_len, max_len, cutoff) for i in range(start, start + n)]
    if workers > 1:
        from multiprocessing import Pool
        with Pool(workers) as pool:
            return list(_bar(pool.imap(_one, jobs, chunksize=1), n, progress))
    return list(_bar(map(_one, jobs), n, progress))


def _bar(it, n, progress):
    if not progress:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, total=n, desc="sequences", unit="seq")


# -- storage --------------------------------------------------------------------------------------------------
def save(records: list[SequenceRecord], path: Path | str, meta: dict) -> None:
    """Compressed npz. Per sequence: ``sequence``, ``atom_offsets`` into ``numbers`` / ``charge`` /
    ``residue``, ``bond_offsets`` into ``bonds``. Per graph (conformer): ``group`` (sequence index),
    ``node_offsets`` into ``pos`` / ``potential`` / ``potential_far``, ``energy`` / ``energy_near`` /
    ``energy_far``. ``meta``: generation settings (JSON)."""
    na = np.array([len(r.numbers) for r in records])
    nb = np.array([len(r.bonds) for r in records])
    k = np.array([len(r.pos) for r in records])
    group = np.repeat(np.arange(len(records)), k)
    near = np.concatenate([r.energy_near for r in records])
    far = np.concatenate([r.energy_far for r in records])
    np.savez_compressed(
        path, sequence=np.array([r.sequence for r in records]),
        atom_offsets=np.concatenate([[0], np.cumsum(na)]).astype(np.int64),
        numbers=np.concatenate([r.numbers for r in records]).astype(np.uint8),
        charge=np.concatenate([r.charge for r in records]).astype(np.float32),
        residue=np.concatenate([r.residue for r in records]).astype(np.uint8),
        bond_offsets=np.concatenate([[0], np.cumsum(nb)]).astype(np.int64),
        bonds=np.concatenate([r.bonds for r in records]).astype(np.int16),
        group=group.astype(np.int32),
        node_offsets=np.concatenate([[0], np.cumsum(na[group])]).astype(np.int64),
        pos=np.concatenate([r.pos.reshape(-1, 3) for r in records]).astype(np.float32),
        energy=near + far, energy_near=near, energy_far=far,
        potential=np.concatenate([r.potential.reshape(-1) for r in records]).astype(np.float32),
        potential_far=np.concatenate([r.potential_far.reshape(-1) for r in records]).astype(np.float32),
        meta=np.array(json.dumps(meta, sort_keys=True)))


_NEEDED = {"sequence", "atom_offsets", "numbers", "charge", "residue", "bond_offsets", "bonds", "group",
           "node_offsets", "pos", "energy", "energy_near", "energy_far", "potential", "potential_far", "meta"}


def load(path: Path | str = DEFAULT_PATH) -> dict:
    """The arrays of a saved dataset plus ``meta`` (dict); :class:`~farfield.errors.InputError` naming the
    file if it is missing, unreadable or incomplete."""
    from farfield.errors import InputError
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "dataset file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        meta = json.loads(str(out["meta"])) if "meta" in out else None
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear message
        raise InputError(str(path), f"not a readable farfield dataset ({type(e).__name__}: {e})") from e
    if not _NEEDED <= set(out):
        raise InputError(str(path), f"not a peptide_electrostatics dataset: missing arrays {sorted(_NEEDED - set(out))}")
    out["meta"] = meta
    return out


def checksum(path: Path | str = DEFAULT_PATH) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _graph_atoms(data: dict) -> list[np.ndarray]:
    """For each graph, the indices of its atoms in the per-sequence arrays (numbers, charge, residue)."""
    ao = data["atom_offsets"]
    return [np.arange(ao[g], ao[g + 1]) for g in data["group"]]


# -- reference baselines -----------------------------------------------------------------------------------------
def _composition(data: dict) -> np.ndarray:
    """[S, 21] per sequence: counts of the 20 amino acids (``AMINO_ACIDS`` order) and the length."""
    seqs = data["sequence"]
    counts = np.array([[s.count(a) for a in AMINO_ACIDS] for s in seqs], dtype=np.float64)
    return np.concatenate([counts, counts.sum(1, keepdims=True)], 1)


def _check_target(target: str, where: str = "peptide_electrostatics") -> None:
    if target not in TARGETS:
        from farfield.errors import ConfigError
        raise ConfigError(f"{where}: target must be one of {sorted(TARGETS)}, got {target!r}")


def reference_features(data: dict, target: str = "energy") -> dict[str, np.ndarray]:
    """Features of the two reference ridge baselines for ``target``, rows aligned with the target (one per
    graph for graph targets, one per atom of the concatenated graphs for node targets):

    * ``composition``: counts of the 20 amino acids + length [G, 21]; node targets add the atom's element
      one-hot and united charge Q [N, 27];
    * ``cutoff_oracle``: the exact within-cutoff part of the target (``energy_near`` for ``energy`` and
      ``energy_near``; the near potential for ``potential``) followed by the composition features. For
      ``energy_far`` and ``potential_far`` the within-cutoff part is zero, so the oracle features are the
      composition features alone (a single-hop model with this cutoff sees nothing of the far part)."""
    _check_target(target, "reference_features")
    comp = _composition(data)[data["group"]]
    if TARGETS[target] == "graph":
        local = {"energy": data["energy_near"], "energy_near": data["energy_near"]}.get(target)
    else:
        counts = np.diff(data["node_offsets"])
        comp = np.repeat(comp, counts, axis=0)
        idx = np.concatenate(_graph_atoms(data))
        z = data["numbers"][idx]
        onehot = (z[:, None] == np.array(ELEMENTS)[None]).astype(np.float64)
        comp = np.concatenate([comp, onehot, data["charge"][idx, None].astype(np.float64)], 1)
        local = (data["potential"].astype(np.float64) - data["potential_far"].astype(np.float64)
                 if target == "potential" else None)
    oracle = comp if local is None else np.concatenate([np.asarray(local, np.float64)[:, None], comp], 1)
    return {"composition": comp, "cutoff_oracle": oracle}


def target_values(data: dict, target: str) -> np.ndarray:
    """The target as one float64 column of rows aligned with :func:`reference_features`."""
    _check_target(target)
    return np.asarray(data[target], dtype=np.float64)


def ridge_r2(x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> dict:
    """The reference ridge of ``y`` on ``x`` over the given row indices: :func:`farfield.train.stats.ridge_baseline`
    (standardised features, intercept, penalty with the lowest validation MAE), the same fit the study's report
    uses. Returns ``r2_test``, ``mae_test``, ``rmse_test`` and ``alpha``."""
    from farfield.train.stats import ridge_baseline
    r = ridge_baseline(x[train], y[train], x[val], y[val], x[test], y[test])
    return {"r2_test": r["r2"], "mae_test": r["mae"], "rmse_test": r["rmse"], "alpha": float(r["alpha"])}


def _node_rows(data: dict, graphs: np.ndarray) -> np.ndarray:
    off = data["node_offsets"]
    return np.concatenate([np.arange(off[g], off[g + 1]) for g in graphs]) if len(graphs) else np.zeros(0, int)


def card(data: dict) -> dict:
    """Dataset card: sizes and honest statistics of the reference baselines.

    Ridge R^2 values are on the test split of the default grouped split (fractions 0.6 / 0.2 / 0.2, split
    seed 0, whole sequences per split; :func:`ridge_r2`: fitted on train, penalty with the lowest validation
    MAE, as in the study's report).
    Variance shares and correlations are over all graphs."""
    from farfield.data.splits import split_indices

    g = data["group"]
    n_graphs = len(g)
    tr, va, te = split_indices(n_graphs, SPLIT["fractions"], SPLIT["seed"], groups=g)
    rows = {"graph": (tr, va, te), "node": tuple(_node_rows(data, s) for s in (tr, va, te))}
    e, near, far = data["energy"], data["energy_near"], data["energy_far"]
    heavy = np.diff(data["atom_offsets"])[g]
    lengths = np.array([len(s) for s in data["sequence"]])
    gm = np.bincount(g, weights=e) / np.bincount(g)
    within = float(((e - gm[g]) ** 2).sum() / ((e - e.mean()) ** 2).sum())
    dnear, dfar = near - (np.bincount(g, weights=near) / np.bincount(g))[g], far - (np.bincount(g, weights=far) / np.bincount(g))[g]

    stats = {}
    for t in TARGETS:
        if t == "energy_near":
            continue
        y = target_values(data, t)
        feats = reference_features(data, t)
        r = rows[TARGETS[t]]
        stats[f"{t}_composition_r2_test"] = ridge_r2(feats["composition"], y, *r)["r2_test"]
        stats[f"{t}_cutoff_oracle_r2_test"] = ridge_r2(feats["cutoff_oracle"], y, *r)["r2_test"]
    # how much of the far part a linear map of the exact near part (+ composition) predicts
    comp = reference_features(data, "energy")["composition"]
    stats["energy_far_from_near_r2_test"] = ridge_r2(np.concatenate([near[:, None], comp], 1), far, *rows["graph"])["r2_test"]
    pf = reference_features(data, "potential")
    stats["potential_far_from_near_r2_test"] = ridge_r2(pf["cutoff_oracle"], target_values(data, "potential_far"),
                                                        *rows["node"])["r2_test"]
    pot = data["potential"].astype(np.float64)
    return {
        "sequences": int(len(data["sequence"])), "graphs": int(n_graphs),
        "conformers_per_sequence": int(np.bincount(g).max()),
        "residues": [int(lengths.min()), int(lengths.max())],
        "heavy_atoms_mean": float(heavy.mean()), "heavy_atoms_range": [int(heavy.min()), int(heavy.max())],
        "split_graphs": [int(len(tr)), int(len(va)), int(len(te))],
        "split_sequences": [int(len(np.unique(g[s]))) for s in (tr, va, te)],
        "split_test_atoms": int(len(rows["node"][2])),
        "energy_mean": float(e.mean()), "energy_std": float(e.std()),
        "energy_near_std": float(near.std()), "energy_far_std": float(far.std()),
        "potential_std": float(pot.std()), "potential_far_std": float(data["potential_far"].astype(np.float64).std()),
        "energy_within_sequence_variance_share": within,
        "energy_far_variance_ratio": float(np.var(far) / np.var(e)),
        "energy_near_far_correlation": float(np.corrcoef(near, far)[0, 1]),
        "energy_near_far_within_sequence_correlation": float(np.corrcoef(dnear, dfar)[0, 1]),
        **stats,
        "split": {"fractions": list(SPLIT["fractions"]), "seed": SPLIT["seed"], "by": "sequence"},
        "ridge_alphas": [float(a) for a in _ridge_alphas()],
        **(data["meta"] or {}),
    }


def _ridge_alphas():
    from farfield.train.stats import RIDGE_ALPHAS
    return RIDGE_ALPHAS


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def write_card(path: Path | str = DEFAULT_PATH) -> Path:
    """Write the dataset card (markdown, with the statistics also as a JSON block) next to the dataset file."""
    path = Path(path)
    c = card(load(path))
    md = path.with_suffix(".md")
    te_g, te_s, te_a = c["split_graphs"][2], c["split_sequences"][2], c["split_test_atoms"]
    md.write_text("\n".join([
        "# peptide_electrostatics: a benchmark that isolates long-range geometry", "",
        f"{c['sequences']} random charge-balanced peptides of {c['residues'][0]}-{c['residues'][1]} residues (exactly "
        "two of K/R, two of D/E, NH3+ / COO- termini, the rest uniform over the 16 neutral standard amino acids; "
        f"net charge 0), each embedded as {c['conformers_per_sequence']} conformers by RDKit (ETKDGv3, seeded, random "
        f"starting coordinates): {c['graphs']} graphs of {c['heavy_atoms_mean']:.0f} heavy atoms on average "
        f"({c['heavy_atoms_range'][0]}-{c['heavy_atoms_range'][1]}). Input: heavy atoms with united-atom Gasteiger "
        "charges Q (hydrogen charges summed onto their heavy atom). Targets are exact functions of the input: "
        "Coulomb sums over heavy-atom pairs more than 3 bonds apart (1-2, 1-3 and 1-4 pairs excluded; force fields "
        "exclude 1-2 / 1-3 and *scale* 1-4 pairs, e.g. AMBER by 1/1.2, so this is a simplification, not a force "
        "field's energy), k = 332.0637 kcal A/(mol e^2), split at "
        f"{c['cutoff']:g} A: `energy` = `energy_near` + `energy_far` (kcal/mol), per-atom `potential` and "
        "`potential_far` (kcal/(mol e)). `group` = sequence index.", "",
        "## Statistics", "",
        f"R^2 values are on the **test split** of the default split (fractions 0.6/0.2/0.2, split seed 0, whole "
        f"sequences per split: {te_g} graphs / {te_s} sequences, {te_a} atoms for node targets). Ridge with "
        "intercept on standardised features, fitted on train; the penalty is the one with the lowest validation MAE "
        "on the grid 1e-3 ... 1e5 (the same fit as the reference baselines of `farfield study`). R^2 = 1 - SSE / "
        "total sum of squares about the test mean.", "",
        "| statistic | value |", "|---|---|",
        f"| `energy`: R^2 of the composition ridge (20 amino-acid counts + length) | {_fmt(c['energy_composition_r2_test'])} |",
        f"| `energy`: R^2 of the cutoff oracle (exact `energy_near` + composition) | {_fmt(c['energy_cutoff_oracle_r2_test'])} |",
        f"| `energy_far`: R^2 of the composition ridge (= its cutoff oracle) | {_fmt(c['energy_far_composition_r2_test'])} |",
        f"| `energy_far`: R^2 of a ridge on exact `energy_near` + composition | {_fmt(c['energy_far_from_near_r2_test'])} |",
        f"| `potential`: R^2 of the composition ridge (+ own element, Q) | {_fmt(c['potential_composition_r2_test'])} |",
        f"| `potential`: R^2 of the cutoff oracle (exact near potential + composition) | {_fmt(c['potential_cutoff_oracle_r2_test'])} |",
        f"| `potential_far`: R^2 of the composition ridge (+ own element, Q; = its cutoff oracle) | {_fmt(c['potential_far_composition_r2_test'])} |",
        f"| `potential_far`: R^2 of a ridge on the exact near potential + composition | {_fmt(c['potential_far_from_near_r2_test'])} |",
        f"| `energy`: within-sequence (conformational) share of the variance, all {c['graphs']} graphs | {_fmt(c['energy_within_sequence_variance_share'])} |",
        f"| Pearson correlation of `energy_near` and `energy_far`, all graphs | {_fmt(c['energy_near_far_correlation'])} |",
        f"| the same within sequences (deviations from the sequence means) | {_fmt(c['energy_near_far_within_sequence_correlation'])} |",
        f"| var(`energy_far`) / var(`energy`), all graphs | {_fmt(c['energy_far_variance_ratio'])} |",
        f"| std of `energy` / `energy_near` / `energy_far` (kcal/mol) | {c['energy_std']:.1f} / {c['energy_near_std']:.1f} / {c['energy_far_std']:.1f} |",
        "",
        "Reading: composition explains little of `energy`, so a model must use geometry; the cutoff oracle - the "
        "best linear use of the exact within-cutoff pair energy - leaves the rest of the variance unexplained, "
        "which is what pairs beyond the cutoff carry. The oracle is the best *pair-local* model (one that sums "
        "pair terms within one cutoff), not a bound for multi-layer message passing, whose receptive field "
        "exceeds one cutoff. For `energy_far` / `potential_far` the within-cutoff part is zero by construction, "
        "so their oracle features are composition only.", "",
        "## Provenance", "",
        f"* generator: `python -m farfield.datasets.peptide_electrostatics --sequences {c['sequences']} "
        f"--conformers {c['conformers_per_sequence']} --seed {c['seed']} --min-len {c['min_len']} --max-len {c['max_len']} "
        f"--cutoff {c['cutoff']:g}` (generator version "
        f"{c['generator_version']}, RDKit {c['rdkit']}); sequence i with its conformers is reproducible on its own "
        "(`generate(1, seed, start=i)`)",
        f"* file: `{path.name}`, {path.stat().st_size / 2 ** 20:.2f} MB, sha256 `{checksum(path)}`", "",
        "```json", json.dumps(c, indent=1, sort_keys=True), "```", ""]))
    return md


def read_card_json(md: Path | str) -> dict:
    """The statistics JSON block of a written card."""
    text = Path(md).read_text()
    return json.loads(text.split("```json", 1)[1].split("```", 1)[0])


# -- loader ----------------------------------------------------------------------------------------------------
def peptide_electrostatics(path: Path | str | None = None, hydrogens: bool = False, target: str = "energy",
                           dtype=None) -> list:
    """The benchmark as PyG ``Data`` without edges (build them with an edge spec).

    ``x_s`` [n, 6]: element one-hot (H, C, N, O, S; H never occurs) and the united-atom charge Q; ``pos`` [n, 3]
    heavy-atom coordinates (A). ``y``: [1, 1] for graph targets (``energy``, ``energy_near``, ``energy_far``;
    kcal/mol), [n, 1] for node targets (``potential``, ``potential_far``; kcal/(mol e)). ``group`` [1]: the
    sequence index (split by it); ``graph_key`` [1]: the graph index. ``baseline_composition`` and
    ``baseline_cutoff_oracle``: the reference ridge features (:func:`reference_features`), first dimension as
    ``y``. Floats in ``dtype`` (default ``torch.float32``). Heavy atoms only: ``hydrogens=True`` is a
    :class:`~farfield.errors.ConfigError`, as is an unknown ``target``; a missing or unreadable file is an
    :class:`~farfield.errors.InputError` naming it."""
    import torch
    from torch_geometric.data import Data

    from farfield.data import fields as F
    from farfield.errors import ConfigError

    dtype = dtype or torch.float32
    if hydrogens:
        raise ConfigError("peptide_electrostatics: hydrogens=True is not available (united heavy atoms only; "
                          "the targets are defined on them)")
    _check_target(target)
    d = load(path or DEFAULT_PATH)
    feats = reference_features(d, target)
    y_all = target_values(d, target)
    atoms = _graph_atoms(d)
    off = d["node_offsets"]
    onehot_all = (d["numbers"][:, None] == np.array(ELEMENTS)[None]).astype(np.float64)
    node = TARGETS[target] == "node"
    out = []
    for i, idx in enumerate(atoms):
        a, b = int(off[i]), int(off[i + 1])
        x = np.concatenate([onehot_all[idx], d["charge"][idx, None].astype(np.float64)], 1)
        rows = slice(a, b) if node else slice(i, i + 1)
        data = Data(pos=torch.tensor(d["pos"][a:b], dtype=dtype),
                    y=torch.tensor(y_all[rows].reshape(-1, 1), dtype=dtype))
        data[F.X_S] = torch.tensor(x, dtype=dtype)
        data[F.GRAPH_KEY] = torch.tensor([i])
        data[F.GROUP] = torch.tensor([int(d["group"][i])])
        data[F.NAME] = f"pe_{i}:{d['sequence'][d['group'][i]]}"
        data.baseline_composition = torch.tensor(feats["composition"][rows], dtype=dtype)
        data.baseline_cutoff_oracle = torch.tensor(feats["cutoff_oracle"][rows], dtype=dtype)
        out.append(data)
    return out


def identity(path: Path | str | None = None, **options) -> str:
    """The data's identity for run keys (:func:`farfield.datasets.identity.data_identity`): the first 16 hex
    digits of the data file's SHA-256 (``'missing'`` without one), so a regenerated file gets new runs."""
    path = Path(path or DEFAULT_PATH)
    if not path.is_file():
        return "missing"
    st = path.stat()
    return _checksum_of(str(path.resolve()), st.st_size, st.st_mtime_ns)[:16]


@functools.lru_cache(maxsize=16)
def _checksum_of(path: str, size: int, mtime_ns: int) -> str:
    """:func:`checksum`, computed once per (file, size, modification time): run keys ask for it per run."""
    return checksum(path)


peptide_electrostatics.identity = identity
#: graph targets (``energy*``) are extensive sums over pairs: sum pooling; the node targets are not pooled
peptide_electrostatics.info = {"provides_edges": False,
                               "task": {"kind": "graph_regression", "num_outputs": 1, "pooling": "sum"}}


def main(argv=None) -> int:
    import argparse
    import time
    ap = argparse.ArgumentParser(description="generate the built-in peptide electrostatics benchmark and its card")
    ap.add_argument("--sequences", type=int, default=DEFAULTS["sequences"])
    ap.add_argument("--conformers", type=int, default=DEFAULTS["conformers"])
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--min-len", type=int, default=DEFAULTS["min_len"])
    ap.add_argument("--max-len", type=int, default=DEFAULTS["max_len"])
    ap.add_argument("--cutoff", type=float, default=DEFAULTS["cutoff"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=DEFAULT_PATH)
    a = ap.parse_args(argv)
    import rdkit
    t0 = time.time()
    recs = generate(a.sequences, a.seed, conformers=a.conformers, min_len=a.min_len, max_len=a.max_len,
                    cutoff=a.cutoff, workers=a.workers, progress=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"seed": a.seed, "cutoff": a.cutoff, "min_len": a.min_len, "max_len": a.max_len,
            "generator_version": GENERATOR_VERSION, "rdkit": rdkit.__version__,
            "method": "ETKDGv3 (random coords, seeds from SeedSequence, conformers >= 0.5 A RMSD apart) + Gasteiger "
                      "united atoms, neutral pH, 2 K/R + 2 D/E, 1-2/1-3/1-4 pairs excluded"}
    save(recs, a.out, meta)
    write_card(a.out)
    c = card(load(a.out))
    c["sha256"], c["bytes"], c["generation_seconds"] = checksum(a.out), a.out.stat().st_size, round(time.time() - t0, 1)
    print(json.dumps(c, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

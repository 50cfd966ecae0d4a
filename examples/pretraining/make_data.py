"""Build the data of the README's pretraining study from public files (nothing here is shipped; run it first).

    python examples/pretraining/make_data.py OUT [--data ../shared/data]

* ``OUT/corpus/``: the pretraining corpus. The 50 chains of TS50 (Li et al. 2014; backbone N, CA, C, O and
  sequence) written as PDB files, plus the AlphaFold model of P04629 (pLDDT in its B-factors).
* ``OUT/rsa/labels.csv`` (+ the structure files beside it): the downstream task, per-residue relative solvent
  accessibility (RSA) of the experimental protein structures of ``<data>/structures``: the Shrake-Rupley SASA of
  each residue in its whole structure (biotite, ProtOr radii, 1.4 A probe) divided by the residue's theoretical
  maximum (Tien et al., PLoS ONE 2013). A node-level ``folder`` dataset: ``id,chain,resnum,icode,rsa``.

The two sets share no protein. The downstream model sees residue graphs (CA positions, backbone dihedrals and
orientations, residue types), not side chains, so RSA is a real structure-to-property task for it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

#: theoretical maximum accessible surface area per residue (Tien et al. 2013), A^2
MAX_ASA = {"ALA": 129.0, "ARG": 274.0, "ASN": 195.0, "ASP": 193.0, "CYS": 167.0, "GLN": 225.0, "GLU": 223.0,
           "GLY": 104.0, "HIS": 224.0, "ILE": 197.0, "LEU": 201.0, "LYS": 236.0, "MET": 224.0, "PHE": 240.0,
           "PRO": 159.0, "SER": 155.0, "THR": 172.0, "TRP": 285.0, "TYR": 263.0, "VAL": 174.0, "MSE": 224.0}
ONE_TO_THREE = {"A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY",
                "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER",
                "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL"}
#: experimental protein structures of the shared data used downstream (whole files, every chain)
DOWNSTREAM = ["1aki.pdb", "1dix.pdb", "1orc.pdb", "3o5r.pdb", "4hhb.pdb", "2XHE.pdb", "1A8O.pdb", "1k6p.pdb",
              "4i39.cif", "5ugo.cif", "7gsa.cif", "1o1z.cif", "1pfe.cif.gz", "3wip.cif", "1igy.pdb"]


def write_backbone_pdb(path: Path, name: str, seq: str, coords) -> None:
    lines, serial = [f"HEADER    TS50 CHAIN {name}"], 1
    for i, (aa, res) in enumerate(zip(seq, coords)):
        for atom, xyz, el in zip(("N", "CA", "C", "O"), res, ("N", "C", "C", "O")):
            if xyz is None or not np.all(np.isfinite(np.asarray(xyz, dtype=float))):
                continue
            x, y, z = (float(v) for v in xyz)
            lines.append(f"ATOM  {serial:5d}  {atom:<3s} {ONE_TO_THREE.get(aa, 'UNK'):>3s} A{i + 1:4d}    "
                         f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {el:>2s}")
            serial += 1
    lines += ["TER", "END"]
    path.write_text("\n".join(lines) + "\n")


def rsa_rows(path: Path) -> list[tuple]:
    import biotite.structure as bs

    from farfield.io.readers import read_structure
    from farfield.io.residues import ResidueView
    from farfield.io.structure import ReadOptions
    s = read_structure(path, ReadOptions(waters=False, hydrogens=False))
    keep = ~s.hetero | np.isin(s.res_name, list(MAX_ASA))
    atoms = bs.AtomArray(int(keep.sum()))
    atoms.coord = s.coords[keep].astype(np.float32)
    atoms.element = s.element[keep].astype(str)
    atoms.atom_name = s.atom_name[keep].astype(str)
    atoms.res_name = s.res_name[keep].astype(str)
    atoms.res_id = s.res_seq[keep].astype(int)
    atoms.ins_code = s.ins_code[keep].astype(str)
    atoms.chain_id = s.chain_id[keep].astype(str)
    atoms.hetero = s.hetero[keep]
    sasa = bs.sasa(atoms, vdw_radii="ProtOr")
    key = list(zip(atoms.chain_id, atoms.res_id, atoms.ins_code))
    per = {}
    for k, a in zip(key, sasa):
        per[k] = per.get(k, 0.0) + (0.0 if not np.isfinite(a) else float(a))
    rv = ResidueView.from_structure(s)
    rows = []
    for c, r, i, name in zip(rv.chain_id, rv.res_seq, rv.ins_code, rv.res_name):
        area = per.get((str(c), int(r), str(i)), 0.0)
        rows.append((str(c), int(r), str(i), min(area / MAX_ASA.get(str(name), 200.0), 1.5)))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--data", default=os.environ.get("FARFIELD_TEST_DATA", "../shared/data"))
    a = ap.parse_args(argv)
    data, out = Path(a.data), Path(a.out)
    corpus, rsa = out / "corpus", out / "rsa"
    corpus.mkdir(parents=True, exist_ok=True)
    rsa.mkdir(parents=True, exist_ok=True)
    for chain in json.loads((data / "proteins_backbone" / "ts50.json").read_text()):
        write_backbone_pdb(corpus / f"ts50_{chain['name'].replace('.', '_')}.pdb", chain["name"], chain["seq"],
                           chain["coords"])
    shutil.copy(data / "structures" / "AF-P04629_alphafold_v2.pdb", corpus)
    lines = ["id,chain,resnum,icode,rsa"]
    for f in DOWNSTREAM:
        src = data / "structures" / f
        shutil.copy(src, rsa / f)
        ident = f.split(".")[0]
        for c, r, i, v in rsa_rows(src):
            lines.append(f"{ident},{c},{r},{i},{v:.4f}")
    (rsa / "labels.csv").write_text("\n".join(lines) + "\n")
    print(f"corpus: {len(list(corpus.iterdir()))} files in {corpus}; RSA labels: {len(lines) - 1} residues of "
          f"{len(DOWNSTREAM)} structures in {rsa / 'labels.csv'}")


if __name__ == "__main__":
    main()

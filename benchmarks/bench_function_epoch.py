"""What a full GO / EC run costs on this machine: seconds per training epoch of GVP-GNN (the published size:
node dims (100, 16), edge dims (32, 1), 5 layers; Jing et al. 2021) on residue graphs (radius 10 A), without and
with Chroma-style random long-range edges (8 per node, inverse-cubic law; Ingraham et al. 2023), measured through
``farfield train`` on real protein chains and extrapolated to the DeepFRI training sets.

Method: a DeepFRI-format set is written to a temporary folder from the sample structures in
``$FARFIELD_TEST_DATA/structures`` (every protein chain of at least 30 residues, all in the training split
but two for validation, one dummy GO term), so the real loader, featuriser, data module and trainer run.
``--epochs`` epochs are trained at one thread; the median training-epoch time is divided by the number of
residues in the training split, giving seconds per 1,000 residues, and multiplied by the residues of the
full training split: ``t_full = t_epoch * (n_chains * mean_length) / residues(train)``. The DeepFRI lists do
not give chain lengths, so the mean length is an input (``--mean-length``, default 250 residues; the report
prints the result for 150-350 too). Validation time is not included.

    python benchmarks/bench_function_epoch.py [--epochs 3] [--mean-length 250] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("FARFIELD_TEST_DATA", ROOT.parent / "shared" / "data"))
#: training chains of the DeepFRI sets (nrPDB-GO 2019.06.18, nrPDB-EC 2020.04)
TRAIN_CHAINS = {"go": 29902, "ec": 15551}


def write_set(folder: Path, structures: Path) -> tuple[Path, list[str]]:
    """A DeepFRI-format GO set over every protein chain (>= 30 residues) of the sample structures."""
    from farfield.datasets.structures import load_chain
    from farfield.io.residues import ResidueView
    chains = []
    for f in sorted(structures.iterdir()):
        if f.suffix not in (".pdb", ".cif") or "_" in f.stem or not f.stem[:1].isdigit() or len(f.stem) != 4:
            continue
        try:
            s = load_chain(f, None)
            view = ResidueView.from_structure(s)
        except Exception:      # noqa: BLE001 - skip what is not a protein or what the reader rejects
            continue
        ids = sorted(set(s.chain_id))
        for c in ids:
            n = int((view.chain_index == ids.index(c)).sum()) if len(ids) > 1 else len(view)
            if n >= 30:
                chains.append(f"{f.stem.upper()}-{c}")
    lines = ["### GO-terms (molecular_function)", "GO:0001", "### GO-names (molecular_function)", "term",
             "### GO-terms (biological_process)", "GO:0100", "### GO-names (biological_process)", "term",
             "### GO-terms (cellular_component)", "GO:0900", "### GO-names (cellular_component)", "term",
             "### PDB-chain\tGO-terms (molecular_function)\tGO-terms (biological_process)\tGO-terms (cellular_component)"]
    lines += [f"{c}\tGO:0001\tGO:0100\tGO:0900" if i % 2 else f"{c}\t\t\t" for i, c in enumerate(chains)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nrPDB-GO_bench_annot.tsv").write_text("\n".join(lines) + "\n")
    (folder / "nrPDB-GO_bench_train.txt").write_text("\n".join(chains[:-2]) + "\n")
    (folder / "nrPDB-GO_bench_valid.txt").write_text("\n".join(chains[-2:]) + "\n")
    (folder / "nrPDB-GO_bench_test.txt").write_text("\n")
    (folder / "nrPDB-GO_bench_test.csv").write_text("PDB-chain,<30%,<40%,<50%,<70%,<95%\n")
    return folder, chains


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--mean-length", type=float, default=250.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from farfield.datasets import DATASETS
    from farfield.train.config import load_config
    from farfield.train.run import train
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="ff_bench_fn_"))
    os.environ.setdefault("FARFIELD_CACHE", str(tmp / "cache"))
    os.environ["FARFIELD_OFFLINE"] = "1"
    folder, chains = write_set(tmp / "go", DATA / "structures")
    opts = {"structures": str(DATA / "structures"), "workers": 1, "progress": False}
    graphs = DATASETS["go-bp"](str(folder), **opts)
    train_res = sum(int(graphs.index["num_nodes"][i]) for i in range(len(graphs)) if graphs.index["split"][i] == 0)
    rows = {}
    for strategy in ("none", "random"):
        cfg = load_config(None, ["data.dataset=go-bp", f"data.path={folder}", "data.edges=radius:10.0",
                                 "data.batch_size=8", "data.max_atoms=4000", "model.backbone=gvp",
                                 f"model.long_range={strategy}", f"optim.epochs={args.epochs}",
                                 f"run.out={tmp / 'runs' / strategy}", "run.progress=false",
                                 "data.options=" + json.dumps(opts)])
        res = train(cfg, quiet=True)
        t = res["sec_per_epoch"]
        per_k = 1000 * t / train_res
        rows[strategy] = {"sec_per_epoch": t, "sec_per_1000_residues": per_k, "params": res["params"]["total"],
                          **{f"go_epoch_min_L{L}": TRAIN_CHAINS["go"] * L * per_k / 1000 / 60 for L in (150, 250, 350)},
                          "go_epoch_min": TRAIN_CHAINS["go"] * args.mean_length * per_k / 1000 / 60,
                          "ec_epoch_min": TRAIN_CHAINS["ec"] * args.mean_length * per_k / 1000 / 60}
    out = {"chains": len(graphs), "train_residues": train_res, "threads": 1, "mean_length": args.mean_length,
           "rows": rows}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{len(graphs)} chains, {train_res} training residues; GVP-GNN (100,16)/(32,1) x 5, radius 10 A, 1 thread")
        print("| strategy | s/epoch (sample) | s per 1,000 residues | GO epoch (min), L=150 / 250 / 350 | EC epoch (min) |")
        print("|---|---|---|---|---|")
        for k, r in rows.items():
            print(f"| {k} | {r['sec_per_epoch']:.2f} | {r['sec_per_1000_residues']:.3f} | {r['go_epoch_min_L150']:.0f} / "
                  f"{r['go_epoch_min_L250']:.0f} / {r['go_epoch_min_L350']:.0f} | {r['ec_epoch_min']:.0f} |")
        print(f"ratio random / none: {rows['random']['sec_per_epoch'] / rows['none']['sec_per_epoch']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

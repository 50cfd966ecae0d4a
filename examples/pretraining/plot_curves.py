"""Learning curves of pretraining runs: ``python examples/pretraining/plot_curves.py OUT.png RUN [RUN ...]``.

Each RUN is a ``farfield pretrain`` run directory; its ``metrics.json`` holds the per-epoch training and validation
loss (the weighted sum over tasks). The best validation epoch (the exported ``backbone.pt``) is marked."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2:
        raise SystemExit(__doc__)
    out, runs = Path(argv[0]), [Path(a) for a in argv[1:]]
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        m = json.loads((run / "metrics.json").read_text())
        cfg = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
        curve = m["curve"]
        ep = [c["epoch"] for c in curve]
        ax.plot(ep, [c.get("train/loss") for c in curve], label="train")
        ax.plot(ep, [c.get("val/loss") for c in curve], label="validation")
        best = min(curve, key=lambda c: c.get("val/loss", float("inf")))
        ax.axvline(best["epoch"], color="grey", ls=":", label=f"best (epoch {best['epoch']})")
        ax.set_title(", ".join(cfg["pretrain"]["tasks"]) + f" ({cfg['model']['backbone']})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

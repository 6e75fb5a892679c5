"""Navier–Stokes study figure: observed w(T), true w₀ and the conv / MLP reconstructions, per T.

Reads finished runs of experiments/study-ns-conv.toml and study-ns-full-wide.toml (seed 0 by default)
and draws one test sample per final time T.

    python experiments/ns_fields_figure.py --out experiments/results/figures/study-ns-conv/fields.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pdegrow.training.evaluate import load_eval_data, load_trained, predict  # noqa: E402

TIMES = (("T0_2", "0.2"), ("T1", "1"), ("T5", "5"))
MODELS = (("conv (2.4 k params)", "runs/study-ns-conv/runs/{d}/conv-fixed-same-budget/seed-{s}"),
          ("conv + Approach II", "runs/study-ns-conv/runs/{d}/conv-topological/seed-{s}"),
          ("MLP width 512 (1.3 M)", "runs/study-ns-full-wide/runs/{d}/fixed/seed-{s}"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/figures/study-ns-conv/fields.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=int, default=0, help="position in the test split")
    args = ap.parse_args(argv)
    fig, axes = plt.subplots(len(TIMES), 2 + len(MODELS), figsize=(3.0 * (2 + len(MODELS)), 3.0 * len(TIMES)))
    for row, (d, t) in enumerate(TIMES):
        data_path = f"datasets/ns32-T{t}-full.h5"
        truth = None
        for col, (label, pattern) in enumerate(MODELS):
            run_dir = pattern.format(d=d, s=args.seed)
            if not (Path(run_dir) / "model.pt").is_file():
                print(f"error: {run_dir} has not finished (run the studies first)", file=sys.stderr)
                return 2
            run = load_trained(run_dir)
            data = load_eval_data(run, data_path, "test")
            x, y = data["inputs"][args.sample], data["targets"][args.sample]
            pred = predict(run, data["inputs"][args.sample:args.sample + 1])[0].reshape(y.shape)
            if truth is None:
                truth = y
                lim = float(np.abs(y).max())
                axes[row, 0].imshow(x, origin="lower", cmap="RdBu_r")
                axes[row, 0].set_title(f"observed w(T = {t}) + noise", fontsize=9)
                axes[row, 1].imshow(y, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
                axes[row, 1].set_title("true w₀", fontsize=9)
            err = float(np.linalg.norm(pred - y) / np.linalg.norm(y))
            axes[row, 2 + col].imshow(pred, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
            axes[row, 2 + col].set_title(f"{label}: {err:.3f}", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"w₀ from w(T), 32×32 torus, test sample {args.sample}, seed {args.seed} "
                 "(titles: relative error)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())

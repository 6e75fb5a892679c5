"""Mass conservation of the wind study's predictions: Φ_div = mean ‖D û‖² on the test split, per strategy.

D is the data set's stored grid divergence (``operators/grid_divergence_*``); the true targets' value
is the floor set by the grid's truncation error (they are divergence-free in the finite-element sense,
not in the grid's finite differences). Mean ± std over the seeds of a ``pdegrow compare`` study.

    python experiments/wind_divergence_table.py runs/study-wind datasets/wind-study.h5 [--out FILE.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pdegrow.contract import open_dataset
from pdegrow.regularizers.wind_divergence import divergence_matrix, divergence_penalty
from pdegrow.text_output import print_and_save
from pdegrow.training.evaluate import load_eval_data, load_trained, predict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path)
    p.add_argument("data")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    with open_dataset(args.data, "wind") as f:
        D = divergence_matrix({k: f["operators"][k][()] for k in f["operators"]})
    rows: dict[str, list[float]] = {}
    truth = None
    for run_dir in sorted(args.study.glob("runs/*/*/seed-*")):
        if not (run_dir / "summary.json").is_file():
            continue
        run = load_trained(run_dir)
        data = load_eval_data(run, args.data, "test")
        pred = torch.as_tensor(predict(run, data["inputs"]), dtype=torch.float64)
        rows.setdefault(run_dir.parent.name, []).append(float(divergence_penalty(pred, D)))
        if truth is None:
            truth = float(divergence_penalty(torch.as_tensor(data["targets"], dtype=torch.float64), D))
    lines = [f"Φ_div = mean ‖D û‖² (1/s²) on the test split of {args.data}; study `{args.study}`", "",
             "| strategy | runs | Φ_div of the prediction | ratio to the truth's |", "|---|---:|---:|---:|"]
    for name, values in rows.items():
        v = np.array(values)
        lines.append(f"| {name} | {len(v)} | {v.mean():.3e} ± {v.std(ddof=1) if len(v) > 1 else 0:.1e} | "
                     f"{v.mean() / truth:.2f} |")
    lines.append(f"| (true targets) | | {truth:.3e} | 1.00 |")
    print_and_save(lines, args.out)


if __name__ == "__main__":
    main()

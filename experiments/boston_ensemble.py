"""Test MSE of the average prediction of several trained runs (an ensemble of seeds), per strategy.

Each strategy's seed runs of a ``pdegrow compare`` study (``STUDY/runs/DATASET/STRATEGY/seed-K``)
are loaded, predict the same test rows (their common ``splits.json``), and the mean of their
predictions is scored; the single runs' mean MSE is printed beside it.

    python experiments/boston_ensemble.py runs/study-boston-paper \\
        --data-file paper=datasets/proto-boston-paper.h5 --data-file keras=datasets/proto-boston-keras.h5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pdegrow.errors import PdegrowError
from pdegrow.training.evaluate import load_eval_data, load_trained, predict


def ensemble(runs: list[Path], data: str) -> tuple[float, float, int]:
    """(ensemble MSE, mean single-run MSE, runs) on the runs' common test split of ``data``."""
    preds, target, test_rows = [], None, None
    for r in runs:
        run = load_trained(r)
        if test_rows is None:
            test_rows = run.splits["test"]
        elif run.splits["test"] != test_rows:
            raise PdegrowError(f"{r}: another test split than {runs[0]}")
        d = load_eval_data(run, data, "test")
        preds.append(predict(run, d["inputs"]).astype(np.float64))
        target = np.asarray(d["targets"], dtype=np.float64)
    singles = [float(np.mean((p - target) ** 2)) for p in preds]
    return float(np.mean((np.mean(preds, axis=0) - target) ** 2)), float(np.mean(singles)), len(preds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--data-file", action="append", default=[], metavar="DATASET=PATH", required=True)
    args = ap.parse_args(argv)
    files = dict(s.split("=", 1) for s in args.data_file)
    print("| data set | strategy | runs | ensemble test MSE | mean single-run test MSE |")
    print("|---|---|---:|---:|---:|")
    try:
        for ds, path in files.items():
            for strat in sorted(p for p in (Path(args.study) / "runs" / ds).iterdir() if p.is_dir()):
                runs = sorted(p for p in strat.glob("seed-*") if (p / "model.pt").exists())
                if runs:
                    e, s, n = ensemble(runs, path)
                    print(f"| {ds} | {strat.name} | {n} | {e:.2f} | {s:.2f} |")
    except (PdegrowError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

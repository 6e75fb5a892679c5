"""Time to accuracy of the strategies of a finished `pdegrow compare` study.

For every seed, the target is the best validation value of ``--metric`` that the baseline strategy
reached in its whole run; for each other strategy, the first epoch at which its validation value is at
or below that target, and the training wall time (``wall_s`` of ``metrics.jsonl``) at that epoch.
Ratios are to the baseline's own epoch and wall time of its best value; "never" when a strategy does
not reach the target. Wall times come from one shared, loaded machine: read the ratios, not the seconds.

    python experiments/time_to_accuracy.py runs/study-heat-paper-posterior --baseline fixed-same-size
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def first_reaching(metrics: list[dict], key: str, target: float) -> dict | None:
    return next((r for r in metrics if r.get(key) is not None and r[key] <= target), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path)
    p.add_argument("--baseline", required=True,
                   help="the strategy label whose best validation value is the target")
    p.add_argument("--metric", default="rel_error_field", help="validation metric (val_<metric>)")
    args = p.parse_args()
    key = f"val_{args.metric}"
    base_runs = {r.name: r for r in sorted(args.study.glob(f"runs/*/{args.baseline}/seed-*"))}
    strategies = sorted({r.parent.name for r in args.study.glob("runs/*/*/seed-*")} - {args.baseline})
    print(f"| strategy | seeds reaching the {args.baseline} best {key} | epochs (ratio) | wall s (ratio) |")
    print("|---|---:|---:|---:|")
    for strat in [args.baseline, *strategies]:
        epochs, walls, e_ratio, w_ratio, n = [], [], [], [], 0
        for seed, base in base_runs.items():
            run = args.study / "runs" / base.parent.parent.name / strat / seed
            if not (run / "metrics.jsonl").is_file():
                continue
            b = rows(base)
            best = min(b, key=lambda r: r[key])
            hit = first_reaching(rows(run), key, best[key])
            n += 1
            if hit is None:
                continue
            epochs.append(hit["epoch"])
            walls.append(hit["wall_s"])
            e_ratio.append(hit["epoch"] / best["epoch"])
            w_ratio.append(hit["wall_s"] / best["wall_s"])
        if not epochs:
            print(f"| {strat} | 0/{n} | never | never |")
            continue
        print(f"| {strat} | {len(epochs)}/{n} | {np.mean(epochs):.0f} ({np.median(e_ratio):.2f}×) | "
              f"{np.mean(walls):.0f} ({np.median(w_ratio):.2f}×) |")


if __name__ == "__main__":
    main()

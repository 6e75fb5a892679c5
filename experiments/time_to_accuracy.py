"""Time to accuracy of the strategies of a finished `pdegrow compare` study.

For every seed, the target is the best validation value of ``--metric`` that the baseline strategy
reached in its whole run; for each other strategy, the first epoch at which its validation value is at
or below that target, and the training wall time (``wall_s`` of ``metrics.jsonl``) at that epoch.
Ratios are to the baseline's own epoch and wall time of its best value (median over the seeds that
reach it); "never" when a strategy does not reach the target. Runs are paired by seed within each data
set of the study (one table row per data set and strategy). Wall times come from one shared, loaded
machine: read the ratios, not the seconds.

    python experiments/time_to_accuracy.py runs/study-heat-paper-posterior --baseline fixed-same-size
    python experiments/time_to_accuracy.py runs/study-heat-paper-lc --baseline fixed \
        --datasets n50 n200 n1000 n5000
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Reach:
    """How one strategy's runs of one data set reach the baseline's best validation value."""

    dataset: str
    strategy: str
    runs: int                  # seeds with both a baseline run and a run of this strategy
    epochs: list[int]          # first epoch at or below the target, per seed that reaches it
    walls: list[float]         # training wall time at that epoch
    epoch_ratios: list[float]  # epoch / the baseline's epoch of its best
    wall_ratios: list[float]   # wall / the baseline's wall at its best
    before_growth: int = 0     # seeds that reach it before their first growth event (the start network)


def rows(run: Path) -> list[dict]:
    """The epochs of ``metrics.jsonl``, ``wall_s`` made cumulative over resumed segments (each restarts
    its clock at 0)."""
    out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    offset, last = 0.0, 0.0
    for r in out:
        if "wall_s" in r:
            if r["wall_s"] < last:   # a resumed segment: continue from the previous one's end
                offset += last
            last = r["wall_s"]
            r["wall_s"] = r["wall_s"] + offset
    return out


def first_reaching(metrics: list[dict], key: str, target: float) -> dict | None:
    return next((r for r in metrics if r.get(key) is not None and r[key] <= target), None)


def first_growth_epoch(run: Path) -> int | None:
    """The epoch of the run's first growth event (``events.jsonl``, kind ``growth``); None if none."""
    path = run / "events.jsonl"
    if not path.is_file():
        return None
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    epochs = [e["epoch"] for e in events if e.get("kind", "growth") == "growth"]
    return min(epochs) if epochs else None


def reach_table(study: Path, dataset: str, baseline: str, key: str) -> list[Reach]:
    """One :class:`Reach` per strategy of ``study/runs/DATASET`` (the baseline first)."""
    root = study / "runs" / dataset
    base_runs = {r.name: r for r in sorted(root.glob(f"{baseline}/seed-*"))
                 if (r / "metrics.jsonl").is_file()}
    strategies = sorted({r.parent.name for r in root.glob("*/seed-*")} - {baseline})
    out = []
    for strat in [baseline, *strategies]:
        reach = Reach(dataset, strat, 0, [], [], [], [])
        for seed, base in base_runs.items():
            run = root / strat / seed
            if not (run / "metrics.jsonl").is_file():
                continue
            valid = [r for r in rows(base) if r.get(key) is not None]
            if not valid:
                continue
            best = min(valid, key=lambda r: r[key])
            hit = first_reaching(rows(run), key, best[key])
            reach.runs += 1
            if hit is None:
                continue
            reach.epochs.append(int(hit["epoch"]))
            reach.walls.append(float(hit["wall_s"]))
            reach.epoch_ratios.append(hit["epoch"] / best["epoch"])
            reach.wall_ratios.append(hit["wall_s"] / best["wall_s"])
            grown = first_growth_epoch(run)
            reach.before_growth += int(strat != baseline and (grown is None or hit["epoch"] <= grown))
        out.append(reach)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path)
    p.add_argument("--baseline", required=True,
                   help="the strategy label whose best validation value is the target")
    p.add_argument("--metric", default="rel_error_field", help="validation metric (val_<metric>)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="data sets of the study, each read on its own (default: every one under runs/)")
    args = p.parse_args()
    key = f"val_{args.metric}"
    datasets = args.datasets or sorted(d.name for d in (args.study / "runs").iterdir() if d.is_dir())
    print(f"| data set | strategy | seeds reaching the {args.baseline} best {key} | epochs (median ratio) "
          "| wall s (median ratio) | reached before growing |")
    print("|---|---|---:|---:|---:|---:|")
    for dataset in datasets:
        for r in reach_table(args.study, dataset, args.baseline, key):
            if not r.epochs:
                print(f"| {dataset} | {r.strategy} | 0/{r.runs} | never | never | – |")
                continue
            print(f"| {dataset} | {r.strategy} | {len(r.epochs)}/{r.runs} | {np.mean(r.epochs):.0f} "
                  f"({np.median(r.epoch_ratios):.2f}×) | {np.mean(r.walls):.0f} "
                  f"({np.median(r.wall_ratios):.2f}×) | "
                  f"{'–' if r.strategy == args.baseline else f'{r.before_growth}/{len(r.epochs)}'} |")


if __name__ == "__main__":
    main()

"""Several test metrics of a finished `pdegrow compare` study as one Markdown table.

`pdegrow compare` tabulates one metric; this reads every run's ``summary.json`` (and the
study's ``runs.csv`` for wall times) and writes mean ± std over seeds of each metric asked for.

    python experiments/summarise_study.py runs/study-heat-paper \
        --metrics rel_error_field rel_error_conductivity
    python experiments/summarise_study.py runs/study-heat-paper --out experiments/results/x.md

Only finished runs are counted (column "runs").
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np


def collect(study: Path) -> list[dict]:
    walls: dict[tuple[str, str, str], float] = {}
    runs_csv = study / "runs.csv"
    if runs_csv.is_file():
        with runs_csv.open() as fh:
            for row in csv.DictReader(fh):
                walls[(row["dataset"], row["strategy"], row["seed"])] = float(row["train_wall_s"])
    out = []
    for summary in sorted(study.glob("runs/*/*/seed-*/summary.json")):
        run = summary.parent
        s = json.loads(summary.read_text())
        d, strat, seed = run.parent.parent.name, run.parent.name, run.name.removeprefix("seed-")
        out.append({"dataset": d, "strategy": strat, "seed": int(seed), "test": s.get("test", {}),
                    "n_params": s["architecture"]["n_params"], "depth": s["architecture"]["depth"],
                    "events": s["growth_events"], "epochs": s["epochs"], "wall": walls.get((d, strat, seed))})
    return out


def order_of(study: Path, results: list[dict]) -> list[tuple[str, str]]:
    """(dataset, strategy) pairs in the study's table order when there is one."""
    table = study / "table.csv"
    if table.is_file():
        with table.open() as fh:
            pairs = [(r["dataset"], r["strategy"]) for r in csv.DictReader(fh)]
        if pairs:
            return pairs
    return sorted({(r["dataset"], r["strategy"]) for r in results})


def pm(values: list[float], digits: int = 4) -> str:
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(a):
        return "–"
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.{digits}f}"


def table(study: Path, metrics: list[str]) -> str:
    results = collect(study)
    head = ["data set", "strategy", "runs", *[f"test {m}" for m in metrics], "parameters", "depth",
            "growth events", "epochs", "train wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for d, s in order_of(study, results):
        mine = [r for r in results if r["dataset"] == d and r["strategy"] == s]
        if not mine:
            continue
        params = sorted({r["n_params"] for r in mine})
        p = str(params[0]) if len(params) == 1 else f"{params[0]}–{params[-1]}"
        lines.append("| " + " | ".join([
            d, s, str(len(mine)), *[pm([r["test"].get(m, float("nan")) for r in mine]) for m in metrics], p,
            f"{np.mean([r['depth'] for r in mine]):.1f}", f"{np.mean([r['events'] for r in mine]):.1f}",
            f"{np.mean([r['epochs'] for r in mine]):.0f}", pm([r["wall"] for r in mine], 1)]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path, help="the --out directory of `pdegrow compare`")
    ap.add_argument("--metrics", nargs="+", default=["rel_error_target"])
    ap.add_argument("--out", type=Path, default=None, help="write the table here (default: stdout)")
    args = ap.parse_args(argv)
    if not (args.study / "runs").is_dir():
        print(f"error: {args.study} is not a `pdegrow compare` output (no runs/)", file=sys.stderr)
        return 2
    text = f"Mean ± std (sample std, ddof = 1) over the seeds of each row; study: `{args.study}`.\n\n" + \
        table(args.study, args.metrics)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

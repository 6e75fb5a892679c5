"""Time to accuracy of the strategies of a finished `pdegrow compare` study.

For every seed, the target is the best validation value of ``--metric`` that the baseline strategy
reached in its whole run; for each other strategy, the first epoch at which its validation value is at
or below that target, and the training wall and CPU time (``wall_s``, ``cpu_s`` of ``metrics.jsonl``,
summed over resumed segments) at that epoch. Ratios are to the baseline's own epoch, wall and CPU time of
its best value (median over the seeds that reach it); "never" when a strategy does not reach the target.
Runs are paired by seed within each data set of the study (one table row per data set and strategy); the
last columns are the whole run's CPU time over the baseline's whole run (median) and the final test value
of the metric (``result.json``, mean ± std over the runs). Wall times come from one shared, loaded
machine; CPU time (``time.process_time``) is what the run itself used, less sensitive to the load but
not free of it (a busy core runs slower per instruction). ``--per-seed`` lists the ratios seed by seed.
Runs made before ``cpu_s`` existed show "–" in the CPU columns; runs still training are left out.

    python experiments/time_to_accuracy.py runs/study-heat-paper-posterior --baseline fixed-same-size
    python experiments/time_to_accuracy.py runs/study-heat-paper-lc --baseline fixed \
        --datasets n50 n200 n1000 n5000
    python experiments/time_to_accuracy.py runs/study-heat-paper-tta --baseline fixed --per-seed
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

nan = float("nan")


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
    seeds: list[str] = field(default_factory=list)         # the seeds that reach it
    cpus: list[float] = field(default_factory=list)        # training CPU time at that epoch (NaN: no cpu_s)
    cpu_ratios: list[float] = field(default_factory=list)  # CPU / the baseline's CPU at its best
    total_cpu_ratios: list[float] = field(default_factory=list)  # whole run's CPU / the baseline's, every run
    finals: list[float] = field(default_factory=list)      # final test value of the metric, every run


CLOCKS = ("wall_s", "cpu_s")


def rows(run: Path) -> list[dict]:
    """The epochs of ``metrics.jsonl``, ``wall_s`` and ``cpu_s`` made cumulative over resumed segments
    (each restarts its clocks at 0): t_k ← t_k + Σ of the ends of the segments before k's."""
    out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    for clock in CLOCKS:
        offset, last = 0.0, 0.0
        for r in out:
            if clock in r:
                if r[clock] < last:   # a resumed segment: continue from the previous one's end
                    offset += last
                last = r[clock]
                r[clock] = r[clock] + offset
    return out


def final_test(run: Path, metric: str) -> float:
    """The run's final test value of ``metric`` (``result.json`` of a compare run; NaN if absent)."""
    path = run / "result.json"
    if not path.is_file():
        return float("nan")
    return float(json.loads(path.read_text()).get("test", {}).get(metric, float("nan")))


def finished(run: Path) -> bool:
    """A run that ended (``result.json`` of a compare run or ``summary.json``) and has its metrics; runs
    still training are left out, their best and their reach can still change."""
    ends = ("result.json", "summary.json")
    return (run / "metrics.jsonl").is_file() and any((run / f).is_file() for f in ends)


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
    base_runs = {r.name: r for r in sorted(root.glob(f"{baseline}/seed-*")) if finished(r)}
    strategies = sorted({r.parent.name for r in root.glob("*/seed-*")} - {baseline})
    out = []
    for strat in [baseline, *strategies]:
        reach = Reach(dataset, strat, 0, [], [], [], [])
        for seed, base in base_runs.items():
            run = root / strat / seed
            if not finished(run):
                continue
            base_rows = rows(base)
            valid = [r for r in base_rows if r.get(key) is not None]
            if not valid:
                continue
            best = min(valid, key=lambda r: r[key])
            run_rows = rows(run)
            hit = first_reaching(run_rows, key, best[key])
            reach.runs += 1
            reach.finals.append(final_test(run, key.removeprefix("val_")))
            reach.total_cpu_ratios.append(run_rows[-1].get("cpu_s", nan) / base_rows[-1].get("cpu_s", nan))
            if hit is None:
                continue
            reach.seeds.append(seed.removeprefix("seed-"))
            reach.epochs.append(int(hit["epoch"]))
            reach.walls.append(float(hit["wall_s"]))
            reach.cpus.append(float(hit.get("cpu_s", nan)))
            reach.epoch_ratios.append(hit["epoch"] / best["epoch"])
            reach.wall_ratios.append(hit["wall_s"] / best["wall_s"])
            reach.cpu_ratios.append(hit.get("cpu_s", nan) / best.get("cpu_s", nan))
            grown = first_growth_epoch(run)
            reach.before_growth += int(strat != baseline and (grown is None or hit["epoch"] <= grown))
        out.append(reach)
    return out


def _num(x: float, fmt: str) -> str:
    return "–" if not np.isfinite(x) else format(x, fmt)


def _mean_std(v: list[float]) -> str:
    a = np.asarray([x for x in v if np.isfinite(x)])
    if not len(a):
        return "–"
    return f"{a.mean():.4f} ± {a.std(ddof=1):.4f}" if len(a) > 1 else f"{a[0]:.4f}"


def table_row(r: Reach, baseline: str) -> str:
    """One Markdown row: reach, epochs / wall / CPU to the target (mean and median ratio), growth, totals."""
    head = f"| {r.dataset} | {r.strategy} | {len(r.epochs)}/{r.runs} |"
    tail = (f" {_num(float(np.median(r.total_cpu_ratios)) if r.total_cpu_ratios else nan, '.2f')}× | "
            f"{_mean_std(r.finals)} |")
    if not r.epochs:
        return f"{head} never | never | never | – |{tail}"
    grown = "–" if r.strategy == baseline else f"{r.before_growth}/{len(r.epochs)}"
    cpu = ("–" if not np.all(np.isfinite(r.cpus))
           else f"{np.mean(r.cpus):.0f} ({np.median(r.cpu_ratios):.2f}×)")
    return (f"{head} {np.mean(r.epochs):.0f} ({np.median(r.epoch_ratios):.2f}×) | "
            f"{np.mean(r.walls):.0f} ({np.median(r.wall_ratios):.2f}×) | "
            f"{cpu} | "
            f"{grown} |{tail}")


def per_seed_row(r: Reach) -> str:
    """Seed by seed: epoch and CPU ratio to the target, or "never"."""
    got = dict(zip(r.seeds, zip(r.epoch_ratios, r.cpu_ratios, strict=True), strict=True))
    cells = [f"s{k}: {e:.2f}× / {_num(c, '.2f')}×" for k, (e, c) in got.items()]
    return f"| {r.dataset} | {r.strategy} | {'; '.join(cells) or 'never'} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path)
    p.add_argument("--baseline", required=True,
                   help="the strategy label whose best validation value is the target")
    p.add_argument("--metric", default="rel_error_field", help="validation metric (val_<metric>)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="data sets of the study, each read on its own (default: every one under runs/)")
    p.add_argument("--per-seed", action="store_true",
                   help="also list the epoch and CPU ratios of every seed that reaches the target")
    args = p.parse_args()
    key = f"val_{args.metric}"
    if not (args.study / "runs").is_dir():
        raise SystemExit(f"{args.study} is not a compare study (no runs/ directory)")
    datasets = args.datasets or sorted(d.name for d in (args.study / "runs").iterdir() if d.is_dir())
    tables = {d: reach_table(args.study, d, args.baseline, key) for d in datasets}
    if not any(r.runs for t in tables.values() for r in t):
        raise SystemExit(f"no {args.baseline} run with a metrics.jsonl under {args.study}/runs/"
                         f"{{{','.join(datasets)}}}")
    print(f"| data set | strategy | seeds reaching the {args.baseline} best {key} | epochs (median ratio) "
          "| wall s (median ratio) | CPU s (median ratio) | reached before growing | whole run's CPU "
          f"(median ratio) | final test {args.metric} |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in tables.values():
        for r in t:
            print(table_row(r, args.baseline))
    if args.per_seed:
        print("\n| data set | strategy | per seed: epoch ratio / CPU ratio to the target |")
        print("|---|---|---|")
        for t in tables.values():
            for r in t:
                print(per_seed_row(r))


if __name__ == "__main__":
    main()

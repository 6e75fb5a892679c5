"""The comparison table: per data set and strategy, mean ± std over seeds (Markdown + CSV).

Columns: runs finished, the test error (``metric``), final parameter count,
growth events, epochs, training wall time. ``runs.csv`` lists every run.
The std is the sample standard deviation (n − 1); with one seed it is 0.
Numbers do not depend on how the runs were spread over ranks, except the
wall times.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from pdegrow.comparison.config import CompareConfig
from pdegrow.comparison.results import read_result
from pdegrow.comparison.same_config import result_differences
from pdegrow.training.runlog import atomic_write_text

RUN_COLUMNS = ("dataset", "strategy", "seed", "error", "n_params", "depth", "growth_events", "epochs",
               "train_wall_s", "wall_s")
TABLE_COLUMNS = ("dataset", "strategy", "metric", "runs", "error_mean", "error_std", "params_mean",
                 "params_std", "growth_events_mean", "epochs_mean", "train_wall_s_mean", "train_wall_s_std")
REFERENCE_COLUMNS = ("reference_method", "reference_error", "gap")   # data sets with a Bayes reference
WALL_COLUMNS = ("train_wall_s", "wall_s", "train_wall_s_mean", "train_wall_s_std")


def choose_metric(metric: str, results: list[dict[str, Any]]) -> str:
    """``metric`` if given, else ``rel_error_field`` when present, else the first ``rel_error_*`` key."""
    if metric:
        return metric
    keys = [k for r in results for k in r.get("test", {}) if k.startswith("rel_error")]
    if "rel_error_field" in keys:
        return "rel_error_field"
    return keys[0] if keys else "loss"


def collect_results(cfg: CompareConfig, out: Path) -> list[dict[str, Any]]:
    """The finished runs' results of the study's config (:mod:`pdegrow.comparison.same_config`), in
    config order."""
    found = []
    for spec in cfg.runs:
        res = read_result(spec.run_dir(out))
        if res is not None and not result_differences(res, spec.config):
            found.append(res)
    return found


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = math.fsum(values) / n
    if n == 1:
        return m, 0.0
    return m, math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))


def summarise(cfg: CompareConfig, results: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]],
                                                                          list[dict[str, Any]]]:
    """(metric, table rows, per-run rows)."""
    metric = choose_metric(cfg.metric, results)
    runs = []
    for r in results:
        test = r.get("test") or r.get("val") or {}
        runs.append({"dataset": r["dataset"], "strategy": r["strategy"], "seed": r["seed"],
                     "error": math.nan if test.get(metric) is None else test[metric],  # null: undefined
                     "n_params": r["n_params"], "depth": r["depth"],
                     "growth_events": r["growth_events"], "epochs": r["epochs"],
                     "train_wall_s": r["train_wall_s"], "wall_s": r["wall_s"]})
    rows = []
    for d in cfg.datasets:
        for s in cfg.strategies:
            mine = [r for r in runs if r["dataset"] == d and r["strategy"] == s]
            err = mean_std([float(r["error"]) for r in mine])
            par = mean_std([float(r["n_params"]) for r in mine])
            wall = mean_std([float(r["train_wall_s"]) for r in mine])
            rows.append({"dataset": d, "strategy": s, "metric": metric, "runs": len(mine),
                         "error_mean": err[0], "error_std": err[1],
                         "params_mean": par[0], "params_std": par[1],
                         "growth_events_mean": mean_std([float(r["growth_events"]) for r in mine])[0],
                         "epochs_mean": mean_std([float(r["epochs"]) for r in mine])[0],
                         "train_wall_s_mean": wall[0], "train_wall_s_std": wall[1]})
    return metric, rows, runs


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items() if k in columns})
    return buf.getvalue()


def plus_minus(mean: float, std: float, n: int, spec: str) -> str:
    """``mean ± std``; the mean alone for a single run (a spread of one value is not 0, it is unknown)."""
    return format(mean, spec) if n < 2 else f"{format(mean, spec)} ± {format(std, spec)}"


def markdown_table(cfg: CompareConfig, metric: str, rows: list[dict[str, Any]],
                   ref_rows: list[dict[str, Any]] | None = None) -> str:
    """The table; with ``ref_rows`` (data sets that have a Bayesian reference) a "Bayes reference" row
    after each such data set's strategies and a gap column = error / reference − 1."""
    gap = bool(ref_rows)
    spread = (f"mean ± std over seeds {', '.join(map(str, cfg.seeds))}" if len(cfg.seeds) > 1
              else f"seed {cfg.seeds[0]} (one run each: no spread)")
    lines = [f"Test {metric}: {spread} "
             f"(n = runs finished); parameters at the end of training; wall = training wall time."
             + (" gap = error / Bayes reference − 1 on the same test samples ('pdegrow reference')."
                if gap else ""), "",
             f"| data set | strategy | runs | test {metric} |" + (" gap |" if gap else "")
             + " parameters | growth events | epochs | wall (s) |",
             "|---|---|---:|---:|" + ("---:|" if gap else "") + "---:|---:|---:|---:|"]
    by_data = {r["dataset"]: r for r in ref_rows or []}
    for i, r in enumerate(rows):
        g = ""
        if gap:
            g = f" {100 * r['gap']:+.1f} % |" if r.get("gap") is not None and r["runs"] else " — |"
        if r["runs"] == 0:
            lines.append(f"| {r['dataset']} | {r['strategy']} | 0 | — |{g} — | — | — | — |")
        else:
            n = r["runs"]
            lines.append(f"| {r['dataset']} | {r['strategy']} | {n} | "
                         f"{plus_minus(r['error_mean'], r['error_std'], n, '.4f')} |{g} "
                         f"{r['params_mean']:.0f} | {r['growth_events_mean']:.1f} | {r['epochs_mean']:.0f} | "
                         f"{plus_minus(r['train_wall_s_mean'], r['train_wall_s_std'], n, '.1f')} |")
        last = i + 1 == len(rows) or rows[i + 1]["dataset"] != r["dataset"]
        ref = by_data.get(r["dataset"])
        if last and ref is not None:
            lines.append(f"| {r['dataset']} | **Bayes reference** ({ref['method']}) | — | "
                         f"{ref['error_mean']:.4f} ± {ref['error_stderr']:.4f} (s.e., n = {ref['n']}) "
                         "| 0 | — | — | — | — |")
    return "\n".join(lines) + "\n"


def write_tables(cfg: CompareConfig, results: list[dict[str, Any]], out: Path) -> list[Path]:
    """``table.md``, ``table.csv`` and ``runs.csv`` in ``out``."""
    from pdegrow.reference.tables import add_reference_gaps

    metric, rows, runs = summarise(cfg, results)
    ref_rows = add_reference_gaps(cfg, results, rows, metric, out)
    paths = [out / "table.md", out / "table.csv", out / "runs.csv"]
    atomic_write_text(paths[0], markdown_table(cfg, metric, rows, ref_rows))
    atomic_write_text(paths[1], _csv(rows, TABLE_COLUMNS + (REFERENCE_COLUMNS if ref_rows else ())))
    atomic_write_text(paths[2], _csv(runs, RUN_COLUMNS))
    return paths

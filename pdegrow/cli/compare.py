"""``pdegrow compare``: strategies × seeds × data sets, one table and comparison figures."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pdegrow.errors import PdegrowError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare growth strategies over seeds and data sets",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every (data set, strategy, seed) of the config through the same trainer as "
        "'pdegrow train', each into OUT/runs/DATASET/STRATEGY/seed-K, then write OUT/table.md, "
        "OUT/table.csv (mean ± std of the test error, final parameters, growth events, wall time), "
        "OUT/runs.csv and OUT/figures/*.png. Under 'mpiexec -n N' the runs are dealt round robin over "
        "the ranks (one GPU per local rank where present). Run it again after an interruption: "
        "finished runs are kept, interrupted ones resume from their checkpoint. A run already in OUT "
        "must have the study's config, compared with today's defaults for keys added since (so a study "
        "made with an older pdegrow is summarised and extended); a different value is refused, naming "
        "the key (docs/compare.md).",
        epilog="config tables: [compare] [base.SECTION] [dataset.NAME] [strategy.NAME] "
        "(see experiments/compare-heat-paper.toml)\n"
        "examples:\n"
        "  pdegrow compare --config experiments/compare-heat-paper.toml --out runs/compare-heat\n"
        "  mpiexec -n 4 pdegrow compare --config experiments/compare-heat-paper.toml --out runs/cmp\n"
        "  pdegrow compare --config experiments/compare-navier-stokes.toml --out runs/cmp-ns "
        "--data ns-sensors=datasets/ns-16.h5")
    p.add_argument("--config", required=True, metavar="FILE", help="comparison config (TOML)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created; reused on restart)")
    p.add_argument("--data", action="append", metavar="NAME=FILE", default=[],
                   help="use FILE for data set NAME instead of the config's path (repeatable)")
    p.add_argument("--no-figures", action="store_true", help="write the tables only")
    p.add_argument("--quiet", action="store_true", help="no per-run lines")
    p.set_defaults(run=run)


def _overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise PdegrowError(f"--data expects NAME=FILE, got {item!r}")
        out[name] = path
    return out


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def progress_text(info: dict[str, Any]) -> str:
    """``3/8 done, ~2 min 10 s left`` (this rank's runs; the time left from their average so far)."""
    text = f"{info['finished']}/{info['of']} done"
    if info.get("left_s") is not None and info["finished"] < info["of"]:
        text += f", ~{duration(info['left_s'])} left"
    if info.get("ranks", 1) > 1:
        text += f" on this rank ({info['pending']} runs on {info['ranks']} ranks)"
    return text


def run(args: argparse.Namespace) -> int:
    from pdegrow.comparison.runner import run_comparison

    def on_event(kind: str, info: dict[str, Any]) -> None:
        if args.quiet:
            return
        where = f"[rank {info['rank']}]" if info.get("ranks", 1) > 1 else ""
        if kind == "start":
            print(f"{where}[{info['finished'] + 1}/{info['of']}] {info['run']} on {info['device']} …",
                  flush=True)
        elif kind == "done":
            r = info["result"]
            metrics = r["test"] or r["val"]
            errs = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("rel_"))
            print(f"{where}[{progress_text(info)}] {info['run']} done: {errs}; {r['n_params']} params, "
                  f"{r['growth_events']} growth events, {r['wall_s']:.1f} s", flush=True)
        else:
            print(f"{where}[{progress_text(info)}] {info['run']} FAILED: {info['error'].splitlines()[0]}",
                  file=sys.stderr, flush=True)

    summary = run_comparison(args.config, args.out, data_overrides=_overrides(args.data),
                             figures=not args.no_figures, on_event=on_event)
    if summary.outputs:
        print(f"{summary.n_runs} runs ({summary.skipped} already finished, {len(summary.done)} run now)")
        for path in summary.outputs:
            print(path)
        table = next((p for p in summary.outputs if p.name == "table.md"), None)
        if table is not None and not args.quiet:
            print(table.read_text())
    return 0

"""Redraw a finished study's comparison figures with today's code, without training anything.

``pdegrow compare`` draws ``OUT/figures/{error_vs_params,error_vs_wall,loss_curves}.png`` when it
ends; this reads the study's config, keeps the finished runs whose config is the study's
(``collect_results``, the same check as the compare tables) and draws the three figures again, into
``OUT/figures`` and, with ``--copy-to``, into a committed folder. Nothing is trained; a study with
no finished run is refused (exit 2).

    python experiments/redraw_compare_figures.py experiments/study-ns-vit.toml runs/study-ns-vit \\
        --copy-to experiments/results/figures/study-ns-vit
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pdegrow.comparison.config import load_compare_config
from pdegrow.comparison.figures import write_figures
from pdegrow.comparison.table import collect_results
from pdegrow.errors import PdegrowError


def redraw(config: Path, out: Path, copy_to: Path | None = None) -> tuple[int, int, list[Path]]:
    """(finished runs drawn, runs in the config, figure paths written)."""
    if not out.is_dir():
        raise PdegrowError(f"{out}: no such study directory")
    cfg = load_compare_config(config)
    results = collect_results(cfg, out)
    if not results:
        raise PdegrowError(f"{out}: no finished run of {config} (nothing to draw)")
    paths = write_figures(cfg, results, out)
    if copy_to is not None:
        copy_to.mkdir(parents=True, exist_ok=True)
        paths = [Path(shutil.copy2(p, copy_to / p.name)) for p in paths]
    return len(results), len(cfg.runs), paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="the study's compare config (TOML)")
    p.add_argument("out", type=Path, help="the study's --out directory")
    p.add_argument("--copy-to", type=Path, help="also copy the figures into this folder")
    args = p.parse_args()
    try:
        done, total, paths = redraw(args.config, args.out, args.copy_to)
    except PdegrowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{done}/{total} finished runs drawn")
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Comparison figures (matplotlib, Agg): one panel per data set, one colour per strategy.

* ``error_vs_params.png`` — test error against the final parameter count (every run,
  and the mean ± std of each strategy);
* ``error_vs_wall.png`` — test error against the training wall time;
* ``loss_curves.png`` — validation loss per epoch of every run (log scale), growth
  events marked with dots.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pdegrow.comparison.config import CompareConfig
from pdegrow.comparison.table import summarise
from pdegrow.training.runlog import read_events, read_jsonl


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panel_title(name: str) -> str:
    """A data-set name in words for a panel title: a letter prefix and a number with ``_`` for the
    decimal point become an equation (``T0_2`` → "T = 0.2", ``T5`` → "T = 5"); ``-``/``_`` between
    words become spaces; other names are kept."""
    m = re.fullmatch(r"([A-Za-z]+)(\d+)(?:_(\d+))?", name)
    if m:
        value = m.group(2) + (f".{m.group(3)}" if m.group(3) else "")
        return f"{m.group(1)} = {value}"
    return name.replace("_", " ")


def log_axis(ax: Any, axis: str = "x") -> None:
    """A log axis whose labels never overlap: plain numbers at 1-2-5 steps, no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=6))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _legend_or_note(ax: Any) -> None:
    """The strategies' legend, or, on a panel with nothing drawn (no run of that data set finished),
    a note saying so instead of an empty frame."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no finished run yet", transform=ax.transAxes, ha="center", va="center",
                color="0.4")


def _colours(plt: Any, n: int) -> list[Any]:
    if n <= 10:
        return list(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    cmap = plt.get_cmap("tab20")
    return [cmap(i % 20) for i in range(n)]


def _panels(plt: Any, n: int) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.0), squeeze=False)
    return fig, list(axes[0])


def _scatter(cfg: CompareConfig, runs: list[dict[str, Any]], metric: str, xkey: str, xlabel: str,
             path: Path, logx: bool) -> None:
    plt = _plt()
    fig, axes = _panels(plt, len(cfg.datasets))
    colours = _colours(plt, len(cfg.strategies))
    for ax, d in zip(axes, cfg.datasets, strict=True):
        for j, s in enumerate(cfg.strategies):
            mine = [r for r in runs if r["dataset"] == d and r["strategy"] == s]
            if not mine:
                continue
            c = colours[j % len(colours)]
            xs, ys = [float(r[xkey]) for r in mine], [float(r["error"]) for r in mine]
            ax.scatter(xs, ys, color=c, alpha=0.4, s=14)
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            sy = (sum((y - my) ** 2 for y in ys) / max(len(ys) - 1, 1)) ** 0.5
            ax.errorbar([mx], [my], yerr=[sy], color=c, marker="o", ms=7, capsize=3, label=s)
        ax.set_title(panel_title(d))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {metric.replace('_', ' ')}")
        if logx:
            log_axis(ax, "x")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(alpha=0.3)
        _legend_or_note(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _loss_curves(cfg: CompareConfig, out: Path, results: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, axes = _panels(plt, len(cfg.datasets))
    colours = _colours(plt, len(cfg.strategies))
    specs = {(r.dataset, r.strategy, r.seed): r for r in cfg.runs}
    for ax, d in zip(axes, cfg.datasets, strict=True):
        labelled: set[str] = set()
        for res in results:
            if res["dataset"] != d:
                continue
            spec = specs[(res["dataset"], res["strategy"], res["seed"])]
            run_dir = spec.run_dir(out)
            rows = read_jsonl(run_dir / "metrics.jsonl")
            if not rows:
                continue
            s = res["strategy"]
            c = colours[cfg.strategies.index(s) % len(colours)]
            ep = [r["epoch"] for r in rows]
            val = [r["val_loss"] for r in rows]
            ax.plot(ep, val, color=c, lw=1, alpha=0.7, label=None if s in labelled else s)
            labelled.add(s)
            events = read_events(run_dir)
            by_epoch = {r["epoch"]: r["val_loss"] for r in rows}
            ev = [e["epoch"] for e in events if e["epoch"] in by_epoch]
            ax.scatter(ev, [by_epoch[e] for e in ev], color=c, s=10, zorder=3)
        ax.set_yscale("log")
        ax.set_title(panel_title(d))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation loss")
        ax.grid(alpha=0.3)
        _legend_or_note(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_figures(cfg: CompareConfig, results: list[dict[str, Any]], out: Path) -> list[Path]:
    """The three figures in ``out/figures``; returns their paths."""
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    metric, _rows, runs = summarise(cfg, results)
    paths = [fig_dir / "error_vs_params.png", fig_dir / "error_vs_wall.png", fig_dir / "loss_curves.png"]
    _scatter(cfg, runs, metric, "n_params", "parameters (end of training)", paths[0], logx=True)
    _scatter(cfg, runs, metric, "train_wall_s", "training wall time (s)", paths[1], logx=False)
    _loss_curves(cfg, out, results, paths[2])
    return paths

"""Figures and a Markdown summary of a training run (matplotlib, Agg backend).

* ``loss_curves.png`` — training objective, data loss and validation loss per
  epoch (log scale), growth events as vertical lines, the validation relative
  field error on a second axis;
* ``architecture.png`` — depth, parameters and trainable parameters over epochs;
* ``growth_changes.png`` — predicted vs realised loss change of each growth event;
* ``fields.png`` (heat) — true and recovered log-conductivity, and the error
  map, for a few test samples, on the mesh (tripcolor), sensors marked;
* ``layer_evolution.png`` (heat) — the recovered field after each added layer
  and SRL corrector for one test sample, beside the truth (the papers' figure);
* ``topological_derivative.png`` — runs whose growth events come from the
  ``topological_insertion`` strategy: predicted vs realised change and the
  derivative per depth (:func:`pdegrow.growth.topological_report.plot_topological_history`);
* ``report.md`` — the run's summary, events table and the figure list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pdegrow.errors import PdegrowError
from pdegrow.locks import LOCK_NAME, DirectoryLock
from pdegrow.training.runlog import read_jsonl, read_run

TOPOLOGICAL_STRATEGY = "topological_insertion"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(rows: list[dict[str, Any]], events: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ep = [r["epoch"] for r in rows]
    for key, label in (("train_loss", "train objective"), ("train_data_loss", "train data loss"),
                       ("val_loss", "validation loss")):
        if rows and key in rows[0]:
            ax.semilogy(ep, [r[key] for r in rows], label=label)
    colours = {"insert": "tab:red", "widen": "tab:purple", "corrector": "tab:green"}
    seen: set[str] = set()
    for e in events:
        action = e["where"].get("action", "custom")
        ax.axvline(e["epoch"], color=colours.get(action, "k"), ls="--", lw=0.8,
                   label=f"growth: {action}" if action not in seen else None)
        seen.add(action)
    if rows and "val_rel_error_field" in rows[0]:
        ax2 = ax.twinx()
        ax2.plot(ep, [r["val_rel_error_field"] for r in rows], color="tab:gray", lw=0.8, alpha=0.7)
        ax2.set_ylabel("val. relative field error", color="tab:gray")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("loss curves (dashed: growth events)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_architecture(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    ep = [r["epoch"] for r in rows]
    a1.step(ep, [r["depth"] for r in rows], where="post", label="blocks")
    a1.step(ep, [r.get("n_correctors", 0) for r in rows], where="post", label="SRL correctors")
    a1.set_xlabel("epoch")
    a1.set_title("depth")
    a1.legend(fontsize=8)
    a2.step(ep, [r["n_params"] for r in rows], where="post", label="parameters")
    a2.step(ep, [r["n_trainable"] for r in rows], where="post", label="trainable")
    a2.set_xlabel("epoch")
    a2.set_title("parameters")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_growth_changes(events: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(events))
    pred = [e["predicted_change"] if e["predicted_change"] is not None else np.nan for e in events]
    real = [e["realised_change"] for e in events]
    ax.bar(x - 0.2, pred, 0.4, label="predicted")
    ax.bar(x + 0.2, real, 0.4, label="realised")
    ax.set_xticks(x, [f"{i + 1}\n{e['where'].get('action')}" for i, e in enumerate(events)], fontsize=7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("training-loss change at growth")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _tri(ax: Any, nodes: np.ndarray, cells: np.ndarray, values: np.ndarray, sensors: np.ndarray | None,
         title: str, vmin: float | None = None, vmax: float | None = None, cmap: str = "viridis") -> Any:
    im = ax.tripcolor(nodes[:, 0], nodes[:, 1], cells, values, shading="gouraud", vmin=vmin, vmax=vmax,
                      cmap=cmap)
    if sensors is not None:
        ax.plot(sensors[:, 0], sensors[:, 1], "w^", ms=4, mec="k", mew=0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return im


def plot_fields(true: np.ndarray, pred: np.ndarray, geometry: dict[str, np.ndarray], indices: np.ndarray,
                path: Path) -> None:
    plt = _plt()
    n = len(true)
    fig, axes = plt.subplots(n, 3, figsize=(9, 2.8 * n), squeeze=False)
    nodes, cells, sensors = geometry["nodes"], geometry["cells"], geometry.get("sensors")
    for i in range(n):
        lo, hi = float(min(true[i].min(), pred[i].min())), float(max(true[i].max(), pred[i].max()))
        rel = np.linalg.norm(pred[i] - true[i]) / max(np.linalg.norm(true[i]), 1e-30)
        im = _tri(axes[i, 0], nodes, cells, true[i], sensors, f"true m (sample {indices[i]})", lo, hi)
        _tri(axes[i, 1], nodes, cells, pred[i], sensors, f"recovered m (rel. err. {rel:.3f})", lo, hi)
        fig.colorbar(im, ax=axes[i, :2], shrink=0.8)
        im2 = _tri(axes[i, 2], nodes, cells, np.abs(pred[i] - true[i]), sensors, "|error|", cmap="magma")
        fig.colorbar(im2, ax=axes[i, 2], shrink=0.8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_layer_evolution(labels: list[str], fields: list[np.ndarray], true: np.ndarray,
                         geometry: dict[str, np.ndarray], path: Path) -> None:
    plt = _plt()
    n = len(fields) + 1
    cols = min(n, 5)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    lo, hi = float(true.min()), float(true.max())
    nodes, cells, sensors = geometry["nodes"], geometry["cells"], geometry.get("sensors")
    for k, (label, f) in enumerate(zip(labels, fields, strict=True)):
        rel = np.linalg.norm(f - true) / max(np.linalg.norm(true), 1e-30)
        _tri(axes.flat[k], nodes, cells, f, sensors, f"{label}: {rel:.3f}", lo, hi)
    _tri(axes.flat[n - 1], nodes, cells, true, sensors, "true", lo, hi)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("recovered field after each layer (relative error)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run_dir: str | Path, data_path: str | None = None, out: str | Path | None = None,
                 n_examples: int = 3, reference: str | None = None) -> list[Path]:
    """Write the figures and ``report.md`` of a run into ``out`` (default ``RUN_DIR/report``)."""
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    if info.get("status") == "failed":
        raise PdegrowError(f"{run_dir}: the run failed ({info.get('error', 'no reason recorded')}); "
                           f"nothing to report — train it again")
    out = Path(out) if out is not None else run_dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PdegrowError(f"cannot create the report directory {out} ({exc.strerror or exc})") from None
    lock = DirectoryLock(out / LOCK_NAME, f"report directory {out}")  # one report writer at a time
    lock.acquire()
    try:
        return _write_report_files(run_dir, info, out, data_path, n_examples, reference)
    finally:
        lock.release()


def _write_report_files(run_dir: Path, info: dict[str, Any], out: Path, data_path: str | None,
                        n_examples: int, reference: str | None) -> list[Path]:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    events = read_jsonl(run_dir / "events.jsonl")
    written: list[Path] = []
    if rows:
        plot_loss_curves(rows, events, out / "loss_curves.png")
        plot_architecture(rows, out / "architecture.png")
        written += [out / "loss_curves.png", out / "architecture.png"]
    if events:
        plot_growth_changes(events, out / "growth_changes.png")
        written.append(out / "growth_changes.png")
    topo_events = [e for e in events if e.get("strategy") == TOPOLOGICAL_STRATEGY]
    if topo_events:
        from pdegrow.growth.topological_report import plot_topological_history

        fig = plot_topological_history(topo_events, out / "topological_derivative.png")
        if fig is not None:
            written.append(fig)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    data_path = data_path or info.get("data")
    if (run_dir / "model.pt").is_file() and data_path and Path(data_path).is_file():
        written += _field_figures(run_dir, data_path, out, n_examples, reference)
    lines = [f"# Run {run_dir.name}", "", f"- status: {info.get('status')}", f"- data: {info.get('data')}"]
    if summary:
        lines += [f"- strategy: {summary['strategy']}, epochs {summary['epochs']}, "
                  f"growth events {summary['growth_events']}",
                  f"- final architecture: {json.dumps(summary['architecture'])}", "",
                  "| split | loss | rel. error (target) | rel. error (field) |", "|---|---|---|---|"]
        for split in ("val", "test"):
            s = summary.get(split) or {}
            if s:
                lines.append(f"| {split} | {_fmt(s.get('loss'), '.4g')} | "
                             f"{_fmt(s.get('rel_error_target'))} | {_fmt(s.get('rel_error_field'))} |")
    if events:
        lines += ["", "## Growth events", "",
                  "predicted Δ: the strategy's own prediction of the change of the training loss "
                  "(topological and random insertion: the second-order −(ε²/2)·C at the chosen ε); "
                  "realised Δ: the training loss measured just after the change minus just before.", "",
                  "| # | epoch | action | where | predicted Δ | realised Δ | params |",
                  "|---|---|---|---|---|---|---|"]
        for i, e in enumerate(events):
            where = {k: v for k, v in e["where"].items() if k not in ("action", "block")}
            pred = "—" if e["predicted_change"] is None else f"{e['predicted_change']:.3g}"
            lines.append(f"| {i + 1} | {e['epoch']} | {e['where'].get('action')} | {where} | {pred} | "
                         f"{e['realised_change']:.3g} | {e['n_params_before']}→{e['n_params_after']} |")
    lines += _topological_lines(topo_events)
    lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in written]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return [*written, out / "report.md"]


def _fmt(value: Any, spec: str = ".4f") -> str:
    """A metric for report.md: null (undefined, e.g. a zero reference) or missing → "—"."""
    return "—" if value is None else format(float(value), spec)


def _topological_lines(events: list[dict[str, Any]]) -> list[str]:
    """report.md section of the topological-insertion events: chosen depth and derivative there."""
    rows = [e for e in events if isinstance(e.get("info"), dict) and "derivative" in e["info"]]
    if not rows:
        return []
    lines = ["", "## Topological derivative", "",
             "Figure `topological_derivative.png`: predicted vs realised change, and the "
             "derivative max_r λ_max(A_r) at every depth (★ = chosen t*).", "",
             "*predicted* = −(ε²/2)·C, the second-order model at the chosen ε (C = Σ_r λ_r of the "
             "inserted rows); |ε| ≤ ε_max, the largest scale at which every pre-activation |εz| stays "
             "≤ `max_preactivation` (default 1), and ε is kept where realised/predicted stays within "
             "[½, 2] (*valid*). *realised* = J(Ω_ε) − J(Ω₀) "
             "at that ε, measured on the training loss. t = C / (standard error of its per-sample "
             "terms): how far the predicted decrease stands above its sampling noise.", "",
             "| # | epoch | t* | derivative at t* | max over depths | ε | ε_max | t | predicted | "
             "realised | ratio | valid |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(v: Any) -> str:
        return f"{float(v):.3g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"

    for i, e in enumerate(rows):
        info = e["info"]
        d = [float(v) for v in info["derivative"]]
        t = info.get("t_star")
        at = f"{d[t]:.3g}" if isinstance(t, int) and 0 <= t < len(d) else "—"
        valid = {True: "yes", False: "no"}.get(info.get("quadratic_valid"), "—")
        lines.append(f"| {i + 1} | {e.get('epoch')} | {t if t is not None else '—'} | {at} | "
                     f"{max(d) if d else float('nan'):.3g} | {num(info.get('eps'))} | "
                     f"{num(info.get('eps_max'))} | {num(info.get('significance'))} | "
                     f"{num(e.get('predicted_change'))} | {num(e.get('realised_change'))} | "
                     f"{num(info.get('ratio'))} | {valid} |")
    return lines


def _field_figures(run_dir: Path, data_path: str, out: Path, n_examples: int,
                   reference: str | None = None) -> list[Path]:
    from pdegrow.training.evaluate import field_of, layer_predictions, load_eval_data, load_trained, predict

    run = load_trained(run_dir)
    data = load_eval_data(run, data_path, None)
    true = data["aux"].get("targets/log_conductivity")
    if true is None or len(data["indices"]) == 0 or "cells" not in data["geometry"]:
        return []
    k = min(n_examples, len(data["indices"]))
    pred = field_of(predict(run, data["inputs"][:k]), data, run.cfg.data.target)
    if pred is None:
        return []
    plot_fields(true[:k], pred, data["geometry"], data["indices"][:k], out / "fields.png")
    layers = layer_predictions(run, data["inputs"][:1])
    labels = [lab for lab, _ in layers]
    fields = [field_of(p, data, run.cfg.data.target)[0] for _, p in layers]
    plot_layer_evolution(labels, fields, true[0], data["geometry"], out / "layer_evolution.png")
    return [out / "fields.png", out / "layer_evolution.png",
            *_reference_figures(run, data, true, out, n_examples, data_path, reference)]


def _reference_figures(run: Any, data: dict[str, Any], true: np.ndarray, out: Path, n_examples: int,
                       data_path: str, reference: str | None) -> list[Path]:
    """``reference_fields.png`` and ``reference_errors.png`` when the data has a Bayesian reference."""
    from pdegrow.reference.figures import plot_error_histograms, plot_reference_fields
    from pdegrow.reference.lookup import load_reference_for
    from pdegrow.training.evaluate import field_of, predict

    found = load_reference_for(data_path, reference)
    if found is None:
        return []
    ref = found[0]
    pred = field_of(predict(run, data["inputs"]), data, run.cfg.data.target)
    written = []
    idx = np.asarray(data["indices"])
    have = set(ref.sample_indices.tolist())
    shown = [j for j, i in enumerate(idx) if int(i) in have][:n_examples]
    if shown and plot_reference_fields(true[shown], pred[shown], idx[shown], ref, data["geometry"],
                                       out / "reference_fields.png"):
        written.append(out / "reference_fields.png")
    if plot_error_histograms(true, pred, idx, ref, out / "reference_errors.png"):
        written.append(out / "reference_errors.png")
    return written

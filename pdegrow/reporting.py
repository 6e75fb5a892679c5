"""Figures and a Markdown summary of a training run (matplotlib, Agg backend).

* ``loss_curves.png`` — training objective, data loss and validation loss per
  epoch (log scale), growth events as vertical lines, the validation relative
  field error on a second axis;
* ``architecture.png`` — depth, parameters and trainable parameters over epochs;
* ``growth_changes.png`` — predicted vs realised loss change of each growth event (when
  every event kept the function exactly, the loss change of the training after each);
* ``fields.png`` — true and recovered field (heat: log-conductivity m on the mesh, sensors
  marked; Navier–Stokes: w₀ on the grid) with one labelled colourbar, and the error map, for a
  few test samples (:mod:`pdegrow.report_fields`);
* ``layer_evolution.png`` — the recovered field after each added layer and SRL corrector for
  one test sample, in one row beside the truth, on one colour scale (the papers' figure);
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
from pdegrow.plots import PRIOR_MEAN_NOTE
from pdegrow.report_fields import plot_fields, plot_layer_evolution
from pdegrow.training.runlog import read_events, read_jsonl, read_run

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


def growth_phase_changes(events: list[dict[str, Any]], rows: list[dict[str, Any]],
                         key: str = "train_loss") -> list[float]:
    """For each growth event, the change of ``key`` over the training that followed it: its value at
    the epoch before the next event (or the last epoch) minus its value at the event's epoch."""
    by_epoch = {int(r["epoch"]): float(r[key]) for r in rows if r.get(key) is not None}
    if not by_epoch:
        return []
    epochs = sorted(by_epoch)

    def at(epoch: int) -> float:
        before = [e for e in epochs if e <= epoch]
        return by_epoch[before[-1] if before else epochs[0]]

    starts = [int(e["epoch"]) for e in events]
    ends = [s - 1 for s in starts[1:]] + [epochs[-1]]
    return [at(end) - at(start) for start, end in zip(starts, ends, strict=True)]


def plot_growth_changes(events: list[dict[str, Any]], path: Path,
                        rows: list[dict[str, Any]] | None = None) -> bool:
    """:func:`growth_changes_figure` saved to ``path``; False (nothing written) when it has nothing
    to show."""
    fig = growth_changes_figure(events, rows)
    if fig is None:
        return False
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return True


def growth_changes_figure(events: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None) -> Any:
    """Predicted vs realised training-loss change at each growth event. When every change is 0 (the
    growth kept the function exactly, e.g. layerwise identity blocks), the figure shows instead what
    the training after each event gained, from the metrics; None when nothing is left to draw."""
    plt = _plt()
    pred = np.array([np.nan if e["predicted_change"] is None else float(e["predicted_change"])
                     for e in events])
    real = np.array([float(e["realised_change"]) for e in events])
    names = [f"{i + 1}\n{e['where'].get('action')}\nep. {e['epoch']}" for i, e in enumerate(events)]
    x = np.arange(len(events))
    informative = bool(np.any(np.abs(np.nan_to_num(pred)) > 0) or np.any(np.abs(real) > 0))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(events) + 2.5), 3.6), layout="constrained")
    if informative:
        ax.bar(x - 0.2, np.nan_to_num(pred), 0.4, label="predicted", color="tab:blue")
        ax.bar(x + 0.2, real, 0.4, label="realised", color="tab:orange")
        for k in np.flatnonzero(np.isnan(pred)):
            ax.annotate("no prediction", (x[k] - 0.2, 0), fontsize=6, rotation=90, ha="center", va="bottom")
        ax.set_ylabel("training-loss change at growth")
        ax.set_title("loss change at each growth event: predicted vs realised", fontsize=9)
        ax.legend(fontsize=8)
    else:
        gains = growth_phase_changes(events, rows or [])
        if not gains:
            plt.close(fig)
            return None
        ax.bar(x, gains, 0.5, color="tab:green")
        ax.set_ylabel("training-loss change\nover the phase after it")
        ax.set_title("each growth kept the function exactly (predicted = realised = 0):\n"
                     "loss change over the training after each event", fontsize=9)
    ax.set_xticks(x, names, fontsize=7)
    ax.set_xlabel("growth event")
    ax.axhline(0, color="k", lw=0.5)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return fig


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
    events = read_events(run_dir)  # growth events (not the pruning between them)
    written: list[Path] = []
    if rows:
        plot_loss_curves(rows, events, out / "loss_curves.png")
        plot_architecture(rows, out / "architecture.png")
        written += [out / "loss_curves.png", out / "architecture.png"]
    if events and plot_growth_changes(events, out / "growth_changes.png", rows):
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
                             f"{_flag(s.get('rel_error_target'))} | {_flag(s.get('rel_error_field'))} |")
        if any(_above_one((summary.get(sp) or {}).get(k)) for sp in ("val", "test")
               for k in ("rel_error_target", "rel_error_field")):
            lines += ["", f"⚠ a relative error above 1: {PRIOR_MEAN_NOTE} (the zero field is closer to the "
                      "truth than the network's estimate)."]
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


def _above_one(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1


def _flag(value: Any) -> str:
    """:func:`_fmt`, with ⚠ on a relative error above 1."""
    return _fmt(value) + (" ⚠" if _above_one(value) else "")


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
             "terms): how far the predicted decrease stands above its sampling noise. *max over "
             "depths* is over the depths solved: with `prune_depths` a depth whose upper bound is "
             "below a solved derivative is not solved (its bound is in the figure), so it is the "
             "maximum over all depths.", "",
             "| # | epoch | t* | derivative at t* | max over depths | ε | ε_max | t | predicted | "
             "realised | ratio | valid |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(v: Any) -> str:
        return f"{float(v):.3g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"

    from pdegrow.growth.topological_report import depth_values, solved_derivatives

    for i, e in enumerate(rows):
        info = e["info"]
        d = depth_values(info["derivative"])
        solved = solved_derivatives(info["derivative"])
        t = info.get("t_star")
        at = f"{d[t]:.3g}" if isinstance(t, int) and 0 <= t < len(d) and np.isfinite(d[t]) else "—"
        top = f"{max(solved):.3g}" if solved else "—"
        valid = {True: "yes", False: "no"}.get(info.get("quadratic_valid"), "—")
        lines.append(f"| {i + 1} | {e.get('epoch')} | {t if t is not None else '—'} | {at} | "
                     f"{top} | {num(info.get('eps'))} | "
                     f"{num(info.get('eps_max'))} | {num(info.get('significance'))} | "
                     f"{num(e.get('predicted_change'))} | {num(e.get('realised_change'))} | "
                     f"{num(info.get('ratio'))} | {valid} |")
    return lines


def _field_figures(run_dir: Path, data_path: str, out: Path, n_examples: int,
                   reference: str | None = None) -> list[Path]:
    from pdegrow.training.evaluate import field_of, layer_predictions, load_eval_data, load_trained, predict

    run = load_trained(run_dir)
    data = load_eval_data(run, data_path, None)
    if len(data["indices"]) == 0:
        return []
    if data["targets"].ndim == 3:          # images (Navier–Stokes w₀): the target is the field
        return _image_figures(run, data, out, n_examples)
    true = data["aux"].get("targets/log_conductivity")
    if true is None or "cells" not in data["geometry"]:
        return []
    k = min(n_examples, len(data["indices"]))
    pred = field_of(predict(run, data["inputs"][:k]), data, run.cfg.data.target)
    if pred is None:
        return []
    plot_fields(true[:k], pred, data["geometry"], data["indices"][:k], out / "fields.png")
    layers = layer_predictions(run, data["inputs"][:1])
    labels = [lab for lab, _ in layers]
    fields = [field_of(p, data, run.cfg.data.target)[0] for _, p in layers]
    plot_layer_evolution(labels, fields, true[0], data["geometry"], out / "layer_evolution.png",
                         sample=int(data["indices"][0]))
    return [out / "fields.png", out / "layer_evolution.png",
            *_reference_figures(run, data, true, out, n_examples, data_path, reference)]


IMAGE_LABELS = {"vorticity_0": ("initial vorticity w₀", "w₀"), "vorticity_T": ("vorticity w(T)", "w(T)")}


def _image_figures(run: Any, data: dict[str, Any], out: Path, n_examples: int) -> list[Path]:
    """True vs recovered images (Navier–Stokes w₀), the error maps, and the layer evolution."""
    from pdegrow.training.evaluate import layer_predictions, predict

    true = np.asarray(data["targets"], dtype=float)
    k = min(n_examples, len(true))
    pred = predict(run, data["inputs"][:k]).reshape(k, *true.shape[1:])
    label, symbol = IMAGE_LABELS.get(run.cfg.data.target.rsplit("/", 1)[-1], (run.cfg.data.target, "field"))
    plot_fields(true[:k], pred, data["geometry"], data["indices"][:k], out / "fields.png", label, symbol)
    layers = layer_predictions(run, data["inputs"][:1])
    plot_layer_evolution([lab for lab, _ in layers], [p.reshape(true.shape[1:]) for _, p in layers], true[0],
                         data["geometry"], out / "layer_evolution.png", label, sample=int(data["indices"][0]))
    return [out / "fields.png", out / "layer_evolution.png"]


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

"""Field figures of a run report, for nodal fields on a mesh (heat: m) and images on a grid
(Navier–Stokes: w₀): true and recovered fields with one shared, labelled colourbar, the error map
with its own, axis coordinates on every panel, relative errors in the titles (flagged above 1), and
the recovered field after each added layer in one row beside the truth."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pdegrow.plots import add_colorbar, error_text, field_on_grid, field_on_mesh, relative_error

Drawer = Callable[..., Any]
MAX_LAYER_PANELS = 9
"""Layer-evolution panels besides the truth; deeper networks show evenly spaced states (first and
last always)."""


def drawer(geometry: dict[str, np.ndarray], values: np.ndarray) -> Drawer:
    """``draw(ax, values, title=…, vmin=…, vmax=…, cmap=…)`` for these fields: on the mesh for nodal
    values (1-D per sample), as an image for (R, R) fields."""
    sensors = geometry.get("sensors")
    if values.ndim == 1 and "nodes" in geometry and "cells" in geometry:
        def on_mesh(ax: Any, v: np.ndarray, **kw: Any) -> Any:
            return field_on_mesh(ax, geometry["nodes"], geometry["cells"], v, sensors=sensors, **kw)
        return on_mesh
    if values.ndim == 2:
        def on_grid(ax: Any, v: np.ndarray, **kw: Any) -> Any:
            return field_on_grid(ax, v, geometry, sensors=sensors, **kw)
        return on_grid
    raise ValueError(f"cannot draw fields of shape {values.shape}")


def plot_fields(true: np.ndarray, pred: np.ndarray, geometry: dict[str, np.ndarray], indices: np.ndarray,
                path: Path, label: str = "log-conductivity m", symbol: str = "m") -> Path:
    """:func:`fields_figure` saved to ``path``."""
    return _save(fields_figure(true, pred, geometry, indices, label, symbol), path)


def _save(fig: Any, path: Path) -> Path:
    from pdegrow.reporting import _plt

    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def fields_figure(true: np.ndarray, pred: np.ndarray, geometry: dict[str, np.ndarray], indices: np.ndarray,
                  label: str = "log-conductivity m", symbol: str = "m") -> Any:
    """One row per sample: true | recovered (shared colourbar ``label``) | |recovered − true|."""
    from pdegrow.reporting import _plt

    plt = _plt()
    n = len(true)
    draw = drawer(geometry, true[0])
    fig, axes = plt.subplots(n, 3, figsize=(10.0, 3.0 * n), squeeze=False, layout="constrained")
    for i in range(n):
        lo, hi = float(min(true[i].min(), pred[i].min())), float(max(true[i].max(), pred[i].max()))
        rel = relative_error(pred[i], true[i])
        im = draw(axes[i, 0], true[i], title=f"true {symbol}, test sample {indices[i]}", vmin=lo, vmax=hi)
        draw(axes[i, 1], pred[i], title=f"recovered {symbol}, {error_text(rel)}", vmin=lo, vmax=hi)
        add_colorbar(fig, im, list(axes[i, :2]), label)
        err = np.abs(pred[i] - true[i])
        im2 = draw(axes[i, 2], err, title=f"error map |recovered − true| {symbol}", vmin=0.0,
                   vmax=float(err.max()) or 1.0, cmap="magma")
        add_colorbar(fig, im2, axes[i, 2], f"|error| in {symbol}")
    return fig


def layer_title(label: str) -> str:
    """Panel titles in words: ``lift`` → "lift only", ``layer 3`` → "after layer 3",
    ``+SRL 2`` → "+ SRL corrector 2"."""
    if label == "lift":
        return "lift only"
    if label.startswith("layer "):
        return f"after {label}"
    if label.startswith("+SRL "):
        return f"+ SRL corrector {label.split()[-1]}"
    return label


def chosen_states(n: int, limit: int = MAX_LAYER_PANELS) -> list[int]:
    """At most ``limit`` of ``n`` states, evenly spaced, the first and the last always."""
    if n <= limit:
        return list(range(n))
    return sorted({int(round(k)) for k in np.linspace(0, n - 1, limit)})


def plot_layer_evolution(labels: list[str], fields: list[np.ndarray], true: np.ndarray,
                         geometry: dict[str, np.ndarray], path: Path, label: str = "log-conductivity m",
                         sample: int | None = None) -> Path:
    """:func:`layer_evolution_figure` saved to ``path``."""
    return _save(layer_evolution_figure(labels, fields, true, geometry, label, sample), path)


def layer_evolution_figure(labels: list[str], fields: list[np.ndarray], true: np.ndarray,
                           geometry: dict[str, np.ndarray], label: str = "log-conductivity m",
                           sample: int | None = None) -> Any:
    """One row: the true field, then the recovered field after the lift, each layer and each SRL
    corrector (relative error in each title), all on one colour scale with one colourbar."""
    from pdegrow.reporting import _plt

    plt = _plt()
    keep = chosen_states(len(fields))
    n = len(keep) + 1
    draw = drawer(geometry, true)
    lo = float(min(true.min(), *(fields[k].min() for k in keep)))
    hi = float(max(true.max(), *(fields[k].max() for k in keep)))
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n + 1.0, 2.9), squeeze=False, layout="constrained")
    row = list(axes[0])
    name = "true" if sample is None else f"true (test sample {sample})"
    im = draw(row[0], true, title=name, vmin=lo, vmax=hi)
    for ax, k in zip(row[1:], keep, strict=True):
        draw(ax, fields[k], title=f"{layer_title(labels[k])}\n{error_text(relative_error(fields[k], true))}",
             vmin=lo, vmax=hi)
    for ax in row[1:]:
        ax.set_ylabel("")
    add_colorbar(fig, im, row, label)
    shown = "" if len(keep) == len(fields) else f" ({len(keep)} of {len(fields)} states shown)"
    fig.suptitle(f"recovered field after each added layer{shown}", fontsize=9)
    return fig

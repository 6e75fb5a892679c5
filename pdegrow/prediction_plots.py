"""One figure of a recovered field (:class:`pdegrow.predictions.Prediction`): the estimate, the truth
when known and their difference, each with a labelled colourbar and axis coordinates."""

from __future__ import annotations

from typing import Any

import numpy as np

LABELS = {"log_conductivity": "log-conductivity m", "conductivity": "conductivity e^m",
          "vorticity_0": "initial vorticity w₀", "target": "network output"}


def _draw(ax: Any, values: np.ndarray, geometry: dict[str, np.ndarray], label: str, title: str,
          cmap: str = "viridis", norm: Any = None) -> None:
    import matplotlib.pyplot as plt

    if "nodes" in geometry and "cells" in geometry and values.ndim == 1:
        from pdegrow.plots import field_on_mesh

        art = field_on_mesh(ax, geometry["nodes"], geometry["cells"], values, sensors=geometry.get("sensors"),
                            cmap=cmap, vmin=norm.vmin if norm else None, vmax=norm.vmax if norm else None)
    elif values.ndim == 2:
        extent = (0.0, 1.0, 0.0, 1.0)
        if "grid_x" in geometry:
            gx, gy = geometry["grid_x"], geometry["grid_y"]   # pixel centres: the extent is half a cell wider
            hx, hy = (gx.max() - gx.min()) / max(values.shape[1] - 1, 1), (gy.max() - gy.min()) / max(
                values.shape[0] - 1, 1)
            extent = (float(gx.min() - hx / 2), float(gx.max() + hx / 2), float(gy.min() - hy / 2),
                      float(gy.max() + hy / 2))
        art = ax.imshow(values, origin="lower", extent=extent, cmap=cmap, norm=norm)
    else:
        art = ax.plot(values.ravel(), ".")[0]
        ax.set_title(title)
        return
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title)
    plt.colorbar(art, ax=ax, label=label, shrink=0.85)


def plot_prediction(pred: Any, index: int = 0, name: str | None = None) -> Any:
    """Figure: recovered field of sample ``index`` | true field | difference (the last two when known)."""
    import matplotlib.pyplot as plt

    name = name or next(iter(pred.fields))
    est = np.asarray(pred.fields[name][index])
    truth = pred.truth.get(name)
    if truth is None and name == "conductivity" and "log_conductivity" in pred.truth:
        truth = np.exp(pred.truth["log_conductivity"])
    panels = 1 if truth is None else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4), squeeze=False, constrained_layout=True)
    label = LABELS.get(name, name)
    if truth is None:
        _draw(axes[0, 0], est, pred.geometry, label, f"recovered {label} (sample {index})")
        return fig
    true = np.asarray(truth[index])
    lo, hi = float(min(est.min(), true.min())), float(max(est.max(), true.max()))
    from matplotlib.colors import Normalize

    _draw(axes[0, 0], est, pred.geometry, label, "recovered", norm=Normalize(lo, hi))
    _draw(axes[0, 1], true, pred.geometry, label, "true", norm=Normalize(lo, hi))
    err = est - true
    rel = np.linalg.norm(err) / max(np.linalg.norm(true), 1e-300)
    bound = float(np.abs(err).max()) or 1.0
    _draw(axes[0, 2], err, pred.geometry, f"{label}: recovered − true", f"error (relative {rel:.3f})",
          cmap="RdBu_r", norm=Normalize(-bound, bound))
    return fig


__all__ = ["plot_prediction"]

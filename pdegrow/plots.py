"""Figures of fields on meshes and grids (matplotlib, Agg backend; no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.tri as mtri  # noqa: E402
import numpy as np  # noqa: E402

from pdegrow.contract import open_dataset  # noqa: E402

PRIOR_MEAN_NOTE = "worse than the prior mean"
"""What a relative error above 1 means: ‖estimate − truth‖ > ‖truth‖, i.e. farther from the truth than
the zero field, the prior mean of m in every heat preset and of w₀."""


def error_text(rel: float, prefix: str = "rel. error") -> str:
    """``rel. error 0.612``, flagged when above 1 (worse than the prior mean)."""
    text = f"{prefix} {rel:.3f}"
    return f"{text}\n({PRIOR_MEAN_NOTE})" if rel > 1 else text


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """‖estimate − truth‖ / ‖truth‖ (flattened)."""
    est, true = np.asarray(estimate, dtype=float).ravel(), np.asarray(truth, dtype=float).ravel()
    return float(np.linalg.norm(est - true) / max(np.linalg.norm(true), 1e-300))


def set_coordinates(ax: Any, xlabel: bool = True, ylabel: bool = True) -> None:
    """Axis coordinates on a field panel: three ticks a side, small labels, x and y named."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(3))
    ax.yaxis.set_major_locator(MaxNLocator(3))
    ax.tick_params(labelsize=7, length=2, pad=1)
    if xlabel:
        ax.set_xlabel("x", fontsize=8, labelpad=1)
    if ylabel:
        ax.set_ylabel("y", fontsize=8, labelpad=1)


def add_colorbar(fig: Any, image: Any, ax: Any, label: str) -> Any:
    """A colourbar for ``image`` beside ``ax`` (an axes or a list of axes sharing it), labelled."""
    bar = fig.colorbar(image, ax=ax, shrink=0.85, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar


def field_on_mesh(ax: Any, nodes: np.ndarray, cells: np.ndarray, values: np.ndarray, *,
                  sensors: np.ndarray | None = None, title: str = "", cmap: str = "viridis",
                  vmin: float | None = None, vmax: float | None = None, coordinates: bool = True) -> Any:
    """Draw a nodal field on a triangle mesh (Gouraud-shaded), sensors as white triangles, the axes
    spanning the mesh with their coordinates (``coordinates=False``: none)."""
    tri = mtri.Triangulation(nodes[:, 0], nodes[:, 1], cells[:, :3])
    image = ax.tripcolor(tri, values, shading="gouraud", cmap=cmap, vmin=vmin, vmax=vmax)
    _sensors(ax, sensors)
    ax.set_xlim(float(nodes[:, 0].min()), float(nodes[:, 0].max()))
    ax.set_ylim(float(nodes[:, 1].min()), float(nodes[:, 1].max()))
    _finish(ax, title, coordinates)
    return image


def field_on_grid(ax: Any, values: np.ndarray, geometry: dict[str, np.ndarray] | None = None, *,
                  sensors: np.ndarray | None = None, title: str = "", cmap: str = "viridis",
                  vmin: float | None = None, vmax: float | None = None, coordinates: bool = True) -> Any:
    """Draw an image ``values[j, i] = f(x_i, y_j)`` (axis 0 = y) with its pixels centred on the grid
    points of ``geometry`` (``grid_x``, ``grid_y``; default the unit square)."""
    values = np.asarray(values)
    ny, nx = values.shape
    if geometry is not None and "grid_x" in geometry and "grid_y" in geometry:
        xs, ys = np.asarray(geometry["grid_x"])[0], np.asarray(geometry["grid_y"])[:, 0]
    else:
        xs, ys = np.arange(nx) / nx, np.arange(ny) / ny
    dx = float(xs[1] - xs[0]) if nx > 1 else 1.0
    dy = float(ys[1] - ys[0]) if ny > 1 else 1.0
    extent = (float(xs[0]) - dx / 2, float(xs[-1]) + dx / 2, float(ys[0]) - dy / 2, float(ys[-1]) + dy / 2)
    image = ax.imshow(values, origin="lower", extent=extent, cmap=cmap, vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    _sensors(ax, sensors)
    _finish(ax, title, coordinates)
    return image


def _sensors(ax: Any, sensors: np.ndarray | None) -> None:
    if sensors is not None and len(sensors):
        ax.plot(sensors[:, 0], sensors[:, 1], "^", ms=4, mfc="white", mec="black", mew=0.5, ls="none")


def _finish(ax: Any, title: str, coordinates: bool) -> None:
    ax.set_aspect("equal")
    if coordinates:
        set_coordinates(ax)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def heat_dataset_figure(path: str | Path, out: str | Path, n_show: int = 3) -> Path:
    """Log-conductivity and temperature of the first ``n_show`` samples of a heat data set."""
    with open_dataset(path, problem="heat") as f:
        nodes, cells = f["geometry/nodes"][...], f["geometry/cells"][...]
        sensors = f["geometry/sensors"][...]
        n_show = min(n_show, int(f.attrs["n_samples"]))
        m = f["targets/log_conductivity"][:n_show]
        T = f["targets/temperature"][:n_show]
    fig, axes = plt.subplots(2, n_show, figsize=(3.4 * n_show, 6.0), squeeze=False, layout="constrained")
    bound = float(np.abs(m).max())
    for i in range(n_show):
        im = field_on_mesh(axes[0, i], nodes, cells, m[i], title=f"sample {i}: log-conductivity m",
                           cmap="RdBu_r", vmin=-bound, vmax=bound)
        im2 = field_on_mesh(axes[1, i], nodes, cells, T[i], sensors=sensors,
                            title=f"sample {i}: temperature T (△ sensors)", cmap="inferno",
                            vmin=0.0, vmax=float(T.max()))
    add_colorbar(fig, im, list(axes[0]), "log-conductivity m")
    add_colorbar(fig, im2, list(axes[1]), "temperature T")
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

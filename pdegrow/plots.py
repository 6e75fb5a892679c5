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


def field_on_mesh(ax: Any, nodes: np.ndarray, cells: np.ndarray, values: np.ndarray, *,
                  sensors: np.ndarray | None = None, title: str = "", cmap: str = "viridis",
                  vmin: float | None = None, vmax: float | None = None) -> Any:
    """Draw a nodal field on a triangle mesh (Gouraud-shaded), sensors as white dots."""
    tri = mtri.Triangulation(nodes[:, 0], nodes[:, 1], cells[:, :3])
    image = ax.tripcolor(tri, values, shading="gouraud", cmap=cmap, vmin=vmin, vmax=vmax)
    if sensors is not None:
        ax.plot(sensors[:, 0], sensors[:, 1], "o", ms=3.5, mfc="white", mec="black", mew=0.6)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return image


def heat_dataset_figure(path: str | Path, out: str | Path, n_show: int = 3) -> Path:
    """Log-conductivity and temperature of the first ``n_show`` samples of a heat data set."""
    with open_dataset(path, problem="heat") as f:
        nodes, cells = f["geometry/nodes"][...], f["geometry/cells"][...]
        sensors = f["geometry/sensors"][...]
        n_show = min(n_show, int(f.attrs["n_samples"]))
        m = f["targets/log_conductivity"][:n_show]
        T = f["targets/temperature"][:n_show]
    fig, axes = plt.subplots(2, n_show, figsize=(3.2 * n_show, 6.0), squeeze=False)
    for i in range(n_show):
        im = field_on_mesh(axes[0, i], nodes, cells, m[i], title=f"sample {i}: log-conductivity m",
                           cmap="RdBu_r", vmin=-np.abs(m).max(), vmax=np.abs(m).max())
        fig.colorbar(im, ax=axes[0, i], shrink=0.8)
        im = field_on_mesh(axes[1, i], nodes, cells, T[i], sensors=sensors,
                           title=f"sample {i}: temperature T, sensors", cmap="inferno")
        fig.colorbar(im, ax=axes[1, i], shrink=0.8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

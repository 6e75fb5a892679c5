"""Figures of a run against the data set's Bayesian reference (``pdegrow report``).

* ``reference_fields.png``: per test sample, the true m, the network's m, the MAP, the
  posterior mean and the posterior standard deviation, on the mesh (sensors marked);
* ``reference_errors.png``: histograms of the per-sample relative errors of the network and of
  the reference on the same samples, in m and in e^m.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pdegrow.reference.results import ReferenceResult


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-30)


def plot_reference_fields(true: np.ndarray, network: np.ndarray, indices: np.ndarray, ref: ReferenceResult,
                          geometry: dict[str, np.ndarray], path: Path) -> bool:
    """True / network / MAP / posterior mean / posterior std for the given samples (those in ``ref``)."""
    from pdegrow.plots import add_colorbar, error_text, field_on_mesh
    from pdegrow.reporting import _plt

    pos = {int(i): k for k, i in enumerate(ref.sample_indices)}
    rows = [j for j, i in enumerate(indices) if int(i) in pos]
    if not rows or "map_m" not in ref.estimates:
        return False
    plt = _plt()
    mean = ref.estimates.get("mean_m")
    std = ref.estimates.get("std_m")
    cols = 3 + (mean is not None) + (std is not None)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.5 * cols + 1.0, 2.4 * len(rows)), squeeze=False,
                             layout="constrained")
    nodes, cells, sensors = geometry["nodes"], geometry["cells"], geometry.get("sensors")

    def draw(ax: object, values: np.ndarray, title: str, lo: float | None, hi: float | None,
             cmap: str = "viridis") -> object:
        return field_on_mesh(ax, nodes, cells, values, sensors=sensors, title=title, vmin=lo, vmax=hi,
                             cmap=cmap)

    for r, j in enumerate(rows):
        k = pos[int(indices[j])]
        fields = [("true m", true[j]), ("network", network[j]), ("MAP", ref.estimates["map_m"][k])]
        if mean is not None:
            fields.append((f"posterior mean ({ref.method})", mean[k]))
        lo = min(float(f.min()) for _, f in fields)
        hi = max(float(f.max()) for _, f in fields)
        for c, (name, f) in enumerate(fields):
            rel = np.linalg.norm(f - true[j]) / max(np.linalg.norm(true[j]), 1e-30)
            title = f"{name}, test sample {indices[j]}" if c == 0 else f"{name}\n{error_text(rel)}"
            im = draw(axes[r, c], f, title, lo, hi)
        add_colorbar(fig, im, list(axes[r, : len(fields)]), "log-conductivity m")
        if std is not None:
            im2 = draw(axes[r, -1], std[k], "posterior std of m", 0.0, None, cmap="magma")
            add_colorbar(fig, im2, axes[r, -1], "std of m")
    fig.suptitle("network vs Bayesian reference (relative error in m of each estimate)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_error_histograms(true: np.ndarray, network: np.ndarray, indices: np.ndarray, ref: ReferenceResult,
                          path: Path) -> bool:
    """Histograms of per-sample errors in m and e^m: network vs reference, on the common samples."""
    from pdegrow.reporting import _plt

    common, i_net, i_ref = np.intersect1d(indices, ref.sample_indices, return_indices=True)
    if not len(common):
        return False
    plt = _plt()
    panels = [("rel_error_field", "relative error in m", _rel(network[i_net], true[i_net])),
              ("rel_error_conductivity", "relative error in e^m",
               _rel(np.exp(network[i_net]), np.exp(true[i_net])))]
    panels = [p for p in panels if p[0] in ref.errors]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.3), squeeze=False)
    for ax, (key, label, net) in zip(axes[0], panels, strict=True):
        r = np.asarray(ref.errors[key])[i_ref]
        bins = np.linspace(0.0, float(np.quantile(np.concatenate([net, r]), 0.99)) * 1.05, 30)
        ax.hist(r, bins, alpha=0.6, label=f"reference ({ref.method}): {r.mean():.3f}")
        ax.hist(net, bins, alpha=0.6, label=f"network: {net.mean():.3f}")
        ax.axvline(r.mean(), color="tab:blue", lw=1)
        ax.axvline(net.mean(), color="tab:orange", lw=1)
        ax.set_xlabel(label)
        ax.set_ylabel("samples")
        ax.set_title(f"gap {100 * (net.mean() / r.mean() - 1):+.1f} % on {len(common)} samples", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

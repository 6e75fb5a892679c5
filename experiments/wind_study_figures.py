"""The wind study's figures: the reconstructed 3-D field after each added layer.

For one grown run (default: Approach I, layerwise + SRL, seed 0) and one test sample, every row shows
the prediction of the output layer applied to a state of the network (after the lift, after each
block, after each SRL corrector), and the last row the true field:

* left: a horizontal slice, speed |u_h| on grid level ``--level`` (terrain-following) with the
  horizontal wind as arrows and the masts as dots;
* right: the vertical section through the grid row ``--row`` (x–z plane): |u| in colour, the
  streamlines of (u, w) on a regular (x, z) grid (linear interpolation of the terrain-following
  points), the ground in grey.

    python experiments/wind_study_figures.py runs/study-wind datasets/wind-study.h5 \
        [--strategy layerwise --seed 0 --sample 0 --out experiments/results/figures/wind-layers.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.interpolate import griddata  # noqa: E402

from pdegrow.training.evaluate import layer_predictions, load_eval_data, load_trained  # noqa: E402


def section_streamlines(ax, x: np.ndarray, z: np.ndarray, u: np.ndarray, w: np.ndarray, speed: np.ndarray,
                        vmax: float) -> None:
    """|u| and streamlines of (u, w) on the section through terrain-following points (x_i, z_ki)."""
    X = np.broadcast_to(x[None, :], z.shape)
    ax.pcolormesh(X, z, speed, shading="gouraud", vmin=0, vmax=vmax, cmap="viridis")
    xs = np.linspace(x[0], x[-1], 60)
    zs = np.linspace(z.min(), z.max(), 60)
    XS, ZS = np.meshgrid(xs, zs)
    pts = np.column_stack([X.ravel(), z.ravel()])
    U = griddata(pts, u.ravel(), (XS, ZS), method="linear")
    W = griddata(pts, w.ravel(), (XS, ZS), method="linear")
    ground = np.interp(xs, x, z[0])
    mask = (ZS < ground[None, :]) | np.isnan(U) | np.isnan(W)
    ax.streamplot(xs, zs, np.ma.array(np.nan_to_num(U), mask=mask), np.ma.array(np.nan_to_num(W), mask=mask),
                  color="w", density=0.8, linewidth=0.6, arrowsize=0.6)
    ax.fill_between(x, z.min() - 50, z[0], color="0.6")
    ax.set_ylim(z.min() - 50, z.max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path)
    p.add_argument("data")
    p.add_argument("--dataset", default="wind-study")
    p.add_argument("--strategy", default="layerwise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", type=int, default=0, help="position in the test split")
    p.add_argument("--level", type=int, default=1, help="grid level of the horizontal slice")
    p.add_argument("--row", type=int, help="grid row (y index) of the vertical section (default: the middle)")
    p.add_argument("--out", type=Path, default=Path("experiments/results/figures/wind-layers.png"))
    args = p.parse_args()

    run_dir = args.study / "runs" / args.dataset / args.strategy / f"seed-{args.seed}"
    run = load_trained(run_dir)
    data = load_eval_data(run, args.data, "test")
    x_in = data["inputs"][args.sample: args.sample + 1]
    truth = data["targets"][args.sample]
    geom = data["geometry"]
    gx, gy, gz = geom["grid_x"], geom["grid_y"], geom["grid_z"]
    row = args.row if args.row is not None else len(gy) // 2
    every = layer_predictions(run, data["inputs"])                 # all test samples: mean error per stage
    n = len(data["targets"])
    true_flat = data["targets"].reshape(n, -1)
    for label, pred in every:
        err = np.linalg.norm(pred.reshape(n, -1) - true_flat, axis=1) / np.linalg.norm(true_flat, axis=1)
        print(f"{label:>10}: mean test rel. L² error {err.mean():.4f} ({n} samples)")
    stages = [(label, pred[0].reshape(truth.shape)) for label, pred in layer_predictions(run, x_in)]
    stages.append(("truth", truth))
    vmax = float(np.linalg.norm(truth, axis=0).max())

    fig, axes = plt.subplots(len(stages), 2, figsize=(10, 2.6 * len(stages)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.6]})
    for (label, u), (a, b) in zip(stages, axes, strict=True):
        err = np.linalg.norm(u - truth) / np.linalg.norm(truth)
        title = label if label == "truth" else f"{label}: rel. L² error {err:.3f}"
        sl = u[:, args.level]
        a.pcolormesh(gx, gy, np.hypot(sl[0], sl[1]), shading="gouraud", vmin=0, vmax=vmax, cmap="viridis")
        a.quiver(gx, gy, sl[0], sl[1], color="w", scale=vmax * 8, width=0.005)
        a.contour(gx, gy, gz[0], colors="k", linewidths=0.4, levels=6)
        a.plot(geom["masts"][:, 0], geom["masts"][:, 1], "r.", ms=6)
        a.set_aspect("equal")
        a.set_title(f"{title}\nlevel {args.level} (σ = {geom['grid_sigma'][args.level]:.2f})", fontsize=8)
        sec = u[:, :, row]                                       # (3, n_z, n_x)
        section_streamlines(b, gx, gz[:, row], sec[0], sec[2], np.linalg.norm(sec, axis=0), vmax)
        b.set_title(f"{title}\nsection y = {gy[row]:.0f} m: |u| and streamlines of (u, w)", fontsize=8)
    for ax in axes.ravel():
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{args.strategy}, seed {args.seed}: test sample {int(data['indices'][args.sample])}",
                 fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({len(stages) - 1} stages)")


if __name__ == "__main__":
    main()

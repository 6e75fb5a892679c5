"""Linear baselines for the wind study: ridge regression and optimal interpolation (BLUE) from the masts.

Same file, input, target and split as ``experiments/study-wind.toml`` (split seed 0, 500/100/100)
(``--input inputs/observations_terrain`` for a random-terrain file: masts + ground heights).

* ridge: û = ȳ_u + W (x − x̄)/s_x with W = argmin ‖U − X W‖² + λ‖W‖² on the training split, inputs
  standardised per feature, λ ∈ {1e-3 … 1e4} chosen on the validation split;
* optimal interpolation (the Gaussian conditional mean, i.e. the best linear unbiased estimate):
  û = ū + C_uy (C_yy + R)⁻¹ (y − ȳ), with the prior covariances C_uy, C_yy of the clean field and its
  mast values estimated from the training samples (the prior is that of the generator: u₀'s law
  pushed through the mass-consistent projection) and R = σ²I the noise covariance from the
  file's noise model (σ = noise_level · rms of the clean mast values, averaged over the training set);
* ``--prior FILE [FILE …]``: optimal interpolation with the prior covariances estimated from the clean
  samples of other files of the *same recipe* with other seeds (``pdegrow generate wind --preset study
  --set seed=1 --set n_samples=3000``: samples of the prior, independent of the test split), at
  N = ``--prior-sizes`` samples each, and R = E[σ²] I = noise_level² · E[mean_s y_s²] I (the noise is
  relative to each sample's rms, so its covariance is the mean of σ² over the prior; uncorrelated with
  u). The mass-consistent projection is linear in u₀, but u₀'s law is not Gaussian (uniform speed and
  direction, log-uniform roughness inside a log law): this is the best *linear* estimator (the linear
  MMSE, E[u | y] only if the prior were Gaussian), and as N grows it converges to the linear limit
  no ridge on 500 samples can beat in expectation.

Printed: test MSE of u, the mean relative L² error ‖û − u‖/‖u‖ on the grid, and the relative error on
every grid level (0 = the ground).

    python experiments/wind_reference.py datasets/wind-study.h5 [--out experiments/results/wind-reference.md]
    python experiments/wind_reference.py datasets/wind-study.h5 --prior datasets/wind-study-prior.h5 \
        --prior-sizes 500 1000 2000 3000 [--all]
    python experiments/wind_reference.py datasets/wind-random.h5 --sizes 400 100 100 \
        --input inputs/observations inputs/observations_terrain
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pdegrow.contract import open_dataset
from pdegrow.data.splits import make_splits
from pdegrow.text_output import print_and_save


def metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Test MSE, mean relative L² error and mean relative error on each level of (n, 3, n_z, n_y, n_x)."""
    n, nz = len(true), true.shape[2]
    diff = (pred - true).reshape(n, -1)
    out = {"mse": float((diff**2).mean()),
           "rel": float((np.linalg.norm(diff, axis=1) / np.linalg.norm(true.reshape(n, -1), axis=1)).mean())}
    d = np.linalg.norm((pred - true).transpose(0, 2, 1, 3, 4).reshape(n, nz, -1), axis=2)
    r = np.linalg.norm(true.transpose(0, 2, 1, 3, 4).reshape(n, nz, -1), axis=2)
    for k in range(nz):
        out[f"level{k}"] = float((d[:, k] / r[:, k]).mean())
    return out


def ridge(x: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray, te: np.ndarray,
          ) -> tuple[np.ndarray, float]:
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-12
    z = (x - mu) / sd
    ym = y[tr].mean(0)
    best: tuple[float, float, np.ndarray] | None = None
    for lam in 10.0 ** np.arange(-3, 5):
        A = z[tr].T @ z[tr] + lam * np.eye(z.shape[1])
        W = np.linalg.solve(A, z[tr].T @ (y[tr] - ym))
        err = float(((z[va] @ W + ym - y[va]) ** 2).mean())
        if best is None or err < best[0]:
            best = (err, lam, W)
    assert best is not None
    return z[te] @ best[2] + ym, best[1]


def optimal_interpolation(clean: np.ndarray, y: np.ndarray, noisy: np.ndarray, sigma: float, tr: np.ndarray,
                          te: np.ndarray) -> np.ndarray:
    cm, um = clean[tr].mean(0), y[tr].mean(0)
    dc, du = clean[tr] - cm, y[tr] - um
    C_yy = dc.T @ dc / len(tr)
    C_uy = du.T @ dc / len(tr)
    K = np.linalg.solve(C_yy + sigma**2 * np.eye(len(C_yy)), C_uy.T).T
    return um + (noisy[te] - cm) @ K.T


def oi_from_prior(clean_prior: np.ndarray, u_prior: np.ndarray, level: float, noisy: np.ndarray,
                  ) -> tuple[np.ndarray, float]:
    """û = ū + C_uy (C_yy + σ̄² I)⁻¹ (y − ȳ) with the sample covariances of the prior samples
    (clean mast values (N, m), fields (N, P)) and σ̄² = level² · mean(clean²); returns (û, σ̄)."""
    cm, um = clean_prior.mean(0), u_prior.mean(0)
    dc, du = clean_prior - cm, u_prior - um
    n = len(clean_prior)
    C_yy = dc.T @ dc / (n - 1)
    C_uy = du.T @ dc / (n - 1)
    sigma = level * float(np.sqrt((clean_prior**2).mean()))
    K = np.linalg.solve(C_yy + sigma**2 * np.eye(len(C_yy)), C_uy.T).T
    return um + (noisy - cm) @ K.T, sigma


def read_prior(paths: list[str], recipe: dict) -> tuple[np.ndarray, np.ndarray]:
    """Clean mast values and flattened targets of the prior files; each must hold the data file's
    recipe (every key but ``seed`` and ``n_samples``)."""
    import json

    xs, us = [], []
    same = {k: v for k, v in recipe.items() if k not in ("seed", "n_samples")}
    for path in paths:
        with open_dataset(path, "wind") as f:
            other = {k: v for k, v in json.loads(f.attrs["config"]).items() if k not in ("seed", "n_samples")}
            if other != same:
                diff = sorted(k for k in set(other) | set(same) if other.get(k) != same.get(k))
                raise SystemExit(f"{path}: not the data file's recipe (differs in {', '.join(diff)})")
            xs.append(f["inputs/observations_clean"][()])
            us.append(f["targets/velocity"][()].reshape(len(xs[-1]), -1))
    return np.concatenate(xs), np.concatenate(us)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--sizes", type=int, nargs=3, default=[500, 100, 100], metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--input", nargs="+", default=["inputs/observations"],
                   help="the input array(s), one ridge row each (default: %(default)s)")
    p.add_argument("--prior", nargs="+", default=[], metavar="FILE",
                   help="files of prior samples (same recipe, other seeds) for the OI covariances")
    p.add_argument("--prior-sizes", type=int, nargs="+", default=[500, 1000, 3000], metavar="N")
    p.add_argument("--all", action="store_true",
                   help="also score the prior-covariance OI on every sample of DATA (it uses none of them)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    import json

    with open_dataset(args.data, "wind") as f:
        n = int(f.attrs["n_samples"])
        xs = {name: f[name][()] for name in args.input}
        clean = f["inputs/observations_clean"][()]
        u = f["targets/velocity"][()]
        level = float(f.attrs["noise_level"])
        recipe = json.loads(f.attrs["config"])
    s = make_splits(n, *args.sizes, 0)
    tr, va, te = (np.asarray(s[k]) for k in ("train", "val", "test"))
    y = u.reshape(n, -1)
    rows = []
    for name, x in xs.items():
        pred_ridge, lam = ridge(x, y, tr, va, te)
        rows.append((f"ridge on `{name}` (λ = {lam:g})", metrics(pred_ridge.reshape(u[te].shape), u[te])))
    if "inputs/observations" in xs:
        x = xs["inputs/observations"]
        sigma = level * float(np.sqrt((clean[tr] ** 2).mean(1)).mean())
        pred_oi = optimal_interpolation(clean, y, x, sigma, tr, te)
        rows.append((f"optimal interpolation, covariance of the {len(tr)} training samples "
                     f"(σ = {sigma:.3g} m/s)", metrics(pred_oi.reshape(u[te].shape), u[te])))
    if args.prior:
        if "inputs/observations" not in xs:
            raise SystemExit("--prior needs --input inputs/observations (the masts the covariances are of)")
        clean_p, u_p = read_prior(args.prior, recipe)
        for size in args.prior_sizes:
            if size > len(clean_p):
                continue
            pred, sig = oi_from_prior(clean_p[:size], u_p[:size], level, xs["inputs/observations"][te])
            rows.append((f"optimal interpolation, covariance of {size} simulated prior samples "
                         f"(σ̄ = {sig:.3g} m/s)", metrics(pred.reshape(u[te].shape), u[te])))
            if args.all:
                pred, _ = oi_from_prior(clean_p[:size], u_p[:size], level, xs["inputs/observations"])
                rows.append((f"the same, scored on all {n} samples of the file",
                             metrics(pred.reshape(u.shape), u)))
    prior_mean = np.broadcast_to(u[tr].mean(0), u[te].shape)
    rows.append(("prior mean (training average)", metrics(prior_mean, u[te])))
    nz = u.shape[2]
    levels = " | ".join(f"level {k}" for k in range(nz))
    head = f"| baseline | test MSE (m²/s²) | rel. L² of u | {levels} |"
    lines = [f"{args.data}: {len(tr)}/{len(va)}/{len(te)} samples (split seed 0)", "", head,
             "|---" * (3 + nz) + "|"]
    for name, m in rows:
        lines.append(f"| {name} | {m['mse']:.3f} | {m['rel']:.4f} | "
                     + " | ".join(f"{m[f'level{k}']:.3f}" for k in range(nz)) + " |")
    print_and_save(lines, args.out)


if __name__ == "__main__":
    main()

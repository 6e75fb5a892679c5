"""A linear reference for the Navier–Stokes studies: ridge regression w(T) (or sensors) → w₀.

Same files and split as experiments/study-ns-*.toml (400 train / 50 val / 150 test, split seed 0),
inputs standardised per feature on the training split, λ chosen on the validation split.

    python experiments/ns_ridge_reference.py
"""

from __future__ import annotations

import sys

import numpy as np

from pdegrow.contract import open_dataset
from pdegrow.data.splits import make_splits


def ridge_error(path: str, input_name: str) -> tuple[float, float]:
    with open_dataset(path, "navier_stokes") as f:
        x = f[input_name][()].reshape(int(f.attrs["n_samples"]), -1)
        y = f["targets/vorticity_0"][()].reshape(len(x), -1)
    s = make_splits(len(x), 400, 50, 150, 0)
    tr, va, te = (np.asarray(s[k]) for k in ("train", "val", "test"))
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-12
    z = (x - mu) / sd
    ym = y[tr].mean(0)

    def fit_err(lam: float, idx: np.ndarray) -> float:
        a = z[tr]
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y[tr] - ym))
        pred = z[idx] @ w + ym
        return float(np.mean(np.linalg.norm(pred - y[idx], axis=1) / np.linalg.norm(y[idx], axis=1)))

    lams = [10.0 ** k for k in range(-2, 5)]
    best = min(lams, key=lambda lam: fit_err(lam, va))
    return fit_err(best, te), best


def main() -> int:
    print("| T | observation | ridge test rel. error | λ |\n|---|---|---:|---:|")
    for t in ("0.2", "1", "5"):
        for obs, name in (("full", "inputs/vorticity_T"), ("sensors", "inputs/observations")):
            err, lam = ridge_error(f"datasets/ns32-T{t}-{obs}.h5", name)
            print(f"| {t} | {obs} | {err:.4f} | {lam:g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

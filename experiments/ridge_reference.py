"""A linear reference for the studies: ridge regression from the network's input to its target.

Same files, inputs and splits as the study configs (split seed 0); inputs (after the study's input
transform) standardised per feature on the training split; λ ∈ {1e-2 … 1e4} chosen on the
validation split; the test metric is the studies' average relative error ‖ŷ − y‖/‖y‖ of the field
(heat: the log-conductivity at the nodes; Navier–Stokes: w₀ on the grid).

    python experiments/ridge_reference.py
"""

from __future__ import annotations

import sys

import numpy as np

from pdegrow.contract import open_dataset
from pdegrow.data.splits import make_splits

# (label, file, input, target, log-transform input, (n_train, n_val, n_test))
CASES = [
    ("heat paper (50 train)", "datasets/heat-paper-560.h5", "inputs/observations",
     "targets/log_conductivity", True, (50, 10, 500)),
    ("heat sensors50 (500 train)", "datasets/heat-sensors50-1050.h5", "inputs/observations",
     "targets/log_conductivity", True, (500, 50, 500)),
    ("heat default (1000 train)", "datasets/heat-default-1500.h5", "inputs/observations",
     "targets/log_conductivity", True, (1000, 100, 400)),
    *[(f"NS T = {t}, {obs}", f"datasets/ns32-T{t}-{obs}.h5",
       "inputs/vorticity_T" if obs == "full" else "inputs/observations", "targets/vorticity_0", False,
       (400, 50, 150)) for t in ("0.2", "1", "5") for obs in ("full", "sensors")],
    ("heat default, correlation length 0.5 (100 train; transfer target)", "datasets/heat-default-l05-600.h5",
     "inputs/observations", "targets/log_conductivity", True, (100, 50, 150)),
    ("NS T = 1, full (100 train; transfer target)", "datasets/ns32-T1-full.h5", "inputs/vorticity_T",
     "targets/vorticity_0", False, (100, 50, 150)),
    ("diabetes (prototype)", "datasets/proto-diabetes.h5", "inputs/features", "targets/value", False,
     (300, 42, 100)),
]


def ridge_error(path: str, input_name: str, target: str, log: bool, sizes: tuple[int, int, int],
                ) -> tuple[float, float]:
    with open_dataset(path) as f:
        n = int(f.attrs["n_samples"])
        x = f[input_name][()].reshape(n, -1)
        y = f[target][()].reshape(n, -1)
    if log:
        x = np.log(x)
    s = make_splits(n, *sizes, 0)
    tr, va, te = (np.asarray(s[k]) for k in ("train", "val", "test"))
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-12
    z = (x - mu) / sd
    ym = y[tr].mean(0)

    def err(lam: float, idx: np.ndarray) -> float:
        a = z[tr]
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y[tr] - ym))
        pred = z[idx] @ w + ym
        return float(np.mean(np.linalg.norm(pred - y[idx], axis=1) / np.linalg.norm(y[idx], axis=1)))

    lam = min((10.0 ** k for k in range(-2, 5)), key=lambda v: err(v, va))
    return err(lam, te), lam


def main() -> int:
    print("| data | ridge test rel. error | λ |\n|---|---:|---:|")
    for label, *case in CASES:
        e, lam = ridge_error(*case)
        print(f"| {label} | {e:.4f} | {lam:g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

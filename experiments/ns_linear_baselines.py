"""Linear baselines for the Navier–Stokes inversion w(T) → w₀, with and without simulated pairs.

On the study files (``datasets/ns32-T<T>-full.h5``, split 400 / 50 / 150 with split seed 0, the trainer's
default), mean relative error ‖ŵ₀ − w₀‖/‖w₀‖ on the 150 test samples of

* identity: ŵ₀ = w(T) − mean of the 400 training w(T);
* Fourier least squares: one complex gain per ``rfft2`` mode of w(T) minus that mean (a
  translation-equivariant linear map);
* ridge: the full linear map R^{R²} → R^{R²}, λ chosen on the validation split,

each fitted on the 400 training samples and on the 400 plus N prior-predictive pairs drawn with the
file's own dynamics and noise model (:func:`pdegrow.data.simulated_ns.simulate_ns_samples`, seed 0).
Shows how far a linear map goes once the data are plentiful, and whether it needs position dependence.

    python experiments/ns_linear_baselines.py --times 0.2 1 --simulated 2000 8000
"""

from __future__ import annotations

import argparse
import time

import h5py
import numpy as np

from pdegrow.data.simulated_ns import simulate_ns_samples
from pdegrow.data.splits import make_splits


def rel_error(pred: np.ndarray, truth: np.ndarray) -> float:
    n = len(truth)
    return float(np.mean(np.linalg.norm((pred - truth).reshape(n, -1), axis=1)
                         / np.linalg.norm(truth.reshape(n, -1), axis=1)))


def fourier_gains(y: np.ndarray, w: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Per-mode least-squares gain h_k = Σ conj(ŷ_k) ŵ_k / Σ |ŷ_k|² of centred inputs."""
    yh, wh = np.fft.rfft2(y - mu), np.fft.rfft2(w)
    return (np.conj(yh) * wh).sum(0) / np.maximum((np.abs(yh) ** 2).sum(0), 1e-300)


def ridge(y: np.ndarray, w: np.ndarray, y_val: np.ndarray, w_val: np.ndarray,
          lambdas: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)):
    """The ridge map (M, mean y, mean w) with λ·n on the diagonal, λ chosen on the validation samples."""
    n, d = len(y), y[0].size
    yf, wf = y.reshape(n, d), w.reshape(n, d)
    mu, mw = yf.mean(0), wf.mean(0)
    a, b = (yf - mu).T @ (yf - mu), (yf - mu).T @ (wf - mw)
    best = None
    for lam in lambdas:
        m = np.linalg.solve(a + lam * n * np.eye(d), b)
        err = rel_error(((y_val.reshape(len(y_val), d) - mu) @ m + mw).reshape(w_val.shape), w_val)
        if best is None or err < best[0]:
            best = (err, lam, m)
    return best[2], mu, mw, best[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--times", nargs="+", default=["0.2", "1"], help="T of datasets/ns32-T<T>-full.h5")
    p.add_argument("--simulated", nargs="+", type=int, default=[2000, 8000],
                   help="numbers of simulated pairs added to the 400 training samples")
    p.add_argument("--stem", default="datasets/ns32")
    args = p.parse_args()
    print("| T | training pairs | identity | Fourier LS | ridge (λ) |")
    print("|---|---:|---:|---:|---:|")
    for t in args.times:
        path = f"{args.stem}-T{t}-full.h5"
        with h5py.File(path) as f:
            y, w0 = f["inputs/vorticity_T"][()], f["targets/vorticity_0"][()]
        sp = make_splits(len(y), 400, 50, 150, 0)
        tr, va, te = (np.asarray(sp[k]) for k in ("train", "val", "test"))
        n_sim = max(args.simulated, default=0)
        t0 = time.process_time()
        sim = simulate_ns_samples(path, n_sim, 0) if n_sim else None
        sim_cpu = time.process_time() - t0
        for n in [0, *args.simulated]:
            ys, ws = y[tr], w0[tr]
            if n:
                ys = np.concatenate([ys, sim["inputs/vorticity_T"][:n]])
                ws = np.concatenate([ws, sim["targets/vorticity_0"][:n]])
            mu = y[tr].mean(0)                          # centring: the file's training mean
            ident = rel_error(y[te] - mu, w0[te])
            h = fourier_gains(ys, ws, mu)
            four = rel_error(np.fft.irfft2(h * np.fft.rfft2(y[te] - mu), s=y.shape[1:]), w0[te])
            m, my, mw, lam = ridge(ys, ws, y[va], w0[va])
            rid = rel_error(((y[te].reshape(len(te), -1) - my) @ m + mw).reshape(w0[te].shape), w0[te])
            print(f"| {t} | 400 + {n} | {ident:.4f} | {four:.4f} | {rid:.4f} ({lam:g}) |")
        print(f"<!-- T = {t}: {n_sim} simulated pairs in {sim_cpu:.0f} s CPU -->")


if __name__ == "__main__":
    main()

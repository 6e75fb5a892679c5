"""Convergence diagnostics of MCMC chains, vectorised over any leading axes.

``draws`` has shape (…, chains, n): one scalar quantity, several chains of n draws each.

* split-R̂ (Gelman et al., *Bayesian Data Analysis*, 3rd ed., §11.4): every chain is cut in
  halves, giving M = 2·chains sequences of length L = ⌊n/2⌋; with W the mean within-sequence
  variance and B/L the variance of the sequence means,
  R̂ = √( ((L − 1)/L · W + B/L) / W ).
* effective sample size (BDA3 §11.5, Geyer's initial monotone sequence): with the
  multi-chain autocorrelation ρ_t = 1 − (W − mean_chains γ_t)/var⁺, var⁺ = (L−1)/L W + B/L,
  ESS = M·L / (−1 + 2 Σ_k P_k), P_k = ρ_{2k} + ρ_{2k+1} summed while positive and made
  non-increasing.
"""

from __future__ import annotations

import numpy as np


def _split(draws: np.ndarray) -> np.ndarray:
    n = draws.shape[-1] // 2
    if n < 2:
        raise ValueError("split-R̂ needs at least 4 draws per chain")
    return np.concatenate([draws[..., :n], draws[..., -n:]], axis=-2)


def split_rhat(draws: np.ndarray) -> np.ndarray:
    """Split-R̂ of (…, chains, n) draws → (…)."""
    x = _split(np.asarray(draws, dtype=float))
    L = x.shape[-1]
    means = x.mean(-1)
    W = x.var(-1, ddof=1).mean(-1)
    B_over_L = means.var(-1, ddof=1)
    var_plus = (L - 1) / L * W + B_over_L
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(var_plus / W)
    return np.where(W > 0, r, np.where(B_over_L > 0, np.inf, 1.0))


def autocovariance(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance γ_t, t = 0…n−1, of each sequence along the last axis (FFT)."""
    n = x.shape[-1]
    xc = x - x.mean(-1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(xc, size, axis=-1)
    return np.fft.irfft(f * np.conj(f), size, axis=-1)[..., :n] / n


def ess(draws: np.ndarray) -> np.ndarray:
    """Effective sample size of (…, chains, n) draws (split chains) → (…)."""
    x = _split(np.asarray(draws, dtype=float))
    M, L = x.shape[-2], x.shape[-1]
    gamma = autocovariance(x)                                   # (…, M, L)
    W = x.var(-1, ddof=1).mean(-1)
    var_plus = (L - 1) / L * W + x.mean(-1).var(-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (W[..., None] - gamma.mean(-2) * L / (L - 1)) / var_plus[..., None]
    rho[..., 0] = 1.0
    K = L // 2
    P = rho[..., : 2 * K : 2] + rho[..., 1 : 2 * K : 2]         # (…, K)
    positive = np.cumprod(P > 0, axis=-1).astype(bool)          # the initial positive sequence
    P = np.minimum.accumulate(np.where(positive, P, np.inf), axis=-1)
    total = np.where(positive, P, 0.0).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = M * L / np.maximum(-1.0 + 2.0 * total, 1.0 / np.log10(max(M * L, 10)))
    return np.where(var_plus > 0, out, float(M * L))

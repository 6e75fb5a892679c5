"""The given and the random fields of the Navier–Stokes problem (pure numpy): the Gaussian prior
of the initial vorticity w₀ ~ N(0, σ(−Δ + τ²I)^{−α}) drawn spectrally on the (res, res) grid,
and the forcing f(x, y) = 0.1 (sin 2π(x+y) + cos 2π(x+y)).
"""

from __future__ import annotations

import math

import numpy as np

TWO_PI = 2.0 * math.pi


def prior_eigenvalues(resolution: int, scale: float = 7.0**1.5, tau: float = 7.0,
                      alpha: float = 2.5) -> np.ndarray:
    """λ_k = σ (4π²|k|² + τ²)^{−α} for the wavenumbers of the (res, res) grid, λ₀ = 0.

    The eigenvalues of C = σ(−Δ + τ²I)^{−α} on the unit torus for the Fourier modes
    e^{2πi k·x}, in ``numpy.fft.fft2`` order: entry [a, b] is k = (kx, ky) =
    (fftfreq[b], fftfreq[a]) (axis 0 is y, axis 1 is x, as in the stored fields).
    """
    k = np.fft.fftfreq(resolution, d=1.0 / resolution)
    k2 = k[None, :] ** 2 + k[:, None] ** 2
    lam = scale * (4.0 * math.pi**2 * k2 + tau**2) ** (-alpha)
    lam[0, 0] = 0.0
    return lam


def sample_vorticity(rng: np.random.Generator, resolution: int, scale: float = 7.0**1.5,
                     tau: float = 7.0, alpha: float = 2.5) -> np.ndarray:
    """A draw of w₀ ~ N(0, σ(−Δ + τ²)^{−α}), zero mean, on the (res, res) grid.

    With ξ ~ N(0, I) white noise on the grid and ξ̂ = FFT(ξ), w = res · IFFT(√λ ξ̂)
    has exactly the covariance Cov(w(x_a), w(x_b)) = Σ_k λ_k e^{2πi k·(x_a − x_b)}
    of the field restricted to the grid's Fourier modes (Nyquist modes included,
    real by construction), and ŵ₀ = 0. Consumes res² standard normals of ``rng``.
    """
    n = resolution
    lam = prior_eigenvalues(n, scale, tau, alpha)[:, : n // 2 + 1]
    xi = rng.standard_normal((n, n))
    return n * np.fft.irfft2(np.sqrt(lam) * np.fft.rfft2(xi), s=(n, n))


def forcing_function(x: np.ndarray) -> np.ndarray:
    """f(x, y) = 0.1 (sin 2π(x+y) + cos 2π(x+y))."""
    s = TWO_PI * (x[0] + x[1])
    return 0.1 * (np.sin(s) + np.cos(s))

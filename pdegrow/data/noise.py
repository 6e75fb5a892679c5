"""Noisy copies of training inputs, drawn with the data file's noise model.

The heat files store ``noise_model = "relative"``: y = T_s (1 + η ξ), ξ ~ N(0, 1)
per sensor, η = ``noise_level``. Copy c of sample i uses
``numpy.random.default_rng([seed, i, c])`` alone, so copies do not depend on
the order in which they are drawn (in memory or lazily).
"""

from __future__ import annotations

import numpy as np


def noisy_copy(clean: np.ndarray, level: float, model: str, seed: int, index: int, copy: int) -> np.ndarray:
    """One noisy draw of a clean input: relative y = x(1 + ηξ), additive y = x + η·rms(x)·ξ."""
    rng = np.random.default_rng([int(seed), int(index), int(copy)])
    xi = rng.standard_normal(clean.shape)
    if model == "relative":
        return clean * (1.0 + level * xi)
    if model == "additive":
        return clean + level * float(np.sqrt(np.mean(clean**2))) * xi
    raise ValueError(f"unknown noise model {model!r} (relative, additive)")

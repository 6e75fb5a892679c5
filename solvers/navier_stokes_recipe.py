"""The Navier–Stokes data-set recipe: its parameters, their validation, and the sensor layout it fixes.

A recipe is a preset ``datasets/navier-stokes-<preset>.toml`` or a user's file (with ``--set``
overrides); see :mod:`solvers.navier_stokes` for the equation and its discretisation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pdegrow.errors import PdegrowError
from solvers import recipes

TIME_SCHEMES = ("cn_heun", "cn_ab2")
MAX_RESOLUTION = 4096


@dataclass(frozen=True)
class NavierStokesRecipe:
    """Everything that defines a Navier–Stokes data set; see ``datasets/navier-stokes-*.toml``."""

    n_samples: int = 100
    seed: int = 0
    resolution: int = 64
    degree: int = 1
    nu: float = 1e-3
    final_time: float = 1.0
    dt: float = 1e-3
    forcing: bool = True
    prior_scale: float = 7.0**1.5
    prior_tau: float = 7.0
    prior_alpha: float = 2.5
    snapshot_times: list[float] = field(default_factory=list)
    observation: Literal["full", "sensors"] = "full"
    sensor_layout: Literal["grid", "random"] = "grid"
    n_sensors: int = 64
    sensor_seed: int = 0
    noise_level: float = 0.0
    time_scheme: Literal["cn_heun", "cn_ab2"] = "cn_ab2"
    lu_solver: Literal["petsc", "mumps"] = "petsc"

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise PdegrowError(f"navier_stokes recipe: {msg}")

        recipes.require_finite(self, "navier_stokes recipe")
        if self.n_samples <= 0:
            bad(f"n_samples must be positive, got {self.n_samples}")
        if not 4 <= self.resolution <= MAX_RESOLUTION:
            bad(f"resolution must be in 4…{MAX_RESOLUTION}, got {self.resolution}")
        if self.degree not in (1, 2, 3):
            bad(f"degree must be 1, 2 or 3, got {self.degree}")
        if not self.nu >= 0 or not math.isfinite(self.nu):
            bad(f"nu must be non-negative, got {self.nu}")
        if not (0 < self.dt < math.inf and 0 < self.final_time < math.inf):
            bad(f"dt and final_time must be positive, got dt={self.dt}, final_time={self.final_time}")
        if abs(self.final_time / self.dt - round(self.final_time / self.dt)) > 1e-6:
            bad(f"final_time={self.final_time} is not a whole number of steps dt={self.dt}")
        for t in self.snapshot_times:
            if not 0 < t <= self.final_time + 1e-12 or abs(t / self.dt - round(t / self.dt)) > 1e-6:
                bad(f"snapshot time {t} must lie in (0, final_time] on the time grid of dt={self.dt}")
        if any(b <= a for a, b in zip(self.snapshot_times, self.snapshot_times[1:], strict=False)):
            bad(f"snapshot_times must increase strictly, got {self.snapshot_times}")
        if min(self.prior_scale, self.prior_tau, self.prior_alpha) <= 0:
            bad("prior_scale, prior_tau and prior_alpha must be positive")
        if self.noise_level < 0:
            bad(f"noise_level must be non-negative, got {self.noise_level}")
        if self.observation == "sensors" and not 1 <= self.n_sensors <= self.resolution**2:
            bad(f"n_sensors must be in 1…{self.resolution**2} (the {self.resolution}×{self.resolution} "
                f"grid nodes), got {self.n_sensors}")

    @property
    def n_steps(self) -> int:
        return round(self.final_time / self.dt)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(preset: str | None, config_file: str | None,
                overrides: dict[str, Any]) -> NavierStokesRecipe:
    """The recipe of a preset (``datasets/navier-stokes-<preset>.toml``) or a file, with overrides."""
    return recipes.load_recipe(NavierStokesRecipe, "navier-stokes", preset, config_file, overrides)


def sensor_indices(recipe: NavierStokesRecipe) -> np.ndarray:
    """Flat indices into the (res, res) grid of the sensor nodes (``grid``: a regular
    k×k sub-grid, the first n of it; ``random``: n distinct nodes from ``sensor_seed``)."""
    n, res = recipe.n_sensors, recipe.resolution
    if recipe.sensor_layout == "random":
        rng = np.random.default_rng([recipe.sensor_seed, 2**31 - 1])
        return np.sort(rng.choice(res * res, size=n, replace=False)).astype(np.int64)
    k = math.ceil(math.sqrt(n))
    ticks = np.floor((np.arange(k) + 0.5) * res / k).astype(np.int64)
    jj, ii = np.meshgrid(ticks, ticks, indexing="ij")
    return (jj * res + ii).ravel()[:n]

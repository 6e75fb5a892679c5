"""The wind data-set recipe: its parameters, their validation, and what it fixes before any solve
(the hills of ``terrain = "fixed"``, the mast positions); see :mod:`solvers.wind` for the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pdegrow.errors import PdegrowError
from solvers import recipes
from solvers.wind_grid import draw_hills, gaussian_hills


@dataclass(frozen=True)
class WindRecipe:
    """Everything that defines a wind data set; see ``datasets/wind-*.toml`` (lengths in m, speeds in m/s)."""

    n_samples: int = 200
    seed: int = 0
    length: float = 3000.0
    height: float = 1500.0
    nx: int = 40
    ny: int = 40
    nz: int = 20
    vertical_stretch: float = 1.5
    terrain: Literal["fixed", "random"] = "fixed"
    terrain_seed: int = 0
    n_hills: int = 3
    hill_height: list[float] = field(default_factory=lambda: [100.0, 400.0])
    hill_width: list[float] = field(default_factory=lambda: [200.0, 500.0])
    alpha_h: float = 1.0
    alpha_v: float = 1.0
    speed: list[float] = field(default_factory=lambda: [4.0, 12.0])
    reference_height: float = 80.0
    roughness: list[float] = field(default_factory=lambda: [0.01, 0.5])
    direction: list[float] = field(default_factory=lambda: [0.0, 360.0])
    perturbation: float = 0.2
    perturbation_modes: int = 6
    perturbation_length: float = 1000.0
    mast_layout: Literal["random", "given"] = "random"
    n_masts: int = 6
    mast_seed: int = 0
    masts: list[list[float]] = field(default_factory=list)
    mast_heights: list[float] = field(default_factory=lambda: [10.0, 40.0, 80.0])
    components: Literal["uvw", "uv"] = "uvw"
    noise_level: float = 0.05
    grid_nx: int = 16
    grid_ny: int = 16
    grid_nz: int = 8
    rtol: float = 1e-10
    max_iterations: int = 500

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise PdegrowError(f"wind recipe: {msg}")

        recipes.require_finite(self, "wind recipe")
        if self.n_samples <= 0:
            bad(f"n_samples must be positive, got {self.n_samples}")
        if self.length <= 0 or self.height <= 0:
            bad(f"length and height must be positive, got {self.length}, {self.height}")
        if min(self.nx, self.ny, self.nz) < 1:
            bad(f"mesh size nx={self.nx}, ny={self.ny}, nz={self.nz} must be at least 1")
        if min(self.grid_nx, self.grid_ny, self.grid_nz) < 3:
            bad(f"grid size {self.grid_nx}×{self.grid_ny}×{self.grid_nz} must be at least 3 per axis")
        if self.vertical_stretch < 1:
            bad(f"vertical_stretch must be ≥ 1, got {self.vertical_stretch}")
        for name in ("hill_height", "hill_width", "speed", "roughness", "direction"):
            value = getattr(self, name)
            if len(value) != 2 or value[0] > value[1]:
                bad(f"{name} must be a range [low, high] with low ≤ high, got {value}")
        if self.roughness[0] <= 0:
            bad(f"roughness must be positive (the log law needs z₀ > 0), got {self.roughness}")
        if self.hill_height[0] < 0 or self.hill_width[0] <= 0 or self.n_hills < 0:
            bad("hill heights must be ≥ 0, hill widths > 0 and n_hills ≥ 0")
        if self.alpha_h <= 0 or self.alpha_v <= 0:
            bad(f"alpha_h and alpha_v must be positive, got {self.alpha_h}, {self.alpha_v}")
        if self.speed[0] <= 0 or self.reference_height <= 0:
            bad("speed and reference_height must be positive")
        if self.perturbation < 0 or self.perturbation_modes < 0 or self.perturbation_length <= 0:
            bad("perturbation and perturbation_modes must be ≥ 0, perturbation_length > 0")
        if self.noise_level < 0:
            bad(f"noise_level must be non-negative, got {self.noise_level}")
        if self.rtol <= 0 or self.max_iterations < 1:
            bad("rtol must be positive and max_iterations ≥ 1")
        if not self.mast_heights or min(self.mast_heights) <= 0:
            bad(f"every mast height must be above ground (> 0 m), got {self.mast_heights}")
        n_masts = len(self.masts) if self.mast_layout == "given" else self.n_masts
        if n_masts < 1:
            bad("at least one mast is needed")
        if self.mast_layout == "given":
            for k, m in enumerate(self.masts):
                if len(m) != 2:
                    bad(f"a mast needs two coordinates (x, y), got {m}")
                if not all(0.0 <= c <= self.length for c in m):
                    bad(f"mast {k} at ({m[0]:g}, {m[1]:g}) lies outside the domain [0, {self.length:g}]²")
        top = self.terrain_bound()
        if top >= self.height:
            bad(f"the terrain reaches {top:.1f} m, not below the domain top height = {self.height:g} m")
        masts = mast_positions(self)
        ground = (gaussian_hills(masts[:, 0], masts[:, 1], fixed_hills(self)) if self.terrain == "fixed"
                  else np.full(len(masts), top))
        highest = ground + max(self.mast_heights)
        if np.any(highest >= self.height):
            k = int(np.argmax(highest))
            bad(f"mast {k}'s top sensor at {highest[k]:.1f} m is not below the domain top {self.height:g} m")

    def terrain_bound(self) -> float:
        """The highest ground: of the fixed hills on a fine grid, or n_hills × the tallest possible hill."""
        if self.terrain == "random":
            return self.n_hills * self.hill_height[1]
        t = np.linspace(0.0, self.length, 201)
        return float(gaussian_hills(t[None, :], t[:, None], fixed_hills(self)).max(initial=0.0))

    def memory_bytes(self) -> int:
        """A rough bound of one rank's forward model: ~ 60 doubles per node (mesh, matrices, AMG)."""
        return 8 * 60 * (self.nx + 1) * (self.ny + 1) * (self.nz + 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(preset: str | None, config_file: str | None, overrides: dict[str, Any]) -> WindRecipe:
    """The recipe of a preset (``datasets/wind-<preset>.toml``) or a file, with overrides."""
    return recipes.load_recipe(WindRecipe, "wind", preset, config_file, overrides)


def fixed_hills(recipe: WindRecipe) -> np.ndarray:
    """The hills of ``terrain = "fixed"``, drawn from ``terrain_seed`` alone."""
    rng = np.random.default_rng([recipe.terrain_seed, 2**31 - 2])
    return draw_hills(rng, recipe.n_hills, recipe.length, tuple(recipe.hill_height), tuple(recipe.hill_width))


def mast_positions(recipe: WindRecipe) -> np.ndarray:
    """Mast coordinates (M, 2): the given ones, or uniform in [0.1 L, 0.9 L]² from ``mast_seed``."""
    if recipe.mast_layout == "given":
        return np.asarray(recipe.masts, dtype=float).reshape(-1, 2)
    rng = np.random.default_rng([recipe.mast_seed, 2**31 - 1])
    return rng.uniform(0.1 * recipe.length, 0.9 * recipe.length, size=(recipe.n_masts, 2))

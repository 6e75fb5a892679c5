"""Write imported vorticity trajectories as a pdegrow ``navier_stokes`` data set.

The inverse task is the one of ``pdegrow generate navier-stokes`` with ``observation = "full"``:
``inputs/vorticity_T`` = w at the chosen final time (plus noise σ = noise_level · RMS of that
sample's w(T) over the grid, drawn from ``numpy.random.default_rng([seed, i])``; then the clean
state is ``targets/vorticity_T``), ``targets/vorticity_0`` = w₀, and, when snapshots are asked
for, ``targets/vorticity_snapshots`` (n, K, R, R) with ``geometry/snapshot_times`` (the ``time``
coordinate of the file). The file is written under ``OUT.tmp`` and renamed once complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdegrow.contract import create_dataset_file, mark_complete
from pdegrow.errors import PdegrowError
from pdegrow.importing.sources import Trajectories
from pdegrow.io_errors import replace_on_success

WINDOW_BYTES = 64 * 2**20
"""Bytes of source states read at a time."""
NOISE_MODEL = "additive, sigma = noise_level * RMS of w(T) over the grid"


@dataclass
class ImportSummary:
    """What an import wrote."""

    out: Path
    n_samples: int
    resolution: int
    final_time: float
    snapshot_times: list[float]
    source_format: str

    def format(self) -> str:
        snaps = (f", {len(self.snapshot_times)} snapshots (t = {self.snapshot_times[0]:g} … "
                 f"{self.snapshot_times[-1]:g})" if self.snapshot_times else "")
        r = self.resolution
        return (f"wrote {self.out}: {self.n_samples} samples of {r}×{r} vorticity "
                f"from {self.source_format}, w0 → w(T = {self.final_time:g}){snaps}")


def time_index(times: np.ndarray, t: float, what: str) -> int:
    """The index of time ``t`` among ``times`` (to 1e-9 relative), or a one-line error listing them."""
    hits = np.flatnonzero(np.abs(times - t) <= 1e-9 * max(1.0, abs(t)))
    if hits.size == 0:
        shown = ", ".join(f"{v:g}" for v in times[:8]) + (" …" if len(times) > 8 else "")
        raise PdegrowError(f"{what} {t:g} is not a time of the file (its times: {shown})")
    return int(hits[0])


def plan_times(src: Trajectories, final_time: float | None, snapshots: str | None
               ) -> tuple[int, list[int], float]:
    """(index of the final state, indices of the snapshots, the time of w₀)."""
    times = np.asarray(src.times, dtype=np.float64)
    start = 0 if src.has_initial else 1          # without w0 the first state is w0
    if not src.has_initial and len(times) < 2:
        raise PdegrowError("the file holds one state per sample and no w0: nothing to invert")
    t0 = 0.0 if src.has_initial else float(times[0])
    final = len(times) - 1 if final_time is None else time_index(times, final_time, "--final-time")
    if final < start:
        raise PdegrowError(f"--final-time {times[final]:g} is the time of w0")
    snaps: list[int] = []
    if snapshots and snapshots != "none":
        if snapshots == "all":
            snaps = list(range(start, final + 1))
        else:
            try:
                wanted = [float(v) for v in snapshots.split(",")]
            except ValueError:
                raise PdegrowError(f"--snapshots {snapshots!r}: expected 'all', 'none' or times "
                                   "separated by commas") from None
            snaps = [time_index(times, t, "--snapshots time") for t in wanted]
    return final, snaps, t0


def write_navier_stokes(src: Trajectories, out: str | os.PathLike, *, source_name: str,
                        final_time: float | None = None, snapshots: str | None = None,
                        noise_level: float = 0.0, seed: int = 0, nu: float | None = None,
                        max_samples: int | None = None, overwrite: bool = False) -> ImportSummary:
    """Write ``src`` as a ``navier_stokes`` data set ``out`` (see the module docstring)."""
    out = Path(out)
    if not (noise_level >= 0 and np.isfinite(noise_level)):
        raise PdegrowError(f"--noise-level must be finite and >= 0, got {noise_level}")
    if max_samples is not None and max_samples < 1:
        raise PdegrowError(f"--max-samples must be >= 1, got {max_samples}")
    if out.is_dir():
        raise PdegrowError(f"cannot write {out}: it is a directory")
    if not out.parent.is_dir():
        raise PdegrowError(f"cannot write {out}: directory {out.parent} does not exist")
    if out.exists() and not overwrite:
        raise PdegrowError(f"{out} exists; pass --overwrite to replace it")
    final, snaps, t0 = plan_times(src, final_time, snapshots)
    times = np.asarray(src.times, dtype=np.float64)
    n = src.n if max_samples is None else min(src.n, max_samples)
    r = len(src.x)
    t_final = float(times[final] - t0)
    snap_times = [float(times[k] - t0) for k in snaps]
    config: dict[str, Any] = {
        "source": source_name, "source_format": src.source_format, "resolution": r, "final_time": t_final,
        "observation": "full", "noise_level": float(noise_level), "snapshot_times": snap_times,
        "nu": nu, "imported": True}
    grid_x, grid_y = np.meshgrid(src.x, src.y)                     # field[j, i] = w(x_i, y_j)
    static = {"geometry/grid_x": grid_x, "geometry/grid_y": grid_y}
    f64 = np.dtype(np.float64)
    specs = {"targets/vorticity_0": ((r, r), f64), "inputs/vorticity_T": ((r, r), f64)}
    if noise_level > 0:
        specs["targets/vorticity_T"] = ((r, r), f64)
    if snaps:
        static["geometry/snapshot_times"] = np.asarray(snap_times)
        specs["targets/vorticity_snapshots"] = ((len(snaps), r, r), f64)
    attrs = {"final_time": t_final, "resolution": r, "observation": "full", "noise_level": float(noise_level),
             "noise_model": NOISE_MODEL, "snapshot_times": np.asarray(snap_times),
             "grid_layout": "field[j, i] = w(x = x_i, y = y_j)", "source": source_name,
             "source_format": src.source_format}
    if nu is not None:
        attrs["nu"] = float(nu)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with replace_on_success(tmp, out):
            f = create_dataset_file(tmp, problem="navier_stokes", config=config, n_samples=n, base_seed=seed,
                                    static=static, sample_specs=specs, attrs=attrs)
            with f:
                step = max(1, WINDOW_BYTES // max(1, len(times) * r * r * 8))
                for lo in range(0, n, step):
                    hi = min(n, lo + step)
                    w0, states = src.window(lo, hi)
                    w0 = states[:, 0] if w0 is None else np.asarray(w0, dtype=np.float64)
                    bad = ~(np.isfinite(w0).all(axis=(1, 2)) & np.isfinite(states).all(axis=(1, 2, 3)))
                    if bad.any():
                        first = lo + int(np.flatnonzero(bad)[0])
                        raise PdegrowError(f"sample {first} of the source holds NaN or inf")
                    wT = states[:, final]
                    f["targets/vorticity_0"][lo:hi] = w0
                    f["inputs/vorticity_T"][lo:hi] = _noisy(wT, noise_level, seed, lo)
                    if noise_level > 0:
                        f["targets/vorticity_T"][lo:hi] = wT
                    if snaps:
                        f["targets/vorticity_snapshots"][lo:hi] = states[:, snaps]
                mark_complete(f)
    finally:
        src.close()
    return ImportSummary(out, n, r, t_final, snap_times, src.source_format)


def _noisy(w: np.ndarray, noise_level: float, seed: int, first: int) -> np.ndarray:
    """w + σ ε per sample, σ = noise_level · RMS(w), ε from ``default_rng([seed, i])``."""
    if noise_level <= 0:
        return w
    out = np.empty_like(w)
    for k in range(len(w)):
        rng = np.random.default_rng([int(seed), first + k])
        sigma = noise_level * np.sqrt(np.mean(w[k] ** 2))
        out[k] = w[k] + sigma * rng.standard_normal(w[k].shape)
    return out

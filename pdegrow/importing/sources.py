"""Readers of vorticity trajectories in the conventions users already have.

Each reader returns a :class:`Trajectories`: per-sample arrays in pdegrow's grid layout
(``field[j, i] = w(x_i, y_j)``, axis 0 = y, axis 1 = x), read lazily in sample windows where the
format allows it (HDF5), so a file larger than memory can be converted.

* FNO Navier–Stokes ``.mat`` (Li et al., "Fourier neural operator", ``ns_V1e-3_N5000_T50.mat``):
  ``a`` = w₀ with axes [N, x, y], ``u`` = the trajectory [N, x, y, T], ``t`` (optional) the times.
  MATLAB v5 files through ``scipy.io.loadmat``; v7.3 files are HDF5 (axes stored reversed).
* FNO/neuraloperator ``.pt``: a tensor or a dict of tensors with the same keys, loaded with
  ``torch.load(weights_only=True)`` — tensors only, a pickle with any other object is refused.
* PDEBench-style HDF5: fields [b, t, x, y] with ``x-coordinate``, ``y-coordinate``,
  ``t-coordinate`` arrays; the vorticity is read from ``--field`` (default ``vorticity``, ``w``,
  ``omega``), or computed from ``Vx``, ``Vy`` as ω = ∂Vy/∂x − ∂Vx/∂y with spectral derivatives
  (periodic domain of length R·Δx).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pdegrow.errors import PdegrowError

VORTICITY_NAMES = ("vorticity", "w", "omega")


@dataclass
class Trajectories:
    """n samples of w on an R × R grid: ``window(lo, hi)`` → (w₀ or None, states (hi−lo, T, R, R)),
    both in the (y, x) layout; ``times`` (T,) of the states; grid coordinates ``x``, ``y`` (R,)."""

    n: int
    times: np.ndarray
    x: np.ndarray
    y: np.ndarray
    window: Callable[[int, int], tuple[np.ndarray | None, np.ndarray]]
    source_format: str
    has_initial: bool
    close: Callable[[], None] = lambda: None


def uniform_grid(r: int) -> np.ndarray:
    """The grid of the unit torus used by FNO and by pdegrow: i / R, i = 0 … R − 1."""
    return np.arange(r) / r


def _check_arrays(path: Path, initial: np.ndarray | None, traj: np.ndarray, layout: str) -> None:
    if traj.ndim not in (3, 4):
        raise PdegrowError(f"{path}: the trajectory array has shape {traj.shape}; expected {layout}")
    if traj.shape[1] != traj.shape[2]:
        raise PdegrowError(f"{path}: the grid is {traj.shape[1]}×{traj.shape[2]}; only square grids are "
                           "supported")
    if initial is not None and initial.shape != traj.shape[:3]:
        raise PdegrowError(f"{path}: w0 has shape {initial.shape} but the trajectory {traj.shape}")


def from_arrays(path: Path, arrays: dict[str, np.ndarray], initial_key: str, trajectory_key: str,
                fmt: str, record_interval: float) -> Trajectories:
    """FNO arrays already in memory: ``initial_key`` [N, x, y] (optional), ``trajectory_key``
    [N, x, y, T] or [N, x, y] (one state), ``t`` (optional) the times of the states."""
    if trajectory_key not in arrays:
        have = ", ".join(sorted(arrays)) or "none"
        raise PdegrowError(f"{path}: no array {trajectory_key!r} (has: {have}); "
                           "name the trajectory with --trajectory-key")
    traj = np.asarray(arrays[trajectory_key])
    initial = np.asarray(arrays[initial_key]) if initial_key in arrays else None
    _check_arrays(path, initial, traj, "[N, x, y, T] or [N, x, y]")
    if traj.ndim == 3:
        traj = traj[..., None]
    n_t = traj.shape[-1]
    times = _times(path, arrays.get("t"), n_t, record_interval)
    r = traj.shape[1]

    def window(lo: int, hi: int) -> tuple[np.ndarray | None, np.ndarray]:
        states = np.transpose(traj[lo:hi], (0, 3, 2, 1))              # [n, x, y, t] → [n, t, y, x]
        w0 = None if initial is None else np.transpose(initial[lo:hi], (0, 2, 1))
        return w0, np.asarray(states, dtype=np.float64)

    grid = uniform_grid(r)
    return Trajectories(traj.shape[0], times, grid, grid, window, fmt, initial is not None)


def _times(path: Path, t: np.ndarray | None, n_t: int, record_interval: float) -> np.ndarray:
    if t is None:
        return record_interval * np.arange(1, n_t + 1)
    t = np.asarray(t, dtype=np.float64).ravel()
    if len(t) < n_t:
        raise PdegrowError(f"{path}: {len(t)} times for {n_t} states")
    return t[:n_t]


def read_mat(path: Path, initial_key: str, trajectory_key: str, record_interval: float) -> Trajectories:
    """An FNO ``.mat`` file (MATLAB v5 via scipy; v7.3 is HDF5, read lazily)."""
    import scipy.io

    try:
        data = scipy.io.loadmat(path, variable_names=[initial_key, trajectory_key, "t"])
    except NotImplementedError:                                  # MATLAB v7.3: an HDF5 file
        return _read_mat73(path, initial_key, trajectory_key, record_interval)
    except (ValueError, OSError, TypeError) as exc:
        raise PdegrowError(f"{path}: not a readable .mat file ({exc})") from None
    arrays = {k: v for k, v in data.items() if not k.startswith("__")}
    return from_arrays(path, arrays, initial_key, trajectory_key, "fno-mat", record_interval)


def _read_mat73(path: Path, initial_key: str, trajectory_key: str, record_interval: float) -> Trajectories:
    f = h5py.File(path, "r")
    try:
        if trajectory_key not in f:
            raise PdegrowError(f"{path}: no array {trajectory_key!r} (has: {', '.join(sorted(f))})")
        traj = f[trajectory_key]                                  # stored reversed: [T, y, x, N]
        if traj.ndim == 3:
            n, n_t = traj.shape[-1], 1
        elif traj.ndim == 4:
            n, n_t = traj.shape[-1], traj.shape[0]
        else:
            raise PdegrowError(f"{path}: {trajectory_key} has shape {traj.shape[::-1]}; "
                               "expected [N, x, y, T]")
        r = traj.shape[-2]
        initial = f[initial_key] if initial_key in f else None
        times = _times(path, f["t"][()] if "t" in f else None, n_t, record_interval)
    except BaseException:
        f.close()
        raise

    def window(lo: int, hi: int) -> tuple[np.ndarray | None, np.ndarray]:
        block = traj[..., lo:hi]
        states = block[None] if traj.ndim == 3 else block         # [T, y, x, n]
        w0 = None if initial is None else np.transpose(initial[..., lo:hi], (2, 0, 1))
        return w0, np.asarray(np.transpose(states, (3, 0, 1, 2)), dtype=np.float64)

    return Trajectories(n, times, uniform_grid(r), uniform_grid(r), window, "fno-mat", initial is not None,
                        f.close)


def read_pt(path: Path, initial_key: str, trajectory_key: str, record_interval: float) -> Trajectories:
    """A ``.pt`` file of tensors (a tensor is the trajectory; a dict maps keys to tensors), loaded
    with ``weights_only=True``: no object other than tensors and containers is ever built."""
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PdegrowError(f"{path}: not a file of tensors that can be loaded safely ({first})") from None
    if isinstance(obj, torch.Tensor):
        obj = {trajectory_key: obj}
    if not isinstance(obj, dict):
        raise PdegrowError(f"{path}: holds a {type(obj).__name__}, expected a tensor or a dict of tensors")
    arrays = {str(k): v.numpy() for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return from_arrays(path, arrays, initial_key, trajectory_key, "fno-pt", record_interval)


def read_pdebench(path: Path, field: str | None) -> Trajectories:
    """A PDEBench-style HDF5 file: [b, t, x, y] fields with coordinate arrays."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise PdegrowError(f"{path}: not an HDF5 file ({exc})") from None
    try:
        names = [k for k in f if isinstance(f[k], h5py.Dataset)]
        for key in ("x-coordinate", "y-coordinate", "t-coordinate"):
            if key not in f:
                raise PdegrowError(f"{path}: no {key!r} array (a PDEBench file has x-, y- and t-coordinate)")
        x, y = f["x-coordinate"][()].ravel(), f["y-coordinate"][()].ravel()
        t_all = f["t-coordinate"][()].ravel()
        candidates = [field] if field else [n for n in VORTICITY_NAMES if n in f]
        if field and field not in f:
            raise PdegrowError(f"{path}: no field {field!r} (has: {', '.join(sorted(names))})")
        if candidates:
            data = f[candidates[0]]
            components = None
            if data.ndim != 4:
                raise PdegrowError(f"{path}: {candidates[0]} has shape {data.shape}; expected [b, t, x, y]")
        elif "Vx" in f and "Vy" in f:
            data, components = None, (f["Vx"], f["Vy"])
            if components[0].shape != components[1].shape or components[0].ndim != 4:
                raise PdegrowError(f"{path}: Vx, Vy must both have shape [b, t, x, y]")
        else:
            raise PdegrowError(f"{path}: no vorticity field ({', '.join(VORTICITY_NAMES)}) and no Vx, Vy; "
                               f"name one with --field (has: {', '.join(sorted(names))})")
        shape = data.shape if data is not None else components[0].shape
        if shape[2] != shape[3] or len(x) != shape[2] or len(y) != shape[3]:
            raise PdegrowError(f"{path}: grid {shape[2]}×{shape[3]} with {len(x)} x- and {len(y)} "
                               "y-coordinates; only square grids with matching coordinates are supported")
        times = t_all[:shape[1]]
        if len(times) < shape[1]:
            raise PdegrowError(f"{path}: {len(t_all)} times for {shape[1]} states")
    except BaseException:
        f.close()
        raise
    lengths = (len(x) * _spacing(x), len(y) * _spacing(y))

    def window(lo: int, hi: int) -> tuple[np.ndarray | None, np.ndarray]:
        if data is not None:
            w = np.asarray(data[lo:hi], dtype=np.float64)
        else:
            vx, vy = (np.asarray(c[lo:hi], np.float64) for c in components)
            w = curl(vx, vy, *lengths)
        return None, np.transpose(w, (0, 1, 3, 2))                  # [b, t, x, y] → [b, t, y, x]

    fmt = "pdebench" if data is not None else "pdebench-velocity"
    return Trajectories(shape[0], times, x, y, window, fmt, False, f.close)


def _spacing(c: np.ndarray) -> float:
    return float(np.mean(np.diff(c))) if len(c) > 1 else 1.0


def curl(vx: np.ndarray, vy: np.ndarray, length_x: float, length_y: float) -> np.ndarray:
    """ω = ∂vy/∂x − ∂vx/∂y of periodic fields with axes [..., x, y], by spectral differentiation on a
    domain of lengths (length_x, length_y): ∂/∂x ↔ multiplication by 2πi k_x / L_x (the Nyquist mode
    of an even grid dropped, as its derivative is not real)."""
    nx, ny = vx.shape[-2], vx.shape[-1]
    kx = 2j * np.pi * np.fft.fftfreq(nx, 1.0 / nx) / length_x
    ky = 2j * np.pi * np.fft.fftfreq(ny, 1.0 / ny) / length_y
    if nx % 2 == 0:
        kx[nx // 2] = 0
    if ny % 2 == 0:
        ky[ny // 2] = 0
    dvy_dx = np.fft.ifft2(kx[:, None] * np.fft.fft2(vy, axes=(-2, -1)), axes=(-2, -1)).real
    dvx_dy = np.fft.ifft2(ky[None, :] * np.fft.fft2(vx, axes=(-2, -1)), axes=(-2, -1)).real
    return dvy_dx - dvx_dy


FORMATS = ("fno-mat", "fno-pt", "pdebench")


def detect_format(path: Path) -> str:
    """``fno-mat`` for .mat, ``fno-pt`` for .pt/.pth, ``pdebench`` for .h5/.hdf5."""
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return "fno-mat"
    if suffix in (".pt", ".pth"):
        return "fno-pt"
    if suffix in (".h5", ".hdf5", ".hdf"):
        return "pdebench"
    raise PdegrowError(f"{path}: cannot tell the format from the suffix {suffix!r}; pass --format "
                       f"({', '.join(FORMATS)})")


def open_source(path: str | os.PathLike, fmt: str = "auto", *, field: str | None = None,
                initial_key: str = "a", trajectory_key: str = "u",
                record_interval: float = 1.0) -> Trajectories:
    """The trajectories of ``path`` in format ``fmt`` (``auto``: from the suffix)."""
    path = Path(path)
    if not path.is_file():
        raise PdegrowError(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "fno-mat":
        return read_mat(path, initial_key, trajectory_key, record_interval)
    if fmt == "fno-pt":
        return read_pt(path, initial_key, trajectory_key, record_interval)
    if fmt == "pdebench":
        return read_pdebench(path, field)
    raise PdegrowError(f"unknown format {fmt!r} (one of auto, {', '.join(FORMATS)})")

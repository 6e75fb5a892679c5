"""Benchmark: the FEniCSx Navier–Stokes path against a pseudo-spectral numpy solver.

    .venv/bin/python benchmarks/bench_navier_stokes.py [--resolution 64] [--final-time 1.0]
        [--samples 2] [--no-mpi]

Both solve ∂ₜw + u·∇w = νΔw + f, u = ∇^⊥ψ, −Δψ = w on the unit torus from the same
initial field (drawn by ``solvers.navier_stokes.sample_vorticity``), dt = 1e-3. The
spectral solver uses Crank–Nicolson diffusion + Heun advection (the FNO generator's
scheme); the FEniCSx path is timed with both of its schemes (CN + AB2, the preset;
CN + Heun, the spectral one's). Printed: time per sample of each on one core and the
ratios, the relative L2 difference of w(T), and the parallel efficiency of
``mpiexec -n 2 pdegrow generate navier-stokes``.
This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def spectral_solve(w0: np.ndarray, f: np.ndarray, nu: float, final_time: float, dt: float) -> np.ndarray:
    """Pseudo-spectral solve on the (n, n) grid (axis 0 = y, axis 1 = x), 2/3 dealiasing,
    Heun for u·∇w, Crank–Nicolson for νΔw (the FNO data generator's scheme)."""
    n = w0.shape[0]
    kx = np.fft.rfftfreq(n, 1.0 / n)[None, :]
    ky = np.fft.fftfreq(n, 1.0 / n)[:, None]
    lap = -4.0 * np.pi**2 * (kx**2 + ky**2)
    inv_lap = np.where(lap == 0, 0.0, 1.0 / np.where(lap == 0, 1.0, lap))
    dealias = (np.abs(kx) <= n / 3) & (np.abs(ky) <= n / 3)
    ikx, iky = 2j * np.pi * kx, 2j * np.pi * ky
    f_h = np.fft.rfft2(f)
    w_h = np.fft.rfft2(w0)

    def advection(w_h: np.ndarray) -> np.ndarray:
        psi_h = -inv_lap * w_h                                  # −Δψ = w
        u = np.fft.irfft2(iky * psi_h, s=(n, n))                # ∂ψ/∂y
        v = -np.fft.irfft2(ikx * psi_h, s=(n, n))               # −∂ψ/∂x
        wx = np.fft.irfft2(ikx * w_h, s=(n, n))
        wy = np.fft.irfft2(iky * w_h, s=(n, n))
        return dealias * np.fft.rfft2(u * wx + v * wy)

    explicit = 1.0 + 0.5 * dt * nu * lap
    implicit = 1.0 - 0.5 * dt * nu * lap
    for _ in range(round(final_time / dt)):
        n1 = advection(w_h)
        w_tilde = (explicit * w_h + dt * (f_h - n1)) / implicit
        w_h = (explicit * w_h + dt * (f_h - 0.5 * (n1 + advection(w_tilde)))) / implicit
    return np.fft.irfft2(w_h, s=(n, n))


def cli_seconds(ranks: int, resolution: int, final_time: float, samples: int,
                out: Path) -> tuple[float, float]:
    """(wall time of the whole command, generation time reported by its summary)."""
    cmd = [str(BIN / "pdegrow"), "generate", "navier-stokes", "--n-samples", str(samples),
           "--resolution", str(resolution), "--final-time", str(final_time), "--out", str(out),
           "--overwrite", "--no-progress"]
    if ranks > 1:
        cmd = [str(BIN / "mpiexec"), "-n", str(ranks), *cmd]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("time"))
    return wall, float(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--final-time", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=3, help="samples timed per solver")
    parser.add_argument("--mpi-samples", type=int, default=16, help="samples of the 1-vs-2-rank run")
    parser.add_argument("--no-mpi", action="store_true", help="skip the parallel-efficiency run")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]

    from mpi4py import MPI  # noqa: F401  (before dolfinx)

    from pdegrow.generation import sample_rng
    from solvers.navier_stokes import (
        TIME_SCHEMES,
        NavierStokesRecipe,
        forcing_function,
        make_problem,
        sample_vorticity,
    )

    recipe = NavierStokesRecipe(resolution=args.resolution, final_time=args.final_time)
    problems = {scheme: make_problem(dataclasses.replace(recipe, time_scheme=scheme))
                for scheme in TIME_SCHEMES}
    ticks = np.arange(recipe.resolution) / recipe.resolution
    gx, gy = np.meshgrid(ticks, ticks, indexing="xy")
    f = forcing_function(np.stack([gx, gy]))

    times: dict[str, list[float]] = {name: [] for name in (*TIME_SCHEMES, "spectral")}
    l2: dict[str, list[float]] = {name: [] for name in TIME_SCHEMES}
    for i in range(args.samples):
        w0 = sample_vorticity(sample_rng(recipe.seed, i), recipe.resolution)
        start = time.perf_counter()
        w_spec = spectral_solve(w0, f, recipe.nu, recipe.final_time, recipe.dt)
        times["spectral"].append(time.perf_counter() - start)
        for scheme, problem in problems.items():
            start = time.perf_counter()
            sample = problem.solve(i, sample_rng(recipe.seed, i))
            times[scheme].append(time.perf_counter() - start)
            assert np.array_equal(w0, sample["targets/vorticity_0"])
            w_fem = sample["inputs/vorticity_T"]
            l2[scheme].append(np.linalg.norm(w_fem - w_spec) / np.linalg.norm(w_spec))

    res, T = recipe.resolution, recipe.final_time
    t = {name: float(np.median(v)) for name, v in times.items()}
    rows = [
        ("load average (1 min) at the start", f"{load_start:.2f}"),
        ("grid / final time / dt", f"{res}² / {T:g} / {recipe.dt:g}  ({recipe.n_steps} steps)"),
        ("samples timed (median reported)", f"{args.samples}"),
        ("spectral numpy (CN + Heun), s/sample", f"{t['spectral']:.3f}"),
    ]
    for scheme in TIME_SCHEMES:
        label = {"cn_ab2": "CN + AB2, the preset", "cn_heun": "CN + Heun, as spectral"}[scheme]
        rows += [
            (f"FEniCSx P1 ({label}), s/sample", f"{t[scheme]:.3f}"),
            ("  ratio to spectral", f"{t[scheme] / t['spectral']:.2f}×"),
            ("  relative L2 difference of w(T)", "  ".join(f"{d:.3%}" for d in l2[scheme])),
        ]
    if not args.no_mpi:
        with tempfile.TemporaryDirectory() as tmp:
            n = args.mpi_samples
            wall1, gen1 = cli_seconds(1, res, T, n, Path(tmp) / "r1.h5")
            wall2, gen2 = cli_seconds(2, res, T, n, Path(tmp) / "r2.h5")
        rows += [
            (f"CLI, {n} samples, 1 rank: wall / generation", f"{wall1:.2f} s / {gen1:.2f} s"),
            (f"CLI, {n} samples, 2 ranks: wall / generation", f"{wall2:.2f} s / {gen2:.2f} s"),
            ("parallel efficiency at 2 ranks (generation)", f"{gen1 / (2 * gen2):.0%}"),
            ("parallel efficiency at 2 ranks (wall, incl. start-up)", f"{wall1 / (2 * wall2):.0%}"),
        ]
    rows.append(("load average (1 min) at the end, cores", f"{os.getloadavg()[0]:.2f}, {os.cpu_count()}"))
    width = max(len(k) for k, _ in rows)
    print(f"{'quantity':<{width}}  value")
    print(f"{'-' * width}  {'-' * 30}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()

"""Per-sample cost of heat data generation against a naive script and the solver floor.

    .venv/bin/python benchmarks/bench_heat.py [--samples 200] [--mpi-samples 3000]

For the ``paper`` and ``default`` presets it times, per sample:
  pipeline  HeatProblem.solve: prior draw, in-place re-assembly, MUMPS solve, sensors
  naive     a new dolfinx.fem.petsc.LinearProblem per sample (what a first script does)
  floor     numeric LU factorisation + solve of the same matrix alone (symbolic analysis reused)
  assembly  re-assembling the matrix in place alone
and then the parallel efficiency of `pdegrow generate` at 2 ranks (T₁ / (2·T₂), from the
generator's own timing, which excludes interpreter start-up).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from mpi4py import MPI  # noqa: E402, F401  (before dolfinx)

import dolfinx.fem.petsc  # noqa: E402
import numpy as np  # noqa: E402
import ufl  # noqa: E402
from dolfinx import fem  # noqa: E402

from solvers.heat import HeatProblem, load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def per_sample(func, n: int) -> float:
    func(0)  # warm-up (JIT, first factorisation)
    start = time.perf_counter()
    for i in range(n):
        func(i)
    return (time.perf_counter() - start) / n


def bench_preset(preset: str, n: int) -> dict[str, float]:
    problem = HeatProblem(load_recipe(preset, None, {}))
    rngs = [np.random.default_rng([0, i]) for i in range(n + 1)]
    fields = [problem.draw_log_conductivity(np.random.default_rng([1, i]))[0] for i in range(n + 1)]

    pipeline = per_sample(lambda i: problem.solve(i, rngs[i]), n)

    T, v = ufl.TrialFunction(problem.V), ufl.TestFunction(problem.V)
    kappa = fem.Function(problem.Q)
    f = fem.Constant(problem.msh, 1.0)

    def naive(i: int) -> None:
        kappa.x.array[:] = np.exp(fields[i])
        lp = dolfinx.fem.petsc.LinearProblem(
            kappa * ufl.inner(ufl.grad(T), ufl.grad(v)) * ufl.dx, f * v * ufl.dx, bcs=[problem.bc],
            petsc_options_prefix=f"naive{i}_",
            petsc_options={"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"})
        sol = lp.solve()
        problem.observation_matrix @ sol.x.array

    naive_t = per_sample(naive, n)

    def assemble(i: int) -> None:
        problem.kappa.x.array[:] = np.exp(fields[i])
        problem.A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(problem.A, problem.a, bcs=[problem.bc])
        problem.A.assemble()

    assembly = per_sample(assemble, n)

    def floor(i: int) -> None:
        problem.A.scale(1.0 + 1e-9 * (1 if i % 2 else -1))  # new values, same pattern
        problem.ksp.solve(problem.b, problem.T.x.petsc_vec)

    floor_t = per_sample(floor, n)
    return {"pipeline": pipeline, "naive": naive_t, "floor": floor_t, "assembly": assembly,
            "nodes": len(problem.nodes)}


def generator_seconds(ranks: int, n: int, out: Path) -> float:
    cmd = [sys.executable, "-m", "pdegrow", "generate", "heat", "--preset", "default",
           "--n-samples", str(n), "--out", str(out), "--overwrite", "--no-progress"]
    if ranks > 1:
        cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    return float(re.search(r"time\s+([0-9.]+) s", proc.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200, help="samples timed per method")
    parser.add_argument("--mpi-samples", type=int, default=3000, help="samples for the 1-vs-2-rank run")
    args = parser.parse_args()

    print(f"{'preset':8} {'nodes':>6} {'pipeline':>10} {'naive':>10} {'floor':>10} {'assembly':>10}"
          f" {'pipe/floor':>10} {'naive/pipe':>10}")
    for preset in ("paper", "default"):
        r = bench_preset(preset, args.samples)
        print(f"{preset:8} {r['nodes']:6d} {r['pipeline'] * 1e3:8.3f}ms {r['naive'] * 1e3:8.3f}ms "
              f"{r['floor'] * 1e3:8.3f}ms {r['assembly'] * 1e3:8.3f}ms "
              f"{r['pipeline'] / r['floor']:10.2f} {r['naive'] / r['pipeline']:10.2f}")
    if args.mpi_samples:
        with tempfile.TemporaryDirectory() as tmp:
            t1 = generator_seconds(1, args.mpi_samples, Path(tmp) / "one.h5")
            t2 = generator_seconds(2, args.mpi_samples, Path(tmp) / "two.h5")
        print(f"\ngenerate heat --preset default, {args.mpi_samples} samples: 1 rank {t1:.2f} s, "
              f"2 ranks {t2:.2f} s, parallel efficiency {t1 / (2 * t2):.0%}")


if __name__ == "__main__":
    main()

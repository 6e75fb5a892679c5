"""Per-sample cost of wind data generation against one AMG-preconditioned solve of the same system.

    .venv/bin/python benchmarks/bench_wind.py [--samples 20] [--set nx=40 ...] [--out FILE.md]

For the ``default`` preset (40×40×20 tetrahedral mesh, fixed terrain) it times, in CPU seconds of
this process (one thread), interleaved so that a change of machine load hits every row alike:

  sample    WindProblem.solve: first-guess draw, right-hand side, CG + GAMG, recovery at the nodes,
            masts, grid interpolation, mast image
  solve     the CG + GAMG solve of the same right-hand side alone (the preconditioner set up once)
  setup     building the problem once: mesh, forms (JIT), assembly, GAMG set-up, point location

and the ratio sample / solve (the goal: at most 2).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from mpi4py import MPI  # noqa: E402, F401  (before dolfinx)

import numpy as np  # noqa: E402

from pdegrow.config import parse_overrides  # noqa: E402
from pdegrow.generation import sample_rng  # noqa: E402
from pdegrow.text_output import print_and_save  # noqa: E402
from solvers.wind import WindProblem, load_recipe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--set", action="append", dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args()
    recipe = load_recipe(args.preset, None, parse_overrides(args.overrides))

    c0, w0 = time.process_time(), time.perf_counter()
    problem = WindProblem(recipe)
    setup_cpu, setup_wall = time.process_time() - c0, time.perf_counter() - w0
    problem.solve(0, sample_rng(0, 0))                                  # warm caches

    sample_cpu, solve_cpu, iterations = [], [], []
    for i in range(1, args.samples + 1):
        c = time.process_time()
        problem.solve(i, sample_rng(0, i))
        sample_cpu.append(time.process_time() - c)
        u0, _ = problem.draw_first_guess(sample_rng(0, i))
        b = problem.right_hand_side(u0)
        c = time.process_time()
        problem.solve_potential(b)
        solve_cpu.append(time.process_time() - c)
        iterations.append(problem.ksp.getIterationNumber())
    sample, solve = float(np.median(sample_cpu)), float(np.median(solve_cpu))
    load = os.getloadavg()
    lines = [
        f"wind `{args.preset}` preset: {recipe.nx}×{recipe.ny}×{recipe.nz} mesh, {problem.n_dofs} P1 dofs, "
        f"grid {recipe.grid_nx}×{recipe.grid_ny}×{recipe.grid_nz}, {len(problem.masts)} masts; "
        f"{args.samples} samples, medians of CPU seconds (one thread); load average {load[0]:.2f}",
        "",
        "| what | CPU s | ratio to the solve |",
        "|---|---|---|",
        f"| sample (`WindProblem.solve`) | {sample:.4f} | {sample / solve:.2f} |",
        f"| CG + GAMG solve alone ({int(np.median(iterations))} iterations, rtol {recipe.rtol:g}) "
        f"| {solve:.4f} | 1.00 |",
        f"| setup once (mesh, JIT, assembly, GAMG, point location) | {setup_cpu:.3f} "
        f"(wall {setup_wall:.3f}) | {setup_cpu / solve:.1f} |",
    ]
    print_and_save(lines, args.out)


if __name__ == "__main__":
    main()

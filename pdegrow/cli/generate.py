"""``pdegrow generate PROBLEM``: solve the forward problem for many samples into HDF5."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from pdegrow.config import parse_overrides
from pdegrow.errors import PdegrowError

PROBLEMS = {"heat": "solvers.heat", "navier-stokes": "solvers.navier_stokes", "wind": "solvers.wind"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="generate a data set with a FEniCSx forward solver",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw parameters from the prior, solve the PDE and write inputs, targets, "
        "geometry and operators into one HDF5 file.\n\n"
        "Run under 'mpiexec -n R pdegrow generate …' to split the samples over R ranks; the "
        "file is identical for any R. A killed run is finished with --resume.\n\n"
        "Nothing is written until the recipe, the forward model and the disk and memory the run "
        "needs have been checked. One run at a time writes an output (OUT.parts/ is locked); a "
        "failure on any rank stops every rank, keeps the finished samples for --resume and "
        "prints one line. Exit status: 0 done (or, with --resume, already complete), 2 bad "
        "input or an I/O failure.",
        epilog="examples:\n"
        "  pdegrow generate heat --preset paper --n-samples 550 --out datasets/heat-paper.h5\n"
        "  mpiexec -n 4 pdegrow generate heat --preset default --n-samples 2000 "
        "--out datasets/heat.h5\n"
        "  pdegrow generate heat --preset default --set n_sensors=16 --set nx=16 --out small.h5\n"
        "  pdegrow generate navier-stokes --n-samples 1000 --resolution 64 --final-time 1.0 "
        "--out datasets/ns.h5\n"
        "  mpiexec -n 2 pdegrow generate wind --preset default --n-samples 500 --out datasets/wind.h5\n"
        "  pdegrow generate heat --preset paper --n-samples 1e5 --out datasets/big.h5 --resume"
        "   # after a kill, or a requeued job",
    )
    p.add_argument("problem", choices=sorted(PROBLEMS), help="the forward problem")
    p.add_argument("--preset", default="default",
                   help="recipe in datasets/<problem>-<preset>.toml (default: %(default)s)")
    p.add_argument("--config", metavar="FILE", help="a recipe file (TOML) instead of a preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="overrides",
                   help="override one recipe key (repeatable), e.g. --set nx=16")
    p.add_argument("--n-samples", type=_count, metavar="N",
                   help="number of samples, e.g. 2000 or 1e5 (default: the recipe's)")
    p.add_argument("--resolution", type=int, metavar="N",
                   help="grid resolution, same as --set resolution=N (navier-stokes)")
    p.add_argument("--final-time", type=float, metavar="T",
                   help="final time, same as --set final_time=T (navier-stokes)")
    p.add_argument("--seed", type=int, help="base seed; sample i uses (seed, i) (default: the recipe's)")
    p.add_argument("--out", required=True, metavar="FILE", help="output HDF5 file")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted run of the same recipe (a no-op, exit 0, when the "
                   "output is already complete with the same recipe, seed and size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--flush-every", type=int, default=256, metavar="N",
                   help="a rank writes a part file every N samples (at most 256 MiB of them) or "
                   "every 30 s, whichever comes first; a killed run loses at most that much "
                   "(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import importlib

    from mpi4py import MPI  # before dolfinx / petsc4py

    solver = importlib.import_module(PROBLEMS[args.problem])
    overrides = parse_overrides(args.overrides)
    flags = {"resolution": args.resolution, "final_time": args.final_time}
    if any(v is not None for v in flags.values()):
        keys = {f.name for f in dataclasses.fields(solver.load_recipe(args.preset, args.config, {}))}
        for key, value in flags.items():
            if value is not None:
                if key not in keys:
                    raise PdegrowError(f"--{key.replace('_', '-')} does not apply to the {args.problem} "
                                       f"problem (its recipe has no {key!r} key)")
                overrides[key] = value
    recipe = solver.load_recipe(args.preset, args.config, overrides)
    recipe = dataclasses.replace(
        recipe,
        n_samples=args.n_samples if args.n_samples is not None else recipe.n_samples,
        seed=args.seed if args.seed is not None else recipe.seed,
    )
    try:
        summary = _generate(args, solver, recipe, MPI.COMM_WORLD)
    except PdegrowError:
        if MPI.COMM_WORLD.rank != 0:
            return 2  # every rank has the same error: rank 0 prints it once
        raise
    if MPI.COMM_WORLD.rank == 0:
        print(summary.format(), file=sys.stdout)
    return 0


def _count(text: str) -> int:
    """A sample count: an integer, also written like 1e5."""
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(value)


def _generate(args: argparse.Namespace, solver: Any, recipe: Any, comm: Any) -> Any:
    from pdegrow.generation import generate

    return generate(
        lambda: solver.make_problem(recipe),
        problem=solver.PROBLEM_NAME,
        config=recipe.to_dict(),
        n_samples=recipe.n_samples,
        seed=recipe.seed,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        flush_every=args.flush_every,
        progress=not args.no_progress,
        comm=comm,
        model_memory=recipe.memory_bytes() if hasattr(recipe, "memory_bytes") else 0,
    )

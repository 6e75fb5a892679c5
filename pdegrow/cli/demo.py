"""``pdegrow demo``: the main job on a small built-in default, end to end."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pdegrow.errors import PdegrowError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the main job on a small built-in default",
        description="Generate a small heat data set (the papers' 'paper' preset: 9×9 mesh, "
        "12 KL modes, 10 noisy sensors), print its summary and write a figure of it into OUT.")
    p.add_argument("--out", default="runs/demo", help="output directory (default: %(default)s)")
    p.add_argument("--n-samples", type=int, default=300, help="samples to generate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default: %(default)s)")
    p.set_defaults(run=run)


def generate_demo_data(out_dir: Path, n_samples: int, seed: int) -> Path:
    """The demo's heat data set (``paper`` preset), generated in-process on one rank."""
    from mpi4py import MPI

    from pdegrow.generation import generate
    from solvers import heat

    recipe = heat.load_recipe("paper", None, {"n_samples": n_samples, "seed": seed})
    data = out_dir / "heat-paper.h5"
    summary = generate(lambda: heat.make_problem(recipe), problem=heat.PROBLEM_NAME,
                       config=recipe.to_dict(), n_samples=n_samples, seed=seed, out=data,
                       overwrite=True, comm=MPI.COMM_SELF)
    print(summary.format())
    return data


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PdegrowError(f"cannot create {out_dir}: {exc.strerror}") from None
    data = generate_demo_data(out_dir, args.n_samples, args.seed)
    from pdegrow.plots import heat_dataset_figure

    figure = heat_dataset_figure(data, out_dir / "dataset.png")
    print(f"figure: {figure}")
    return 0

"""``pdegrow demo``: the main job on a small built-in default, end to end.

Generates a small heat data set (the ``paper`` preset, in-process, one rank,
the same code path as ``pdegrow generate``), grows a network on it with
Approach I (layerwise training + SRL, ``experiments/demo-layerwise.toml``),
trains the fixed baseline (``experiments/demo-baseline.toml``) and the best
configuration found (``experiments/heat-paper-best.toml``: the label-free
posterior objective) with the same trainer, computes the Bayes reference (MAP
of every test sample), evaluates every run on the test split against it and
writes each run's report plus a comparison table ``OUT/summary.md``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pdegrow.cli.helpfmt import ExampleHelpFormatter
from pdegrow.errors import PdegrowError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the main job on a small built-in default", formatter_class=ExampleHelpFormatter,
        epilog="examples:\n"
        "  pdegrow demo                              # everything into runs/demo/ (what 'make demo' runs)\n"
        "  pdegrow demo --out /tmp/demo --no-train   # only the data set and its figure\n"
        "  pdegrow demo --n-samples 600 --seed 1 --no-progress",
        description="Generate a small heat data set (the papers' 'paper' preset: 9×9 mesh, "
        "12 KL modes, 10 noisy sensors) and a figure of it; grow a network on it with Approach I "
        "(layerwise training with manifold/sparsity/physics regularizers, then sequential residual "
        "learning); train the fixed baseline with the same trainer; evaluate both on the test split and "
        "write their reports (figures) and a comparison table OUT/summary.md. A few minutes on 2 cores.")
    p.add_argument("--out", default="runs/demo", help="output directory (default: %(default)s)")
    p.add_argument("--n-samples", type=int, default=300, help="samples to generate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default: %(default)s)")
    p.add_argument("--no-train", action="store_true", help="only generate the data set and its figure")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
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
    if args.no_train:
        return 0
    train_and_compare(out_dir, data, args.seed, progress=not args.no_progress)
    return 0


EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
DEMO_RUNS = {"best": "heat-paper-best.toml", "layerwise": "demo-layerwise.toml",
             "baseline": "demo-baseline.toml"}
METRICS = ("rel_error_field", "rel_error_conductivity")


def demo_reference(data: Path) -> Path:
    """The MAP reference of the demo data's test split, next to the data (what every gap is read against)."""
    from pdegrow.reference import default_reference_path, run_reference, write_reference

    path = default_reference_path(data, "map")
    split = {"n_train": 50, "n_val": 10, "n_test": -1}
    write_reference(path, run_reference(data, "map", "test", split=split))
    return path


def train_and_compare(out_dir: Path, data: Path, seed: int, progress: bool = True) -> Path:
    """Train the demo's runs on ``data``, evaluate and report them; returns OUT/summary.md."""
    from pdegrow.reporting import write_report
    from pdegrow.training.config import load_config
    from pdegrow.training.evaluate import evaluate_run
    from pdegrow.training.trainer import train

    print("Bayes reference: MAP of every test sample (pdegrow reference --method map)", flush=True)
    ref_path = demo_reference(data)
    rows = []
    for name, file in DEMO_RUNS.items():
        path = EXPERIMENTS / file
        if not path.is_file():
            raise PdegrowError(f"{path} is missing (the demo needs the repository's experiments/ folder)")
        cfg = load_config(path, {"run.seed": seed})
        run_dir = out_dir / name
        print(f"training {name} ({path.name}) → {run_dir}", flush=True)
        summary = train(cfg, data, run_dir, overwrite=True, progress=progress)
        result = evaluate_run(run_dir, str(data), "test")
        report = write_report(run_dir, str(data))
        arch = summary["architecture"]
        rows.append((name, summary, result, arch))
        print(f"  {summary['epochs']} epochs, {summary['growth_events']} growth events, "
              f"depth {arch['depth']} "
              f"(+{arch['n_correctors']} SRL), {arch['n_params']} parameters; test relative field error "
              f"{result['rel_error_field']:.4f} ± {result['rel_error_field_std']:.4f}")
        print(f"  report: {report[-1]}")
    ref = rows[0][2].get("reference", {}).get("metrics", {})
    lines = ["# pdegrow demo", "", f"Data: `{data}` (heat, preset `paper`). Test errors, mean over the test "
             f"samples; gap = error / reference − 1 against the MAP estimate of each test sample "
             f"(`{ref_path.name}`), the best the 10 noisy sensors allow up to the few % between MAP and "
             f"posterior mean.", "",
             "| run | epochs | growth events | depth | SRL nets | parameters | error in m | gap | "
             "error in e^m | gap |", "|---|---|---|---|---|---|---|---|---|---|"]
    if ref:
        lines.append("| Bayes reference (MAP) | | | | | | " + " | ".join(
            f"{ref[k]['reference']:.4f} | –" if k in ref else "– | –" for k in METRICS) + " |")
    for name, summary, result, arch in rows:
        gaps = result.get("reference", {}).get("metrics", {})
        cells = [f"{result[k]:.4f} | " + (f"{100 * gaps[k]['gap']:+.1f} %" if k in gaps else "–")
                 for k in METRICS]
        lines.append(f"| {name} | {summary['epochs']} | {summary['growth_events']} | {arch['depth']} | "
                     f"{arch['n_correctors']} | {arch['n_params']} | " + " | ".join(cells) + " |")
    lines += ["", "Reports: " + ", ".join(f"[{n}]({n}/report/report.md)" for n in DEMO_RUNS), ""]
    summary_md = out_dir / "summary.md"
    summary_md.write_text("\n".join(lines))
    print(f"summary: {summary_md}")
    return summary_md

"""``pdegrow evaluate RUN_DIR --data FILE``: score a finished run on a data set."""

from __future__ import annotations

import argparse

from pdegrow.cli.helpfmt import ExampleHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a trained run on a data set", formatter_class=ExampleHelpFormatter,
        epilog="examples:\n"
        "  pdegrow evaluate runs/lw --data datasets/heat-paper.h5            # the run's test split\n"
        "  pdegrow evaluate runs/lw --data datasets/heat-paper.h5 --split val --json\n"
        "  pdegrow evaluate runs/lw --data datasets/heat-other.h5 --no-reference   # every sample",
        description="Load RUN_DIR's final model and report its average relative errors (for heat: of "
        "the recovered log-conductivity field, nodal and L2(Ω) norms, mean and std over samples) on a "
        "split of the run's own data file (default: its test split) or on every sample of another "
        "file of the same problem.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished 'pdegrow train' run directory")
    p.add_argument("--data", required=True, metavar="FILE", help="HDF5 data set (same problem, same inputs)")
    p.add_argument("--split", choices=("train", "val", "test", "all"),
                   help="samples to score (default: test for the run's own file, all otherwise)")
    p.add_argument("--reference", metavar="FILE",
                   help="Bayesian reference file ('pdegrow reference'; default: DATA_STEM.reference-"
                   "{mcmc,laplace,map}.h5 beside the data, when present): prints the gap error/reference - 1")
    p.add_argument("--no-reference", action="store_true", help="do not look for a reference")
    p.add_argument("--allow-different", action="append", default=[], metavar="PART",
                   choices=("mesh", "sensors", "noise", "prior", "equation", "other"),
                   help="score data of another forward setting anyway, where only PART differs (repeatable: "
                   "mesh, sensors, noise, prior, equation, other); by default such data is refused, naming "
                   "what differs from the setting the run was trained on")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pdegrow.training.evaluate import evaluate_run
    from pdegrow.training.runlog import to_json

    result = evaluate_run(args.run_dir, args.data, args.split, reference=args.reference,
                          use_reference=not args.no_reference, allow_different=args.allow_different)
    if args.json:
        print(to_json(result, indent=1))  # undefined metrics (e.g. all-zero targets) are null
        return 0
    arch = result["architecture"]
    print(f"{result['run']} on {result['data']} ({result['n_samples']} samples)")
    print(f"  strategy {result['strategy']}, depth {arch['depth']} (+{arch['n_correctors']} SRL), "
          f"{arch['n_params']} parameters")
    for key in sorted(k for k in result if k.startswith("rel_error") and not k.endswith("_std")):
        value, std = result[key], result[key + "_std"]
        flag = "   ⚠ above 1: worse than the prior mean" if value == value and value > 1 else ""
        print(f"  {key:<22} " + (f"{value:.4f} ± {std:.4f}{flag}" if value == value else
                                 "undefined (every reference is zero)"))
    if "reference" in result:
        from pdegrow.reference.lookup import gap_lines

        print("\n".join(gap_lines(result["reference"])))
    return 0

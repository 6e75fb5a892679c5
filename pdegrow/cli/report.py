"""``pdegrow report RUN_DIR``: figures and a Markdown summary of a run."""

from __future__ import annotations

import argparse

from pdegrow.cli.helpfmt import ExampleHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write figures and a summary of a run", formatter_class=ExampleHelpFormatter,
        epilog="examples:\n"
        "  pdegrow report runs/lw                        # runs/lw/report/{report.md,*.png}\n"
        "  pdegrow report runs/lw --out talk-figures --n-examples 5\n"
        "  pdegrow report runs/ns --data datasets/ns-32.h5   # NS: true vs recovered w0, error maps",
        description="Write into RUN_DIR/report (or --out): loss curves with the growth events marked, "
        "the architecture over time, predicted vs realised loss change at each growth event, and for "
        "the heat problem the true and recovered conductivity fields with the sensors, error maps and "
        "the recovered field after each added layer; plus report.md.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a 'pdegrow train' run directory")
    p.add_argument("--data", metavar="FILE", help="data set for the field figures (default: the run's)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: RUN_DIR/report)")
    p.add_argument("--n-examples", type=int, default=3, help="test samples in fields.png (default: 3)")
    p.add_argument("--reference", metavar="FILE",
                   help="Bayesian reference of the data ('pdegrow reference'; default: DATA_STEM.reference-"
                   "{mcmc,laplace,map}.h5 beside the data, when present): adds reference_fields.png "
                   "(true / network / MAP / posterior mean / posterior std) and reference_errors.png")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pdegrow.reporting import write_report

    for path in write_report(args.run_dir, args.data, args.out, args.n_examples, reference=args.reference):
        print(path)
    return 0

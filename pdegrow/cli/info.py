"""``pdegrow info FILE``: what a data set holds."""

from __future__ import annotations

import argparse
import json

from pdegrow.cli.helpfmt import ExampleHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show what a data-set file holds",
                       formatter_class=ExampleHelpFormatter,
                       description="Print a data set's problem, schema version, generating "
                       "config, sample count and the shape of every array.",
                       epilog="examples:\n"
                       "  pdegrow info datasets/heat-paper.h5\n"
                       "  pdegrow info datasets/ns-32.h5 --json | python -m json.tool")
    p.add_argument("file", help="a pdegrow HDF5 data set")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pdegrow.contract import dataset_info, format_info

    info = dataset_info(args.file)
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0

"""``pdegrow info FILE``: what a data set holds."""

from __future__ import annotations

import argparse
import json

from pdegrow.contract import dataset_info, format_info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show what a data-set file holds",
                       description="Print a data set's problem, schema version, generating "
                       "config, sample count and the shape of every array.")
    p.add_argument("file", help="a pdegrow HDF5 data set")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    info = dataset_info(args.file)
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0

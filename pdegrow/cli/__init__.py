"""The ``pdegrow`` command line: one module a subcommand, each with ``register``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pdegrow import __version__
from pdegrow.errors import PdegrowError

SUBCOMMANDS = ("generate", "info", "train", "evaluate", "predict", "export", "report", "compare", "reference",
               "demo")

SUBCOMMANDS += ("import",)
MODULES = {"import": "importer"}   # a subcommand whose module has another name (a keyword)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pdegrow",
        description="Generate PDE data sets with FEniCSx and grow neural surrogates for "
        "the inverse problem. Run 'pdegrow COMMAND --help' for each command.",
    )
    parser.add_argument("--version", action="version", version=f"pdegrow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"pdegrow.cli.{MODULES.get(name, name)}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in a traceback at exit
        return code
    except BrokenPipeError:
        # the reader stopped early (`pdegrow info FILE | head`): not an error; no more output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except PdegrowError as exc:
        print(f"pdegrow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pdegrow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

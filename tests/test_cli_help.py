"""Every subcommand's --help shows examples, and the command line starts without the heavy imports."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from pdegrow.cli import build_parser

HEAVY = ("torch", "h5py", "numpy", "scipy", "matplotlib", "dolfinx", "mpi4py")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subparsers()))
def test_every_subcommand_help_has_examples(name: str) -> None:
    text = subparsers()[name].format_help()
    assert "examples:" in text, f"'pdegrow {name} --help' shows no examples"
    block = text.split("examples:", 1)[1]
    example_lines = [line for line in block.splitlines() if line.strip().startswith(("pdegrow", "mpiexec"))]
    assert example_lines, f"'pdegrow {name} --help' has an examples: heading but no command"
    assert all(f"pdegrow {name}" in line or "mpiexec" in line or "pdegrow train" in line
               for line in example_lines[:1])


def test_help_imports_no_heavy_module() -> None:
    """``pdegrow --help`` (and building every subcommand's parser) imports neither torch nor h5py nor
    numpy: they are imported when a command runs."""
    code = ("import sys, pdegrow.cli as c; c.build_parser(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at --help: {out.stdout.strip()}"


def test_top_level_help_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "pdegrow", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "COMMAND" in out.stdout

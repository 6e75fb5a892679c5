"""The dependency rule (docs/architecture.md): pdegrow never imports dolfinx/petsc4py/mpi4py at
module level; solvers never torch."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

IMPORT_ALL_PDEGROW = """
import importlib, pkgutil, sys
import pdegrow
names = [m.name for m in pkgutil.walk_packages(pdegrow.__path__, "pdegrow.")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
assert len(names) > 40, names
print(sorted(m for m in ("dolfinx", "petsc4py", "mpi4py", "ufl") if m in sys.modules))
"""

IMPORT_SOLVERS = """
import sys
import solvers.heat, solvers.navier_stokes, solvers.periodic
import pdegrow.contract, pdegrow.generation
print(sorted(m for m in ("torch",) if m in sys.modules))
"""


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_the_learning_side_imports_no_fenics_nor_mpi():
    assert run_python(IMPORT_ALL_PDEGROW) == "[]"


def test_the_solvers_import_no_torch():
    assert run_python(IMPORT_SOLVERS) == "[]"

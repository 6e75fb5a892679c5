"""Shared fixtures: small real data sets generated once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PDEGROW = [sys.executable, "-m", "pdegrow"]


def run_cli(*args: str, mpi_ranks: int = 0, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run ``pdegrow ARGS`` in a subprocess (under ``mpiexec -n R`` when ``mpi_ranks``)."""
    cmd = [*PDEGROW, *args]
    if mpi_ranks:
        cmd = [str(BIN / "mpiexec"), "-n", str(mpi_ranks), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def heat_paper_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small data set of the papers' heat setting (9×9 mesh, 12 KL modes, 10 sensors)."""
    out = tmp_path_factory.mktemp("data") / "heat-paper.h5"
    run_cli("generate", "heat", "--preset", "paper", "--n-samples", "80", "--seed", "3",
            "--out", str(out), "--no-progress")
    return out


@pytest.fixture(scope="session")
def heat_default_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small full-field data set (16×16 mesh, SPDE prior, 16 sensors)."""
    out = tmp_path_factory.mktemp("data") / "heat-default.h5"
    run_cli("generate", "heat", "--preset", "default", "--set", "nx=16", "--set", "ny=16",
            "--set", "n_sensors=16", "--n-samples", "40", "--out", str(out), "--no-progress")
    return out

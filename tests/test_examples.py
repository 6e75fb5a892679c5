"""The example notebooks (jupytext percent scripts in examples/) run end to end at a tiny size, so they
never rot: heat generate → train with growth → predict new observations → compare with the MAP; NS conv
with topological-derivative growth."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import pytest
from conftest import ROOT

EXAMPLES = ROOT / "examples"


def _run(name: str, out) -> str:
    env = {**os.environ, "PDEGROW_EXAMPLE_SIZE": "tiny", "PDEGROW_EXAMPLE_OUT": str(out), "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, cwd=ROOT,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("name", ["heat_inverse.py", "navier_stokes_conv.py"])
def test_examples_are_jupytext_percent_scripts(name):
    text = (EXAMPLES / name).read_text()
    assert "format_name: percent" in text and text.count("# %%") >= 6 and "# %% [markdown]" in text


@pytest.mark.slow
def test_heat_example_runs(tmp_path):
    stdout = _run("heat_inverse.py", tmp_path)
    assert "network error / MAP error - 1 =" in stdout
    with h5py.File(tmp_path / "predictions.h5") as f:
        assert f["fields/log_conductivity"].shape == (20, 100) and "reference" in f and "truth" in f
    assert (tmp_path / "sample0.png").stat().st_size > 10_000


@pytest.mark.slow
def test_navier_stokes_example_runs(tmp_path):
    stdout = _run("navier_stokes_conv.py", tmp_path)
    assert "insert at depth" in stdout          # the topological derivative grew the network
    with h5py.File(tmp_path / "predictions.h5") as f:
        assert f["fields/vorticity_0"].shape == (6, 16, 16) and "map_w0" in f["reference"]
    assert (tmp_path / "sample0.png").stat().st_size > 10_000

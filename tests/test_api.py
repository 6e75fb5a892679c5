"""The Python API (`import pdegrow`): cheap import, data sets as torch Datasets, generate, train with
nested-dict overrides, load_run → predict / evaluate / report, errors as PdegrowError, no sys.exit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_train_config

import pdegrow
from pdegrow.data.splits import make_splits


def test_import_pdegrow_loads_no_heavy_module():
    code = ("import sys, pdegrow; heavy = [m for m in ('torch', 'h5py', 'numpy', 'dolfinx', 'mpi4py', "
            "'scipy') if m in sys.modules]; print(heavy, sorted(n for n in dir(pdegrow) if n[0] != '_'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    heavy, names = out.stdout.strip().split("] ", 1)
    assert heavy == "["
    for name in ("load_dataset", "generate", "train", "load_run", "load_model", "PdegrowError"):
        assert name in names
    with pytest.raises(AttributeError):
        pdegrow.no_such_name  # noqa: B018


def test_no_sys_exit_in_the_library():
    """Only the command line ends the process; the library raises PdegrowError."""
    offenders = []
    for path in (ROOT / "pdegrow").rglob("*.py"):
        rel = path.relative_to(ROOT / "pdegrow").as_posix()
        if rel.startswith("cli/") or rel == "__main__.py":
            continue
        if re.search(r"\bsys\.exit\(|(?<![\w.])exit\(|\bos\._exit\(", path.read_text()):
            offenders.append(rel)
    assert offenders == []


def test_load_dataset_is_a_torch_dataset_with_the_trainers_splits(heat_paper_file):
    ds = pdegrow.load_dataset(heat_paper_file)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 80
    assert ds.input_name == "inputs/observations" and ds.target_name == "targets/kl_coefficients"
    assert ds.splits == make_splits(80, 50, 10, -1, 0)
    with h5py.File(heat_paper_file) as f:
        x7, y7 = f["inputs/observations"][7], f["targets/kl_coefficients"][7]
        field = f["targets/log_conductivity"][()]
    x, y = ds[7]
    np.testing.assert_allclose(x.numpy(), x7, rtol=1e-6)
    np.testing.assert_allclose(y.numpy(), y7, rtol=1e-6)
    test = pdegrow.load_dataset(heat_paper_file, "test", n_train=30, n_val=10,
                                target="targets/log_conductivity")
    assert list(test.indices) == make_splits(80, 30, 10, -1, 0)["test"]
    np.testing.assert_allclose(test.arrays()[1], field[test.indices], rtol=1e-6)
    assert len(test.split("train")) == 30 and test.geometry["nodes"].shape == (100, 2)
    lazy = pdegrow.load_dataset(heat_paper_file, "val", memory_limit_mb=0)   # read sample by sample
    xb, yb = next(iter(torch.utils.data.DataLoader(lazy, batch_size=4)))
    assert xb.shape == (4, 10) and yb.shape == (4, 12)
    np.testing.assert_allclose(xb.numpy(), ds.arrays()[0][lazy.indices[:4]], rtol=1e-6)
    with pytest.raises(pdegrow.PdegrowError, match="unknown split 'dev'"):
        pdegrow.load_dataset(heat_paper_file, "dev")
    with pytest.raises(pdegrow.PdegrowError, match="has no dataset 'targets/nope'"):
        pdegrow.load_dataset(heat_paper_file, target="targets/nope")


def test_train_with_nested_overrides_then_use_the_run(heat_paper_file, tmp_path):
    (tmp_path / "cfg.toml").write_text(tiny_train_config())
    run = pdegrow.train(tmp_path / "cfg.toml", data=heat_paper_file, out=tmp_path / "run",
                        model={"width": 6}, train={"max_epochs": 2}, growth={"strategy": "net2deeper"})
    cfg = run.config
    assert cfg["model"]["width"] == 6 and cfg["train"]["max_epochs"] == 2
    assert cfg["growth"]["strategy"] == "net2deeper" and cfg["optim"]["batch_size"] == 30   # file kept
    assert run.summary["epochs"] == 2 and len(run.metrics()) == 2
    # the run's data set, split as it was trained
    test = pdegrow.load_dataset(heat_paper_file, "test", run=run.path)
    assert list(test.indices) == json.loads((run.path / "splits.json").read_text())["test"]
    # predict on an array: the same as the evaluation path of the training code
    from pdegrow.training.evaluate import load_trained, predict

    x, _ = test.arrays()
    pred = run.predict(x)
    np.testing.assert_allclose(pred.prediction, predict(load_trained(run.path), x), rtol=1e-6, atol=1e-7)
    assert pred.fields["log_conductivity"].shape == (10, 100) and pred.geometry["cells"].shape[1] == 3
    result = run.evaluate()
    assert result["n_samples"] == 10
    assert result["rel_error_target"] == pytest.approx(run.summary["test"]["rel_error_target"], rel=1e-4)
    on_file = run.predict(heat_paper_file)
    rows = on_file.sample_indices[test.indices]
    np.testing.assert_allclose(on_file.prediction[rows], pred.prediction, rtol=1e-6, atol=1e-7)
    assert on_file.errors()["rel_error_log_conductivity"] > 0
    fig = on_file.plot(0)
    assert len(fig.axes) == 6   # recovered, true, error, each with its colourbar
    report = run.report()
    assert report.name == "report.md" and report.is_file()
    out = pred.save(tmp_path / "p.h5")
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["fields/log_conductivity"][()], pred.fields["log_conductivity"])
    # resume of a finished run: nothing to do, same run back
    assert pdegrow.train(out=run.path, resume=True).summary["epochs"] == 2


def test_api_errors_are_pdegrow_errors_and_write_nothing(heat_paper_file, tmp_path):
    (tmp_path / "cfg.toml").write_text(tiny_train_config())
    with pytest.raises(pdegrow.PdegrowError, match=r"lr = -1.0 must be > 0"):
        pdegrow.train(tmp_path / "cfg.toml", data=heat_paper_file, out=tmp_path / "bad", optim={"lr": -1.0})
    assert not (tmp_path / "bad").exists()
    with pytest.raises(pdegrow.PdegrowError, match="give a section as a dict"):
        pdegrow.train({}, data=heat_paper_file, out=tmp_path / "bad", lr=1e-3)
    with pytest.raises(pdegrow.PdegrowError, match="unknown growth strategy 'grow_fast'"):
        pdegrow.train({}, data=heat_paper_file, out=tmp_path / "bad", growth={"strategy": "grow_fast"})
    with pytest.raises(pdegrow.PdegrowError, match="not a pdegrow run directory|run.json"):
        pdegrow.load_run(tmp_path)
    assert not (tmp_path / "bad").exists()


def test_generate_from_python(tmp_path):
    """In a fresh process (dolfinx and MPI stay out of the test process)."""
    out = tmp_path / "g.h5"
    code = (f"import pdegrow; p = pdegrow.generate('heat', preset='paper', n_samples=6, seed=2, "
            f"out={str(out)!r}, n_sensors=5); print(p, len(pdegrow.load_dataset(p)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "6"
    with h5py.File(out) as f:
        assert f["inputs/observations"].shape == (6, 5) and json.loads(f.attrs["config"])["n_sensors"] == 5
    bad = subprocess.run([sys.executable, "-c", f"import pdegrow; pdegrow.generate('heat', out={str(out)!r}, "
                          "nx=-3)"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "PdegrowError" in bad.stderr


def test_run_repr_and_model_file_alone(heat_paper_file, tmp_path):
    (tmp_path / "cfg.toml").write_text(tiny_train_config(max_epochs=1))
    run = pdegrow.train(tmp_path / "cfg.toml", data=heat_paper_file, out=tmp_path / "run")
    assert "finished" in repr(run)
    model = pdegrow.load_model(Path(run.path) / "model.pt")
    x = pdegrow.load_dataset(heat_paper_file).arrays()[0][:3]
    np.testing.assert_allclose(model.predict(x), run.predict(x).prediction)

"""A data set's Bayesian reference read by evaluate, report and the compare table (gap = error/ref − 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_cli

from pdegrow.comparison.table import markdown_table
from pdegrow.contract import open_dataset
from pdegrow.errors import PdegrowError
from pdegrow.reference.lookup import load_reference_for
from pdegrow.reference.results import (
    ReferenceResult,
    data_fingerprint,
    default_reference_path,
    write_reference,
)
from pdegrow.reference.tables import add_reference_gaps


def _reference(data: Path, indices: np.ndarray, values: np.ndarray, method: str = "map") -> Path:
    with open_dataset(data) as f:
        fp = data_fingerprint(f)
    errors = {"rel_error_field": values, "rel_error_conductivity": values / 2}
    ref = ReferenceResult("heat", method, indices, errors, {"map_m": np.zeros((len(indices), 100))},
                          {"data_fingerprint": fp})
    path = default_reference_path(data, method)
    write_reference(path, ref)
    return path


@pytest.fixture(scope="module")
def trained(heat_paper_file, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("refrun")
    data = tmp / "heat.h5"
    shutil.copy(heat_paper_file, data)
    run_cli("train", "--config", "experiments/heat-paper-baseline.toml", "--data", str(data), "--out",
            str(tmp / "run"), "--set", "train.max_epochs=3", "--set", "run.progress=false",
            "--set", "data.n_train=40", "--set", "data.n_val=10", "--set", "data.n_test=-1")
    run_cli("reference", str(data), "--method", "map", "--samples", "test", "--n-train", "40",
            "--n-val", "10", "--no-progress")
    return data, tmp / "run"


def test_evaluate_prints_the_gap_on_the_common_samples(trained):
    data, run = trained
    plain = json.loads(run_cli("evaluate", str(run), "--data", str(data), "--json", "--no-reference").stdout)
    assert "reference" not in plain
    result = json.loads(run_cli("evaluate", str(run), "--data", str(data), "--json").stdout)
    block = result["reference"]
    assert block["method"] == "map" and block["n_common"] == block["n_network"] == 30
    ref = load_reference_for(data)[0]
    for key in ("rel_error_field", "rel_error_conductivity", "rel_error_target"):
        m = block["metrics"][key]
        assert m["network"] == pytest.approx(plain[key])
        assert m["reference"] == pytest.approx(ref.errors[key].mean())
        assert m["gap"] == pytest.approx(plain[key] / ref.errors[key].mean() - 1)
    text = run_cli("evaluate", str(run), "--data", str(data)).stdout
    assert "Bayes reference (map" in text and "gap" in text


def test_report_draws_the_reference_figures(trained, tmp_path):
    data, run = trained
    out = run_cli("report", str(run), "--out", str(tmp_path / "rep")).stdout
    for name in ("reference_fields.png", "reference_errors.png"):
        assert name in out and (tmp_path / "rep" / name).stat().st_size > 5000


def test_a_reference_of_other_data_is_refused(trained, heat_default_file, tmp_path):
    data, run = trained
    proc = run_cli("evaluate", str(run), "--data", str(data), "--reference",
                   str(default_reference_path(data, "map")), check=False)
    assert proc.returncode == 0
    other = tmp_path / "other.h5"
    shutil.copy(heat_default_file, other)
    _reference(other, np.arange(3), np.ones(3))
    with pytest.raises(PdegrowError, match="another data file"):
        load_reference_for(data, default_reference_path(other, "map"))


def test_compare_table_reference_row_and_gap(heat_paper_file, tmp_path):
    data = tmp_path / "heat.h5"
    shutil.copy(heat_paper_file, data)
    _reference(data, np.arange(0, 80, 2), np.full(40, 0.4))     # only even samples
    out = tmp_path / "cmp"
    specs, results = [], []
    for strategy in ("fixed", "tiny"):
        for seed in (0, 1):
            run_dir = out / "runs" / "heat" / strategy / f"seed-{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "splits.json").write_text(json.dumps({"test": list(range(40, 60))}))
            specs.append(SimpleNamespace(dataset="heat", strategy=strategy, seed=seed,
                                         run_dir=lambda o, d=run_dir: d))
            results.append({"dataset": "heat", "strategy": strategy, "seed": seed, "data": str(data)})
    rows = [{"dataset": "heat", "strategy": s, "runs": 2, "error_mean": e, "error_std": 0.0,
             "params_mean": 1.0, "growth_events_mean": 0.0, "epochs_mean": 1.0, "train_wall_s_mean": 1.0,
             "train_wall_s_std": 0.0}
            for s, e in (("fixed", 0.6), ("tiny", 0.5))]
    cfg = SimpleNamespace(runs=specs, seeds=[0, 1])
    ref_rows = add_reference_gaps(cfg, results, rows, "rel_error_field", out)
    assert [r["gap"] for r in rows] == pytest.approx([0.5, 0.25])
    assert ref_rows[0]["n"] == 10 and ref_rows[0]["error_mean"] == pytest.approx(0.4)  # evens in 40…59
    md = markdown_table(cfg, "rel_error_field", rows, ref_rows)
    assert "| gap |" in md and "+50.0 %" in md and "+25.0 %" in md and "**Bayes reference** (map)" in md
    assert add_reference_gaps(cfg, results, rows, "loss", out) == []

"""`pdegrow evaluate` on runs trained with 2-D field inputs (MLP and conv) gives the trainer's test metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pdegrow.contract import create_dataset_file, mark_complete
from pdegrow.training.config import build_config
from pdegrow.training.evaluate import evaluate_run
from pdegrow.training.trainer import train


def _field_file(path: Path, n: int = 40, r: int = 6) -> Path:
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((n, r, r))
    wT = 0.5 * w0 + 0.1 * np.roll(w0, 1, axis=1)
    f = create_dataset_file(path, problem="navier_stokes", config={"resolution": r}, n_samples=n, base_seed=0,
                            static={}, sample_specs={"inputs/vorticity_T": ((r, r), np.float64),
                                                     "targets/vorticity_0": ((r, r), np.float64)})
    f["inputs/vorticity_T"][...] = wT
    f["targets/vorticity_0"][...] = w0
    mark_complete(f)
    f.close()
    return path


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_evaluate_matches_trainer_on_fields(tmp_path: Path, kind: str) -> None:
    data = _field_file(tmp_path / "ns.h5")
    cfg = build_config({
        "run": {"seed": 0, "device": "cpu", "progress": False},
        "data": {"problem": "navier_stokes", "input": "inputs/vorticity_T", "target": "targets/vorticity_0",
                 "aux": [], "n_train": 25, "n_val": 5, "n_test": 10},
        "model": {"kind": kind, "width": 4, "depth": 1, "block": "mlp", "hidden": [4],
                  "padding_mode": "circular"},
        "train": {"max_epochs": 3, "phase_epochs": 3},
    }, "test")
    summary = train(cfg, data, tmp_path / kind)
    result = evaluate_run(tmp_path / kind, str(data))
    assert result["n_samples"] == 10
    assert result["rel_error_target"] == pytest.approx(summary["test"]["rel_error_target"], rel=1e-4)

"""``prune_depths``: a depth whose eigen-solve was skipped is logged as null beside its bound, and the
report's "max over depths" is the maximum over the solved depths (never NaN).

A skipped depth t has D_t ≤ ub_t < D_t' for a solved t' (``topological_bounds``), so the maximum over
the solved depths is max_t D_t over all depths; before, the skipped derivatives were logged as NaN
and the report printed ``nan`` (or failed on the null a strict-JSON writer makes of NaN).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import write_synthetic_heat_file

from pdegrow.growth.base import build_strategy
from pdegrow.growth.topological_report import plot_topological_history, solved_derivatives
from pdegrow.reporting import _topological_lines
from pdegrow.training.config import build_config
from pdegrow.training.trainer import Trainer

torch.set_num_threads(1)


def _config() -> dict:
    return {
        "run": {"seed": 5, "progress": False, "threads": 1, "dtype": "float64", "device": "cpu"},
        "data": {"n_train": 40, "n_val": 8, "n_test": 8, "aux": [], "noisy_copies": 1},
        "model": {"kind": "mlp", "width": 12, "depth": 3, "block": "perceptron", "activation": "tanh"},
        "optim": {"lr": 1e-2, "batch_size": 14},
        "train": {"max_epochs": 3, "phase_epochs": 3, "patience": 100},
        "growth": {"strategy": "fixed"},
    }


def _event(derivative: list, bound: list | None, t_star: int) -> dict:
    info = {"derivative": derivative, "t_star": t_star, "eps": 0.1, "eps_max": 0.5, "significance": 3.0,
            "ratio": 0.9, "quadratic_valid": True}
    if bound is not None:
        info["derivative_bound"] = bound
    return {"epoch": 7, "predicted_change": -0.01, "realised_change": -0.009, "info": info}


def _max_column(line: str) -> str:
    return [c.strip() for c in line.strip("|").split("|")][4]


@pytest.mark.parametrize("skipped", [None, math.nan], ids=["null", "nan-legacy"])
def test_report_max_over_depths_skips_unsolved_depths(tmp_path: Path, skipped: float | None) -> None:
    # depth 0 (listed first, where Python's max() kept NaN) and depth 2 not solved: bounds 0.1, 0.2 < 0.5
    ev = _event([skipped, 0.5, skipped, 0.25], [0.1, 0.6, 0.2, 0.3], t_star=1)
    lines = _topological_lines([ev])
    row = lines[-1]
    assert _max_column(row) == "0.5"
    assert "nan" not in row.lower()
    assert solved_derivatives(ev["info"]["derivative"]) == [0.5, 0.25]
    out = plot_topological_history([ev], tmp_path / "topo.png")
    assert out is not None and out.stat().st_size > 0


def test_report_with_no_solved_depth_prints_a_dash() -> None:
    row = _topological_lines([_event([None, None], None, t_star=0)])[-1]
    assert _max_column(row) == "—" and "nan" not in row.lower()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    root = tmp_path_factory.mktemp("pruned")
    data = write_synthetic_heat_file(root / "synthetic.h5", n=56, seed=1)
    tr = Trainer(build_config(_config(), "serial"), data, root / "run")
    tr.terms = tr._active_terms()
    for _ in range(3):
        tr._train_epoch()
    return tr


def test_pruned_proposal_logs_null_and_the_bound(trained: Trainer) -> None:
    """The proposal's info is strict JSON; each depth is either solved (its derivative equals the full
    search's) or null with a bound below the derivative at t*; at least one depth is skipped here."""
    opts = {"method": "lanczos", "mode": "features", "tol": 1e-10, "min_significance": 0.0}
    full = build_strategy("topological_insertion", opts).propose(trained.ctx)
    pruned = build_strategy("topological_insertion", {**opts, "prune_depths": True}).propose(trained.ctx)
    assert pruned is not None and full is not None and pruned.depth == full.depth
    info = pruned.info
    json.dumps(info, allow_nan=False)                 # NaN would raise here
    derivs, bounds, ref = info["derivative"], info["derivative_bound"], full.info["derivative"]
    assert len(derivs) == len(bounds) == len(ref) == trained.model.depth + 1
    skipped = [t for t, d in enumerate(derivs) if d is None]
    assert skipped, "the case must skip a depth to test its logging"
    for t, (d, b, r) in enumerate(zip(derivs, bounds, ref, strict=True)):
        assert b >= r
        if d is None:
            assert b < info["lambda_max"] and t != info["t_star"]
        else:
            assert d == pytest.approx(r, rel=1e-9)
    assert max(solved_derivatives(derivs)) == pytest.approx(max(ref), rel=1e-9)
    row = _topological_lines([{"epoch": 3, "predicted_change": pruned.predicted_change, "info": info}])[-1]
    assert float(_max_column(row)) == pytest.approx(max(ref), rel=1e-2)

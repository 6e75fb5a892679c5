"""``pdegrow compare``: overall progress with the time left, and no "± 0.0000" for a single seed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pdegrow.cli.compare import duration, progress_text
from pdegrow.comparison.runner import progress
from pdegrow.comparison.table import markdown_table, plus_minus


def test_progress_and_time_left() -> None:
    p = progress(3, 8, 60.0, 8, 1)
    assert p["finished"] == 3 and p["of"] == 8
    assert p["left_s"] == pytest.approx(100.0)           # 20 s a run so far, 5 runs left
    assert progress(0, 8, 0.0, 8, 1)["left_s"] is None   # nothing finished: unknown
    assert progress_text(p) == "3/8 done, ~1 min 40 s left"
    assert progress_text(progress(8, 8, 160.0, 8, 1)) == "8/8 done"
    two = progress(1, 4, 30.0, 8, 2)
    assert progress_text(two) == "1/4 done, ~1 min 30 s left on this rank (8 runs on 2 ranks)"


def test_duration() -> None:
    assert duration(42.4) == "42 s"
    assert duration(185) == "3 min 05 s"
    assert duration(3720) == "1 h 02 min"


def row(runs: int, std: float) -> dict:
    return {"dataset": "heat", "strategy": "fixed", "runs": runs, "error_mean": 0.5, "error_std": std,
            "params_mean": 100.0, "growth_events_mean": 0.0, "epochs_mean": 10.0,
            "train_wall_s_mean": 2.0, "train_wall_s_std": 0.0}


def test_one_seed_prints_no_spread() -> None:
    md = markdown_table(SimpleNamespace(seeds=[0]), "rel_error_field", [row(1, 0.0)])
    assert "±" not in md and "0.0000" not in md
    assert "seed 0 (one run each: no spread)" in md
    assert "| heat | fixed | 1 | 0.5000 |" in md
    md = markdown_table(SimpleNamespace(seeds=[0, 1]), "rel_error_field", [row(2, 0.01)])
    assert "| heat | fixed | 2 | 0.5000 ± 0.0100 |" in md and "mean ± std over seeds 0, 1" in md
    # a data set of two seeds where only one run finished: the mean alone
    assert plus_minus(0.5, 0.0, 1, ".4f") == "0.5000"

"""experiments/time_to_accuracy.py on a small synthetic study: clocks summed over resumed segments, the
target (the baseline's best validation value), epoch / wall / CPU ratios, "before growing", totals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
try:
    import time_to_accuracy as tta
finally:
    sys.path.pop(0)


def write_run(root: Path, strategy: str, seed: int, vals: list[float], walls: list[float],
              cpus: list[float], growth_epoch: int | None = None, test: float = 0.5) -> Path:
    run = root / "runs" / "n1" / strategy / f"seed-{seed}"
    run.mkdir(parents=True)
    rows = [{"epoch": k + 1, "val_rel_error_field": v, "wall_s": w, "cpu_s": c}
            for k, (v, w, c) in enumerate(zip(vals, walls, cpus, strict=True))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "result.json").write_text(json.dumps({"test": {"rel_error_field": test}}))
    if growth_epoch is not None:
        (run / "events.jsonl").write_text(json.dumps({"kind": "growth", "epoch": growth_epoch}) + "\n")
    return run


def test_clocks_are_summed_over_resumed_segments(tmp_path: Path) -> None:
    run = write_run(tmp_path, "fixed", 0, [0.9, 0.8, 0.7, 0.6], [1.0, 2.0, 0.5, 1.5], [0.4, 0.8, 0.1, 0.3])
    rows = tta.rows(run)
    assert [r["wall_s"] for r in rows] == pytest.approx([1.0, 2.0, 2.5, 3.5])
    assert [r["cpu_s"] for r in rows] == pytest.approx([0.4, 0.8, 0.9, 1.1])


def test_reach_table_ratios(tmp_path: Path) -> None:
    # the baseline's best is 0.5 at epoch 3 (wall 6, CPU 3); it ends at CPU 4
    write_run(tmp_path, "fixed", 0, [0.9, 0.7, 0.5, 0.6], [2, 4, 6, 8], [1, 2, 3, 4], test=0.52)
    # reaches 0.5 at epoch 2 (wall 3, CPU 1.5), before its growth at epoch 3; ends at CPU 6
    write_run(tmp_path, "grow", 0, [0.8, 0.5, 0.4, 0.4], [1.5, 3, 4.5, 6], [0.75, 1.5, 2.25, 6],
              growth_epoch=3, test=0.48)
    # never reaches it
    write_run(tmp_path, "slow", 0, [0.9, 0.8, 0.7, 0.51], [1, 2, 3, 4], [1, 2, 3, 8], growth_epoch=1)
    table = {r.strategy: r for r in tta.reach_table(tmp_path, "n1", "fixed", "val_rel_error_field")}
    assert list(table) == ["fixed", "grow", "slow"]
    base, grow, slow = table["fixed"], table["grow"], table["slow"]
    assert base.epoch_ratios == [1.0] and base.cpu_ratios == [1.0]
    assert grow.epochs == [2] and grow.seeds == ["0"]
    assert grow.epoch_ratios == pytest.approx([2 / 3])
    assert grow.wall_ratios == pytest.approx([3 / 6])
    assert grow.cpu_ratios == pytest.approx([1.5 / 3])
    assert grow.total_cpu_ratios == pytest.approx([6 / 4])
    assert grow.before_growth == 1 and grow.finals == [0.48]
    assert slow.runs == 1 and slow.epochs == [] and slow.total_cpu_ratios == pytest.approx([2.0])
    assert "never" in tta.table_row(slow, "fixed")
    assert "1.5 (0.50×)" not in tta.table_row(grow, "fixed")   # CPU mean printed as an integer
    assert "(0.50×)" in tta.table_row(grow, "fixed")


def test_runs_without_cpu_time_print_a_dash(tmp_path: Path) -> None:
    run = write_run(tmp_path, "fixed", 0, [0.9, 0.5], [1, 2], [1, 2])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "cpu_s"}) + "\n"
                                               for r in rows))
    (base,) = tta.reach_table(tmp_path, "n1", "fixed", "val_rel_error_field")
    assert base.epochs == [2]
    assert "| 2 (1.00×) | – |" in tta.table_row(base, "fixed")


def test_runs_still_training_are_left_out(tmp_path: Path) -> None:
    write_run(tmp_path, "fixed", 0, [0.9, 0.5], [1, 2], [1, 2])
    running = write_run(tmp_path, "grow", 0, [0.9, 0.4], [1, 2], [1, 2])
    (running / "result.json").unlink()
    unfinished_base = write_run(tmp_path, "fixed", 1, [0.9, 0.8], [1, 2], [1, 2])
    (unfinished_base / "result.json").unlink()
    write_run(tmp_path, "grow", 1, [0.9, 0.4], [1, 2], [1, 2])
    table = {r.strategy: r for r in tta.reach_table(tmp_path, "n1", "fixed", "val_rel_error_field")}
    assert table["fixed"].runs == 1 and table["grow"].runs == 0

"""``pdegrow compare``: same table on 1 and 2 MPI ranks, restart after interruption, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from pdegrow.comparison.config import load_compare_config
from pdegrow.comparison.runner import SerialComm, run_comparison
from pdegrow.comparison.table import WALL_COLUMNS

torch.set_num_threads(1)

CONFIG = """
[compare]
seeds = [0, 1]
strategies = ["fixed", "tiny", "gradmax"]
metric = "rel_error_field"

[base.data]
problem = "heat"
n_train = 30
n_val = 10
n_test = 30
[base.model]
kind = "mlp"
width = 8
depth = 1
block = "mlp"
hidden = [3]
[base.optim]
lr = 3e-3
batch_size = 30
[base.train]
max_epochs = 6
phase_epochs = 2
patience = 3

[dataset.heat]
path = "{data}"

[strategy.fixed.train]
phase_epochs = 6
[strategy.tiny.growth]
neurons = 2
max_events = 2
[strategy.gradmax]
growth = {{ every = 2, max_events = 2, neurons = 2 }}
"""


def _write(tmp: Path, data: Path, text: str = CONFIG) -> Path:
    path = tmp / "compare.toml"
    path.write_text(text.format(data=data))
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return [{k: v for k, v in r.items() if k not in WALL_COLUMNS} for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def one_rank(heat_paper_file, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cmp1")
    cfg = _write(tmp, heat_paper_file)
    run_cli("compare", "--config", str(cfg), "--out", str(tmp / "out"), "--quiet")
    return cfg, tmp / "out"


def test_compare_writes_table_runs_and_figures(one_rank):
    _cfg, out = one_rank
    rows = _rows(out / "table.csv")
    assert [r["strategy"] for r in rows] == ["fixed", "tiny", "gradmax"]
    assert all(r["runs"] == "2" and float(r["error_mean"]) > 0 for r in rows)
    fixed, tiny, gradmax = rows
    assert float(fixed["growth_events_mean"]) == 0 and float(gradmax["growth_events_mean"]) == 2
    assert float(tiny["params_mean"]) > float(fixed["params_mean"])
    md = (out / "table.md").read_text()
    assert "| heat | tiny | 2 |" in md and "±" in md
    for name in ("error_vs_params.png", "error_vs_wall.png", "loss_curves.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    res = json.loads((out / "runs/heat/tiny/seed-1/result.json").read_text())
    assert res["growth_strategy"] == "tiny" and res["seed"] == 1 and not res["resumed"]
    run = json.loads((out / "runs/heat/tiny/seed-1/run.json").read_text())
    assert run["status"] == "finished"   # an ordinary `pdegrow train` run directory


def test_compare_two_ranks_gives_the_same_table(one_rank, tmp_path):
    cfg, out1 = one_rank
    out2 = tmp_path / "out2"
    proc = run_cli("compare", "--config", str(cfg), "--out", str(out2), "--quiet", mpi_ranks=2)
    assert "6 runs" in proc.stdout
    assert _rows(out2 / "table.csv") == _rows(out1 / "table.csv")
    assert _rows(out2 / "runs.csv") == _rows(out1 / "runs.csv")
    ranks = {json.loads(p.read_text())["device"] for p in out2.glob("runs/*/*/*/result.json")}
    assert ranks == {"cpu"}


def test_compare_restarts_after_interruption(one_rank, tmp_path, monkeypatch):
    """A run killed mid-training resumes from its checkpoint; finished runs are not redone;
    the table equals the uninterrupted one."""
    from pdegrow.training import trainer as trainer_mod

    cfg, ref = one_rank
    out = tmp_path / "out"
    orig = trainer_mod.Trainer._after_epoch

    def interrupt(self, row):
        orig(self, row)
        if self.cfg.strategy == "tiny" and self.cfg.run.seed == 1 and self.state.epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "_after_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_comparison(cfg, out, comm=SerialComm(), figures=False)
    monkeypatch.setattr(trainer_mod.Trainer, "_after_epoch", orig)
    killed = out / "runs/heat/tiny/seed-1"
    assert (killed / "checkpoint.pt").is_file() and not (killed / "result.json").exists()
    done_before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/*/result.json")}
    assert len(done_before) == 3       # fixed ×2 and tiny seed 0 finished before the interruption
    summary = run_comparison(cfg, out, comm=SerialComm(), figures=False)
    assert summary.skipped == 3 and len(summary.done) == 3
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before    # not redone
    assert json.loads((killed / "result.json").read_text())["resumed"] is True
    assert _rows(out / "runs.csv") == _rows(ref / "runs.csv")
    again = run_comparison(cfg, out, comm=SerialComm(), figures=False)
    assert again.skipped == 6 and again.done == []


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace('"gradmax"]', '"gradmax", "no_such"]'), "unknown growth strategy 'no_such'"),
    (lambda t: t.replace("metric =", "metrik = 1\nmetric ="), "unknown key(s) metrik"),
    (lambda t: t.replace("neurons = 2\nmax_events", "neurnos = 2\nmax_events"), "unknown option(s) neurnos"),
    (lambda t: t.replace("[base.optim]", "[base.optimizer]"), "unknown section 'optimizer'"),
    (lambda t: t.replace("[base.model]\n", "[base.model]\nwidht = 3\n"), "unknown key widht"),
    (lambda t: t.replace('path = "{data}"', 'path = "/nonexistent/x.h5"'), "does not exist"),
])
def test_compare_bad_input_is_one_line_exit_2(heat_paper_file, tmp_path, edit, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(edit(CONFIG).format(data=heat_paper_file))
    proc = run_cli("compare", "--config", str(cfg), "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "runs").exists()


def test_compare_config_expands_runs_in_order(heat_paper_file, tmp_path):
    cfg = load_compare_config(_write(tmp_path, heat_paper_file))
    ids = [r.run_id for r in cfg.runs]
    assert ids[:3] == ["heat/fixed/seed-0", "heat/fixed/seed-1", "heat/tiny/seed-0"] and len(ids) == 6
    tiny = cfg.runs[2].config
    assert tiny["growth"] == {"strategy": "tiny", "neurons": 2, "max_events": 2}
    assert tiny["train"]["phase_epochs"] == 2 and cfg.runs[0].config["train"]["phase_epochs"] == 6
    assert tiny["run"]["threads"] == 1 and tiny["run"]["progress"] is False

"""``[train] after_growth``: a run that ends when growth ends (``stop``, the old behaviour) or trains its
final network on up to ``max_epochs`` (``continue``), logged, with the cosine schedule and exact resume."""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import StoppedAtCheckpoint, checkpoint_recorder

from pdegrow.training.config import build_config
from pdegrow.training.runfiles import load_run_file
from pdegrow.training.trainer import Trainer

torch.set_num_threads(1)

PHASE, MAX = 6, 26


def _cfg(strategy: str, after_growth: str, **growth):
    return build_config({
        "run": {"seed": 2, "progress": False, "threads": 1, "checkpoint_seconds": 1e9},
        "data": {"n_train": 40, "n_val": 10, "n_test": 20, "input_transform": "log"},
        "model": {"width": 12, "depth": 1},
        "optim": {"lr": 3e-3, "batch_size": 40, "scheduler": "cosine"},
        "train": {"max_epochs": MAX, "phase_epochs": PHASE, "patience": 100, "after_growth": after_growth},
        "growth": {"strategy": strategy, **growth},
    }, "test")


def _lines(run: Path, name: str) -> list[dict]:
    return [json.loads(r) for r in (run / name).read_text().splitlines()]


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("wall_s", "cpu_s")} for r in rows]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_run_file(run / "model.pt", "model")["state"]


@pytest.mark.parametrize("strategy", ["random_insertion", "topological_insertion"])
def test_continue_trains_max_epochs_and_grows_max_layers(tmp_path, heat_paper_file, strategy):
    """``stop``: the run ends one phase after its last insertion (3 phases, as before); ``continue``: the
    same run (identical epochs up to there) trains on to ``max_epochs`` with exactly ``max_layers`` blocks
    and no further proposal, one ``growth_end`` event says why, and the cosine schedule runs to 0."""
    stop = Trainer(_cfg(strategy, "stop", max_layers=2), heat_paper_file, tmp_path / "stop").run()
    cont = Trainer(_cfg(strategy, "continue", max_layers=2), heat_paper_file, tmp_path / "cont").run()
    assert stop["growth_events"] == cont["growth_events"] == 2
    assert stop["epochs"] == 3 * PHASE and cont["epochs"] == MAX
    assert stop["architecture"]["depth"] == cont["architecture"]["depth"] == 3
    events = _lines(tmp_path / "cont", "events.jsonl")
    assert [e["kind"] for e in events] == ["growth", "growth", "growth_end"]
    end = events[-1]
    assert end["epoch"] == 3 * PHASE and end["epochs_left"] == MAX - 3 * PHASE
    assert end["reason"] == "max_layers = 2 insertions made" and end["depth_after"] == 3
    assert "growth_end" not in [e.get("kind") for e in _lines(tmp_path / "stop", "events.jsonl")]
    rows_stop = _lines(tmp_path / "stop", "metrics.jsonl")
    rows_cont = _lines(tmp_path / "cont", "metrics.jsonl")
    assert len(rows_cont) == MAX
    assert _strip(rows_cont[:3 * PHASE]) == _strip(rows_stop)     # the same run up to the growth end
    # one cosine schedule over max_epochs, across growth events and the growth end; a row's lr is the one
    # after its epoch's scheduler step (that of the next epoch): lr_e = lr_0 (1 + cos(π e / E)) / 2, 0 at E
    for r in rows_cont:
        expected = 3e-3 * (1 + math.cos(math.pi * r["epoch"] / MAX)) / 2
        assert r["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert all(r["depth"] == 3 for r in rows_cont[3 * PHASE:])
    assert [r["phase"] for r in rows_cont[3 * PHASE:]] == [2] * (MAX - 3 * PHASE)


def test_fixed_with_continue_ignores_phase_end(tmp_path, heat_paper_file):
    """The fixed baseline whose phase ends early: ``stop`` ends there, ``continue`` trains to max_epochs."""
    stop = Trainer(_cfg("fixed", "stop"), heat_paper_file, tmp_path / "stop").run()
    cont = Trainer(_cfg("fixed", "continue"), heat_paper_file, tmp_path / "cont").run()
    assert stop["epochs"] == PHASE and cont["epochs"] == MAX
    (end,) = _lines(tmp_path / "cont", "events.jsonl")
    assert end["kind"] == "growth_end" and end["epoch"] == PHASE
    assert end["reason"] == "the strategy proposed no further change"


_Stopped = StoppedAtCheckpoint


def test_continue_resumes_bitwise_after_growth_end(tmp_path, heat_paper_file):
    """Checkpoints fall at the growth events, the growth end and the end; a run stopped right after the
    growth end's checkpoint resumes to bitwise the same weights and metrics and asks for no proposal
    again (one ``growth_end`` event: the flag is in the checkpointed training state)."""

    cfg = _cfg("topological_insertion", "continue", max_layers=2)
    cfg.train.patience = 2      # a plateau would end the last phase early if growth were asked again
    saved: list[int] = []
    Recording = checkpoint_recorder(saved)
    ref = Recording(cfg, heat_paper_file, tmp_path / "ref")
    ref.run()
    ref_events = _lines(tmp_path / "ref", "events.jsonl")
    end_epoch = ref_events[-1]["epoch"]
    assert ref_events[-1]["kind"] == "growth_end" and ref.state.epoch == MAX
    assert saved == [*(e["epoch"] for e in ref_events), MAX]

    killed = Recording(cfg, heat_paper_file, tmp_path / "killed")
    killed.stop_at = end_epoch
    with pytest.raises(_Stopped):
        killed.run()
    state = load_run_file(tmp_path / "killed" / "checkpoint.pt", "checkpoint")["state"]
    assert state["growth_ended"] is True
    resumed = Recording(cfg, heat_paper_file, tmp_path / "killed", resume=True)
    assert resumed.state.growth_ended
    resumed.run()
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [_strip(_lines(tmp_path / run, "metrics.jsonl")) for run in ("ref", "killed")]
    assert rows[0] == rows[1]
    kinds = lambda events: [(e["kind"], e["epoch"]) for e in events]  # noqa: E731
    assert kinds(_lines(tmp_path / "killed", "events.jsonl")) == kinds(ref_events)


def test_first_phase_epochs_delays_the_first_insertion(tmp_path, heat_paper_file):
    """``first_phase_epochs = F``: the first insertion at epoch F, the next after ``phase_epochs`` more;
    the phase length is in the checkpointed state, so a run stopped after the first insertion resumes
    to the same run."""

    class Stopping(Trainer):
        def _checkpoint(self) -> None:
            super()._checkpoint()
            if self.state.epoch == 15:   # in phase 1, after the first insertion
                raise _Stopped

    cfg = _cfg("random_insertion", "continue", max_layers=2)
    cfg.train.first_phase_epochs, cfg.train.phase_epochs = 14, 4
    ref = Trainer(cfg, heat_paper_file, tmp_path / "ref")
    summary = ref.run()
    events = _lines(tmp_path / "ref", "events.jsonl")
    assert [(e["kind"], e["epoch"]) for e in events] == [("growth", 14), ("growth", 18), ("growth_end", 22)]
    assert summary["epochs"] == MAX
    cfg.run.checkpoint_every = 5
    with pytest.raises(_Stopped):
        Stopping(cfg, heat_paper_file, tmp_path / "killed").run()
    Trainer(cfg, heat_paper_file, tmp_path / "killed", resume=True).run()
    assert [(e["kind"], e["epoch"]) for e in _lines(tmp_path / "killed", "events.jsonl")] == \
        [(e["kind"], e["epoch"]) for e in events]
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "killed")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_after_growth_is_checked(tmp_path):
    from pdegrow.errors import PdegrowError

    with pytest.raises(PdegrowError, match="after_growth"):
        _cfg("fixed", "forever")
    with pytest.raises(PdegrowError, match="first_phase_epochs"):
        build_config({"train": {"first_phase_epochs": -1}}, "test")

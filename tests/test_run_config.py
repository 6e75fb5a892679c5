"""A run's config.json is read in one place (runlog.read_run_config) by `train --resume` and the API;
a missing or damaged one is one line, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdegrow.errors import PdegrowError
from pdegrow.training.runlog import RUN_FILE, RUN_KIND, read_run_config


def _run_dir(tmp_path: Path, config_text: str | None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_FILE).write_text(json.dumps({"kind": RUN_KIND, "status": "running", "data": "x.h5"}))
    if config_text is not None:
        (run / "config.json").write_text(config_text)
    return run


def test_read_run_config_gives_the_values(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, json.dumps({"optim": {"lr": 0.01}}))
    assert read_run_config(run) == {"optim": {"lr": 0.01}}


@pytest.mark.parametrize("text, message", [(None, "no readable config.json"),
                                           ("{", "no readable config.json"),
                                           ("[1, 2]", "config.json is damaged")])
def test_a_missing_or_damaged_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 text: str | None, message: str) -> None:
    from pdegrow.cli import main

    run = _run_dir(tmp_path, text)
    with pytest.raises(PdegrowError, match=message):
        read_run_config(run)
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    with pytest.raises(PdegrowError, match="not a pdegrow run directory"):
        read_run_config(tmp_path)

"""run.json records where a run ran (device, torch/CUDA, command line) and its data relative to the
run; ``auto`` says what it chose; a train stopped by SIGTERM/SIGINT says how to resume."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import torch
from conftest import PDEGROW, ROOT, run_cli, write_tiny_config

from pdegrow.training.runlog import read_run


def test_run_json_records_device_versions_command_and_relative_data(heat_paper_file: Path,
                                                                      tmp_path: Path) -> None:
    home = tmp_path / "project"
    (home / "runs").mkdir(parents=True)
    data = home / "data.h5"
    shutil.copy(heat_paper_file, data)
    cfg = write_tiny_config(tmp_path)
    proc = run_cli("train", "--config", str(cfg), "--data", str(data), "--out", str(home / "runs" / "a"),
                   "--no-progress")
    assert "device auto -> cpu" in proc.stdout or "device auto -> cuda" in proc.stdout
    assert proc.stderr == ""
    info = json.loads((home / "runs" / "a" / "run.json").read_text())
    assert info["device"] in ("cpu", "cuda:0", "cuda")
    assert info["torch"] == torch.__version__ and "cuda" in info
    assert info["command"].startswith("python -m pdegrow train --config")
    assert info["data_relative"] == "../../data.h5"
    assert info["data"] == str(data.resolve())
    # the project moved elsewhere: the data are found relative to the run
    moved = tmp_path / "elsewhere"
    shutil.move(home, moved)
    assert read_run(moved / "runs" / "a")["data"] == str((moved / "data.h5").resolve())
    out = run_cli("report", str(moved / "runs" / "a")).stdout
    assert "fields.png" in out


def start_training(tmp_path: Path, data: Path, **train: int) -> tuple[subprocess.Popen, Path]:
    cfg = write_tiny_config(tmp_path, max_epochs=300, **train)
    run = tmp_path / "run"
    proc = subprocess.Popen([*PDEGROW, "train", "--config", str(cfg), "--data", str(data), "--out", str(run),
                             "--no-progress", "--set", "run.checkpoint_every=1"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, run


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "training ended early"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_sigterm_says_how_to_resume_and_resume_finishes(heat_paper_file: Path, tmp_path: Path) -> None:
    proc, run = start_training(tmp_path, heat_paper_file)
    wait_for(run / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received" in err and f"pdegrow train --out {run} --resume" in err
    assert "Traceback" not in err
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    # the hint works: the run continues and finishes
    done = run_cli("train", "--out", str(run), "--resume", "--no-progress")
    assert "epochs" in done.stdout
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_sigint_before_the_first_checkpoint_says_there_is_nothing_to_resume(heat_paper_file: Path,
                                                                             tmp_path: Path) -> None:
    cfg = write_tiny_config(tmp_path, max_epochs=100000)
    run = tmp_path / "run"
    proc = subprocess.Popen([*PDEGROW, "train", "--config", str(cfg), "--data", str(heat_paper_file),
                             "--out", str(run), "--no-progress", "--set", "run.checkpoint_seconds=100000"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(run / "metrics.jsonl", proc)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "SIGINT received" in err and "nothing to resume" in err and "Traceback" not in err

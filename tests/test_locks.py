"""Exclusive locks on run directories (pdegrow/locks.py) and their use by train/compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import tiny_compare_config, train_tiny_run, write_tiny_config

from pdegrow.errors import PdegrowError
from pdegrow.locks import LOCK_NAME, DirectoryLock, LockBusy, lock_directory, locked, mpi_lock

_HOLDER = textwrap.dedent("""
    import sys, time
    from pdegrow.locks import lock_directory
    lock = lock_directory(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.readline()
    lock.release()
""")


def _holder(directory):
    """A child process that holds the lock of ``directory`` until its stdin gets a line."""
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_locker_is_refused_with_the_owner_pid(tmp_path):
    p = _holder(tmp_path)
    try:
        with pytest.raises(LockBusy, match=rf"{tmp_path} is in use by process {p.pid}\b"):
            lock_directory(tmp_path)
    finally:
        p.communicate("\n", timeout=30)
    assert p.returncode == 0
    # released: the lock file is gone and the lock can be taken again
    assert not (tmp_path / LOCK_NAME).exists()
    with locked(tmp_path, "run directory X") as lock:
        assert lock.held and (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK_NAME).exists()


def test_killed_holder_leaves_no_stale_lock(tmp_path):
    p = _holder(tmp_path)
    p.kill()
    p.wait(timeout=30)
    assert (tmp_path / LOCK_NAME).exists()  # the file stays, but the kernel dropped the lock
    with locked(tmp_path):
        pass


def test_same_process_second_lock_object_is_refused(tmp_path):
    # flock locks belong to open file descriptions: a second open in the same process is refused too
    with locked(tmp_path, "thing"):
        with pytest.raises(LockBusy, match=f"thing is in use by process {os.getpid()}"):
            DirectoryLock(tmp_path / LOCK_NAME, "thing").acquire()


def test_missing_directory_is_one_line(tmp_path):
    with pytest.raises(PdegrowError, match="cannot create the lock file .*No such file"):
        lock_directory(tmp_path / "nope")


class _FakeComm:
    """A one-process stand-in for an mpi4py communicator of size > 1 seen from one rank."""

    def __init__(self, rank, root_value=None):
        self.rank, self.root_value = rank, root_value

    def Get_rank(self):  # noqa: N802 (mpi4py's name)
        return self.rank

    def bcast(self, obj, root=0):
        return obj if self.rank == root else self.root_value


def test_mpi_lock_broadcasts_the_outcome(tmp_path):
    path = tmp_path / LOCK_NAME
    with mpi_lock(_FakeComm(0), path, "out") as lock:
        assert lock is not None and lock.held
        # a non-root rank of a second job learns rank 0's refusal through the broadcast
        with pytest.raises(LockBusy, match="out is in use by process"):
            with mpi_lock(_FakeComm(0), path, "out"):
                pass
        with pytest.raises(LockBusy, match="is in use by process 7"):
            with mpi_lock(_FakeComm(1, "out is in use by process 7"), path, "out"):
                pass
        with mpi_lock(_FakeComm(1, None), path, "out") as other:
            assert other is None
    assert not path.exists()


# ------------------------------------------------------------------ train and compare take the lock

# no early stopping and no phase end (the concurrent run below trains 600 epochs)
_NO_STOP = {"patience": 100000, "phase_epochs": 100000}


def _trained_run(tmp_path, data):
    """A finished 2-epoch run in ``tmp_path``/run; returns (its config, the run directory)."""
    return train_tiny_run(tmp_path, data, max_epochs=2, **_NO_STOP)


def _files(run):
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def test_second_train_on_a_running_run_is_refused(tmp_path, heat_paper_file, capsys):
    from conftest import PDEGROW, ROOT

    from pdegrow.cli import main

    cfg = write_tiny_config(tmp_path, max_epochs=600, **_NO_STOP)
    run = tmp_path / "run"
    first = subprocess.Popen([*PDEGROW, "train", "--config", str(cfg), "--data", str(heat_paper_file),
                              "--out", str(run), "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        while first.poll() is None and not (run / "metrics.jsonl").is_file():
            time.sleep(0.01)
        assert first.poll() is None, first.communicate()
        capsys.readouterr()
        for extra in (["--resume"], ["--config", str(cfg), "--data", str(heat_paper_file), "--overwrite"]):
            assert main(["train", "--out", str(run), "--no-progress", *extra]) == 2
            err = capsys.readouterr().err.strip()
            assert f"run directory {run} is in use by process {first.pid}" in err and "\n" not in err
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 601))
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert not (run / LOCK_NAME).exists()


def test_train_and_compare_refused_while_locked(tmp_path, heat_paper_file, capsys):
    from pdegrow.cli import main

    cfg, run = _trained_run(tmp_path, heat_paper_file)
    before = _files(run)
    with locked(run, f"run directory {run}"):
        capsys.readouterr()
        assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
        assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
        assert main(["train", "--config", str(cfg), "--data", str(heat_paper_file), "--out", str(run),
                     "--overwrite", "--no-progress"]) == 2
        assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
    assert _files(run) == before  # the holder's files untouched
    cmp = tmp_path / "cmp.toml"
    cmp.write_text(tiny_compare_config(heat_paper_file))
    out = tmp_path / "cmp"
    out.mkdir()
    with locked(out, f"comparison {out}"):
        assert main(["compare", "--config", str(cmp), "--out", str(out), "--quiet", "--no-figures"]) == 2
        assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == []
    assert main(["compare", "--config", str(cmp), "--out", str(out), "--quiet", "--no-figures"]) == 0
    assert (out / "table.md").is_file() and not (out / LOCK_NAME).exists()


def test_dropped_lock_object_releases(tmp_path):
    import gc

    lock = lock_directory(tmp_path)
    del lock
    gc.collect()
    with locked(tmp_path):
        pass


def test_report_refused_while_its_directory_is_locked(tmp_path, heat_paper_file, capsys):
    from pdegrow.cli import main

    _, run = _trained_run(tmp_path, heat_paper_file)
    (run / "report").mkdir()
    with locked(run / "report", f"report directory {run / 'report'}"):
        capsys.readouterr()
        assert main(["report", str(run)]) == 2
        assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
        assert [p.name for p in (run / "report").iterdir()] == [LOCK_NAME]
    assert main(["report", str(run)]) == 0 and (run / "report" / "report.md").is_file()
    assert not (run / "report" / LOCK_NAME).exists()

"""One ``pdegrow generate`` at a time on an output: a second one (``--resume`` or ``--overwrite``)
is refused with one line while the first goes on untouched, also under ``mpiexec -n 2``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest
from conftest import BIN, PDEGROW, ROOT, assert_same_samples, run_cli

ARGS = ["generate", "heat", "--preset", "default", "--set", "nx=12", "--set", "ny=12",
        "--set", "n_sensors=9", "--n-samples", "600", "--flush-every", "5", "--no-progress"]


def _wait_for_parts(parts, count: int = 2) -> None:
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.h5"))) < count:
        assert time.monotonic() < deadline, "the first run wrote no part file"
        time.sleep(0.005)


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (mpiexec's proxy and ranks run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                with open(f"/proc/{stat}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(stat))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def _signal_tree(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _snapshot(parts) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(parts.iterdir())}


def _second_runs_are_refused(tmp_path, first: subprocess.Popen, out, prefix: list[str],
                             pid: int | None) -> None:
    """With ``first`` stopped while it holds the lock, ``--resume`` and ``--overwrite`` runs on ``out``
    are refused with one line; nothing in the parts directory changes."""
    parts = tmp_path / "d.h5.parts"
    _wait_for_parts(parts, 1)
    stopped = _tree(first.pid)
    _signal_tree(stopped, signal.SIGSTOP)  # holding the lock, mid-run
    try:
        assert first.poll() is None, "the first run ended before it could be stopped"
        before = _snapshot(parts)
        for extra in (["--resume"], ["--overwrite"]):
            second = subprocess.run([*prefix, *PDEGROW, *ARGS, "--out", str(out), *extra],
                                    capture_output=True, text=True, cwd=ROOT, timeout=300)
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
            who = str(pid) if pid is not None else r"\d+"
            assert re.search(rf"^pdegrow generate: error: {re.escape(str(parts))} \(the parts of d\.h5\) "
                             rf"is in use by process {who} ", lines[0]), lines[0]
            assert _snapshot(parts) == before
            assert not out.exists()
    finally:
        _signal_tree(stopped, signal.SIGCONT)


def test_a_second_run_on_the_same_output_is_refused_and_the_first_finishes(tmp_path):
    reference = tmp_path / "reference.h5"
    run_cli(*ARGS, "--out", str(reference))
    out = tmp_path / "d.h5"
    first = subprocess.Popen([*PDEGROW, *ARGS, "--out", str(out)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _second_runs_are_refused(tmp_path, first, out, [], first.pid)
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert_same_samples(reference, out)
    assert not (tmp_path / "d.h5.parts").exists()


@pytest.mark.mpi
def test_a_second_mpi_run_is_refused_and_the_first_mpi_run_finishes(tmp_path):
    reference = tmp_path / "reference.h5"
    run_cli(*ARGS, "--out", str(reference))
    out = tmp_path / "d.h5"
    mpiexec = [str(BIN / "mpiexec"), "-n", "2"]
    first = subprocess.Popen([*mpiexec, *PDEGROW, *ARGS, "--out", str(out)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _second_runs_are_refused(tmp_path, first, out, mpiexec, None)
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            _signal_tree(_tree(first.pid), signal.SIGKILL)
    assert first.returncode == 0, err
    assert_same_samples(reference, out)


def test_the_lock_is_gone_after_a_finished_or_killed_run(tmp_path):
    out = tmp_path / "d.h5"
    run_cli(*ARGS, "--n-samples", "3", "--out", str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]
    # a killed run: the kernel drops its lock, and --resume takes over at once
    killed = tmp_path / "k.h5"
    proc = subprocess.Popen([*PDEGROW, *ARGS, "--out", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_parts(tmp_path / "k.h5.parts", 1)
    proc.kill()
    proc.wait()
    run_cli(*ARGS, "--out", str(killed), "--resume")
    assert not (tmp_path / "k.h5.parts").exists()

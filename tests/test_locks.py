"""Exclusive locks on run directories (pdegrow/locks.py) and their use by train/compare."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

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

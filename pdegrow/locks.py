"""Exclusive locks on output directories: one writer at a time.

Every command that writes into a directory a later command continues
(``train`` into its run directory, ``compare`` into ``--out``, ``generate`` into
``OUT.parts/``) holds an exclusive ``fcntl.flock`` on a lock file there for its
whole life. A second command on the same directory does not wait: it is refused
with one line, ``"<what> is in use by process N"``, and the first one goes on
untouched. The kernel drops the lock when the process ends, however it ends
(kill -9 included), so a crashed run never leaves a stale lock behind.

The lock file holds the owner's PID (for the message) and is removed on release.
Removing it is safe because a process that acquires the lock checks afterwards
that the path still names the file it locked (same device and inode) and retries
otherwise — so two processes can never both hold "the" lock of a path.

Under MPI use :func:`mpi_lock`: rank 0 takes the lock and broadcasts the outcome,
so every rank either goes on or raises the same :class:`PdegrowError`.
(mpi4py is never imported here; the caller passes its communicator.)

On a file system without ``flock`` (some Lustre/NFS mounts) a warning is logged
and the command runs unlocked rather than not at all.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pdegrow.errors import PdegrowError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".pdegrow.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LockBusy(PdegrowError):
    """Another process holds the lock."""


class DirectoryLock:
    """An exclusive, non-blocking lock held through ``path`` (a lock file; see the module docstring).

    ``what`` names the locked thing in the message (e.g. ``"run directory runs/lw"``).
    """

    def __init__(self, path: str | Path, what: str | None = None):
        self.path = Path(path)
        self.what = what or str(self.path.parent)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`LockBusy` ("… is in use by process N") at once."""
        if self._fd is not None:
            return
        if fcntl is None:  # pragma: no cover
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise PdegrowError(f"cannot create the lock file {self.path} ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_pid(fd)
                os.close(fd)
                who = f"process {owner}" if owner else "another process"
                raise LockBusy(f"{self.what} is in use by {who} (lock file {self.path})") from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in _UNSUPPORTED:
                    log.warning("%s: the file system does not support locks (%s); running unlocked",
                                self.path, exc.strerror)
                    return
                raise PdegrowError(f"cannot lock {self.path} ({exc.strerror})") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the previous owner removed it between our open and flock: retry
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)  # closing drops the flock

    def __del__(self) -> None:  # a holder dropped without release() (e.g. a Trainer never run)
        try:
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def lock_directory(directory: str | Path, what: str | None = None) -> DirectoryLock:
    """Take the lock of ``directory`` (which must exist): its ``.pdegrow.lock`` file. Release with
    ``.release()`` or use :func:`locked` as a context manager."""
    directory = Path(directory)
    lock = DirectoryLock(directory / LOCK_NAME, what or str(directory))
    lock.acquire()
    return lock


@contextmanager
def locked(directory: str | Path, what: str | None = None) -> Iterator[DirectoryLock]:
    """``with locked(run_dir, "run directory runs/lw"): …`` — exclusive for the block."""
    lock = lock_directory(directory, what)
    try:
        yield lock
    finally:
        lock.release()


@contextmanager
def mpi_lock(comm: Any, path: str | Path, what: str | None = None) -> Iterator[DirectoryLock | None]:
    """The lock file ``path`` taken by rank 0 of ``comm`` (an mpi4py communicator), the outcome broadcast.

    Every rank raises the same :class:`PdegrowError` when rank 0 could not take it; otherwise rank 0
    holds it for the block (yielded on rank 0, ``None`` elsewhere) and releases it at the end.
    ``path`` is the lock file itself (its directory must exist on rank 0).
    """
    lock: DirectoryLock | None = None
    error: str | None = None
    if comm.Get_rank() == 0:
        lock = DirectoryLock(path, what)
        try:
            lock.acquire()
        except PdegrowError as exc:
            error, lock = str(exc), None
    error = comm.bcast(error, root=0)
    if error is not None:
        raise LockBusy(error) if "is in use by" in error else PdegrowError(error)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def clear_directory(directory: str | Path) -> None:
    """Remove everything in ``directory`` but its lock file (``--overwrite`` under the lock);
    a link is removed, never followed. ``OSError`` is the caller's to report."""
    for child in Path(directory).iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


__all__ = ["LOCK_NAME", "DirectoryLock", "LockBusy", "clear_directory", "lock_directory", "locked",
           "mpi_lock"]

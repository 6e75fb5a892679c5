"""How much disk and memory this machine has free, and byte counts for messages.

Used to refuse a job that cannot fit *before* it allocates or writes anything
(e.g. ``pdegrow generate --n-samples 1000000000000``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path
from typing import Any


def format_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KiB'``: binary prefixes, three significant digits (no exponent)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    value, i = float(n), 0
    while abs(value) >= 1024.0 and i < len(units) - 1:
        value /= 1024.0
        i += 1
    if i == 0:
        return f"{int(n)} B"
    return f"{value:.0f} {units[i]}" if abs(value) >= 100 else f"{value:.3g} {units[i]}"


def free_disk_bytes(directory: str | os.PathLike) -> int:
    """Bytes free to this user on the file system holding ``directory``."""
    return int(shutil.disk_usage(directory).free)


def available_memory_bytes() -> int | None:
    """Memory a new allocation can get without swapping: ``MemAvailable`` of /proc/meminfo,
    capped by the cgroup (v2) limit of this process's container/job when there is one.
    None when neither is known (not Linux)."""
    candidates: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            candidates.append(max(int(limit) - int(used), 0))
    except OSError:
        pass
    return min(candidates) if candidates else None


def reserve_disk(path: str | os.PathLike, size: int) -> bool:
    """Allocate disk blocks so that ``path`` is at least ``size`` bytes long (Linux ``fallocate``).

    Writes into a reserved region cannot fail for want of space, so a library that does not
    survive a failed write (HDF5 crashes on close after one) is handed a file that cannot fill up.
    Raises ``OSError`` (ENOSPC, EDQUOT, EFBIG) when the space is not there; returns False when the
    file system cannot reserve (then nothing is reserved and writes may still fail).
    """
    current = os.path.getsize(path) if os.path.exists(path) else 0
    if size <= current:
        return True
    fallocate = _libc_fallocate()
    if fallocate is None:
        return False
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fallocate(fd, 0, current, size - current) != 0:
            err = ctypes.get_errno()
            if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return False
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True


def _libc_fallocate() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func

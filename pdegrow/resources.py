"""How much disk and memory this machine has free, and byte counts for messages.

Used to refuse a job that cannot fit *before* it allocates or writes anything
(e.g. ``pdegrow generate --n-samples 1000000000000``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def format_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KiB'``: binary prefixes, three significant digits."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    value, i = float(n), 0
    while abs(value) >= 1024.0 and i < len(units) - 1:
        value /= 1024.0
        i += 1
    return f"{int(n)} B" if i == 0 else f"{value:.3g} {units[i]}"


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

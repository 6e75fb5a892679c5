"""Where a generation run writes: checks of ``OUT`` before anything is written, and the claim.

The order is what makes bad input leave nothing behind:

1. :func:`check_location` (read only): the directory exists, ``OUT`` is not a directory,
   an existing ``OUT`` is complete with the same recipe (``--resume``: nothing to do) or
   needs ``--overwrite``, an interrupted run needs ``--resume`` or ``--overwrite``;
2. the recipe is validated and the forward model built (by the caller);
3. :func:`check_resources` (read only): the output fits on the disk, a rank's buffer in memory;
4. :func:`claim_location`: create ``OUT.parts/``, take its lock (one run at a time: a second
   one is refused with "… is in use by process N"), check again under the lock, apply
   ``--overwrite``, write or compare the manifest, and list the samples already done.

Until step 4 nothing is created; if step 4 fails, a parts directory it created is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdegrow.contract import open_dataset
from pdegrow.errors import DataContractError, PdegrowError
from pdegrow.generation_parts import done_indices, parts_dir, read_manifest, write_manifest
from pdegrow.io_errors import io_cause, write_error
from pdegrow.locks import LOCK_NAME, DirectoryLock, clear_directory
from pdegrow.resources import available_memory_bytes, format_bytes, free_disk_bytes


@dataclass
class Claim:
    """A parts directory this run holds: its lock (rank 0), and the samples already done."""

    done: np.ndarray
    lock: DirectoryLock | None
    created: bool


def output_differs(out: Path, manifest: dict[str, Any]) -> list[str] | None:
    """For a complete data set ``out``: the manifest keys whose values differ from it ([] when it
    was made by this very recipe, seed and size); None when ``out`` is not a complete data set."""
    try:
        with open_dataset(out) as f:
            existing = {"problem": str(f.attrs["problem"]), "config": json.loads(f.attrs["config"]),
                        "n_samples": int(f.attrs["n_samples"]), "base_seed": int(f.attrs["base_seed"])}
    except (DataContractError, KeyError, ValueError, OSError):
        return None
    return sorted(k for k in manifest if existing.get(k) != manifest[k])


def check_location(out: Path, manifest: dict[str, Any], resume: bool, overwrite: bool) -> bool:
    """Read-only checks of the output location; True when ``out`` is already complete with this
    recipe, seed and size and ``resume`` asks to finish it (nothing to do)."""
    parts = parts_dir(out)
    if not out.parent.is_dir():
        raise PdegrowError(f"cannot write {out}: directory {out.parent} does not exist")
    if out.is_dir():
        raise PdegrowError(f"cannot write {out}: it is a directory")
    if out.exists() and not overwrite:
        changed = output_differs(out, manifest)
        if resume and changed == []:
            return True
        why = f" with a different {', '.join(changed)}" if resume and changed else ""
        raise PdegrowError(f"{out} exists{why}; pass --overwrite to replace it")
    if parts.exists() and not parts.is_dir():
        raise PdegrowError(f"cannot write {out}: {parts} exists and is not a directory")
    if parts.exists() and not (resume or overwrite):
        raise PdegrowError(
            f"{parts} holds an interrupted run; pass --resume to finish it or --overwrite to restart")
    probe_writable(out)
    return False


def probe_writable(out: Path) -> None:
    """Create and remove a small file beside ``out``: the one sure test that files can be created
    there (permissions, read-only or pseudo file systems such as /proc and /sys)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent)
    except OSError as exc:
        raise PdegrowError(f"cannot write {out}: cannot create files in {out.parent} "
                           f"({io_cause(exc)})") from None
    os.close(fd)
    os.unlink(name)


def sample_bytes(specs: dict[str, tuple[tuple[int, ...], np.dtype]]) -> int:
    """Uncompressed bytes of one sample (every ``inputs/…`` and ``targets/…`` array)."""
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
               for shape, dtype in specs.values())


PART_OVERHEAD = 4096
"""Bytes of HDF5 metadata a part file spends per array (object header, chunk index)."""


def check_resources(out: Path, n_samples: int, one_sample: int, n_arrays: int, rows_per_part: int,
                    local_ranks: int = 1) -> None:
    """Refuse a run whose files cannot fit on the disk, or whose part buffers cannot fit in memory
    (:func:`resource_problem` with this machine's free disk and memory)."""
    parts = parts_dir(out)
    written = sum(p.stat().st_size for p in parts.glob("part-*.h5")) if parts.is_dir() else 0
    problem = resource_problem(n_samples, one_sample, n_arrays, rows_per_part, local_ranks,
                               free_disk_bytes(out.parent), available_memory_bytes(), written)
    if problem is not None:
        raise PdegrowError(problem.format(out=out, where=out.parent))


def resource_problem(n_samples: int, one_sample: int, n_arrays: int, rows_per_part: int,
                     local_ranks: int, free_disk: int, free_memory: int | None,
                     written: int = 0) -> str | None:
    """Why a run cannot fit, or None. Pure: the caller supplies the free disk and memory.

    Disk: the samples are stored twice at the end (the part files, and the merged file made
    from them), each time about n × (one sample) — gzip gains little on floating-point data —
    plus ``PART_OVERHEAD`` per array and part file; ``written`` bytes of part files are there
    already. Memory: a rank holds ``rows_per_part`` samples, their stacked copy and the part
    file's image when it writes a part, 3 × rows × (one sample). The message has ``{out}`` and
    ``{where}`` fields for the caller to fill.
    """
    data = n_samples * one_sample
    n_parts = -(-n_samples // rows_per_part)
    need = max(data, 2 * data + n_parts * (n_arrays + 1) * PART_OVERHEAD - written)
    if need > free_disk:
        return (f"cannot write {{out}}: {n_samples} samples need about {format_bytes(need)} on disk "
                f"({format_bytes(one_sample)} each, uncompressed, in the part files and again in the "
                f"merged file) but only {format_bytes(free_disk)} is free in {{where}}")
    return memory_problem(
        3 * rows_per_part * one_sample, local_ranks, free_memory,
        f"to buffer {rows_per_part} sample{'s' if rows_per_part > 1 else ''} of {format_bytes(one_sample)}",
        "lower --flush-every or the ranks per node")


def memory_problem(per_rank: int, local_ranks: int, free_memory: int | None, what: str,
                   advice: str) -> str | None:
    """Why ``local_ranks`` ranks needing ``per_rank`` bytes each (``what`` for) cannot fit in
    ``free_memory``, or None (also when the free memory is unknown)."""
    if free_memory is None or per_rank * local_ranks <= free_memory:
        return None
    return (f"not enough memory: {local_ranks} rank{'s' if local_ranks > 1 else ''} on this node "
            f"{'each need' if local_ranks > 1 else 'needs'} about {format_bytes(per_rank)} {what} but "
            f"only {format_bytes(free_memory)} is available; {advice}")


def check_model_memory(model_bytes: int, local_ranks: int) -> None:
    """Refuse to build a forward model whose dense arrays (``model_bytes`` per rank, estimated from
    the recipe) cannot fit in this node's memory."""
    problem = memory_problem(model_bytes, local_ranks, available_memory_bytes(),
                             "for the forward model's dense arrays",
                             "use a coarser mesh, fewer sensors or modes, or fewer ranks per node")
    if problem is not None:
        raise PdegrowError(problem)


def claim_location(out: Path, manifest: dict[str, Any], resume: bool, overwrite: bool) -> Claim | None:
    """Create and lock ``OUT.parts/`` and prepare it for this run; None when ``out`` turned out to be
    complete already (another run finished it meanwhile). On failure nothing this call created
    is left behind."""
    parts = parts_dir(out)
    created = not parts.exists()
    try:
        parts.mkdir(exist_ok=True)
    except OSError as exc:
        raise PdegrowError(f"cannot write {out}: cannot create {parts} ({io_cause(exc)})") from None
    lock = DirectoryLock(parts / LOCK_NAME, f"{parts} (the parts of {out.name})")
    try:
        lock.acquire()
        if out.exists() and not overwrite:
            # another run finished it between our first check and the lock
            if check_location(out, manifest, resume, overwrite):
                _drop(parts, lock, created)
                return None
        if not (created or resume or overwrite):
            raise PdegrowError(f"{parts} holds an interrupted run; pass --resume to finish it or "
                               "--overwrite to restart")
        if overwrite:
            _clear(out, parts)
        previous = read_manifest(parts)
        if previous is None:
            write_manifest(parts, manifest)
        elif previous != manifest:
            changed = sorted(k for k in manifest if previous.get(k) != manifest[k])
            raise PdegrowError(
                f"cannot resume {out}: the interrupted run had a different {', '.join(changed)}; "
                "pass --overwrite to restart")
        for stale in [*parts.glob("*.tmp"), out.with_name(out.name + ".tmp")]:
            stale.unlink(missing_ok=True)  # left by a run killed while writing (we hold the lock)
        done = done_indices(parts, int(manifest["n_samples"]))
    except BaseException:
        _drop(parts, lock, created)
        raise
    return Claim(done=done, lock=lock, created=created)


def release(claim: Claim | None, remove_if_empty: bool = False) -> None:
    """Drop the lock of a claim; with ``remove_if_empty``, first remove ``OUT.parts/`` if it holds
    no part file (a run that failed before finishing any sample leaves nothing)."""
    if claim is None or claim.lock is None:
        return
    parts = claim.lock.path.parent
    if remove_if_empty and parts.is_dir() and not any(parts.glob("part-*.h5")):
        shutil.rmtree(parts, ignore_errors=True)
    claim.lock.release()


def _drop(parts: Path, lock: DirectoryLock, created: bool) -> None:
    if created:
        shutil.rmtree(parts, ignore_errors=True)
    lock.release()


def _clear(out: Path, parts: Path) -> None:
    """``--overwrite``: remove ``out`` and everything in ``parts`` but the lock file."""
    try:
        if out.exists():
            out.unlink()
        clear_directory(parts)
    except OSError as exc:
        raise write_error(exc.filename or out, exc, "remove") from None

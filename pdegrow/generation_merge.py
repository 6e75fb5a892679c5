"""Merge the part files of a finished generation run into the data set ``OUT``.

The merged file is written in one pass with its final size known, dataset by dataset
and *in sample order*, whatever the order the part files were written in. Its layout
(where every chunk lands, the chunk index) therefore depends on the samples alone: a
run that was interrupted and resumed, or run on another number of ranks, gives a file
of the same size as an uninterrupted one, byte for byte equal but for the ``created``
time. Part files are uncompressed; the merge compresses each chunk (many small samples a
chunk, :func:`pdegrow.contract.chunk_rows`) once, writing whole chunks only.

``OUT`` is written under ``OUT.tmp`` and renamed when complete; on any failure
``OUT.tmp`` is removed and the part files are kept, so ``--resume`` merges again.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pdegrow.contract import create_dataset_file, mark_complete
from pdegrow.errors import DataContractError
from pdegrow.generation_parts import part_files, parts_dir, read_part_indices
from pdegrow.io_errors import replace_on_success
from pdegrow.resources import format_bytes, free_disk_bytes, reserve_disk

WINDOW_BYTES = 64 * 2**20
"""Uncompressed bytes of one dataset's samples gathered in memory before they are written."""
MAX_OPEN_PARTS = 128
"""Part files kept open at once while merging."""


def sample_sources(parts: list[Path], n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """For every sample i, the part file (its position in ``parts``) and the row there holding it.

    Raises :class:`DataContractError` when a sample is missing or held twice.
    """
    part_of = np.full(n_samples, -1, dtype=np.int32)
    row_of = np.zeros(n_samples, dtype=np.int64)
    for k, part in enumerate(parts):
        idx = read_part_indices(part)
        if idx.size and (idx.min() < 0 or idx.max() >= n_samples):
            raise DataContractError(f"part file {part} holds samples outside 0…{n_samples - 1}")
        if (part_of[idx] >= 0).any() or len(np.unique(idx)) != len(idx):
            raise DataContractError(f"part file {part} repeats samples already merged")
        part_of[idx] = k
        row_of[idx] = np.arange(len(idx))
    missing = np.flatnonzero(part_of < 0)
    if missing.size:
        raise DataContractError(
            f"samples {missing[:10].tolist()}{' …' if missing.size > 10 else ''} are missing from "
            f"{parts[0].parent if parts else 'the parts directory'}")
    return part_of, row_of


def merged_size_bound(files: list[Path], static: dict[str, np.ndarray], n_samples: int,
                      n_arrays: int) -> int:
    """An upper bound of the merged file's size: the part files (the same samples, uncompressed)
    plus 1 % (gzip's worst case on incompressible data is far below), the static arrays, 128 bytes
    of chunk index per sample and array and 1 MiB of other metadata."""
    parts = sum(p.stat().st_size for p in files)
    static_bytes = sum(np.asarray(a).nbytes for a in static.values())
    return parts + parts // 100 + static_bytes + 128 * n_samples * n_arrays + 2**20


def merge_parts(out: Path, problem: Any, manifest: dict[str, Any]) -> None:
    """Merge ``OUT.parts/part-*.h5`` into ``out`` (atomically) and remove ``OUT.parts/``.

    ``problem`` supplies ``static_arrays()``, ``sample_specs()`` and ``file_attrs()``.
    The disk space of the merged file is reserved before HDF5 writes into it (HDF5 does not
    survive a failed write), so a full disk or quota is found here, as one clear error.
    A failure leaves no ``OUT.tmp`` and keeps the parts; it raises a :class:`PdegrowError`
    naming ``out`` and the cause.
    """
    parts = parts_dir(out)
    n = int(manifest["n_samples"])
    files = part_files(parts)
    part_of, row_of = sample_sources(files, n)
    specs = problem.sample_specs()
    static = problem.static_arrays()
    bound = merged_size_bound(files, static, n, len(specs))
    tmp = out.with_name(out.name + ".tmp")

    def message(cause: str) -> str:
        return (f"cannot write {out}: {cause} (while merging; the part files in {parts} are "
                "kept: make room and rerun with --resume to merge them)")

    with replace_on_success(tmp, out, message):
        free = free_disk_bytes(out.parent)
        if bound > free:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: the merged file needs up to "
                          f"{format_bytes(bound)}, {format_bytes(free)} is free")
        reserved = reserve_disk(tmp, bound)
        create_dataset_file(
            tmp, problem=manifest["problem"], config=manifest["config"], n_samples=n,
            base_seed=manifest["base_seed"], static=static, sample_specs=specs,
            attrs=problem.file_attrs(),
        ).close()
        if reserved:
            reserve_disk(tmp, bound)  # creating the file released the space: reserve it again
        with h5py.File(tmp, "r+") as f:  # HDF5 cuts the unused reserved tail when it closes the file
            sources = _OpenParts(files)
            try:
                for name, (shape, dtype) in specs.items():
                    row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
                    rows = f[name].chunks[0] if f[name].chunks else 1
                    window = max(1, WINDOW_BYTES // row_bytes // rows) * rows  # whole chunks
                    for lo in range(0, n, window):
                        _copy_window(sources, name, f[name], part_of, row_of, lo, min(lo + window, n))
            finally:
                sources.close()
            mark_complete(f)
    shutil.rmtree(parts, ignore_errors=True)


class _OpenParts:
    """The part files, opened read-only on demand; at most ``MAX_OPEN_PARTS`` at a time
    (least recently used closed first). Damaged files raise :class:`DataContractError`."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.open: OrderedDict[int, h5py.File] = OrderedDict()

    def dataset(self, k: int, name: str) -> h5py.Dataset:
        try:
            if k in self.open:
                self.open.move_to_end(k)
            else:
                if len(self.open) >= MAX_OPEN_PARTS:
                    self.open.popitem(last=False)[1].close()
                self.open[k] = h5py.File(self.files[k], "r")
            return self.open[k][name]
        except (OSError, KeyError) as exc:
            raise DataContractError(f"part file {self.files[k]} is corrupt ({exc}); delete it to "
                                    "regenerate its samples") from None

    def close(self) -> None:
        while self.open:
            self.open.popitem()[1].close()


def _copy_window(parts: _OpenParts, name: str, dst: h5py.Dataset, part_of: np.ndarray,
                 row_of: np.ndarray, lo: int, hi: int) -> None:
    """dst[lo:hi] from the part files: read grouped by part file, then written in one piece."""
    block = np.empty((hi - lo, *dst.shape[1:]), dtype=dst.dtype)
    window_parts = part_of[lo:hi]
    window_rows = row_of[lo:hi]
    for k in np.unique(window_parts).tolist():
        positions = np.flatnonzero(window_parts == k)
        src = parts.dataset(k, name)
        rows = window_rows[positions]
        first, last = int(rows.min()), int(rows.max())
        try:
            if (last - first + 1) * block[:1].nbytes <= 4 * WINDOW_BYTES:  # a part's rows are in
                block[positions] = src[first:last + 1][rows - first]        # sample order: one range
            else:
                order = np.argsort(rows, kind="stable")  # h5py reads increasing indices
                block[positions[order]] = src[rows[order]]
        except (OSError, TypeError, ValueError) as exc:
            raise DataContractError(f"part file {parts.files[k]} is corrupt ({exc}); delete it to "
                                    "regenerate its samples") from None
    dst[lo:hi] = block

"""Every sample a run reads is finite: NaN/inf rows are found on load and named, split by split.

The arrays are scanned in blocks of consecutive rows (about ``block_mb`` MiB each, in file
order: each HDF5 chunk is read once, whatever the split's order), so the check costs one
read of the used arrays and never holds more than one block in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pdegrow.errors import DataContractError


def nonfinite_rows(dataset: Any, block_mb: float = 64.0) -> np.ndarray:
    """Sorted indices of the rows (first axis) of ``dataset`` (h5py dataset or array) holding NaN/inf."""
    n = int(dataset.shape[0])
    row_bytes = max(1, int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize)
    step = max(1, int(block_mb * 2**20) // row_bytes)
    if not np.issubdtype(dataset.dtype, np.floating) and not np.issubdtype(dataset.dtype, np.complexfloating):
        return np.zeros(0, dtype=np.int64)
    bad = []
    for start in range(0, n, step):
        block = np.asarray(dataset[start:start + step])
        ok = np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
        bad.append(start + np.flatnonzero(~ok))
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def check_finite(path: str, arrays: Mapping[str, Any], splits: Mapping[str, Sequence[int]]) -> None:
    """Raise a :class:`DataContractError` naming the array, the split and the rows (sample indices)
    if any sample of ``splits`` holds NaN/inf in any of ``arrays`` ({name: h5py dataset})."""
    for name, dataset in arrays.items():
        bad = nonfinite_rows(dataset)
        if not len(bad):
            continue
        for split, idx in splits.items():
            hit = np.intersect1d(bad, np.asarray(idx, dtype=np.int64))
            if len(hit):
                shown = ", ".join(str(int(i)) for i in hit[:8]) + (", …" if len(hit) > 8 else "")
                raise DataContractError(f"{path}: {name} holds NaN/inf in {len(hit)} sample(s) of the "
                                        f"{split} split (rows {shown}); fix or drop them")


__all__ = ["check_finite", "nonfinite_rows"]

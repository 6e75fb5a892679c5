"""Finding a data set's reference and reading a network's errors against it (evaluate, compare, report)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from pdegrow.errors import PdegrowError
from pdegrow.reference.results import (
    PREFERENCE,
    ReferenceResult,
    check_matches_data,
    default_reference_path,
    read_reference,
)

log = logging.getLogger(__name__)

#: the metrics shown, in this order, when present in both
METRICS = ("rel_error_field", "rel_error_conductivity", "rel_error_field_l2", "rel_error_target")


def load_reference_for(data_path: str | os.PathLike,
                       explicit: str | os.PathLike | None = None) -> tuple[ReferenceResult, Path] | None:
    """``explicit`` (must exist and match the data: :class:`PdegrowError` otherwise), else the data's
    default-path reference (mcmc, then laplace, then map; one that is unreadable or of other data is
    skipped with a warning); None when there is none."""
    if explicit:
        ref = read_reference(explicit)
        check_matches_data(ref, data_path, explicit)
        return ref, Path(explicit)
    for method in PREFERENCE:
        path = default_reference_path(data_path, method)
        if not path.is_file():
            continue
        try:
            ref = read_reference(path)
            check_matches_data(ref, data_path, path)
        except PdegrowError as exc:
            log.warning("ignoring %s", exc)
            continue
        return ref, path
    return None


def reference_mean(ref: ReferenceResult, metric: str, indices: np.ndarray | list[int]) -> tuple[float, int]:
    """Mean of the reference's ``metric`` over the samples it shares with ``indices``; (nan, 0) if none."""
    if metric not in ref.errors:
        return math.nan, 0
    common, _, i_ref = np.intersect1d(np.asarray(indices, dtype=np.int64), ref.sample_indices,
                                      return_indices=True)
    vals = np.asarray(ref.errors[metric], dtype=float)[i_ref]
    vals = vals[np.isfinite(vals)]
    return (float(vals.mean()) if len(vals) else math.nan), int(len(vals))


def run_test_indices(run_dir: str | os.PathLike) -> np.ndarray | None:
    """A run's test indices (``splits.json``), or None."""
    path = Path(run_dir) / "splits.json"
    if not path.is_file():
        return None
    try:
        return np.asarray(json.loads(path.read_text())["test"], dtype=np.int64)
    except (KeyError, ValueError, TypeError):
        return None


def gap_lines(block: dict[str, Any]) -> list[str]:
    """Text lines of an evaluate ``reference`` block (from :func:`~pdegrow.reference.results.gap_summary`)."""
    lines = [f"  Bayes reference ({block['method']}, {block['file']}): {block['n_common']} of the "
             f"{block['n_network']} samples in common"]
    for k in METRICS:
        m = block["metrics"].get(k)
        if m is None:
            continue
        lines.append(f"    {k:<24} network {m['network']:.4f}  reference {m['reference']:.4f} ± "
                     f"{m['reference_stderr']:.4f}  gap {100 * m['gap']:+.1f} % "
                     f"± {100 * m['gap_stderr']:.1f} %")
    return lines

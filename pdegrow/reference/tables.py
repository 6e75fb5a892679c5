"""The "Bayes reference" row and the gap column of the ``pdegrow compare`` table.

For every data set of a comparison whose data file has a reference file beside it
(``<stem>.reference-{mcmc,laplace,map}.h5``), the reference error in the table's metric is
averaged over each run's test samples (``splits.json``); a strategy's gap is

    gap = error_mean / reference_mean − 1,

with reference_mean the mean over that strategy's runs of the reference on their test samples
(identical for every run when the split seed is shared).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pdegrow.errors import PdegrowError
from pdegrow.reference.lookup import load_reference_for, reference_mean, run_test_indices


def add_reference_gaps(cfg: Any, results: list[dict[str, Any]], rows: list[dict[str, Any]], metric: str,
                       out: Path) -> list[dict[str, Any]]:
    """Add ``reference_method``, ``reference_error``, ``gap`` to the table ``rows`` of data sets with a
    reference; return one reference row per such data set (``dataset``, ``method``, ``error_mean``,
    ``error_stderr``, ``n``, ``file``)."""
    run_dirs = {(s.dataset, s.strategy, s.seed): s.run_dir(out) for s in cfg.runs}
    refs: dict[str, Any] = {}
    for r in results:
        d = r["dataset"]
        if d in refs or not r.get("data") or not Path(r["data"]).is_file():
            continue
        try:
            refs[d] = load_reference_for(r["data"])
        except PdegrowError:
            refs[d] = None   # a stale or foreign reference: the table stays without it
    ref_rows = []
    for d, found in refs.items():
        if found is None or metric not in found[0].errors:
            continue
        ref, path = found
        tests = {}
        for r in results:
            if r["dataset"] == d:
                idx = run_test_indices(run_dirs.get((d, r["strategy"], r["seed"]), Path("/nonexistent")))
                if idx is not None:
                    tests[(r["strategy"], r["seed"])] = idx
        if not tests:
            continue
        for row in rows:
            if row["dataset"] != d:
                continue
            means = [reference_mean(ref, metric, idx)[0] for (s, _), idx in tests.items()
                     if s == row["strategy"]]
            means = [m for m in means if math.isfinite(m)]
            if not means:
                continue
            ref_mean = float(np.mean(means))
            row.update(reference_method=ref.method, reference_error=ref_mean,
                       gap=row["error_mean"] / ref_mean - 1.0 if ref_mean > 0 else math.nan)
        first = next(iter(tests.values()))
        common = np.intersect1d(first, ref.sample_indices)
        vals = np.asarray(ref.errors[metric], dtype=float)[np.isin(ref.sample_indices, common)]
        n = len(vals)
        ref_rows.append({"dataset": d, "method": ref.method, "file": str(path), "n": int(n),
                         "n_test": int(len(first)), "error_mean": float(vals.mean()) if n else math.nan,
                         "error_stderr": float(vals.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0})
    return ref_rows

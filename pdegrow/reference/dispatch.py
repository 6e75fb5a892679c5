"""Which samples, which problem: the entry point of every reference computation.

``run_reference(data_path, method, samples, **opts)`` resolves ``samples`` to indices
into the data file's sample axis and hands them to the problem's module,
``pdegrow.reference.<problem>.run_reference(data_path, method, indices, **opts)``, which
returns a :class:`~pdegrow.reference.results.ReferenceResult` on exactly those samples.
A problem module takes its own options as keyword arguments and refuses unknown ones
with a :class:`~pdegrow.errors.PdegrowError`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

from pdegrow.contract import open_dataset
from pdegrow.data.splits import make_splits
from pdegrow.errors import PdegrowError
from pdegrow.reference.results import METHODS, ReferenceResult, data_fingerprint

#: problem → module implementing ``run_reference`` for it
MODULES = {"heat": "pdegrow.reference.heat", "navier_stokes": "pdegrow.reference.navier_stokes"}


def resolve_samples(spec: str | np.ndarray | list[int], n_samples: int, *, n_train: int = 50,
                    n_val: int = 10, n_test: int = -1, split_seed: int = 0) -> np.ndarray:
    """Indices (sorted int64) of ``spec`` in a file of ``n_samples`` samples.

    ``"test"``: the test split the trainer makes with these split settings (its defaults:
    50 train, 10 validation, the rest test, seed 0; :func:`pdegrow.data.splits.make_splits`);
    ``"all"``; ``"A:B"`` (or ``"A:B:STEP"``, Python slice, half-open, B ≤ n_samples);
    ``"I,J,K"``; or an array of indices.
    """
    if isinstance(spec, str):
        s = spec.strip()
        if s == "test":
            test = make_splits(n_samples, n_train, n_val, n_test, split_seed)["test"]
            return np.asarray(test, dtype=np.int64)
        if s == "all":
            return np.arange(n_samples, dtype=np.int64)
        try:
            if ":" in s:
                parts = [int(p) if p.strip() else None for p in s.split(":")]
                if len(parts) > 3:
                    raise ValueError
                start, stop = parts[0] or 0, parts[1] if parts[1] is not None else n_samples
                step = parts[2] if len(parts) == 3 and parts[2] is not None else 1
                if start < 0 or stop < 0 or step < 1:
                    raise PdegrowError(f"sample range {spec!r}: use non-negative A:B with B > A")
                if stop > n_samples:
                    raise PdegrowError(f"sample range {spec!r} lies outside the file's {n_samples} samples")
                idx = np.arange(start, stop, step, dtype=np.int64)
            else:
                idx = np.asarray([int(p) for p in s.split(",") if p.strip()], dtype=np.int64)
        except ValueError:
            raise PdegrowError(f"samples {spec!r}: expected test, all, A:B or I,J,K") from None
    else:
        idx = np.asarray(spec, dtype=np.int64).reshape(-1)
    if len(idx) == 0:
        raise PdegrowError(f"samples {spec!r}: no samples selected")
    if idx.min() < 0 or idx.max() >= n_samples:
        raise PdegrowError(f"sample index {int(idx.max() if idx.max() >= n_samples else idx.min())} lies "
                           f"outside the file's {n_samples} samples (0…{n_samples - 1})")
    if len(np.unique(idx)) != len(idx):
        raise PdegrowError(f"samples {spec!r}: repeated indices")
    return np.sort(idx)


def run_reference(data_path: str | os.PathLike, method: str, samples: str | np.ndarray | list[int] = "test",
                  *, split: dict[str, int] | None = None, **opts: Any) -> ReferenceResult:
    """The ``method`` reference (map, laplace, mcmc) of ``data_path`` on ``samples``.

    ``split`` overrides the train/val/test sizes and seed used for ``samples="test"``
    (keys ``n_train``, ``n_val``, ``n_test``, ``split_seed``); ``opts`` go to the problem's
    module. The data file's fingerprint and the sample spec are added to ``info``.
    """
    if method not in METHODS:
        raise PdegrowError(f"unknown reference method {method!r} (one of {', '.join(METHODS)})")
    with open_dataset(data_path) as f:
        problem = str(f.attrs["problem"])
        n_samples = int(f.attrs["n_samples"])
        fingerprint = data_fingerprint(f)
    if problem not in MODULES:
        raise PdegrowError(f"{data_path}: no Bayesian reference is implemented for the {problem!r} problem "
                           f"(available: {', '.join(MODULES)})")
    try:
        module = importlib.import_module(MODULES[problem])
    except ModuleNotFoundError as exc:
        if exc.name != MODULES[problem]:
            raise
        raise PdegrowError(f"{data_path}: no Bayesian reference is implemented yet for the {problem!r} "
                           "problem") from None
    indices = resolve_samples(samples, n_samples, **(split or {}))
    result = module.run_reference(data_path, method, indices, **opts)
    result.info.setdefault("data_fingerprint", fingerprint)
    result.info.setdefault("data_path", str(data_path))
    result.info.setdefault("samples", samples if isinstance(samples, str) else "indices")
    if split:
        result.info.setdefault("split", dict(split))
    return result

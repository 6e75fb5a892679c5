"""Train/validation/test splits of a data set's samples, recorded in the run directory."""

from __future__ import annotations

import numpy as np

from pdegrow.errors import PdegrowError


def make_splits(n_samples: int, n_train: int, n_val: int, n_test: int, seed: int,
                ordered: bool = False) -> dict[str, list[int]]:
    """Disjoint sorted index lists ``train``/``val``/``test`` drawn by a seeded permutation.

    ``n_test = -1`` takes every sample left after train and validation. ``ordered``: no
    permutation (``seed`` unused): the first ``n_train`` rows of the file train, the next
    ``n_val`` validate, the next ``n_test`` test — for files written in a published split's
    order (``experiments/prototype_data.py boston --split paper``).
    """
    if n_test < 0:
        n_test = n_samples - n_train - n_val
    if min(n_train, n_val, n_test) < 0 or n_train < 1:
        raise PdegrowError(f"impossible split sizes train={n_train} val={n_val} test={n_test}")
    if n_train + n_val + n_test > n_samples:
        raise PdegrowError(f"split sizes train={n_train} + val={n_val} + test={n_test} exceed the "
                           f"{n_samples} samples of the data set")
    perm = (np.arange(n_samples) if ordered
            else np.random.default_rng([int(seed), 7919]).permutation(n_samples))
    a, b = n_train, n_train + n_val
    return {"train": sorted(map(int, perm[:a])), "val": sorted(map(int, perm[a:b])),
            "test": sorted(map(int, perm[b:b + n_test]))}

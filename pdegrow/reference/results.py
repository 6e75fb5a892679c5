"""The results file of a Bayesian reference, shared by every problem.

A reference is the error the best estimator reaches on a data set's samples given the
file's prior and noise model: for a metric in m the posterior mean E[m | y] minimises the
expected squared error, for a metric in e^m it is E[e^m | y], and the MAP approximates
both when the posterior is near-Gaussian. A network's *gap to the limit* in a metric is

    gap = mean_i err_network(i) / mean_i err_reference(i) − 1

over the samples both were evaluated on (:func:`gap_summary`).

File layout (HDF5, schema ``pdegrow-reference`` version 1; a JSON summary with the same
stem next to it for humans and scripts):

* root attributes ``schema``, ``schema_version``, ``problem``, ``method``, ``info`` (JSON),
  ``complete`` (true: written last, and the file only appears under its name once whole);
* ``sample_indices`` (n,) int64: indices into the data file's sample axis;
* ``errors/<metric>`` (n,): per-sample errors, keys named like the trainer's metrics
  (``rel_error_field``, ``rel_error_field_l2``, ``rel_error_conductivity``,
  ``rel_error_target``); extra keys (``map_rel_error_field`` …) hold other estimators;
* ``estimates/<name>`` (n, …): ``map_m``, ``mean_m``, ``mean_exp_m``, ``std_m`` (heat),
  ``map_w0``, ``std_w0`` (Navier–Stokes) …
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pdegrow.errors import PdegrowError

SCHEMA = "pdegrow-reference"
SCHEMA_VERSION = 1
METHODS = ("map", "laplace", "mcmc")
PROBLEMS = ("heat", "navier_stokes")
#: the order in which an existing reference file is picked for a data set: best estimator first
PREFERENCE = ("mcmc", "laplace", "map")


@dataclass
class ReferenceResult:
    """Per-sample errors and estimates of one reference method on some samples of a data file."""

    problem: str                                   # "heat" | "navier_stokes"
    method: str                                    # "map" | "laplace" | "mcmc"
    sample_indices: np.ndarray                     # (n,) int64, into the data file's sample axis
    errors: dict[str, np.ndarray]                  # metric name → (n,)
    estimates: dict[str, np.ndarray] = field(default_factory=dict)   # name → (n, …)
    info: dict[str, Any] = field(default_factory=dict)               # JSON-able settings, diagnostics

    def __post_init__(self) -> None:
        self.sample_indices = np.asarray(self.sample_indices, dtype=np.int64).reshape(-1)
        n = len(self.sample_indices)
        if self.problem not in PROBLEMS:
            raise PdegrowError(f"reference: unknown problem {self.problem!r} (one of {', '.join(PROBLEMS)})")
        if self.method not in METHODS:
            raise PdegrowError(f"reference: unknown method {self.method!r} (one of {', '.join(METHODS)})")
        if len(np.unique(self.sample_indices)) != n or (n and self.sample_indices.min() < 0):
            raise PdegrowError("reference: sample indices must be distinct and non-negative")
        for group, arrays in (("errors", self.errors), ("estimates", self.estimates)):
            for name, a in list(arrays.items()):
                a = np.asarray(a)
                arrays[name] = a
                if not _valid_name(name):
                    raise PdegrowError(f"reference: bad {group} name {name!r}")
                if a.ndim == 0 or a.shape[0] != n:
                    raise PdegrowError(f"reference: {group}/{name} has shape {a.shape}, its first axis "
                                       f"must be the {n} samples")
        for name, a in self.errors.items():
            if a.ndim != 1:
                raise PdegrowError(f"reference: errors/{name} must be one number per sample")

    @property
    def n(self) -> int:
        return len(self.sample_indices)

    def mean_errors(self) -> dict[str, dict[str, float]]:
        """{metric: {"mean", "stderr", "n"}} over the finite per-sample errors."""
        return {k: _mean_stderr(v) for k, v in self.errors.items()}


def _valid_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "_-." for c in name) and not name.startswith(".")


def _mean_stderr(v: np.ndarray) -> dict[str, float]:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "stderr": se, "n": n}


# ------------------------------------------------------------------------- paths

def default_reference_path(data_path: str | os.PathLike, method: str) -> Path:
    """Where a reference of ``data_path`` lives by default: ``<stem>.reference-<method>.h5`` beside it."""
    if method not in METHODS:
        raise PdegrowError(f"unknown reference method {method!r} (one of {', '.join(METHODS)})")
    p = Path(data_path)
    return p.with_name(f"{p.stem}.reference-{method}.h5")


def summary_path(path: str | os.PathLike) -> Path:
    """The JSON summary written next to a reference file (same stem, ``.json``)."""
    return Path(path).with_suffix(".json")


def find_reference(data_path: str | os.PathLike, methods: tuple[str, ...] = PREFERENCE) -> Path | None:
    """The default-path reference file of ``data_path`` that exists, best method first; None if none."""
    for method in methods:
        p = default_reference_path(data_path, method)
        if p.is_file():
            return p
    return None


def data_fingerprint(f: h5py.File) -> dict[str, Any]:
    """What identifies a data file's content: problem, sample count, seed, creation time, config hash."""
    config = str(f.attrs.get("config", ""))
    return {"problem": str(f.attrs.get("problem", "")), "n_samples": int(f.attrs.get("n_samples", -1)),
            "base_seed": int(f.attrs.get("base_seed", -1)), "created": str(f.attrs.get("created", "")),
            "config_sha256": hashlib.sha256(config.encode()).hexdigest()}


def check_matches_data(ref: ReferenceResult, data_path: str | os.PathLike,
                       ref_path: str | os.PathLike = "") -> None:
    """Raise :class:`PdegrowError` when ``ref`` was not computed from ``data_path``'s content."""
    from pdegrow.contract import open_dataset

    with open_dataset(data_path) as f:
        fp = data_fingerprint(f)
    stored = ref.info.get("data_fingerprint")
    if stored is None:
        return
    # sample i is a function of (config, seed, i): a file generated again with the same recipe matches
    keys = ("problem", "n_samples", "base_seed", "config_sha256")
    if any(stored.get(k) != fp[k] for k in keys):
        raise PdegrowError(f"{ref_path or 'reference'}: was computed from another data file than {data_path} "
                           "(its fingerprint differs); recompute it with 'pdegrow reference'")


# ------------------------------------------------------------------------- I/O

def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def summary_dict(result: ReferenceResult) -> dict[str, Any]:
    """The JSON summary: problem, method, n, mean ± standard error of every error, info."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "problem": result.problem,
            "method": result.method, "n_samples": result.n, "errors": result.mean_errors(),
            "info": result.info}


def write_reference(path: str | os.PathLike, result: ReferenceResult) -> None:
    """Write ``result`` atomically: a hidden temporary file in the same directory, fsync, rename;
    then the JSON summary beside it (also atomically). A killed writer leaves no file under ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        raise PdegrowError(f"{path}: directory {path.parent} does not exist")
    try:
        info_json = json.dumps(result.info, sort_keys=True, allow_nan=True)
    except TypeError as exc:
        raise PdegrowError(f"reference info is not JSON-able: {exc}") from None
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = SCHEMA
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["problem"] = result.problem
            f.attrs["method"] = result.method
            f.attrs["info"] = info_json
            f.attrs["complete"] = False
            f.create_dataset("sample_indices", data=result.sample_indices)
            for group, arrays in (("errors", result.errors), ("estimates", result.estimates)):
                g = f.create_group(group)
                for name, a in arrays.items():
                    kw = {"compression": "gzip", "compression_opts": 4} if a.size > 4096 else {}
                    g.create_dataset(name, data=a, **kw)
            f.attrs["complete"] = True
            f.flush()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise PdegrowError(f"{path}: cannot write the reference ({exc})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    text = json.dumps(summary_dict(result), indent=1, sort_keys=True, allow_nan=True) + "\n"
    try:
        _atomic_write_bytes(summary_path(path), text.encode())
    except OSError as exc:
        raise PdegrowError(f"{summary_path(path)}: cannot write the summary ({exc})") from None


def read_reference(path: str | os.PathLike) -> ReferenceResult:
    """Read and validate a reference file; :class:`PdegrowError` with one line on anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise PdegrowError(f"{path}: no such reference file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise PdegrowError(f"{path}: not an HDF5 file") from None
    with f:
        if f.attrs.get("schema") != SCHEMA:
            raise PdegrowError(f"{path}: not a pdegrow reference file (no '{SCHEMA}' schema attribute)")
        version = int(f.attrs.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            raise PdegrowError(f"{path}: reference schema version {version}, "
                               f"this pdegrow reads {SCHEMA_VERSION}")
        if not bool(f.attrs.get("complete", False)):
            raise PdegrowError(f"{path}: incomplete reference file (its computation did not finish)")
        try:
            info = json.loads(str(f.attrs.get("info", "{}")))
            if not isinstance(info, dict):
                raise ValueError("info is not an object")
            indices = np.asarray(f["sample_indices"][()])
            if indices.dtype.kind not in "iu":
                raise ValueError("sample_indices are not integers")

            def group(name: str) -> dict[str, np.ndarray]:
                g = f.get(name)
                if g is None:
                    return {}
                if not isinstance(g, h5py.Group):
                    raise ValueError(f"{name} is not a group")
                out = {}
                for k, d in g.items():
                    if not isinstance(d, h5py.Dataset) or d.dtype.kind not in "iuf":
                        raise ValueError(f"{name}/{k} is not a numeric array")
                    out[k] = d[()]
                return out

            errors, estimates = group("errors"), group("estimates")
            problem, method = str(f.attrs.get("problem")), str(f.attrs.get("method"))
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise PdegrowError(f"{path}: corrupt reference file ({exc})") from None
    try:
        return ReferenceResult(problem, method, indices, errors, estimates, info)
    except PdegrowError as exc:
        raise PdegrowError(f"{path}: {exc}") from None


# ------------------------------------------------------------------------- gaps

def gap_summary(ref: ReferenceResult, network_errors: dict[str, np.ndarray],
                indices: np.ndarray | list[int]) -> dict[str, Any]:
    """The reference and the network's gap to it, on the samples both were evaluated on.

    ``network_errors[k]`` holds per-sample errors on the data-file samples ``indices``.
    For every metric k present in both, over the common samples I (intersection):

        reference_k = mean_{i∈I} err_ref,k(i),  network_k = mean_{i∈I} err_net,k(i),
        gap_k = network_k / reference_k − 1,

    with standard errors (the gap's from the paired per-sample differences, delta method).
    Returns {"method", "n_common", "n_network", "n_reference", "metrics": {k: {...}}}.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    common, i_net, i_ref = np.intersect1d(indices, ref.sample_indices, assume_unique=False,
                                          return_indices=True)
    out: dict[str, Any] = {"method": ref.method, "n_common": int(len(common)),
                           "n_network": int(len(indices)), "n_reference": ref.n, "metrics": {}}
    if not len(common):
        return out
    for k, net in network_errors.items():
        if k not in ref.errors:
            continue
        net = np.asarray(net, dtype=float).reshape(-1)
        if len(net) != len(indices):
            raise PdegrowError(f"network errors {k!r} have {len(net)} values for {len(indices)} indices")
        a, b = net[i_net], np.asarray(ref.errors[k], dtype=float)[i_ref]
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        n = len(a)
        if n == 0:
            continue
        ma, mb = float(a.mean()), float(b.mean())
        gap = ma / mb - 1.0 if mb > 0 else math.nan
        se = math.nan
        if n > 1 and mb > 0:   # var of (ā/b̄): influence function (a_i − r b_i)/b̄
            r = ma / mb
            se = float(np.std(a - r * b, ddof=1) / math.sqrt(n) / mb)
        out["metrics"][k] = {"n": n, "reference": mb, "reference_stderr": _mean_stderr(b)["stderr"],
                             "network": ma, "network_stderr": _mean_stderr(a)["stderr"],
                             "gap": gap, "gap_stderr": se}
    return out

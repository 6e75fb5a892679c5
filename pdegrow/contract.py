"""The HDF5 data contract between the FEniCSx solvers and the learning side.

One self-describing file per data set (see ``datasets/README.md``):

* root attributes ``schema``, ``schema_version``, ``problem``, ``config``
  (JSON), ``n_samples``, ``base_seed``, ``versions`` (JSON), ``created``;
* ``inputs/<name>`` and ``targets/<name>``: first axis = sample, chunks of about
  ``CHUNK_BYTES`` (many small samples a chunk), gzip-compressed;
* ``geometry/<name>`` and ``operators/<name>``: arrays that do not depend on
  the sample (mesh, sensors, discrete operators for physics losses).

This module needs only numpy and h5py, so ``solvers/`` may import it.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pdegrow import __version__
from pdegrow.contract_metadata import describe_arrays
from pdegrow.contract_schema import schema_problems
from pdegrow.errors import DataContractError

SCHEMA = "pdegrow-dataset"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 2 adds the dimension scales, ``long_name`` and ``units`` of
:mod:`pdegrow.contract_metadata`; every array of version 1 is there unchanged, so both are read."""
SAMPLE_GROUPS = ("inputs", "targets")
STATIC_GROUPS = ("geometry", "operators")
CHUNK_BYTES = 64 * 2**10
"""Uncompressed size a chunk of per-sample rows aims at: one gzip stream per small sample cost
more than the compression itself (a heat `paper` sample is 800 bytes)."""


def package_versions() -> dict[str, str]:
    """Versions of the packages that shaped a data set (those importable now)."""
    versions = {"pdegrow": __version__, "python": platform.python_version(),
                "numpy": np.__version__, "h5py": h5py.__version__}
    for name in ("dolfinx", "petsc4py", "mpi4py", "torch"):
        module = __import__("sys").modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    return versions


def create_dataset_file(
    path: str | os.PathLike,
    *,
    problem: str,
    config: dict[str, Any],
    n_samples: int,
    base_seed: int,
    static: dict[str, np.ndarray],
    sample_specs: dict[str, tuple[tuple[int, ...], np.dtype]],
    attrs: dict[str, Any] | None = None,
) -> h5py.File:
    """Create a data-set file with its static arrays and empty sample datasets.

    ``static`` maps ``"geometry/…"``/``"operators/…"`` names to arrays;
    ``sample_specs`` maps ``"inputs/…"``/``"targets/…"`` names to the shape of
    one sample and its dtype. The file is returned open for writing; the caller
    fills the sample datasets and calls :func:`mark_complete`.
    """
    f = h5py.File(path, "w")
    f.attrs["schema"] = SCHEMA
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["problem"] = problem
    f.attrs["config"] = json.dumps(config, sort_keys=True)
    f.attrs["n_samples"] = int(n_samples)
    f.attrs["base_seed"] = int(base_seed)
    f.attrs["versions"] = json.dumps(package_versions(), sort_keys=True)
    f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    f.attrs["complete"] = False
    for key, value in (attrs or {}).items():
        f.attrs[key] = value
    for name, array in static.items():
        if name.split("/")[0] not in STATIC_GROUPS:
            raise ValueError(f"static array {name!r} must live under {STATIC_GROUPS}")
        f.create_dataset(name, data=np.asarray(array))
    for name, (shape, dtype) in sample_specs.items():
        if name.split("/")[0] not in SAMPLE_GROUPS:
            raise ValueError(f"sample array {name!r} must live under {SAMPLE_GROUPS}")
        f.create_dataset(name, shape=(n_samples, *shape), dtype=dtype,
                         **sample_storage(shape, dtype, n_samples))
    describe_arrays(f, problem)
    return f


def chunk_rows(shape: tuple[int, ...], dtype: Any, n_samples: int) -> int:
    """Samples a chunk holds: as many as fit in ``CHUNK_BYTES`` (at least 1, at most ``n_samples``)."""
    row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return max(1, min(CHUNK_BYTES // row_bytes, int(n_samples)))


def sample_storage(shape: tuple[int, ...], dtype: Any = np.float64, n_samples: int = 1) -> dict[str, Any]:
    """h5py storage options of a per-sample array of ``n_samples`` rows: chunks of
    :func:`chunk_rows` samples, shuffle + gzip level 4 (none for scalar samples)."""
    if not shape or n_samples <= 0:
        return {}
    return {"chunks": (chunk_rows(shape, dtype, n_samples), *shape), "compression": "gzip",
            "compression_opts": 4, "shuffle": True}


def mark_complete(f: h5py.File) -> None:
    """Flag a data-set file as complete; only then does :func:`open_dataset` accept it."""
    f.attrs["complete"] = True
    f.flush()


def open_dataset(path: str | os.PathLike, problem: str | None = None) -> h5py.File:
    """Open a complete pdegrow data set read-only, or raise :class:`DataContractError`.

    ``problem`` (e.g. ``"heat"``) additionally checks the file's problem. The file's arrays and
    attributes are checked against its problem's schema (:mod:`pdegrow.contract_schema`).
    """
    path = Path(path)
    if not path.exists():
        raise DataContractError(f"{path}: no such file")
    if path.is_dir():
        raise DataContractError(f"{path}: is a directory, not a pdegrow data set")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataContractError(f"{path}: not an HDF5 file ({exc})") from None
    try:
        schema = f.attrs.get("schema")
        if schema != SCHEMA:
            raise DataContractError(f"{path}: not a pdegrow data set (no '{SCHEMA}' schema attribute)")
        version = int(f.attrs.get("schema_version", -1))
        if version not in READABLE_VERSIONS:
            raise DataContractError(
                f"{path}: schema version {version}, this pdegrow reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}")
        if not bool(f.attrs.get("complete", False)):
            raise DataContractError(f"{path}: incomplete data set (its generation did not finish)")
        if problem is not None and f.attrs["problem"] != problem:
            raise DataContractError(
                f"{path}: holds the {f.attrs['problem']!r} problem, expected {problem!r}")
        broken = schema_problems(f)
        if broken:
            raise DataContractError(f"{path}: not a valid {f.attrs.get('problem', '?')!s} data set "
                                    f"(datasets/README.md): {'; '.join(broken)}")
    except BaseException:
        f.close()
        raise
    return f


def dataset_info(path: str | os.PathLike) -> dict[str, Any]:
    """What a data-set file holds: problem, schema, config, sample count, dataset shapes."""
    with open_dataset(path) as f:
        arrays: dict[str, dict[str, Any]] = {}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and "/" in name:   # not the root's dimension scales
                arrays[name] = {"shape": list(obj.shape), "dtype": str(obj.dtype)}
                dims = [_scale_name(obj.dims[k]) for k in range(obj.ndim)]
                if any(dims):
                    arrays[name]["dims"] = dims

        f.visititems(visit)
        return {
            "path": str(path),
            "problem": str(f.attrs["problem"]),
            "schema": f"{f.attrs['schema']} v{int(f.attrs['schema_version'])}",
            "n_samples": int(f.attrs["n_samples"]),
            "base_seed": int(f.attrs["base_seed"]),
            "created": str(f.attrs["created"]),
            "versions": json.loads(f.attrs["versions"]),
            "config": json.loads(f.attrs["config"]),
            "file_size_bytes": Path(path).stat().st_size,
            "datasets": arrays,
        }


def format_info(info: dict[str, Any]) -> str:
    """A one-screen, human-readable rendering of :func:`dataset_info`."""
    lines = [
        f"{info['path']}",
        f"  problem     {info['problem']}   ({info['schema']})",
        f"  samples     {info['n_samples']}   base seed {info['base_seed']}",
        f"  created     {info['created']}   size {info['file_size_bytes'] / 2**20:.2f} MiB",
        "  versions    " + ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items())),
        "  config",
    ]
    lines += [f"    {k} = {json.dumps(v)}" for k, v in sorted(info["config"].items())]
    lines.append("  datasets")
    width = max(len(n) for n in info["datasets"]) if info["datasets"] else 0
    for name, spec in sorted(info["datasets"].items()):
        shape = "×".join(str(s) for s in spec["shape"]) or "scalar"
        dims = f"  ({', '.join(spec['dims'])})" if spec.get("dims") else ""
        lines.append(f"    {name:<{width}}  {shape:<16} {spec['dtype']:<8}{dims}".rstrip())
    return "\n".join(lines)


def _scale_name(axis: Any) -> str:
    """The dimension name of one axis of a dataset (its attached scale), or "" when it has none."""
    names = [str(n) for n in axis.keys()]
    return names[-1] if names else ""

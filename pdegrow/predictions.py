"""Applying a trained surrogate to new observations: read them, predict fields, write them to HDF5.

Observations come as

* ``.npy`` — an array (n, *input_shape) or one sample (read with ``allow_pickle=False``);
* ``.csv`` — one sample a row (comma-separated; a header line is skipped; field inputs flattened);
* a pdegrow data set (``.h5``/``.hdf5``) — its ``inputs/`` array the run was trained on (targets
  are not needed). Its forward setting must be the run's (:mod:`pdegrow.fingerprint`); its true
  fields, when present, and a Bayesian reference beside it (``pdegrow reference``: posterior mean,
  MAP, pointwise posterior std on the samples it covers) are carried along for comparison.

The output file (schema ``pdegrow-predictions`` version 1) plots without pdegrow::

    attrs        schema, schema_version, problem, run, observations, setting_hash, created, n_samples
    inputs/observations (n, …)  the observations used (sensor values, or w(T) images)
    predictions/target (n, …)   the network's output in physical units (e.g. KL coefficients)
    fields/NAME        (n, …)   recovered fields: heat log_conductivity m and conductivity e^m at the
                                mesh nodes; Navier–Stokes vorticity_0 images (axis 0 = y, axis 1 = x)
    geometry/NAME               heat: nodes (N, 2), cells (C, 3), sensors (S, 2); NS: grid_x, grid_y
    sample_indices     (n,)     rows of the data set (data-set input only)
    truth/NAME         (n, …)   the data set's true fields (when it has them)
    reference/…                 a reference's sample_indices and estimates (mean_m, std_m, map_w0, …)
    sample, node, sensor, y, x  dimension scales: netCDF tools (xarray + h5netcdf) see named axes

e.g. ``plt.tripcolor(*nodes.T, cells, fields["log_conductivity"][0])`` or
``plt.pcolormesh(grid_x, grid_y, fields["vorticity_0"][0])``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pdegrow.errors import PdegrowError
from pdegrow.inference import PortableModel

SCHEMA = "pdegrow-predictions"
SCHEMA_VERSION = 1
DATA_SUFFIXES = (".h5", ".hdf5", ".hdf")
#: the data set's true field for each recovered field
TRUTH = {"log_conductivity": "targets/log_conductivity", "vorticity_0": "targets/vorticity_0"}


@dataclass
class Prediction:
    """Predictions of one model on n observations.

    ``fields``: name → (n, …) recovered fields (heat ``log_conductivity`` and ``conductivity`` at the
    mesh nodes, Navier–Stokes ``vorticity_0`` images); ``prediction``: the network's output in
    physical units (e.g. KL coefficients); ``inputs``: the observations used; ``geometry``: ``nodes``,
    ``cells``, ``sensors`` (heat) or ``grid_x``, ``grid_y`` (NS). From a data set also
    ``sample_indices``, ``truth`` (its true fields) and ``reference`` (``method``, ``file``,
    ``sample_indices``, ``estimates``: posterior mean, MAP, posterior std … of a Bayesian reference
    beside it). ``save(path)`` writes them all as plain HDF5 (the layout of the module docstring).
    """

    problem: str
    inputs: np.ndarray
    prediction: np.ndarray
    fields: dict[str, np.ndarray]
    geometry: dict[str, np.ndarray]
    source: str = "array"
    run: str = ""
    setting_hash: str | None = None
    sample_indices: np.ndarray | None = None
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    def errors(self) -> dict[str, float]:
        """Mean relative errors ‖field − truth‖/‖truth‖ over the samples (data sets with true fields;
        heat also of e^m), and the same for the reference's posterior mean/MAP where present."""
        out: dict[str, float] = {}
        for name, true in self.truth.items():
            est = self.fields.get(name)
            if est is None:
                continue
            out[f"rel_error_{name}"] = _mean_rel(est, true)
            if name == "log_conductivity":
                out["rel_error_conductivity"] = _mean_rel(np.exp(est), np.exp(true))
        ref = self.reference
        if ref and self.sample_indices is not None:
            rows = np.searchsorted(self.sample_indices, ref["sample_indices"])
            for est_name, true_name in (("mean_m", "log_conductivity"), ("map_m", "log_conductivity"),
                                        ("mean_w0", "vorticity_0"), ("map_w0", "vorticity_0")):
                if est_name in ref["estimates"] and true_name in self.truth:
                    out[f"reference_{est_name}_rel_error"] = _mean_rel(ref["estimates"][est_name],
                                                                       self.truth[true_name][rows])
        return out

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the predictions file (atomically: a ``.tmp`` sibling renamed at the end)."""
        return write_predictions(self, path, overwrite)

    def plot(self, index: int = 0, name: str | None = None) -> Any:
        """A matplotlib figure of sample ``index``'s recovered field (``name``: default the first), beside
        the truth when known, with labelled colourbars."""
        from pdegrow.prediction_plots import plot_prediction

        return plot_prediction(self, index, name)


def _mean_rel(est: np.ndarray, true: np.ndarray) -> float:
    e = np.asarray(est).reshape(len(est), -1)
    t = np.asarray(true).reshape(len(true), -1)
    norms = np.linalg.norm(t, axis=1)
    ok = norms > 0
    return float(np.mean(np.linalg.norm(e - t, axis=1)[ok] / norms[ok])) if ok.any() else float("nan")


# ------------------------------------------------------------------ reading observations


def read_array_file(path: Path) -> np.ndarray:
    """Observations from a ``.npy`` (no pickle) or ``.csv`` file; anything else is one line."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise PdegrowError(f"observations file {path} does not exist")
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise PdegrowError(f"{path} is not a readable .npy array ({str(exc).splitlines()[0]})") from None
    if suffix == ".csv":
        for skip in (0, 1):
            try:
                return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=skip)
            except ValueError as exc:
                last = str(exc).splitlines()[0]
            except (OSError, UnicodeDecodeError) as exc:
                raise PdegrowError(f"{path} cannot be read ({exc})") from None
        raise PdegrowError(f"{path} is not a CSV of numbers, one sample a row ({last})")
    raise PdegrowError(f"{path}: observations must be .npy, .csv or a pdegrow data set (.h5), not {suffix!r}")


def predict_data_set(model: PortableModel, path: str | Path,
                     allow_different: tuple[str, ...] | list[str] = (), use_reference: bool = True,
                     ) -> Prediction:
    """Predictions for every sample of a pdegrow data set (its setting must be the model's)."""
    from pdegrow.contract import open_dataset
    from pdegrow.fingerprint import check_same_setting, fingerprint_of_file

    path = Path(path)
    with open_dataset(path, model.problem or None) as f:
        check_same_setting(model.setting, fingerprint_of_file(f), str(path), allow_different)
        if model.input_name not in f:
            raise PdegrowError(f"{path}: has no dataset {model.input_name!r}, which the run was trained on")
        inputs = f[model.input_name][()]
        truth = {name: f[t][()] for name, t in TRUTH.items() if t in f}
    pred = _predict(model, inputs, f"{path}: {model.input_name}", str(path))
    pred.sample_indices = np.arange(len(inputs))
    pred.truth = {k: v.reshape(pred.fields[k].shape) for k, v in truth.items() if k in pred.fields}
    if use_reference:
        pred.reference = _reference(path)
    return pred


def _reference(path: Path) -> dict[str, Any]:
    from pdegrow.reference.lookup import load_reference_for

    found = load_reference_for(path)
    if found is None:
        return {}
    ref, ref_path = found
    return {"method": ref.method, "file": str(ref_path), "sample_indices": ref.sample_indices,
            "estimates": dict(ref.estimates)}


def _predict(model: PortableModel, inputs: np.ndarray, what: str, source: str) -> Prediction:
    inputs = model.check_inputs(inputs, what)
    out = model.predict(inputs)
    return Prediction(model.problem, inputs, out, model.fields(out), model.geometry, source,
                      str(model.path or ""), (model.setting or {}).get("hash"))


def predict_observations(model: PortableModel, obs: Any, allow_different: tuple[str, ...] | list[str] = (),
                         use_reference: bool = True) -> Prediction:
    """Predictions for ``obs``: an array, or the path of a ``.npy``/``.csv`` file or a pdegrow data set."""
    if isinstance(obs, (str, os.PathLike)):
        path = Path(obs)
        if path.suffix.lower() in DATA_SUFFIXES:
            return predict_data_set(model, path, allow_different, use_reference)
        return _predict(model, read_array_file(path), f"the observations in {path}", str(path))
    return _predict(model, np.asarray(obs), "the observations", "array")


# ------------------------------------------------------------------ writing


def default_output(obs: str | Path) -> Path:
    """``OBS_STEM.predictions.h5`` beside the observations file."""
    p = Path(obs)
    return p.with_name(f"{p.stem}.predictions.h5")


def write_predictions(pred: Prediction, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``pred`` (module docstring layout) to ``path`` via a ``.tmp`` sibling; an existing file is
    replaced only with ``overwrite``; an unwritable path is one line."""
    import h5py

    path = Path(path)
    if path.exists() and not overwrite:
        raise PdegrowError(f"{path} exists (use --overwrite to replace it)")
    if path.is_dir():
        raise PdegrowError(f"{path} is a directory, not an output file")
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "problem": pred.problem,
                            "run": pred.run, "observations": pred.source, "n_samples": len(pred),
                            "setting_hash": pred.setting_hash or "",
                            "created": datetime.now(UTC).isoformat(timespec="seconds")})
            f["inputs/observations"] = pred.inputs
            f["predictions/target"] = pred.prediction
            for name, a in pred.fields.items():
                f[f"fields/{name}"] = a
                f[f"fields/{name}"].attrs["long_name"] = LONG_NAMES.get(name, name)
            for name, a in pred.geometry.items():
                f[f"geometry/{name}"] = a
            if pred.sample_indices is not None:
                f["sample_indices"] = pred.sample_indices
            for name, a in pred.truth.items():
                f[f"truth/{name}"] = a
            if pred.reference:
                g = f.create_group("reference")
                g.attrs.update({"method": pred.reference["method"], "file": pred.reference["file"]})
                g["sample_indices"] = pred.reference["sample_indices"]
                for name, a in pred.reference["estimates"].items():
                    g[name] = a
            _name_dimensions(f)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PdegrowError(f"cannot write {path} ({exc.strerror or exc})") from None
    return path


def _name_dimensions(f: Any) -> None:
    """netCDF-style named dimensions (HDF5 dimension scales at the root), so that
    ``xarray.open_dataset(path, group="fields", engine="h5netcdf")`` gives ``sample`` × ``node`` (heat)
    or ``sample`` × ``y`` × ``x`` (Navier–Stokes, with the grid coordinates) shared by every group."""
    from pdegrow.contract_metadata import dimension_values

    n = int(f.attrs["n_samples"])
    plan: list[tuple[Any, tuple[str, ...]]] = []
    for group, first in (("inputs", "sample"), ("predictions", "sample"), ("fields", "sample"),
                         ("truth", "sample"), ("reference", "reference_sample")):
        for name, ds in (f[group].items() if group in f else ()):
            if ds.ndim == 0:
                continue
            rest = ds.shape[1:]
            if len(rest) == 2 and "geometry/grid_x" in f and tuple(f["geometry/grid_x"].shape) == rest:
                dims: tuple[str, ...] = (first, "y", "x")
            elif len(rest) == 1 and "geometry/nodes" in f and rest[0] == f["geometry/nodes"].shape[0]:
                dims = (first, "node")
            elif len(rest) == 1 and "geometry/sensors" in f and rest[0] == f["geometry/sensors"].shape[0]:
                dims = (first, "sensor")
            else:
                dims = (first, *(f"{group}_{name}_axis{k}" for k in range(1, ds.ndim)))[:ds.ndim]
            plan.append((ds, dims))
    if "sample_indices" in f:
        plan.append((f["sample_indices"], ("sample",)))
    sizes: dict[str, int] = {"sample": n}
    for ds, dims in plan:
        for d, size in zip(dims, ds.shape, strict=True):
            sizes.setdefault(d, size)
    scales = {}
    for dim, size in sizes.items():
        if dim in f:
            continue
        scale = f.create_dataset(dim, data=dimension_values(f, dim, size))
        scale.make_scale(dim)
        scales[dim] = scale
    for ds, dims in plan:
        for k, dim in enumerate(dims):
            if dim in scales and ds.shape[k] == scales[dim].shape[0]:
                ds.dims[k].attach_scale(scales[dim])


LONG_NAMES = {"log_conductivity": "recovered log-conductivity m at the mesh nodes",
              "conductivity": "recovered conductivity exp(m) at the mesh nodes",
              "vorticity_0": "recovered initial vorticity w0 on the grid (axis 0 = y, axis 1 = x)",
              "target": "the network's output in physical units"}


__all__ = ["Prediction", "default_output", "predict_data_set", "predict_observations", "read_array_file",
           "write_predictions"]

"""A trained surrogate as a self-contained, portable model: load ``model.pt``, predict fields.

``model.pt`` (tensors + JSON, :mod:`pdegrow.training.runfiles`) holds everything needed to use
the network without the data set it was trained on and without the training-config machinery:

* ``spec`` — the architecture as JSON (:meth:`GrowableResNet.spec`), ``state`` — the weights;
* ``input_norm``/``target_norm`` — the standardisations, with the config's ``[data]
  input_transform``: a prediction is ``target_norm⁻¹(net(input_norm(transform(y))))``;
* ``setting`` — the fingerprint of the forward setting (:mod:`pdegrow.fingerprint`);
* ``fields`` — how a prediction becomes a field and where the field lives: for heat with a KL
  target the affine decoder m = m̄ + Φ(√λ ⊙ ξ) (``prior_mean``, ``kl_basis``, ``kl_eigenvalues``);
  the geometry (``nodes``, ``cells``, ``sensors`` for heat; ``grid_x``, ``grid_y`` for Navier–Stokes);
  the input/target names and per-sample shapes.

Files written before ``setting`` and ``fields`` existed are completed from the run's training data
file when it is still there (:func:`load_model` with the run directory).

:class:`PortableModel` ``.predict(obs)`` gives the network's output in physical units, ``.fields(pred)``
the recovered fields: nodal ``log_conductivity`` m and ``conductivity`` e^m for heat, the image
``vorticity_0`` for Navier–Stokes (``target`` for any other problem).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdegrow import tensorfile
from pdegrow.data.model_input import model_inputs
from pdegrow.data.normalize import Standardizer
from pdegrow.errors import PdegrowError
from pdegrow.models.resnet import GrowableResNet

FORMAT = 2     # 1: spec, state, norms, config, dtype; 2: + setting, fields
GEOMETRY = ("nodes", "cells", "sensors", "grid_x", "grid_y")
KL_ARRAYS = ("prior_mean", "kl_basis", "kl_eigenvalues")


def field_info(problem: str, input_name: str, target_name: str, input_shape: tuple[int, ...],
               target_shape: tuple[int, ...], operators: dict[str, np.ndarray],
               geometry: dict[str, np.ndarray]) -> dict[str, Any]:
    """The ``fields`` entry of ``model.pt``: names, per-sample shapes (as in the file), the field
    decoder and the geometry (see the module docstring)."""
    info: dict[str, Any] = {"problem": problem, "input": input_name, "target": target_name,
                            "input_shape": [int(s) for s in input_shape],
                            "target_shape": [int(s) for s in target_shape],
                            "geometry": {k: torch.as_tensor(np.asarray(geometry[k]))
                                         for k in GEOMETRY if k in geometry}}
    kl = all(k in operators for k in KL_ARRAYS)
    if problem == "heat" and target_name.endswith("kl_coefficients") and kl:
        info["decoder"] = "kl"
        info["kl"] = {k: torch.as_tensor(np.asarray(operators[k], dtype=np.float64)) for k in KL_ARRAYS}
    elif problem == "heat" and target_name.endswith("log_conductivity"):
        info["decoder"] = "nodal"
    elif problem == "navier_stokes" and target_name.endswith("vorticity_0"):
        info["decoder"] = "image"
    else:
        info["decoder"] = "none"
    return info


def model_extras(data_path: str, cfg_data: Any, input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """``setting`` and ``fields`` of the data set at ``data_path`` for a model of ``cfg_data``'s input and
    target (a :class:`~pdegrow.training.config.DataConfig` or its dict)."""
    from pdegrow.contract import open_dataset
    from pdegrow.fingerprint import fingerprint_of_file

    get = (lambda k: cfg_data[k]) if isinstance(cfg_data, dict) else (lambda k: getattr(cfg_data, k))  # noqa: E731
    with open_dataset(data_path) as f:
        names = (get("input"), get("target"))
        for name in names:
            if name not in f:
                raise PdegrowError(f"{data_path}: has no dataset {name!r}")
        ops = {k: f["operators"][k][()] for k in KL_ARRAYS if "operators" in f and k in f["operators"]}
        geom = {k: f["geometry"][k][()] for k in GEOMETRY if "geometry" in f and k in f["geometry"]}
        fields = field_info(str(f.attrs["problem"]), names[0], names[1], tuple(f[names[0]].shape[1:]),
                            tuple(f[names[1]].shape[1:]), ops, geom)
        return {"format": FORMAT, "setting": fingerprint_of_file(f), "fields": fields}


def restore_model(
    tree: dict[str, Any], path: str | Path
) -> tuple[GrowableResNet, Standardizer, Standardizer]:
    """The network (its dtype, weights loaded) and input/target normalisers of a model file's tree.

    A :class:`PdegrowError` naming ``path`` as damaged when any of them cannot be rebuilt.
    """
    try:
        model = GrowableResNet.from_spec(tree["spec"])
        model = model.to(torch.float64 if "float64" in str(tree["dtype"]) else torch.float32)
        model.load_state_dict(tree["state"])
        norms = [Standardizer.from_state_dict(tree[k]) for k in ("input_norm", "target_norm")]
        if not all(isinstance(n.mean, torch.Tensor) and isinstance(n.std, torch.Tensor) for n in norms):
            raise TypeError("normalisers without tensors")
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PdegrowError(f"{path} is damaged ({msg})") from None
    return model, norms[0], norms[1]


@dataclass
class PortableModel:
    """A trained network with its normalisers, field decoder, geometry and setting fingerprint."""

    model: GrowableResNet
    input_norm: Standardizer
    target_norm: Standardizer
    transform: str
    fields_info: dict[str, Any]
    setting: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | Path, run_dir: str | Path | None = None,
             device: str | torch.device = "cpu") -> PortableModel:
        """Read ``model.pt`` (tensors + JSON; nothing unpickled). ``run_dir``: where to find the training
        data file when the model file predates ``setting``/``fields``."""
        path = Path(path)
        tree, meta = tensorfile.load(path)
        if meta.get("kind") != "model":
            raise PdegrowError(f"{path} is a pdegrow {meta.get('kind')!r} file, not a model file")
        missing = [k for k in ("spec", "state", "input_norm", "target_norm", "dtype")
                   if not isinstance(tree, dict) or k not in tree]
        if missing:
            raise PdegrowError(f"{path} is damaged (no {', '.join(missing)})")
        config = tree.get("config") if isinstance(tree.get("config"), dict) else {}
        data_cfg = config.get("data", {}) if isinstance(config.get("data"), dict) else {}
        model, *norms = restore_model(tree, path)
        fields_info, setting = tree.get("fields"), tree.get("setting")
        if not isinstance(fields_info, dict):
            fields_info, setting = _extras_from_run(path, run_dir, data_cfg)
        model.to(device).eval()
        return cls(model, norms[0], norms[1], str(data_cfg.get("input_transform", "none")), fields_info,
                   setting if isinstance(setting, dict) else None, config, path)

    # ------------------------------------------------------------------ properties

    @property
    def problem(self) -> str:
        return str(self.fields_info.get("problem", ""))

    @property
    def input_name(self) -> str:
        return str(self.fields_info.get("input", ""))

    @property
    def target_name(self) -> str:
        return str(self.fields_info.get("target", ""))

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        s = self.fields_info.get("input_shape")
        return tuple(int(v) for v in s) if s is not None else None

    @property
    def geometry(self) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.fields_info.get("geometry", {}).items()}

    # ------------------------------------------------------------------ prediction

    def check_inputs(self, obs: np.ndarray, what: str = "the observations") -> np.ndarray:
        """``obs`` as a float array (n, *input_shape): one sample without the sample axis, or rows of a
        flattened field, are accepted; anything else is a one-line :class:`PdegrowError`."""
        obs = np.asarray(obs)
        if obs.dtype.kind not in "fiu":
            raise PdegrowError(f"{what} are not numbers (dtype {obs.dtype})")
        obs = obs.astype(np.float64)
        shape = self.input_shape
        if shape is not None:
            size = int(np.prod(shape))
            if obs.shape == shape:
                obs = obs[None]
            elif obs.ndim == 2 and obs.shape[1] == size and len(shape) > 1:
                obs = obs.reshape(-1, *shape)
            elif obs.ndim == 1 and obs.size == size:
                obs = obs.reshape(1, *shape)
            if obs.shape[1:] != shape:
                raise PdegrowError(f"{what} have shape {obs.shape}; the model expects (n, "
                                   f"{', '.join(map(str, shape))}) ({self.input_name} of its data set)")
        bad = ~np.isfinite(obs.reshape(len(obs), -1)).all(axis=1)
        if bad.any():
            rows = ", ".join(map(str, np.flatnonzero(bad)[:5]))
            raise PdegrowError(f"{what} hold NaN/inf in {int(bad.sum())} sample(s) (rows {rows})")
        return obs

    def network_input(self, obs: np.ndarray) -> torch.Tensor:
        """The network's input for raw observations (n, *input_shape), as in training
        (:func:`pdegrow.data.model_input.model_inputs`)."""
        p = next(self.model.parameters())
        return model_inputs(obs, self.transform, self.input_norm, p.dtype, p.device)

    @torch.no_grad()
    def predict(self, obs: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """The network's output in physical units (n, *target_shape) for raw observations
        (n, *input_shape)."""
        obs = self.check_inputs(obs)
        shape = self.fields_info.get("target_shape")
        outs = []
        for start in range(0, len(obs), batch_size):
            z = self.model(self.network_input(obs[start:start + batch_size]))
            y = self.target_norm.inverse(z).double().cpu().numpy()
            outs.append(y.reshape(len(y), *shape) if shape is not None else y)
        if outs:
            return np.concatenate(outs)
        return np.zeros((0, *(shape or ())))

    def fields(self, pred: np.ndarray) -> dict[str, np.ndarray]:
        """Recovered fields from predictions (n, *target_shape): heat ``log_conductivity`` and
        ``conductivity`` (nodal), Navier–Stokes ``vorticity_0`` (R, R) images, else ``target``."""
        pred = np.asarray(pred, dtype=np.float64)
        kind = self.fields_info.get("decoder", "none")
        if kind == "kl":
            kl = {k: v.numpy() for k, v in self.fields_info["kl"].items()}
            xi = pred.reshape(len(pred), -1)
            m = kl["prior_mean"] + (xi * np.sqrt(kl["kl_eigenvalues"])) @ kl["kl_basis"].T
            return {"log_conductivity": m, "conductivity": np.exp(m)}
        if kind == "nodal":
            m = pred.reshape(len(pred), -1)
            return {"log_conductivity": m, "conductivity": np.exp(m)}
        if kind == "image":
            return {"vorticity_0": pred}
        return {"target": pred}

    def decoder_matrix(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(offset (F,), matrix (P, F)) with field = offset + prediction_flat @ matrix for a linear
        decoder (heat KL: m̄ and (√λ ⊙ Φ)ᵀ); None when the field is the prediction itself."""
        if self.fields_info.get("decoder") != "kl":
            return None
        kl = {k: v.numpy() for k, v in self.fields_info["kl"].items()}
        return kl["prior_mean"], (kl["kl_basis"] * np.sqrt(kl["kl_eigenvalues"])).T


def _extras_from_run(path: Path, run_dir: str | Path | None, data_cfg: dict[str, Any],
                     ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``fields`` and ``setting`` of a model file written before they were stored, from the run's data."""
    from pdegrow.training.runlog import read_run

    run_dir = Path(run_dir) if run_dir is not None else path.parent
    try:
        data = read_run(run_dir).get("data")
    except PdegrowError:
        data = None
    if not data or not Path(data).is_file():
        raise PdegrowError(f"{path} predates portable model files and its training data ({data}) is gone; "
                           f"retrain the run with this version")
    extras = model_extras(data, {"input": data_cfg.get("input", "inputs/observations"),
                                 "target": data_cfg.get("target", "targets/kl_coefficients")})
    return extras["fields"], extras["setting"]


def load_model(run: str | Path, device: str | torch.device = "cpu") -> PortableModel:
    """The model of a run directory (its ``model.pt``) or of a ``model.pt`` file itself."""
    run = Path(run)
    if run.is_dir():
        from pdegrow.training.runlog import read_run

        info = read_run(run)
        if info.get("status") == "failed":
            why = info.get("error", "no reason recorded")
            raise PdegrowError(f"{run}: the run failed ({why}); train it again")
        if not (run / "model.pt").is_file():
            raise PdegrowError(f"{run}: the run has not finished (no model.pt); resume it with "
                               f"'pdegrow train --out {run} --resume'")
        return PortableModel.load(run / "model.pt", run, device)
    if not run.is_file():
        raise PdegrowError(f"{run} is neither a run directory nor a model file")
    return PortableModel.load(run, None, device)


__all__ = ["FORMAT", "PortableModel", "field_info", "load_model", "model_extras"]

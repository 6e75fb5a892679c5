"""Using a finished run: load its model, predict on any compatible data file, score it.

``evaluate_run`` gives the same metrics as the trainer's summary (average
relative errors; for heat, of the recovered log-conductivity field).
``layer_predictions`` gives the prediction of the network truncated after each
block (head(x_l)), and after each SRL corrector: the per-layer evolution of the
recovered field shown in the papers' figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdegrow.contract import open_dataset
from pdegrow.data.checks import check_finite
from pdegrow.data.loaders import Batch
from pdegrow.data.model_input import transformed_inputs
from pdegrow.data.normalize import Standardizer
from pdegrow.errors import PdegrowError
from pdegrow.inference import restore_model
from pdegrow.models.resnet import GrowableResNet
from pdegrow.regularizers.heat_physics import HeatOperators, field_from_prediction
from pdegrow.training import problems
from pdegrow.training.config import ExperimentConfig, build_config
from pdegrow.training.runfiles import load_run_file
from pdegrow.training.runlog import read_run

SPLITS = ("train", "val", "test", "all")


@dataclass
class TrainedRun:
    run_dir: Path
    info: dict[str, Any]
    cfg: ExperimentConfig
    model: GrowableResNet
    input_norm: Standardizer
    target_norm: Standardizer
    splits: dict[str, list[int]]
    setting: dict[str, Any] | None = None   # the forward setting it was trained on (pdegrow.fingerprint)


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu") -> TrainedRun:
    """A finished run's model (``model.pt``), config and splits; a :class:`PdegrowError` otherwise."""
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    path = run_dir / "model.pt"
    if info.get("status") == "failed":
        raise PdegrowError(f"{run_dir}: the run failed ({info.get('error', 'no reason recorded')}); "
                           f"train it again")
    if not path.is_file():
        raise PdegrowError(f"{run_dir}: the run has not finished (no model.pt); resume it with "
                           f"'pdegrow train --out {run_dir} --resume'")
    blob = load_run_file(path, "model")
    cfg = build_config(blob["config"], str(path))
    model, *norms = restore_model(blob, path)
    model.to(device).eval()
    splits = json.loads((run_dir / "splits.json").read_text())
    setting = blob.get("setting") if isinstance(blob.get("setting"), dict) else _training_setting(info)
    return TrainedRun(run_dir, info, cfg, model, norms[0], norms[1], splits, setting)


def _training_setting(info: dict[str, Any]) -> dict[str, Any] | None:
    """The setting of a run whose model.pt predates fingerprints: its training file's, when still there."""
    from pdegrow.fingerprint import fingerprint_of_path

    data = info.get("data")
    try:
        return fingerprint_of_path(data) if data and Path(data).is_file() else None
    except PdegrowError:
        return None


def _indices(run: TrainedRun, data_path: str, split: str | None, n_samples: int) -> np.ndarray:
    same_file = Path(data_path).resolve() == Path(run.info.get("data", "")).resolve()
    if split is None:
        split = "test" if same_file else "all"
    if split not in SPLITS:
        raise PdegrowError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    if split == "all":
        return np.arange(n_samples)
    if not same_file:
        raise PdegrowError(f"--split {split} refers to the run's own data file ({run.info.get('data')}); "
                           f"use --split all for another file")
    return np.asarray(run.splits[split], dtype=np.int64)


def load_eval_data(run: TrainedRun, data_path: str, split: str | None = None,
                   allow_different: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Arrays of the chosen samples (physical units) plus the file's operators and geometry. Data of
    another forward setting than the run's (:mod:`pdegrow.fingerprint`) is refused, except for the
    parts named in ``allow_different``."""
    from pdegrow.fingerprint import check_same_setting, fingerprint_of_file

    cfg = run.cfg.data
    with open_dataset(data_path, cfg.problem or None) as f:
        check_same_setting(run.setting, fingerprint_of_file(f), str(data_path), allow_different)
        for name in (cfg.input, cfg.target):
            if name not in f:
                raise PdegrowError(f"{data_path}: has no dataset {name!r}, which the run was trained on")
        idx = _indices(run, data_path, split, int(f.attrs["n_samples"]))
        used = {k: f[k] for k in dict.fromkeys((cfg.input, cfg.target, *(a for a in cfg.aux if a in f)))}
        same_file = Path(data_path).resolve() == Path(run.info.get("data", "")).resolve()
        check_finite(data_path, used, {split or ("test" if same_file else "all"): idx})
        shape_in, shape_out = f[cfg.input].shape[1:], f[cfg.target].shape[1:]
        out = {
            "indices": idx,
            "problem": str(f.attrs["problem"]),
            "inputs": f[cfg.input][idx] if len(idx) else np.zeros((0, *shape_in)),
            "targets": f[cfg.target][idx] if len(idx) else np.zeros((0, *shape_out)),
            "aux": {k: f[k][idx] for k in cfg.aux if k in f},
            "operators": {k: f["operators"][k][()] for k in f.get("operators", {})},
            "geometry": {k: f["geometry"][k][()] for k in f.get("geometry", {})},
        }
    return out


def _as_model_input(run: TrainedRun, x: np.ndarray) -> torch.Tensor:
    """:func:`pdegrow.data.model_input.model_inputs` for the run's network, the shape checked first."""
    p = next(run.model.parameters())
    t = transformed_inputs(x, run.cfg.data.input_transform, p.dtype, p.device)
    expected = tuple(run.input_norm.mean.shape) if run.input_norm.mode == "feature" else None
    if expected is not None and tuple(t.shape[1:]) != expected:
        raise PdegrowError(f"the data's inputs have shape {tuple(t.shape[1:])}, the model was trained on "
                           f"{expected}")
    return run.input_norm.transform(t)


@torch.no_grad()
def predict(run: TrainedRun, inputs: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Predictions in physical target units for raw inputs (n, …)."""
    outs = []
    for start in range(0, len(inputs), batch_size):
        z = run.model(_as_model_input(run, inputs[start:start + batch_size]))
        outs.append(run.target_norm.inverse(z).cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,))


@torch.no_grad()
def layer_predictions(run: TrainedRun, inputs: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """[(label, prediction)] after the lift, after each block and after each SRL corrector (with a
    linear skip S: head(x_t) + S(y) at every layer)."""
    model = run.model
    y = _as_model_input(run, inputs)
    _, states = model(y, return_states=True)
    skip = model.skip(y) if getattr(model, "skip", None) is not None else 0.0
    out = [(f"layer {t}" if t else "lift", run.target_norm.inverse(model.head(x) + skip).cpu().numpy())
           for t, x in enumerate(states)]
    acc = model.head(states[-1]) + skip
    for j, q in enumerate(model.correctors):
        acc = acc + q(y)
        out.append((f"+SRL {j + 1}", run.target_norm.inverse(acc).cpu().numpy()))
    return out


def field_of(pred: np.ndarray, data: dict[str, Any], target: str) -> np.ndarray | None:
    """Log-conductivity fields (n, N) from heat predictions; None for other problems."""
    if data["problem"] != "heat" or "cell_stiffness" not in data["operators"]:
        return None
    ops = HeatOperators.from_arrays(data["operators"], data["geometry"], dtype=torch.float64)
    try:
        return field_from_prediction(torch.as_tensor(pred, dtype=torch.float64), target, ops).numpy()
    except ValueError:
        return None


def evaluate_run(run_dir: str | Path, data_path: str, split: str | None = None, *,
                 reference: str | None = None, use_reference: bool = True,
                 allow_different: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Mean relative errors of a finished run on ``split`` of ``data_path``; with a Bayesian reference
    of the data (``reference``, else the data's default-path one), also the reference and the gap
    error / reference − 1 on the common samples (``result["reference"]``). Data of another forward
    setting is refused unless the differing parts are in ``allow_different``."""
    run = load_trained(run_dir)
    data = load_eval_data(run, data_path, split, allow_different)
    if len(data["indices"]) == 0:
        raise PdegrowError("no samples to evaluate (empty split)")
    pred = predict(run, data["inputs"])
    ops = None
    if data["problem"] == "heat" and "cell_stiffness" in data["operators"]:
        ops = HeatOperators.from_arrays(data["operators"], data["geometry"], dtype=torch.float64)

    class _Data:  # what problems.batch_metrics reads
        cfg = run.cfg.data

    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    batch = Batch(t(data["inputs"]), t(data["targets"]), torch.zeros(0), torch.zeros(0),
                  {k: t(v) for k, v in data["aux"].items()})
    metrics = problems.batch_metrics(t(pred), t(data["targets"]), batch, _Data(), ops)  # type: ignore[arg-type]
    result: dict[str, Any] = {"run": str(run_dir), "data": str(data_path), "n_samples": len(data["indices"]),
                              "strategy": run.cfg.strategy, "architecture": run.model.architecture()}
    for k, v in metrics.items():  # NaN (undefined, e.g. an all-zero reference) samples left out
        v = v[~torch.isnan(v)]
        result[k] = float(v.mean()) if len(v) else float("nan")
        result[f"{k}_std"] = float(v.std(unbiased=False)) if len(v) else float("nan")
    if use_reference:
        from pdegrow.reference.lookup import load_reference_for
        from pdegrow.reference.results import gap_summary

        found = load_reference_for(data_path, reference)
        if found is not None:
            ref, ref_path = found
            errors = {k: v.detach().cpu().numpy() for k, v in metrics.items()}
            result["reference"] = {"file": str(ref_path), **gap_summary(ref, errors, data["indices"])}
    return result

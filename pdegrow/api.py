"""The Python API: data sets, generation, training and trained runs from a script or a notebook.

Everything here is also reachable as ``pdegrow.<name>`` (loaded on first use, so ``import pdegrow``
stays cheap). Bad input raises :class:`pdegrow.PdegrowError` with the same one-line message the
command line prints; nothing here calls ``sys.exit``. Reference: ``docs/api.md``.

    import pdegrow
    path = pdegrow.generate("heat", preset="paper", n_samples=200, out="heat.h5")
    run = pdegrow.train("experiments/heat-paper-best.toml", data=path, out="runs/best",
                        train={"max_epochs": 200})
    pred = run.predict(my_observations)          # an (n, 10) array, a .npy/.csv file or a data set
    pred.fields["log_conductivity"], pred.plot(0)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pdegrow.errors import PdegrowError

if TYPE_CHECKING:
    from pdegrow.predictions import Prediction

#: default (input, target) arrays of each problem, the first of each list that the file holds
DEFAULT_ARRAYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "heat": (("inputs/observations",), ("targets/kl_coefficients", "targets/log_conductivity")),
    "navier_stokes": (("inputs/vorticity_T", "inputs/observations"), ("targets/vorticity_0",)),
}
SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------ data sets


class PdegrowDataset(Dataset):
    """Samples of a pdegrow data set as ``(input, target)`` float tensors in physical units.

    ``indices`` are the file's sample rows in this dataset; ``splits`` the train/val/test rows
    (the trainer's, for the same sizes and seed); ``problem``, ``attrs``, ``config`` (the recipe),
    ``geometry`` and ``operators`` are the file's. Arrays are read once into memory when they take
    at most ``memory_limit_mb``, else sample by sample (each process opens the file itself, so a
    ``torch.utils.data.DataLoader`` with workers is fine).
    """

    def __init__(self, path: str | os.PathLike, indices: np.ndarray, input_name: str, target_name: str,
                 splits: dict[str, list[int]], info: dict[str, Any], memory_limit_mb: float = 1024.0,
                 dtype: torch.dtype = torch.float32):
        self.path, self.indices = Path(path), np.asarray(indices, dtype=np.int64)
        self.input_name, self.target_name, self.splits, self.dtype = input_name, target_name, splits, dtype
        self.problem: str = info["problem"]
        self.attrs: dict[str, Any] = info["attrs"]
        self.config: dict[str, Any] = info["config"]
        self.geometry: dict[str, np.ndarray] = info["geometry"]
        self.operators: dict[str, np.ndarray] = info["operators"]
        self._info, self.memory_limit_mb = info, memory_limit_mb
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._file: Any = None
        self._pid = -1
        if info["bytes_per_sample"] * len(self.indices) <= memory_limit_mb * 2**20:
            self._arrays = self._read(self.indices)

    def _read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        order = np.argsort(rows)
        out = []
        for name in (self.input_name, self.target_name):
            a = self._file[name][rows[order]] if len(rows) else np.zeros((0, *self._file[name].shape[1:]))
            b = np.empty_like(a)
            b[order] = a
            out.append(b)
        return out[0], out[1]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._arrays is not None:
            x, y = self._arrays[0][i], self._arrays[1][i]
        else:
            xs, ys = self._read(self.indices[[i]])
            x, y = xs[0], ys[0]
        return torch.as_tensor(x, dtype=self.dtype), torch.as_tensor(y, dtype=self.dtype)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of every sample of this dataset as numpy arrays."""
        return self._arrays if self._arrays is not None else self._read(self.indices)

    def split(self, name: str) -> PdegrowDataset:
        """The ``train``/``val``/``test`` part of the file (as split by :func:`load_dataset`)."""
        if name not in self.splits:
            have = ", ".join(self.splits) or "none: too few samples for the split sizes given"
            raise PdegrowError(f"unknown split {name!r} (one of {have})")
        return PdegrowDataset(self.path, np.asarray(self.splits[name]), self.input_name, self.target_name,
                              self.splits, self._info, self.memory_limit_mb, self.dtype)

    def __repr__(self) -> str:
        return (f"PdegrowDataset({str(self.path)!r}, problem={self.problem!r}, {len(self)} samples, "
                f"{self.input_name} -> {self.target_name})")


def _pick(f: Any, wanted: str | None, defaults: tuple[str, ...], group: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in f:
            have = sorted(f"{group}/{k}" for k in f.get(group, {}))
            raise PdegrowError(f"{path}: has no dataset {wanted!r} ({group}: {', '.join(have)})")
        return wanted
    for name in defaults:
        if name in f:
            return name
    names = sorted(f.get(group, {}))
    if not names:
        raise PdegrowError(f"{path}: has no {group}/ arrays")
    return f"{group}/{names[0]}"


def load_dataset(path: str | os.PathLike, split: str | None = None, *, input: str | None = None,
                 target: str | None = None, n_train: int = 50, n_val: int = 10, n_test: int = -1,
                 split_seed: int = 0, run: str | os.PathLike | None = None,
                 memory_limit_mb: float = 1024.0) -> PdegrowDataset:
    """A pdegrow data set as a ``torch.utils.data.Dataset`` of ``(input, target)`` pairs.

    ``split``: ``None`` (every sample), ``"train"``, ``"val"`` or ``"test"``, split as the trainer does
    for ``n_train``/``n_val``/``n_test``/``split_seed`` (the ``[data]`` keys of a training config), or
    as a trained ``run`` did (its own splits and arrays). ``input``/``target``: array names (default:
    the problem's usual pair, e.g. ``inputs/observations`` → ``targets/kl_coefficients`` for heat).
    The result's ``.splits`` holds all three index lists and ``.split(name)`` gives each part.
    """
    from pdegrow.contract import open_dataset
    from pdegrow.data.splits import make_splits

    path = Path(path)
    run_splits = None
    if run is not None:
        cfg = _run_config(Path(run))
        data = cfg.get("data", {})
        input, target = input or data.get("input"), target or data.get("target")
        try:
            run_splits = json.loads((Path(run) / "splits.json").read_text())
        except (OSError, ValueError):
            raise PdegrowError(f"{run}: has no readable splits.json") from None
    with open_dataset(path) as f:
        problem = str(f.attrs["problem"])
        ins, outs = DEFAULT_ARRAYS.get(problem, ((), ()))
        input_name = _pick(f, input, ins, "inputs", path)
        target_name = _pick(f, target, outs, "targets", path)
        n = int(f.attrs["n_samples"])
        try:
            splits = run_splits or make_splits(n, n_train, n_val, n_test, split_seed)
        except PdegrowError:
            if split is not None:
                raise
            splits = {}   # too few samples for these split sizes: the whole file, no splits
        info = {"problem": problem,
                "attrs": {k: f.attrs[k] for k in f.attrs},
                "config": json.loads(f.attrs.get("config", "{}")),
                "geometry": {k: f["geometry"][k][()] for k in f.get("geometry", {})},
                "operators": {k: f["operators"][k][()] for k in f.get("operators", {})},
                "bytes_per_sample": sum(int(np.prod(f[k].shape[1:])) * f[k].dtype.itemsize
                                        for k in (input_name, target_name))}
    if split is None:
        indices = np.arange(n)
    elif split in SPLITS:
        indices = np.asarray(splits[split], dtype=np.int64)
    else:
        raise PdegrowError(f"unknown split {split!r} (one of {', '.join(SPLITS)}, or None for all)")
    return PdegrowDataset(path, indices, input_name, target_name, splits, info, memory_limit_mb)


# ------------------------------------------------------------------ generation


def generate(problem: str, preset: str = "default", *, out: str | os.PathLike, n_samples: int | None = None,
             seed: int | None = None, config: str | os.PathLike | None = None, resume: bool = False,
             overwrite: bool = False, progress: bool = False, **overrides: Any) -> Path:
    """Generate a data set with a FEniCSx forward solver (needs dolfinx; as ``pdegrow generate``).

    ``problem``: ``"heat"`` or ``"navier-stokes"``; ``preset``: a recipe ``datasets/<problem>-<preset>.toml``
    (or ``config``: a recipe file); ``overrides``: recipe keys (``nx=16, n_sensors=20``). Under
    ``mpiexec`` the samples are split over the ranks. Returns the path of the complete file.
    """
    import dataclasses
    import importlib

    from mpi4py import MPI  # before dolfinx

    from pdegrow.cli.generate import PROBLEMS
    from pdegrow.generation import generate as run_generation

    key = problem.replace("_", "-")
    if key not in PROBLEMS:
        raise PdegrowError(f"unknown problem {problem!r} (one of {', '.join(sorted(PROBLEMS))})")
    solver = importlib.import_module(PROBLEMS[key])
    recipe = solver.load_recipe(preset, str(config) if config is not None else None, dict(overrides))
    recipe = dataclasses.replace(recipe, n_samples=recipe.n_samples if n_samples is None else int(n_samples),
                                 seed=recipe.seed if seed is None else int(seed))
    run_generation(lambda: solver.make_problem(recipe), problem=solver.PROBLEM_NAME, config=recipe.to_dict(),
                   n_samples=recipe.n_samples, seed=recipe.seed, out=out, resume=resume, overwrite=overwrite,
                   progress=progress, comm=MPI.COMM_WORLD,
                   model_memory=recipe.memory_bytes() if hasattr(recipe, "memory_bytes") else 0)
    return Path(out)


# ------------------------------------------------------------------ Bayesian references


def compute_reference(data: str | os.PathLike, method: str = "map", samples: Any = "test", *,
              out: str | os.PathLike | None = None, overwrite: bool = False, **options: Any) -> Path:
    """The Bayesian reference of a data set (as ``pdegrow reference``): ``method`` ``map``, ``laplace`` or
    ``mcmc`` on ``samples`` (``"test"`` — the trainer's default test split —, ``"all"``, ``"A:B"``, or
    indices), written to ``out`` (default ``DATA_STEM.reference-METHOD.h5`` beside the data, where
    ``evaluate`` and ``Run.predict`` find it). ``options`` go to the method (e.g. ``seed``, ``starts``).
    Returns the path of the file."""
    from pdegrow.reference.dispatch import run_reference
    from pdegrow.reference.results import default_reference_path, write_reference

    path = Path(out) if out is not None else default_reference_path(data, method)
    if path.exists() and not overwrite:
        raise PdegrowError(f"{path} exists; pass overwrite=True to replace it")
    write_reference(path, run_reference(data, method, samples, **options))
    return path


# ------------------------------------------------------------------ training


def _merge(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``values`` with nested-dict ``overrides`` ({section: {key: value}}) merged in, one level deep
    (``growth={"strategy": …}`` keeps the section's other keys unless the strategy changes)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for section, sub in overrides.items():
        if not isinstance(sub, dict):
            raise PdegrowError(f"override {section}={sub!r}: give a section as a dict, e.g. "
                               f"optim={{'lr': 1e-3}}")
        base = out.get(section, {})
        if not isinstance(base, dict):
            raise PdegrowError(f"[{section}] must be a table")
        if section == "growth" and "strategy" in sub and sub["strategy"] != base.get("strategy", "fixed"):
            base = {}   # another strategy: the old one's options do not apply
        out[section] = {**base, **sub}
    return out


def _config_values(config: Any) -> tuple[dict[str, Any], str]:
    from pdegrow.config import read_toml

    if isinstance(config, dict):
        return config, "config"
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if path.suffix == ".json":
            try:
                values = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise PdegrowError(f"config file {path} cannot be read as JSON ({exc})") from None
            if not isinstance(values, dict):
                raise PdegrowError(f"config file {path}: expected a JSON object of sections")
            return values, str(path)
        return read_toml(path), str(path)
    if hasattr(config, "to_dict"):
        return config.to_dict(), "config"
    raise PdegrowError(f"config must be a dict, a TOML/JSON path or an ExperimentConfig, not "
                       f"{type(config).__name__}")


def train(config: Any = None, data: str | os.PathLike | None = None, out: str | os.PathLike | None = None, *,
          resume: bool = False, overwrite: bool = False, progress: bool = False,
          overrides: dict[str, dict[str, Any]] | None = None, **sections: Any) -> Run:
    """Train (and grow) a network as ``pdegrow train`` does; returns the finished :class:`Run`.

    ``config``: a TOML/JSON path, a dict of sections or an ``ExperimentConfig``; ``data``: the data file;
    ``out``: the run directory. Sections given as keyword dicts are merged into the config, e.g.
    ``optim={"lr": 3e-3}, growth={"strategy": "layerwise", "max_layers": 3}``; ``overrides`` takes the
    same as one nested dict — the way to change ``[data]`` keys, since ``data=`` is the file:
    ``overrides={"data": {"n_train": 200}}``. With ``resume=True`` only ``out`` is needed (the run's
    own config and data).
    """
    overrides = {**(overrides or {}), **sections}
    from pdegrow.training.config import build_config
    from pdegrow.training.runlog import read_run
    from pdegrow.training.trainer import train as run_training

    if out is None:
        raise PdegrowError("train: out (the run directory) is required")
    if resume:
        if config is not None or overrides:
            raise PdegrowError("resume continues a run with its own config; drop config/overrides")
        info = read_run(out)
        cfg = build_config(_run_config(Path(out)), f"{out}/config.json")
        data = data or info["data"]
    else:
        if config is None or data is None:
            raise PdegrowError("train: config and data are required (unless resume=True)")
        values, source = _config_values(config)
        cfg = build_config(_merge(values, overrides), source)
    run_training(cfg, str(data), out, resume=resume, overwrite=overwrite, progress=progress)
    return load_run(out)


def _run_config(run: Path) -> dict[str, Any]:
    from pdegrow.training.runlog import read_run_config

    return read_run_config(run)


# ------------------------------------------------------------------ trained runs


class Run:
    """A trained run directory: its config, summary, metrics, model; predict, evaluate, report, export."""

    def __init__(self, path: str | os.PathLike):
        from pdegrow.training.runlog import read_run

        self.path = Path(path)
        self.info: dict[str, Any] = read_run(self.path)
        self._model: Any = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.info.get('status')!r})"

    @property
    def config(self) -> dict[str, Any]:
        """The training config (all sections, as a dict)."""
        return _run_config(self.path)

    @property
    def data(self) -> str | None:
        """The data file it was trained on."""
        return self.info.get("data")

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json``: final validation and test metrics, architecture, growth events."""
        try:
            return json.loads((self.path / "summary.json").read_text())
        except (OSError, ValueError):
            raise PdegrowError(f"{self.path}: no summary.json (has the run finished?)") from None

    def metrics(self) -> list[dict[str, Any]]:
        """One dict per epoch (``metrics.jsonl``)."""
        from pdegrow.training.runlog import read_jsonl

        return read_jsonl(self.path / "metrics.jsonl")

    def events(self) -> list[dict[str, Any]]:
        """One dict per growth event (``events.jsonl``): where, predicted and realised loss change."""
        from pdegrow.training.runlog import read_events

        return read_events(self.path)

    @property
    def model(self) -> Any:
        """The :class:`~pdegrow.inference.PortableModel` of ``model.pt`` (loaded once)."""
        if self._model is None:
            from pdegrow.inference import load_model

            self._model = load_model(self.path)
        return self._model

    def predict(self, obs: Any, *, allow_different: tuple[str, ...] | list[str] = (),
                reference: bool = True) -> Prediction:
        """Recovered fields for ``obs`` — an array (n, *input_shape) or one sample, a ``.npy``/``.csv`` path
        or a pdegrow data set of the run's setting — as a :class:`~pdegrow.predictions.Prediction`
        (``.fields``, ``.prediction``, ``.geometry``, ``.errors()``, ``.plot(i)``, ``.save(path)``)."""
        from pdegrow.predictions import predict_observations

        return predict_observations(self.model, obs, allow_different, reference)

    def evaluate(self, data: str | os.PathLike | None = None, split: str | None = None, *,
                 reference: str | None = None, use_reference: bool = True,
                 allow_different: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
        """Mean relative errors on ``split`` of ``data`` (default: the run's own test split), with the
        gap to a Bayesian reference when there is one — as ``pdegrow evaluate --json``."""
        from pdegrow.training.evaluate import evaluate_run

        data = data if data is not None else self.data
        if data is None:
            raise PdegrowError(f"{self.path}: no data file recorded; pass data=")
        return evaluate_run(self.path, str(data), split, reference=reference, use_reference=use_reference,
                            allow_different=allow_different)

    def report(self, out: str | os.PathLike | None = None, data: str | os.PathLike | None = None) -> Path:
        """Write the run's report (figures + ``report.md``, default ``RUN/report``); returns ``report.md``."""
        from pdegrow.reporting import write_report

        files = write_report(self.path, str(data) if data is not None else None, out)
        md = [p for p in files if Path(p).name == "report.md"]
        return Path(md[0]) if md else Path(out or self.path / "report") / "report.md"

    def export(self, format: str = "torchscript", out: str | os.PathLike | None = None,
               dtype: str | None = None) -> Path:
        """Export the model with its normalisers baked in (``pdegrow export``): ``torchscript`` or
        ``onnx``."""
        from pdegrow.export import export_model

        return export_model(self.model, format, out, dtype=dtype)


def load_run(path: str | os.PathLike) -> Run:
    """A trained run directory (``pdegrow train --out PATH``)."""
    return Run(path)


__all__ = ["PdegrowDataset", "Run", "generate", "load_dataset", "compute_reference", "load_run", "train"]

"""A data set prepared for training: splits, normalisers, operators, noisy copies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pdegrow.contract import open_dataset
from pdegrow.data.checks import check_finite
from pdegrow.data.loaders import LazySplit, MemorySplit, Split
from pdegrow.data.model_input import physical_inputs, transformed_inputs
from pdegrow.data.noise import noisy_copy
from pdegrow.data.normalize import Standardizer
from pdegrow.data.splits import make_splits
from pdegrow.errors import DataContractError, PdegrowError
from pdegrow.training.config import DataConfig


@dataclass
class DataBundle:
    """Everything the trainer needs from a data file."""

    path: str
    problem: str
    file_config: dict[str, Any]
    cfg: DataConfig
    splits: dict[str, list[int]]
    train: Split
    val: Split
    test: Split
    input_norm: Standardizer
    target_norm: Standardizer
    input_shape: tuple[int, ...]      # one sample, after a channel axis is added to 2-D fields
    target_shape: tuple[int, ...]
    operators: dict[str, np.ndarray] = field(default_factory=dict)
    geometry: dict[str, np.ndarray] = field(default_factory=dict)
    noise: tuple[float, str] = (0.0, "relative")
    in_memory: bool = True

    @property
    def is_field(self) -> bool:
        return len(self.input_shape) == 3 and len(self.target_shape) == 3

    def to_physical_target(self, z: torch.Tensor) -> torch.Tensor:
        return self.target_norm.inverse(z)

    def to_physical_input(self, z: torch.Tensor) -> torch.Tensor:
        """The raw input (e.g. the observations y, not log y) from its normalised value."""
        return physical_inputs(z, self.cfg.input_transform, self.input_norm)


def _check_name(f: Any, name: str, path: str) -> None:
    if name not in f:
        have = sorted(f"{g}/{k}" for g in ("inputs", "targets") if g in f for k in f[g])
        raise PdegrowError(f"{path}: has no dataset {name!r} (sample arrays: {', '.join(have)})")


def prepare_data(path: str, cfg: DataConfig, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32, splits: dict[str, list[int]] | None = None,
                 ) -> DataBundle:
    """Open ``path``, split it (or reuse ``splits``), fit normalisers on the training split only
    (``cfg.normalize_with_simulated``: and on the ``cfg.simulated_inputs`` simulated samples),
    add ``cfg.noisy_copies`` noisy copies of each training input, and load the splits
    (in memory when they fit ``cfg.memory_limit_mb``, else lazily)."""
    with open_dataset(path, cfg.problem or None) as f:
        problem = str(f.attrs["problem"])
        n = int(f.attrs["n_samples"])
        for name in (cfg.input, cfg.target, *cfg.aux):
            _check_name(f, name, path)
        if cfg.noisy_copies:
            _check_name(f, cfg.clean_input, path)
        if splits is None:
            splits = make_splits(n, cfg.n_train, cfg.n_val, cfg.n_test, cfg.split_seed,
                                 ordered=cfg.split == "ordered")
        used = {k: f[k] for k in dict.fromkeys((cfg.input, cfg.target, *cfg.aux))}
        check_finite(path, used, {s: splits[s] for s in ("train", "val", "test")})
        if cfg.noisy_copies:
            check_finite(path, {cfg.clean_input: f[cfg.clean_input]}, {"train": splits["train"]})
        noise = (float(f.attrs.get("noise_level", 0.0)), str(f.attrs.get("noise_model", "relative")))
        field_out = f[cfg.target].ndim == 3
        per_sample = sum(int(np.prod(f[k].shape[1:])) * f[k].dtype.itemsize
                         for k in (cfg.input, cfg.target, *cfg.aux))
        total_mb = per_sample * (n + len(splits["train"]) * cfg.noisy_copies) / 2**20
        in_memory = cfg.in_memory == "yes" or (cfg.in_memory == "auto" and total_mb <= cfg.memory_limit_mb)
        ops = {k: f["operators"][k][()] for k in f.get("operators", {})}
        geom = {k: f["geometry"][k][()] for k in f.get("geometry", {})}
        file_config = json.loads(f.attrs["config"])
        tr = np.asarray(splits["train"], dtype=np.int64)
        x_tr = f[cfg.input][tr] if len(tr) else None
        y_tr = f[cfg.target][tr]
        clean_tr = f[cfg.clean_input][tr] if cfg.noisy_copies else None

        def as_t(a: np.ndarray, channel: bool) -> torch.Tensor:
            a = a[:, None] if channel else a
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

        x_all = [x_tr]
        for c in range(1, cfg.noisy_copies + 1):
            x_all.append(np.stack([noisy_copy(clean_tr[j], *noise, seed, int(tr[j]), c)
                                   for j in range(len(tr))]))
        x_train = transformed_inputs(np.concatenate(x_all), cfg.input_transform, dtype)
        if not np.isfinite(x_train.numpy()).all() or not np.isfinite(y_tr).all():
            raise DataContractError(f"{path}: training inputs or targets contain NaN/inf")
        sim = None
        if cfg.simulated_inputs:
            if not in_memory:
                raise PdegrowError("simulated_inputs needs the data set in memory ([data] in_memory)")
            sim = _simulate(problem, cfg, ops, geom, noise, seed, path, dtype)
        fit_x, fit_y = x_train, as_t(y_tr, field_out)
        if sim is not None and cfg.normalize_with_simulated:
            fit_x, fit_y = torch.cat([fit_x, sim[0]]), torch.cat([fit_y, sim[1]])
        input_norm = Standardizer.fit(fit_x, cfg.normalize_inputs)
        target_norm = Standardizer.fit(fit_y, cfg.normalize_targets)
        input_shape = tuple(x_train.shape[1:])
        target_shape = tuple(y_tr.shape[1:]) if not field_out else (1, *y_tr.shape[1:])

        def memory_split(idx: list[int], copies: int) -> MemorySplit:
            idx_np = np.asarray(idx, dtype=np.int64)
            if copies:
                x = x_train
            else:
                x = transformed_inputs(f[cfg.input][idx_np], cfg.input_transform, dtype)
            y = as_t(f[cfg.target][idx_np], field_out)
            reps = 1 + copies
            aux = {k: torch.as_tensor(np.tile(f[k][idx_np], (reps,) + (1,) * (f[k].ndim - 1)), dtype=dtype)
                   for k in cfg.aux}
            groups = torch.as_tensor(np.tile(idx_np, reps))
            return MemorySplit(input_norm.transform(x), target_norm.transform(y).repeat(
                (reps,) + (1,) * (y.ndim - 1)), groups, aux).to(device)

        def lazy_split(idx: list[int], copies: int) -> LazySplit:
            return LazySplit(str(path), cfg.input, cfg.target, list(cfg.aux), np.asarray(idx, dtype=np.int64),
                             copies, cfg.clean_input if copies else None, noise, seed, input_norm,
                             target_norm, field_out, dtype, device, cfg.input_transform)

        make = memory_split if in_memory else lazy_split
        train = make(splits["train"], cfg.noisy_copies)
        if sim is not None:
            train = _with_simulated(train, sim, n, input_norm, target_norm, device)
        val = make(splits["val"], 0)
        test = make(splits["test"], 0)
    return DataBundle(str(path), problem, file_config, cfg, splits, train, val, test, input_norm, target_norm,
                      input_shape, target_shape, ops, geom, noise, in_memory)


def _simulate(problem: str, cfg: DataConfig, ops: dict[str, np.ndarray], geom: dict[str, np.ndarray],
              noise: tuple[float, str], seed: int, path: str, dtype: torch.dtype
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``cfg.simulated_inputs`` prior-predictive samples of ``problem``'s simulator
    (:mod:`pdegrow.data.simulators`), in physical units: (inputs, targets, aux); 2-D fields get the
    channel axis, as the file's do."""
    from pdegrow.data.simulators import SimulationRequest, simulate

    req = SimulationRequest(str(path), ops, geom, noise, cfg.simulated_inputs, seed)
    sim = simulate(problem, req, (cfg.input, cfg.target, *cfg.aux))

    def as_t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a[:, None] if a.ndim == 3 else a, dtype=dtype)

    return (transformed_inputs(sim[cfg.input], cfg.input_transform, dtype), as_t(sim[cfg.target]),
            {k: torch.as_tensor(sim[k], dtype=dtype) for k in cfg.aux})


def _with_simulated(train: MemorySplit, sim: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
                    n_file: int, input_norm: Standardizer, target_norm: Standardizer,
                    device: torch.device) -> MemorySplit:
    """``train`` plus the simulated samples ``sim`` of :func:`_simulate` (groups n_file, n_file + 1, …)."""
    x, y, aux = sim
    groups = torch.arange(n_file, n_file + len(x))
    extra = MemorySplit(input_norm.transform(x), target_norm.transform(y), groups, aux).to(device)
    return MemorySplit(torch.cat([train.inputs, extra.inputs]), torch.cat([train.targets, extra.targets]),
                       torch.cat([train.groups, extra.groups]),
                       {k: torch.cat([train.aux[k], extra.aux[k]]) for k in train.aux})

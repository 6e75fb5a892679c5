"""A heat data file's posterior pieces and true fields for the samples a reference is computed on."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from pdegrow.contract import open_dataset
from pdegrow.errors import PdegrowError
from pdegrow.reference.heat_forward import HeatForward, HeatPosterior
from pdegrow.reference.heat_prior import KLPrior, SPDEPrior, prior_from_file
from pdegrow.regularizers.heat_physics import HeatOperators


@dataclass
class HeatReferenceData:
    posterior: HeatPosterior
    prior: KLPrior | SPDEPrior
    y: torch.Tensor                    # (n, S) noisy observations
    m_true: torch.Tensor               # (n, N)
    xi_true: torch.Tensor | None       # (n, K) KL coefficients (KL prior)
    lumped_mass: torch.Tensor          # (N,)
    config: dict
    noise_level: float


def load_heat_reference_data(data_path: str | os.PathLike, indices: np.ndarray) -> HeatReferenceData:
    """Read operators, prior and the chosen samples; :class:`PdegrowError` if the file cannot serve."""
    where = str(data_path)
    with open_dataset(data_path, "heat") as f:
        config = json.loads(str(f.attrs["config"]))
        if str(f.attrs.get("noise_model", "relative")) != "relative":
            raise PdegrowError(f"{where}: noise model {f.attrs['noise_model']!r}; the heat reference "
                               "knows the relative model only")
        exact = bool(f.attrs.get("physics_operators_exact", True))
        if not exact or "observation_matrix" not in f["operators"]:
            raise PdegrowError(f"{where}: the stored operators are not the exact discrete model "
                               "(degree > 1); the heat reference needs a P1 data set")
        noise = float(f.attrs.get("noise_level", config.get("noise_level", 0.0)))
        ops = {k: f["operators"][k][()] for k in f["operators"]}
        geometry = {k: f["geometry"][k][()] for k in f["geometry"]}
        idx = np.asarray(indices, dtype=np.int64)
        y = f["inputs/observations"][idx]
        m_true = f["targets/log_conductivity"][idx]
        xi_true = f["targets/kl_coefficients"][idx] if "targets/kl_coefficients" in f else None
    if not np.all(np.isfinite(y)):
        raise PdegrowError(f"{where}: non-finite observations in the chosen samples")
    prior = prior_from_file(ops, geometry, config, where)
    hops = HeatOperators.from_arrays(ops, geometry, dtype=torch.float64)
    posterior = HeatPosterior(HeatForward(hops), prior, noise)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    return HeatReferenceData(posterior, prior, t(y), t(m_true), None if xi_true is None else t(xi_true),
                             hops.lumped_mass, config, noise)

"""Wind: mass conservation of a predicted field, and the wind metrics (error by height).

The mass-consistent wind model makes the target divergence-free, ∇·u = 0. A network's
û need not be; the physics term penalises its discrete divergence on the data set's grid,

    Φ_div(û) = (1 / (B·P)) Σ_b ‖D û_b‖²,

with D the stored grid divergence (``operators/grid_divergence_*``, P × 3P: second-order
differences in index space and the chain rule of the terrain-following map
z = h + σ(H − h), exact for fields linear in (x, y, z); see ``datasets/README.md``) and
û_b flattened from (3, n_z, n_y, n_x). Units 1/s². Its gradient is
∂Φ/∂û_b = (2/(B·P)) Dᵀ D û_b. The stored targets are divergence-free only up to the grid's
truncation error (their Φ_div is the floor; ``target_divergence``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pdegrow.errors import PdegrowError
from pdegrow.regularizers.terms import Forward, LossTerm

DIVERGENCE_KEYS = ("grid_divergence_data", "grid_divergence_indices", "grid_divergence_indptr")


def divergence_matrix(operators: dict[str, np.ndarray], dtype: torch.dtype = torch.float64,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """The stored CSR grid divergence D (P × 3P) as a sparse COO tensor (autograd through ``D @ x``)."""
    data, indices, indptr = (np.asarray(operators[k]) for k in DIVERGENCE_KEYS)
    n_rows = len(indptr) - 1
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    index = torch.as_tensor(np.stack([rows, indices]).astype(np.int64))
    return torch.sparse_coo_tensor(index, torch.as_tensor(data), (n_rows, 3 * n_rows), dtype=dtype,
                                   device=device, check_invariants=True).coalesce()


def grid_divergence(u: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """(∇·u) at the P grid points, (B, P), of fields ``u`` (B, 3, n_z, n_y, n_x) (or (B, 3P)): D u_b."""
    flat = u.reshape(u.shape[0], -1)
    return torch.sparse.mm(D, flat.T.to(D.dtype)).T.to(u.dtype)


def divergence_penalty(u: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Φ_div = (1/(B·P)) Σ_b ‖D u_b‖² (module docstring)."""
    return grid_divergence(u, D).pow(2).mean()


class WindDivergenceTerm(LossTerm):
    """``physics_weight`` · Φ_div of the physical prediction (the wind problem's physics term)."""

    name = "physics"

    def __init__(self, weight: float, D: torch.Tensor):
        super().__init__(weight)
        self.D = D

    def value(self, batch: Any, fwd: Forward) -> torch.Tensor:
        u = fwd.physical_prediction()
        if self.D.device != u.device or self.D.dtype != u.dtype:
            self.D = self.D.to(device=u.device, dtype=u.dtype)
        return divergence_penalty(u, self.D)


def wind_physics_terms(data: Any, physics_weight: float, model_constrained_weight: float) -> list[LossTerm]:
    """The wind problem's global physics terms: Φ_div when ``physics_weight`` > 0."""
    if model_constrained_weight > 0:
        raise PdegrowError("model_constrained_weight applies to the heat problem, not to wind")
    if physics_weight <= 0:
        return []
    missing = [k for k in DIVERGENCE_KEYS if k not in data.operators]
    if missing:
        raise PdegrowError(f"physics_weight > 0 on wind needs the grid divergence operator; {data.path} has "
                           f"no operators/{missing[0]} (only terrain = \"fixed\" data sets store it)")
    if data.cfg.target not in ("targets/velocity", "targets/velocity_columns"):
        raise PdegrowError(f"physics_weight > 0 on wind needs [data] target = 'targets/velocity' or "
                           f"'targets/velocity_columns' (the grid field), not {data.cfg.target!r}")
    return [WindDivergenceTerm(physics_weight, divergence_matrix(data.operators))]


def wind_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample wind metrics (each (B,)) of grid fields (B, 3, n_z, n_y, n_x) (or the conv layout
    (B, 3·n_z, n_y, n_x) of ``targets/velocity_columns``): ``mse_target`` (mean squared
    error of u, (m/s)²) and ``rel_error_level{k}`` = ‖û_k − u_k‖/‖u_k‖ on grid level k (0 = the ground),
    NaN where ‖u_k‖ = 0."""
    b = pred.shape[0]
    out = {"mse_target": (pred - target).reshape(b, -1).pow(2).mean(1)}
    if pred.ndim == 4 and pred.shape[1] % 3 == 0:     # targets/velocity_columns: (B, 3·n_z, n_y, n_x)
        pred, target = (a.reshape(b, 3, -1, *a.shape[2:]) for a in (pred, target))
    if pred.ndim == 5:
        diff = (pred - target).transpose(1, 2).reshape(b, pred.shape[2], -1).norm(dim=2)   # (B, n_z)
        ref = target.transpose(1, 2).reshape(b, pred.shape[2], -1).norm(dim=2)
        rel = torch.where(ref > 0, diff / torch.where(ref > 0, ref, 1.0), torch.nan)
        for k in range(pred.shape[2]):
            out[f"rel_error_level{k}"] = rel[:, k]
    return out

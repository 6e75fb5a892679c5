"""Physics regularizers for the steady heat problem −∇·(e^m ∇T) = f (``docs/architecture.md``).

Discrete form (P1 elements, the operators stored in the data file):

    K(κ) = Σ_c  mean(κ[cells[c]]) · K_c      (K_c the unit-coefficient local stiffness,
                                               scattered to the nodes cells[c])
    residual  r(m, T) = (K(e^m) T − F)[free nodes]      (T = 0 on the Dirichlet nodes)

* Φ_p = mean_b ‖r(m_pred,b, T_b)‖² / ‖F_free‖²  — the physics-reinforced penalty
  with the training temperature T_b (Krishnanunni & Bui-Thanh, arXiv 2211.06860);
* model-constrained form: T̂ = K_ff(e^{m_pred})⁻¹ F_f (dense batched solve),
  Φ_mc = mean_b ‖B T̂ − y_b‖² / mean_b ‖y_b‖² (compare at the sensors).

When the network predicts KL coefficients ξ, m_pred = m̄ + Φ (√λ ⊙ ξ)
(:func:`kl_to_field`). Everything is batched torch (``index_add_``), on the
tensors' device, differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pdegrow.regularizers.terms import Forward, LossTerm


@dataclass
class HeatOperators:
    """The heat problem's discrete operators as tensors (one device, one dtype)."""

    cells: torch.Tensor            # (C, 3) long
    cell_stiffness: torch.Tensor   # (C, 3, 3)
    load: torch.Tensor             # (N,)
    free: torch.Tensor             # (N_free,) long: non-Dirichlet nodes
    observation: torch.Tensor | None  # (S, N); None in files that lack it (degree > 1, before it was written)
    lumped_mass: torch.Tensor      # (N,)
    kl_basis: torch.Tensor | None = None        # (N, n_modes)
    kl_eigenvalues: torch.Tensor | None = None  # (n_modes,)
    prior_mean: torch.Tensor | None = None      # (N,)

    @property
    def n_nodes(self) -> int:
        return int(self.load.shape[0])

    @classmethod
    def from_arrays(cls, ops: dict[str, np.ndarray], geometry: dict[str, np.ndarray],
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> HeatOperators:
        """From ``operators/…`` and ``geometry/…`` arrays of a heat data file (names without the group)."""
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)

        n = int(np.asarray(ops["load_vector"]).shape[0])
        dirichlet = np.asarray(ops["dirichlet_nodes"], dtype=np.int64)
        free = np.setdiff1d(np.arange(n), dirichlet)
        return cls(
            cells=torch.as_tensor(np.asarray(geometry["cells"], dtype=np.int64), device=device),
            cell_stiffness=t(ops["cell_stiffness"]), load=t(ops["load_vector"]),
            free=torch.as_tensor(free, device=device),
            observation=t(ops["observation_matrix"]) if "observation_matrix" in ops else None,
            lumped_mass=t(ops["lumped_mass"]),
            kl_basis=t(ops["kl_basis"]) if "kl_basis" in ops else None,
            kl_eigenvalues=t(ops["kl_eigenvalues"]) if "kl_eigenvalues" in ops else None,
            prior_mean=t(ops["prior_mean"]) if "prior_mean" in ops else None,
        )


def kl_to_field(xi: torch.Tensor, prior_mean: torch.Tensor, basis: torch.Tensor,
                eigenvalues: torch.Tensor) -> torch.Tensor:
    """m = m̄ + Φ (√λ ⊙ ξ) for a batch ξ (B, n_modes) → (B, N)."""
    return prior_mean + (xi * eigenvalues.sqrt()) @ basis.T


def cell_conductivity(m: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """κ_c = mean of e^m over the vertices of each cell: (B, N) → (B, C)."""
    return torch.exp(m)[:, cells].mean(-1)


def stiffness_action(m: torch.Tensor, T: torch.Tensor, cells: torch.Tensor,
                     cell_stiffness: torch.Tensor) -> torch.Tensor:
    """K(e^m) T for batches m, T (B, N), without forming K: Σ_c κ_c K_c T[cells[c]] scattered."""
    kappa = cell_conductivity(m, cells)                                   # (B, C)
    local = torch.einsum("cij,bcj->bci", cell_stiffness, T[:, cells])     # (B, C, 3)
    out = torch.zeros_like(T)
    out.index_add_(1, cells.reshape(-1), (kappa[:, :, None] * local).reshape(T.shape[0], -1))
    return out


def heat_residual(m: torch.Tensor, T: torch.Tensor, ops: HeatOperators) -> torch.Tensor:
    """r = (K(e^m) T − F) on the free nodes: (B, N_free)."""
    r = stiffness_action(m, T, ops.cells, ops.cell_stiffness) - ops.load
    return r[:, ops.free]


def physics_penalty(m: torch.Tensor, T: torch.Tensor, ops: HeatOperators) -> torch.Tensor:
    """Φ_p = mean_b ‖r_b‖² / ‖F_free‖² (relative, so 0 ≤ Φ_p and Φ_p(true m, T) ≈ 0)."""
    r = heat_residual(m, T, ops)
    return r.pow(2).sum(1).mean() / ops.load[ops.free].pow(2).sum()


def dense_stiffness(m: torch.Tensor, ops: HeatOperators) -> torch.Tensor:
    """The assembled K(e^m) as a dense batch (B, N, N) (for small meshes)."""
    b, n = m.shape[0], ops.n_nodes
    kappa = cell_conductivity(m, ops.cells)                               # (B, C)
    vals = kappa[:, :, None, None] * ops.cell_stiffness                   # (B, C, 3, 3)
    rows = ops.cells[:, :, None].expand(-1, 3, 3)
    cols = ops.cells[:, None, :].expand(-1, 3, 3)
    flat = (rows * n + cols).reshape(-1)
    K = torch.zeros(b, n * n, dtype=m.dtype, device=m.device)
    K.index_add_(1, flat, vals.reshape(b, -1))
    return K.reshape(b, n, n)


def _free_block_scatter(ops: HeatOperators) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each local entry (c, i, j) goes in the flattened free–free block K_ff, and which
    local entries have both nodes free: (flat indices, mask over C·9)."""
    nf = int(ops.free.shape[0])
    pos = torch.full((ops.n_nodes,), -1, dtype=torch.long, device=ops.cells.device)
    pos[ops.free] = torch.arange(nf, device=ops.cells.device)
    p = pos[ops.cells]                                                    # (C, 3)
    rows, cols = p[:, :, None].expand(-1, 3, 3), p[:, None, :].expand(-1, 3, 3)
    mask = ((rows >= 0) & (cols >= 0)).reshape(-1)
    return (rows * nf + cols).reshape(-1)[mask], mask


def free_stiffness(m: torch.Tensor, ops: HeatOperators) -> torch.Tensor:
    """K_ff(e^m), the free–free block of the stiffness matrix, as a dense batch (B, N_f, N_f)."""
    flat, mask = _free_block_scatter(ops)
    nf = int(ops.free.shape[0])
    kappa = cell_conductivity(m, ops.cells)                               # (B, C)
    vals = (kappa[:, :, None, None] * ops.cell_stiffness).reshape(m.shape[0], -1)[:, mask]
    K = torch.zeros(m.shape[0], nf * nf, dtype=m.dtype, device=m.device)
    K.index_add_(1, flat, vals)
    return K.reshape(-1, nf, nf)


def solve_temperature(m: torch.Tensor, ops: HeatOperators) -> torch.Tensor:
    """T(m): K_ff(e^m) T_f = F_f, T = 0 on the Dirichlet nodes;
    (B, N), differentiable in m."""
    K = free_stiffness(m, ops)
    rhs = ops.load[ops.free].expand(m.shape[0], -1).unsqueeze(-1)
    T = torch.zeros_like(m)
    T[:, ops.free] = torch.linalg.solve(K, rhs).squeeze(-1)
    return T


def model_constrained_penalty(m: torch.Tensor, y: torch.Tensor, ops: HeatOperators) -> torch.Tensor:
    """Φ_mc = mean_b ‖B T(m_b) − y_b‖² / mean_b ‖y_b‖²."""
    pred = solve_temperature(m, ops) @ ops.observation.T
    return (pred - y).pow(2).sum(1).mean() / y.pow(2).sum(1).mean()


def field_from_prediction(pred: torch.Tensor, target: str, ops: HeatOperators) -> torch.Tensor:
    """The log-conductivity m (B, N) from a physical-unit prediction of ``target``."""
    if target.endswith("kl_coefficients"):
        if ops.kl_basis is None:
            raise ValueError("KL coefficients predicted but the file has no KL basis")
        return kl_to_field(pred.reshape(pred.shape[0], -1), ops.prior_mean, ops.kl_basis, ops.kl_eigenvalues)
    if target.endswith("log_conductivity"):
        return pred.reshape(pred.shape[0], -1)
    raise ValueError(f"no log-conductivity field can be formed from target {target!r}")


class HeatPhysicsTerm(LossTerm):
    """Φ_p with the predicted m and the batch's true temperature (``batch.aux[temperature]``)."""

    name = "physics"

    def __init__(self, weight: float, ops: HeatOperators, target: str,
                 temperature: str = "targets/temperature"):
        super().__init__(weight)
        self.ops, self.target, self.temperature = ops, target, temperature

    def value(self, batch: Any, fwd: Forward) -> torch.Tensor:
        m = field_from_prediction(fwd.physical_prediction(), self.target, self.ops)
        T = batch.aux[self.temperature].to(m.dtype)
        return physics_penalty(m, T, self.ops)


class ModelConstrainedTerm(LossTerm):
    """Φ_mc: solve with the predicted conductivity, compare with the input observations at the sensors."""

    name = "model_constrained"

    def __init__(self, weight: float, ops: HeatOperators, target: str):
        super().__init__(weight)
        self.ops, self.target = ops, target

    def value(self, batch: Any, fwd: Forward) -> torch.Tensor:
        m = field_from_prediction(fwd.physical_prediction(), self.target, self.ops)
        y = fwd.to_physical_input(batch.inputs).reshape(m.shape[0], -1).to(m.dtype)
        return model_constrained_penalty(m, y, self.ops)

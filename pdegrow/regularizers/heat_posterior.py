"""The negative log posterior of the heat inverse problem as a training loss (label-free).

With the KL prior ξ ~ N(0, I), m = m̄ + Φ(√λ ⊙ ξ), and the relative noise model of the heat
files, y_s = T_s(ξ)(1 + σ ε_s), ε_s ~ N(0, 1), the likelihood of sensor s is N(T_s, σ² T_s²), so

    −log π(ξ | y) = ½‖ξ‖² + Σ_s log |T_s(ξ)| + ½ Σ_s ((y_s − T_s(ξ)) / (σ T_s(ξ)))² + const,

T(ξ) = B K_ff(e^m)⁻¹ F_f the observed temperatures (the dense batched solve of
:func:`pdegrow.regularizers.heat_physics.solve_temperature`). Evaluated at a network's
prediction ξ̂(y) for each training input y, it is the loss of an *amortised MAP* estimator:
its minimiser over networks maps every y to its MAP point, and, unlike the supervised loss
against the true ξ, it carries no label noise (the true ξ scatters around E[ξ | y] by the full
posterior spread). This is the model-constrained / data-consistency idea of the heat papers'
physics-informed losses (Krishnanunni & Bui-Thanh, arXiv 2211.06860) written with the exact
likelihood instead of a plain residual; each evaluation costs one forward solve per input.
"""

from __future__ import annotations

from typing import Any

import torch

from pdegrow.reference.heat_forward import relative_noise_nll
from pdegrow.regularizers.heat_physics import HeatOperators, kl_to_field, solve_temperature
from pdegrow.regularizers.terms import Forward, LossTerm


def kl_neg_log_posterior(xi: torch.Tensor, y: torch.Tensor, ops: HeatOperators,
                         noise_level: float) -> torch.Tensor:
    """−log π(ξ | y) + const for a batch: ξ (B, K), y (B, S) → (B,), differentiable in ξ."""
    if ops.kl_basis is None or ops.prior_mean is None or ops.kl_eigenvalues is None:
        raise ValueError("the negative log posterior in KL coordinates needs the file's KL basis")
    m = kl_to_field(xi, ops.prior_mean, ops.kl_basis, ops.kl_eigenvalues)
    T = solve_temperature(m, ops) @ ops.observation.T
    return 0.5 * xi.pow(2).sum(-1) + relative_noise_nll(T, y, noise_level)


class PosteriorTerm(LossTerm):
    """mean_b −log π(ξ̂(y_b) | y_b) / S over the batch (S sensors), y_b the raw observations."""

    name = "posterior"

    def __init__(self, weight: float, ops: HeatOperators, noise_level: float):
        super().__init__(weight)
        self.ops, self.noise_level = ops, float(noise_level)

    def value(self, batch: Any, fwd: Forward) -> torch.Tensor:
        dtype = self.ops.load.dtype
        xi = fwd.physical_prediction().reshape(fwd.prediction.shape[0], -1).to(dtype)
        y = fwd.to_physical_input(batch.inputs).reshape(xi.shape[0], -1).to(dtype)
        return kl_neg_log_posterior(xi, y, self.ops, self.noise_level).mean() / y.shape[1]

"""GradMax — grow neurons whose new weights get the largest gradient.

Evci, van Merriënboer, Unterthiner, Vladymyrov, Pedregosa, "GradMax: Growing
Neural Networks using Gradient Information", ICLR 2022.

New units in hidden layer i of an MLP block (notation of
:mod:`pdegrow.growth.statistics`): fan-in A = 0 and bias 0 (σ(0) = 0, so the
function is unchanged whatever the fan-out Ω), fan-out Ω (m × k). At A = 0
the gradient of J = (1/n)Σ_s ℓ_s w.r.t. the new fan-in is

    ∂J/∂A = σ′(0) Ωᵀ G,    G = E[∂ℓ/∂z x̃ᵀ]  (m × (d+1); GradMax's E[∂L/∂z_{l+1} h_{l−1}ᵀ])

(x̃ = [x; 1]: the bias is a fan-in column). Over fan-outs with orthogonal
columns of norm c (ΩᵀΩ = c² I_k), ‖∂J/∂A‖_F² = σ′(0)² ‖ΩᵀG‖_F² is maximised
by Ω = c·U_k, the top-k left singular vectors of G (Ky Fan), with maximum
σ′(0)² c² Σ_{j≤k} s_j². c is ``scale`` × the mean column norm of the existing
fan-out weights ("scaled to the existing weights"). The first gradient step
then moves A along −σ′(0) c U_kᵀ G = −σ′(0) c S_k V_kᵀ: the new fan-in rows are
the top right singular vectors of G — with whitened inputs (E[x̃x̃ᵀ] = I) and no
projection these are TINY's α_k, and U_k TINY's ω_k (see ``tests/test_strategies.py``).

**When**: the paper's fixed schedule — ``every`` epochs a growth event of
``neurons`` units, ``max_events`` times (round robin over the hidden layers,
``layer_choice``); ``every = 0`` grows on plateaus instead. Predicted change 0.

**How many**: at most the numerical rank of G (singular values above
``rank_tol``·s_max, default max(shape)·machine ε) — beyond it a fan-out U_k
column would be orthogonal to G and its unit would get no gradient. G has
rank ≤ the number of training samples, so with few samples this binds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pdegrow.errors import PdegrowError
from pdegrow.growth.base import GrowthContext, GrowthProposal, register_strategy
from pdegrow.growth.neurons import NeuronGrowth, activation_at_zero, activation_slope_at_zero, fan_layers
from pdegrow.growth.statistics import shared_statistics


def numerical_rank(matrix: Tensor, rel_tol: float | None = None) -> int:
    """Number of singular values above ``rel_tol``·s_max (default max(shape)·machine ε of the dtype,
    as ``numpy.linalg.matrix_rank``); 0 for a zero matrix."""
    s = torch.linalg.svdvals(matrix)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    tol = rel_tol if rel_tol is not None else max(matrix.shape) * torch.finfo(matrix.dtype).eps
    return int((s > tol * s[0]).sum())


def gradmax_fan_out(grad_cross: Tensor, k: int, norm: float, rel_tol: float | None = None) -> Tensor:
    """Ω = norm · U_k (m × k): the top-k left singular vectors of G = E[∂ℓ/∂z x̃ᵀ], each of norm ``norm``.

    k is capped at the numerical rank of G (:func:`numerical_rank`): a left
    singular vector of a zero singular value is orthogonal to every column of G,
    so a unit with that fan-out would get ∂J/∂α = σ′(0) ωᵀG = 0 — no gradient signal.
    """
    u, _, _ = torch.linalg.svd(grad_cross, full_matrices=False)
    k = min(int(k), numerical_rank(grad_cross, rel_tol))
    return norm * u[:, :k]


def fan_in_gradient(fan_out: Tensor, grad_cross: Tensor, slope: float = 1.0) -> Tensor:
    """∂J/∂A at A = 0: σ′(0) Ωᵀ G (k × (d+1); last column the bias)."""
    return slope * fan_out.T @ grad_cross


def new_weight_gradient_norm(fan_out: Tensor, grad_cross: Tensor, slope: float = 1.0) -> float:
    """‖∂J/∂A‖_F, the quantity GradMax maximises."""
    return float(fan_in_gradient(fan_out, grad_cross, slope).norm())


@register_strategy
class GradMaxStrategy(NeuronGrowth):
    """GradMax (see the module docstring); default schedule: every 50 epochs, 10 events."""

    name = "gradmax"

    def __init__(self, neurons: int = 4, every: int = 50, max_events: int = 10, max_params: int | None = None,
                 max_width: int | None = None, layer_choice: str = "cycle", scale: float = 1.0,
                 rank_tol: float | None = None):
        super().__init__(neurons=neurons, every=every, max_events=max_events, max_params=max_params,
                         max_width=max_width, layer_choice=layer_choice)
        self.scale = float(scale)
        self.rank_tol = None if rank_tol is None else float(rank_tol)

    def setup(self, ctx: GrowthContext) -> None:
        super().setup(ctx)
        for block in ctx.model.blocks:
            if hasattr(block, "layers") and activation_slope_at_zero(block) == 0.0:
                raise PdegrowError("gradmax needs σ′(0) ≠ 0 (zero fan-in gets no gradient otherwise), "
                                   "e.g. activation = 'tanh'")
            if hasattr(block, "layers") and activation_at_zero(block) != 0.0:
                raise PdegrowError("gradmax needs σ(0) = 0 to keep the function")

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        if (where := self.next_layer(ctx)) is None:
            return None
        key, k = where
        stats = shared_statistics(ctx).layers[key]
        first, second = fan_layers(ctx.model, key)
        g = stats.grad_cross
        rank = numerical_rank(g, self.rank_tol)
        k = min(k, rank)
        if k < 1:   # G = 0: no fan-out gives a new unit any gradient
            return None
        col_norm = float(second.weight.detach().double().norm(dim=0).mean())
        norm = self.scale * (col_norm if col_norm > 0 else 1.0)
        omega = gradmax_fan_out(g, k, norm, self.rank_tol)
        slope = activation_slope_at_zero(ctx.model.blocks[key[0]])
        zeros = torch.zeros(k, first.in_features, dtype=torch.float64)
        info: dict[str, Any] = {"gradient_norm": new_weight_gradient_norm(omega, g, slope),
                                "singular_values": [float(v) for v in torch.linalg.svdvals(g)[: k + 2]],
                                "fan_out_norm": norm, "rank": rank}
        return self.widen_proposal(key, zeros, torch.zeros(k, dtype=torch.float64), omega, 0.0, info)


__all__ = ["GradMaxStrategy", "fan_in_gradient", "gradmax_fan_out", "new_weight_gradient_norm",
           "numerical_rank"]

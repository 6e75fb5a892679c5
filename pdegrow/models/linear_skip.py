"""A linear skip path from the (normalised) input to the (normalised) output, and its ridge fit.

The network with a skip computes

    output = L(y) + f_θ(y),   L(y) = W vec(y) + b   (reshaped to the target's shape),

``f_θ`` the residual network (lift, blocks, head). With ``L`` the ridge estimator of the training pairs
(labelled and simulated, in the units the network sees) and frozen, ``f_θ`` learns the residual of the
linear estimator; growth only changes ``f_θ``, so an insertion that keeps ``f_θ`` keeps the whole
function, and the topological derivative (which differentiates the loss with respect to the states of
``f_θ``) sees the skip only through the residual it leaves.

Ridge with an unpenalised intercept, on n pairs (x_i, y_i) ∈ R^p × R^q, x̄, ȳ the means,
X_c = X − x̄, Y_c = Y − ȳ, G = X_cᵀ X_c / n, C = X_cᵀ Y_c / n:

    Wᵀ = (G + λ I)⁻¹ C,   b = ȳ − Wx̄,

i.e. the minimiser of (1/n) Σ_i ‖W x_i + b − y_i‖² + λ ‖W‖²_F. λ is per sample, so it compares with
the feature variances (1 for per-pixel standardised inputs). Over a grid of λ one eigendecomposition
G = V diag(s) Vᵀ serves all: Wᵀ_λ = V diag(1/(s + λ)) Vᵀ C (:func:`ridge_path`), and the λ with the
lowest validation mean squared error is kept (:func:`fit_ridge`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pdegrow.errors import PdegrowError
from pdegrow.models.spec import SpecModule, register_block

#: λ tried on the validation split when none is given: 10⁻⁶ … 10 in half decades.
LAMBDA_GRID: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-12, 3))

#: The largest skip (output × input entries) built: 2²⁶ = 67 M (256 MB in float32).
MAX_ENTRIES = 1 << 26


@register_block
class LinearSkip(SpecModule):
    """L(y) = W vec(y) + b, reshaped to ``out_shape``: a dense linear map input → output.

    ``trainable = False`` holds W, b as buffers (saved with the weights, never in the optimizer and not
    counted as parameters: the frozen ridge); ``True`` as parameters. ``lam`` records the ridge λ the
    weights came from (informational; None when they were not fitted)."""

    kind = "linear_skip"

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], trainable: bool = False,
                 lam: float | None = None):
        super().__init__()
        self.in_shape, self.out_shape = [int(s) for s in in_shape], [int(s) for s in out_shape]
        self.trainable, self.lam = bool(trainable), None if lam is None else float(lam)
        p, q = math.prod(self.in_shape), math.prod(self.out_shape)
        if p * q > MAX_ENTRIES:
            raise PdegrowError(f"linear skip: a dense map of {p} inputs to {q} outputs has {p * q} entries "
                               f"(at most {MAX_ENTRIES}); use linear_skip = 'none' for data this large")
        weight, bias = torch.zeros(q, p), torch.zeros(q)
        if self.trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return (y.flatten(1) @ self.weight.T + self.bias).reshape(y.shape[0], *self.out_shape)

    def zero_init(self) -> None:
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()

    @torch.no_grad()
    def set_map(self, weight_t: torch.Tensor, bias: torch.Tensor, lam: float | None = None) -> None:
        """W ← ``weight_t``ᵀ (``weight_t`` of shape (p, q)), b ← ``bias``; ``lam`` is recorded."""
        self.weight.copy_(weight_t.T.to(self.weight))
        self.bias.copy_(bias.to(self.bias))
        self.lam = None if lam is None else float(lam)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
                "trainable": self.trainable, "lam": self.lam}


def _centred(x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = x.flatten(1).double(), y.flatten(1).double()
    xm, ym = x.mean(0), y.mean(0)
    return x - xm, y - ym, xm, ym


def ridge_solve(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(Wᵀ, b) of the ridge estimator with an unpenalised intercept (module docstring), for one λ;
    in float64 by a Cholesky solve of (G + λI) Wᵀ = C."""
    xc, yc, xm, ym = _centred(x, y)
    n, p = xc.shape
    g = xc.T @ xc / n + lam * torch.eye(p, dtype=torch.float64)
    wt = torch.linalg.solve(g, xc.T @ yc / n)
    return wt, ym - xm @ wt


def ridge_path(x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
               lams: Sequence[float]) -> tuple[list[float], tuple[torch.Tensor, torch.Tensor, float]]:
    """Validation mean squared error of the ridge estimator for each λ of ``lams`` (one
    eigendecomposition of G for all), and (Wᵀ, b, λ) of the λ with the lowest."""
    if not lams or any(not (lam > 0 and math.isfinite(lam)) for lam in lams):
        raise PdegrowError(f"ridge: every λ must be finite and > 0 (got {list(lams)})")
    xc, yc, xm, ym = _centred(x, y)
    n = xc.shape[0]
    s, v = torch.linalg.eigh(xc.T @ xc / n)
    s = s.clamp_min(0.0)
    b_rot = v.T @ (xc.T @ yc / n)                        # Vᵀ C
    z = (x_val.flatten(1).double() - xm) @ v             # validation inputs in the eigenbasis
    yv = y_val.flatten(1).double() - ym
    errors = [float((((z / (s + lam)) @ b_rot) - yv).pow(2).mean()) for lam in lams]
    best = min(range(len(lams)), key=errors.__getitem__)
    lam = float(lams[best])
    wt = v @ (b_rot / (s + lam)[:, None])
    return errors, (wt, ym - xm @ wt, lam)


def fit_ridge(x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor | None, y_val: torch.Tensor | None,
              lam: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, float, list[float]]:
    """(Wᵀ, b, λ, validation errors over :data:`LAMBDA_GRID`) — ``lam`` > 0: that λ (no errors);
    ``lam`` = 0: the grid's λ with the lowest validation error (needs the validation pairs)."""
    if lam > 0:
        wt, b = ridge_solve(x, y, lam)
        return wt, b, float(lam), []
    if x_val is None or y_val is None or len(x_val) == 0:
        raise PdegrowError("linear skip: choosing λ needs a validation split (or set linear_skip_lambda > 0)")
    errors, (wt, b, chosen) = ridge_path(x, y, x_val, y_val, LAMBDA_GRID)
    return wt, b, chosen, errors


__all__ = ["LAMBDA_GRID", "LinearSkip", "fit_ridge", "ridge_path", "ridge_solve"]

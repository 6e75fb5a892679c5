"""L-BFGS on a batch of independent problems, each with its own history and step length.

Minimises f_b(x_b), b = 1…B, x_b ∈ ℝᴰ, at once: one call of ``fun`` evaluates every
still-active problem (one batched forward/adjoint solve), and problems leave the batch
when they converge. Each problem keeps its own curvature pairs (s_k, y_k) and its own
Armijo backtracking, so the result is that of B separate L-BFGS runs (Nocedal & Wright,
*Numerical Optimization*, 2nd ed., Alg. 7.4 two-loop recursion and Alg. 3.1 backtracking):

    d = −H_k g,   H_k from the last ``history`` pairs with ρ_k = 1/(y_kᵀs_k),
    H⁰ = (s_kᵀy_k / y_kᵀy_k) I;   accept x + t d once f(x + t d) ≤ f(x) + c₁ t gᵀd, else t ← t/2.

A pair is kept only when y_kᵀs_k > 1e-10 ‖s_k‖‖y_k‖ (curvature condition), so H_k stays
positive definite without a Wolfe line search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: fun(x (b, D), rows (b,) indices of the problems in the batch) → (f (b,), grad (b, D))
Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LbfgsResult:
    x: torch.Tensor            # (B, D) minimisers
    f: torch.Tensor            # (B,) final values
    grad_norm: torch.Tensor    # (B,) final ‖∇f‖∞
    iterations: torch.Tensor   # (B,) iterations done
    converged: torch.Tensor    # (B,) bool: met ftol or gtol
    evaluations: int           # batched calls of ``fun``


def two_loop(g: torch.Tensor, s: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """H g by the two-loop recursion, batched: g (B, D); s, y (m, B, D), oldest first; valid (m, B)."""
    sy = (s * y).sum(-1)
    rho = torch.where(valid, 1.0 / torch.where(valid, sy, 1.0), 0.0)
    q = g.clone()
    alpha = torch.zeros_like(rho)
    for k in range(s.shape[0] - 1, -1, -1):
        alpha[k] = rho[k] * (s[k] * q).sum(-1)
        q = q - alpha[k, :, None] * y[k]
    gamma = torch.ones_like(rho[0])
    for k in range(s.shape[0]):               # the newest valid pair sets the scaling
        yy = (y[k] * y[k]).sum(-1)
        gamma = torch.where(valid[k], sy[k] / torch.where(valid[k], yy, 1.0), gamma)
    r = gamma[:, None] * q
    for k in range(s.shape[0]):
        beta = rho[k] * (y[k] * r).sum(-1)
        r = r + (alpha[k] - beta)[:, None] * s[k]
    return r


def minimize(fun: Objective, x0: torch.Tensor, *, max_iter: int = 200, history: int = 10,
             gtol: float = 1e-6, ftol: float = 1e-9, max_backtracks: int = 20, c1: float = 1e-4,
             first_step: float | None = None, callback: Callable[[int, int], None] | None = None
             ) -> LbfgsResult:
    """Minimise each row's f_b from ``x0`` (B, D).

    Stops a row when ‖∇f_b‖∞ ≤ gtol, or when an accepted step lowers f_b by less than
    ftol·max(1, |f_b|), or after ``max_iter`` iterations. ``first_step``: length of the
    first (steepest-descent) step, default 1/‖g‖∞ capped at 1. ``callback(iteration, n_active)``
    is called once per iteration (progress bars).
    """
    x = x0.detach().clone()
    B, D = x.shape
    all_rows = torch.arange(B, device=x.device)
    f, g = fun(x, all_rows)
    f, g = f.detach().clone(), g.detach().clone()
    evaluations = 1
    s_hist = torch.zeros(history, B, D, dtype=x.dtype, device=x.device)
    y_hist = torch.zeros_like(s_hist)
    valid = torch.zeros(history, B, dtype=torch.bool, device=x.device)
    iters = torch.zeros(B, dtype=torch.long, device=x.device)
    converged = g.abs().amax(-1) <= gtol
    active = ~converged
    for it in range(max_iter):
        rows = all_rows[active]
        if len(rows) == 0:
            break
        gr = g[rows]
        d = -two_loop(gr, s_hist[:, rows], y_hist[:, rows], valid[:, rows])
        slope = (gr * d).sum(-1)
        bad = slope >= 0                                     # not a descent direction: restart
        if bool(bad.any()):
            d[bad] = -gr[bad]
            slope = (gr * d).sum(-1)
            valid[:, rows[bad]] = False
        t = torch.ones(len(rows), dtype=x.dtype, device=x.device)
        fresh = ~valid[:, rows].any(0)
        if bool(fresh.any()):
            t0 = 1.0 / gr[fresh].abs().amax(-1).clamp_min(1.0) if first_step is None else \
                torch.full_like(t[fresh], first_step)
            t[fresh] = t0
        pending = torch.ones(len(rows), dtype=torch.bool, device=x.device)
        x_new, f_new, g_new = x[rows].clone(), f[rows].clone(), g[rows].clone()
        for _ in range(max_backtracks):
            idx = pending.nonzero().squeeze(-1)
            xt = x[rows[idx]] + t[idx, None] * d[idx]
            ft, gt = fun(xt, rows[idx])
            ft, gt = ft.detach(), gt.detach()
            evaluations += 1
            ok = torch.isfinite(ft) & (ft <= f[rows[idx]] + c1 * t[idx] * slope[idx])
            acc = idx[ok]
            x_new[acc], f_new[acc], g_new[acc] = xt[ok], ft[ok], gt[ok]
            pending[acc] = False
            t[idx[~ok]] *= 0.5
            if not bool(pending.any()):
                break
        moved = ~pending
        # rows whose line search failed stop here (no progress possible along this model)
        s_k, y_k = x_new - x[rows], g_new - g[rows]
        sy = (s_k * y_k).sum(-1)
        keep = moved & (sy > 1e-10 * s_k.norm(dim=-1) * y_k.norm(dim=-1))
        s_hist[:, rows] = torch.roll(s_hist[:, rows], -1, dims=0)
        y_hist[:, rows] = torch.roll(y_hist[:, rows], -1, dims=0)
        valid[:, rows] = torch.roll(valid[:, rows], -1, dims=0)
        s_hist[-1, rows], y_hist[-1, rows], valid[-1, rows] = s_k, y_k, keep
        decrease = f[rows] - f_new
        x[rows], f[rows], g[rows] = x_new, f_new, g_new
        iters[rows] += 1
        done = (g_new.abs().amax(-1) <= gtol) | (moved & (decrease <= ftol * f_new.abs().clamp_min(1.0)))
        converged[rows] = done
        active[rows] = ~done & moved
        if callback is not None:
            callback(it + 1, int(active.sum()))
    return LbfgsResult(x=x, f=f, grad_norm=g.abs().amax(-1), iterations=iters, converged=converged,
                       evaluations=evaluations)

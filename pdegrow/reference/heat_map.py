"""MAP and Laplace approximation of the heat posterior, batched over samples and starts.

MAP: Gauss–Newton (Fisher scoring) in the white-noise coordinates ξ,

    ξ ← ξ − α H⁻¹ ∇f(ξ),   H = I + J̃ᵀJ̃,   J̃ = diag(√c) ∂t/∂ξ,  c_s = (1 + 2σ²)/(σ² t_s²),

with Armijo backtracking on the exact f (Nocedal & Wright, *Numerical Optimization*, §10.3),
H⁻¹ by a dense solve when dim ξ ≤ 2S and by the Woodbury identity
H⁻¹g = g − J̃ᵀ(I_S + J̃J̃ᵀ)⁻¹J̃g otherwise (full-field priors: the data part has rank ≤ S).
Every sample starts from ξ = 0 and from prior draws; two converged starts are distinct
local optima when their ξ differ by more than ``distinct_tol``.

Laplace (Bui-Thanh, Ghattas, Martin & Stadler 2013, SIAM J. Sci. Comput. 35:A2494):
ξ | y ≈ N(ξ_MAP, H⁻¹) with H the Gauss–Newton Hessian at the MAP, so m | y is Gaussian
with mean m_MAP and covariance G H⁻¹ Gᵀ, whose diagonal is diag(GGᵀ) − diag(U (I + J̃J̃ᵀ)⁻¹ Uᵀ),
U = G J̃ᵀ; the lognormal mean E[e^m] = exp(m_MAP + ½ var m) approximates the posterior mean of e^m.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pdegrow.reference.heat_forward import HeatPosterior


@dataclass
class MapResult:
    xi: torch.Tensor            # (n, d) best MAP per sample
    f: torch.Tensor             # (n,)
    grad_norm: torch.Tensor     # (n,) ‖∇f‖∞ at the MAP
    converged: torch.Tensor     # (n,) bool
    n_optima: torch.Tensor      # (n,) distinct converged local optima over the starts
    iterations: int             # Gauss–Newton iterations of the slowest start
    starts_xi: torch.Tensor     # (n, starts, d) every start's end point
    starts_f: torch.Tensor      # (n, starts)


def gauss_newton_step(grad: torch.Tensor, jt: torch.Tensor) -> torch.Tensor:
    """−H⁻¹ g with H = I + J̃ᵀJ̃ for batches g (B, d), J̃ (B, S, d)."""
    b, s, d = jt.shape
    if d <= 2 * s:
        H = torch.eye(d, dtype=jt.dtype, device=jt.device) + jt.transpose(1, 2) @ jt
        return -torch.linalg.solve(H, grad[..., None])[..., 0]
    small = torch.eye(s, dtype=jt.dtype, device=jt.device) + jt @ jt.transpose(1, 2)
    inner = torch.linalg.solve(small, (jt @ grad[..., None]))
    return -(grad - (jt.transpose(1, 2) @ inner)[..., 0])


def gauss_newton(posterior: HeatPosterior, y: torch.Tensor, xi0: torch.Tensor, *, max_iter: int = 60,
                 gtol: float = 1e-7, c1: float = 1e-4, max_backtracks: int = 30, max_step: float = 5.0,
                 callback: Callable[[int, int], None] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Minimise f(ξ_b) for every row b; returns (ξ, f, ‖∇f‖∞, converged, iterations)."""
    xi = xi0.clone()
    B = xi.shape[0]
    f = torch.full((B,), torch.inf, dtype=xi.dtype)
    gnorm = torch.full((B,), torch.inf, dtype=xi.dtype)
    active = torch.ones(B, dtype=torch.bool)
    stalled = torch.zeros(B, dtype=torch.bool)
    it = 0
    for it in range(1, max_iter + 1):
        rows = active.nonzero().squeeze(1)
        if len(rows) == 0:
            it -= 1
            break
        ev = posterior.jacobian(xi[rows], y[rows])
        f[rows] = ev.f
        gnorm[rows] = ev.grad.abs().amax(1)
        done = gnorm[rows] < gtol
        active[rows[done]] = False
        keep = ~done
        rows, fx, g = rows[keep], ev.f[keep], ev.grad[keep]
        if len(rows) == 0:
            break
        step = gauss_newton_step(g, posterior.gauss_newton(ev)[keep])
        norm = step.norm(dim=1, keepdim=True)       # a step beyond the prior's bulk is never sensible
        step = step * (max_step / norm).clamp(max=1.0)
        slope = (g * step).sum(1)
        alpha = torch.ones(len(rows), dtype=xi.dtype)
        pending = torch.ones(len(rows), dtype=torch.bool)
        for _ in range(max_backtracks):
            p = pending.nonzero().squeeze(1)
            trial = xi[rows[p]] + alpha[p, None] * step[p]
            ft = posterior.value(trial, y[rows[p]]).f
            ok = torch.isfinite(ft) & (ft <= fx[p] + c1 * alpha[p] * slope[p])
            xi[rows[p[ok]]] = trial[ok]
            f[rows[p[ok]]] = ft[ok]
            pending[p[ok]] = False
            alpha[p[~ok]] *= 0.5
            if not pending.any():
                break
        # no decrease possible: at the optimum to rounding (or a failed direction) — stop that row
        stalled_rows = rows[pending]
        stalled[stalled_rows] = True
        active[stalled_rows] = False
        if callback is not None:
            callback(it, int(active.sum()))
    if active.any() or stalled.any():   # final gradients of rows that stopped without the gtol check
        rows = (active | stalled).nonzero().squeeze(1)
        ev = posterior.gradient(xi[rows], y[rows])
        f[rows], gnorm[rows] = ev.f, ev.grad.abs().amax(1)
    converged = gnorm < max(gtol, 1e-5)
    return xi, f, gnorm, converged, it


def multistart_map(posterior: HeatPosterior, y: torch.Tensor, *, n_starts: int = 4, seed: int = 0,
                   start_scale: float = 1.0, distinct_tol: float = 1e-2, max_iter: int = 60,
                   gtol: float = 1e-7, callback: Callable[[int, int], None] | None = None) -> MapResult:
    """Gauss–Newton from ξ = 0 and ``n_starts − 1`` prior draws (× ``start_scale``) per sample."""
    n, d = y.shape[0], posterior.dim
    gen = torch.Generator().manual_seed(int(seed))
    starts = torch.zeros(n, n_starts, d, dtype=y.dtype)
    if n_starts > 1:
        starts[:, 1:] = start_scale * torch.randn(n, n_starts - 1, d, generator=gen, dtype=y.dtype)
    xi, f, gnorm, conv, it = gauss_newton(posterior, y.repeat_interleave(n_starts, 0), starts.reshape(-1, d),
                                          max_iter=max_iter, gtol=gtol, callback=callback)
    xi, f, gnorm, conv = (a.reshape(n, n_starts, *a.shape[1:]) for a in (xi, f, gnorm, conv))
    f_masked = torch.where(conv, f, torch.inf)
    f_masked = torch.where(conv.any(1, keepdim=True), f_masked, f)
    best = f_masked.argmin(1)
    ar = torch.arange(n)
    n_optima = torch.zeros(n, dtype=torch.long)
    for i in range(n):   # distinct converged end points (greedy clustering)
        reps: list[torch.Tensor] = []
        for k in conv[i].nonzero().squeeze(1).tolist():
            if all((xi[i, k] - r).norm() > distinct_tol for r in reps):
                reps.append(xi[i, k])
        n_optima[i] = len(reps)
    return MapResult(xi[ar, best], f[ar, best], gnorm[ar, best], conv[ar, best], n_optima, it, xi, f)


@dataclass
class LaplaceResult:
    xi_cov: torch.Tensor | None     # (n, d, d) H⁻¹ (small d only)
    hessian: torch.Tensor | None    # (n, d, d) H (small d only)
    var_m: torch.Tensor             # (n, N) pointwise posterior variance of m
    mean_m: torch.Tensor            # (n, N) = m_MAP
    mean_exp_m: torch.Tensor        # (n, N) = exp(m_MAP + ½ var m)


def laplace(posterior: HeatPosterior, y: torch.Tensor, xi_map: torch.Tensor, prior_variance: torch.Tensor,
            batch: int = 64) -> LaplaceResult:
    """The Gaussian approximation at the MAP with the Fisher Gauss–Newton Hessian."""
    prior = posterior.prior
    d = posterior.dim
    covs, hs, vars_, means = [], [], [], []
    for start in range(0, len(y), batch):
        sl = slice(start, start + batch)
        ev = posterior.jacobian(xi_map[sl], y[sl])
        jt = posterior.gauss_newton(ev)                                    # (b, S, d)
        s = jt.shape[1]
        if d <= 2 * s:
            H = torch.eye(d, dtype=y.dtype) + jt.transpose(1, 2) @ jt
            cov = torch.linalg.inv(H)
            cov = 0.5 * (cov + cov.transpose(1, 2))
            G = prior.G
            var = torch.einsum("nk,bkl,nl->bn", G, cov, G)
            covs.append(cov)
            hs.append(H)
        else:
            U = prior.push(jt)                                             # (b, S, N) = (G J̃ᵀ)ᵀ
            small = torch.eye(s, dtype=y.dtype) + jt @ jt.transpose(1, 2)
            var = prior_variance - torch.einsum("bsn,bsn->bn", U, torch.linalg.solve(small, U))
        vars_.append(var.clamp_min(0.0))
        means.append(ev.m)
    var_m, mean_m = torch.cat(vars_), torch.cat(means)
    return LaplaceResult(torch.cat(covs) if covs else None, torch.cat(hs) if hs else None, var_m, mean_m,
                         torch.exp(mean_m + 0.5 * var_m))

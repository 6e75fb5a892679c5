"""Posterior sampling for the heat problem: a mixture of two Metropolis–Hastings kernels.

Both leave π(ξ | y) ∝ exp(−f(ξ)) invariant, so alternating them does too (Tierney 1994,
Ann. Statist. 22:1701), and each costs one forward solve per chain (batched over
samples × chains):

* independence proposals from a multivariate t_ν fitted to the posterior,
  ξ' = μ + A z, z ~ t_ν(0, I), accepted with probability min(1, exp(w(ξ') − w(ξ))),
  w(ξ) = −f(ξ) − log q(ξ), log q(ξ) = −½(ν + d) log(1 + ‖A⁻¹(ξ − μ)‖²/ν) + const:
  global moves; the heavy tails keep w bounded where the posterior has heavier tails than a
  Gaussian (where an independence or pCN sampler with a Gaussian reference gets stuck);
* random-walk proposals ξ' = ξ + s A ε, ε ~ N(0, I), accepted with probability
  min(1, exp(f(ξ) − f(ξ'))): local moves, s adapted per sample towards acceptance 0.3
  during the warm-up (adaptive Metropolis, Haario, Saksman & Tamminen 2001, Bernoulli 7:223;
  the adaptation stops before the draws that are kept).

(μ, A Aᵀ) is the Laplace approximation (ξ_MAP, H⁻¹) at first; at two thirds and at the end of
the warm-up μ becomes the mean of the draws since its first third (pooled over chains) and
A Aᵀ the average of their covariance and H⁻¹.

Chains start overdispersed (ξ₀ = ξ_MAP + 1.5 A z, z ~ N(0, I)) so that split-R̂
(:mod:`pdegrow.reference.diagnostics`) can detect chains that have not mixed. Samples whose
R̂ exceeds the threshold after a block of ``steps`` draws get their proposal refitted to that
block (mean and covariance of its C × steps draws), everything drawn so far counts as warm-up,
and a new block is drawn, up to ``max_steps`` steps in all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pdegrow.reference.diagnostics import ess, split_rhat
from pdegrow.reference.heat_forward import HeatPosterior


@dataclass
class McmcResult:
    mean_xi: torch.Tensor       # (n, d)
    mean_m: torch.Tensor        # (n, N)
    mean_exp_m: torch.Tensor    # (n, N)
    std_m: torch.Tensor         # (n, N)
    rhat: np.ndarray            # (n, d) split-R̂ per coefficient
    ess: np.ndarray             # (n, d)
    acceptance: np.ndarray      # (2, n) of the independence and the random-walk moves after warm-up
    scale: np.ndarray           # (n,) random-walk step scale s
    draws_per_chain: np.ndarray  # (n,) draws kept per chain (after the last adaptation)
    steps_run: np.ndarray       # (n,) total steps after warm-up


def moment_fit(draws: torch.Tensor, jitter: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and Cholesky factor A (Σ = A Aᵀ) of pooled draws (n, T, d) per sample."""
    mu = draws.mean(1)
    xc = draws - mu[:, None]
    cov = xc.transpose(1, 2) @ xc / (draws.shape[1] - 1)
    d = cov.shape[-1]
    cov = cov + jitter * torch.eye(d, dtype=cov.dtype) * cov.diagonal(dim1=1, dim2=2).mean(1)[:, None, None]
    return mu, torch.linalg.cholesky(cov)


def t_log_density(xi: torch.Tensor, mu: torch.Tensor, A: torch.Tensor, nu: float) -> torch.Tensor:
    """log q(ξ) of the multivariate t_ν(μ, A Aᵀ) up to a constant that does not depend on (μ, A)·ξ:
    −½(ν + d) log(1 + ‖A⁻¹(ξ − μ)‖²/ν) − log det A."""
    z = torch.linalg.solve_triangular(A, (xi - mu)[..., None], upper=False)[..., 0]
    logdet = torch.log(A.diagonal(dim1=1, dim2=2)).sum(1)
    return -0.5 * (nu + xi.shape[1]) * torch.log1p((z**2).sum(1) / nu) - logdet


def sample_posterior(posterior: HeatPosterior, y: torch.Tensor, xi_map: torch.Tensor, hessian: torch.Tensor,
                     *, chains: int = 4, warmup: int = 600, steps: int = 1000, max_steps: int = 4000,
                     rhat_max: float = 1.05, nu: int = 5, target: float = 0.3, seed: int = 0,
                     callback: Callable[[str, int, int], None] | None = None) -> McmcResult:
    """Sample π(ξ | y_i) for every row i of y with ``chains`` chains each (see the module docstring)."""
    n, d = xi_map.shape
    dt = y.dtype
    gen = torch.Generator().manual_seed(int(seed))
    L = torch.linalg.cholesky(hessian)
    eye = torch.eye(d, dtype=dt).expand(n, d, d)
    A = torch.linalg.solve_triangular(L, eye, upper=False).transpose(1, 2)      # L⁻ᵀ: A Aᵀ = H⁻¹
    A = torch.linalg.cholesky(A @ A.transpose(1, 2))                             # lower-triangular factor
    C = chains
    rep = lambda a: a.repeat_interleave(C, 0)  # noqa: E731  rows (sample, chain), chain fastest
    y_r, mu_r, A_r = rep(y), rep(xi_map), rep(A)
    xi = mu_r + 1.5 * torch.einsum("bij,bj->bi", A_r, torch.randn(n * C, d, generator=gen, dtype=dt))
    ev = posterior.value(xi, y_r)
    f, m = torch.where(torch.isfinite(ev.f), ev.f, torch.inf), ev.m
    log_scale = torch.full((n,), math.log(2.38 / math.sqrt(d)), dtype=dt)

    def propose(rows: torch.Tensor, local: bool, scale_rows: torch.Tensor | None = None) -> torch.Tensor:
        """One Metropolis–Hastings step of one kernel on the (sample, chain) rows; accepted mask."""
        nonlocal xi, f, m
        eps = torch.randn(len(rows), d, generator=gen, dtype=dt)
        if local:
            xp = xi[rows] + scale_rows[:, None] * torch.einsum("bij,bj->bi", A_r[rows], eps)
        else:   # z ~ t_ν = ε / √(χ²_ν/ν)
            g = (torch.randn(len(rows), nu, generator=gen, dtype=dt) ** 2).sum(1)       # χ²_ν
            xp = mu_r[rows] + torch.einsum("bij,bj->bi", A_r[rows], eps / torch.sqrt(g / nu)[:, None])
        evp = posterior.value(xp, y_r[rows])
        fp = torch.where(torch.isfinite(evp.f), evp.f, torch.inf)
        log_ratio = f[rows] - fp
        if not local:
            log_ratio = log_ratio + t_log_density(xi[rows], mu_r[rows], A_r[rows], nu) \
                - t_log_density(xp, mu_r[rows], A_r[rows], nu)
        u = torch.rand(len(rows), generator=gen, dtype=dt)
        acc = (torch.log(u) < log_ratio) & torch.isfinite(fp)
        idx = rows[acc]
        xi[idx], f[idx], m[idx] = xp[acc], fp[acc], evp.m[acc]
        return acc

    def step(rows: torch.Tensor, scale_rows: torch.Tensor) -> torch.Tensor:
        """Independence move then random-walk move; the accepted masks (2, rows)."""
        return torch.stack([propose(rows, local=False), propose(rows, local=True, scale_rows=scale_rows)])

    all_rows = torch.arange(n * C)
    third = max(warmup // 3, 1)
    cov_laplace = A @ A.transpose(1, 2)
    history: list[torch.Tensor] = []
    for t in range(warmup):
        acc = step(all_rows, torch.exp(log_scale).repeat_interleave(C))[1]
        rate = acc.to(dt).reshape(n, C).mean(1)
        log_scale = log_scale + (rate - target) / math.sqrt(t % third + 1.0)
        if t >= third:
            history.append(xi.reshape(n, C, d).clone())
        if t in (2 * third - 1, warmup - 1) and len(history) * C > 2 * d:
            # refit (μ, Σ) on the draws since the first third, shrunk halfway to the Laplace covariance
            # (few effective draws make the empirical covariance alone a poor proposal)
            mu, A_emp = moment_fit(torch.stack(history, 2).reshape(n, -1, d))
            A = torch.linalg.cholesky(0.5 * (A_emp @ A_emp.transpose(1, 2) + cov_laplace))
            mu_r, A_r = rep(mu), rep(A)
        if callback is not None:
            callback("warm-up", t + 1, warmup)
    scale = torch.exp(log_scale)

    # sampling in blocks of ``steps`` draws; per block the draws of ξ and the sums of m, m², e^m
    blocks_xi: list[list[np.ndarray]] = [[] for _ in range(n)]
    blocks_sum: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in range(n)]
    accepted = torch.zeros(2, n, dtype=dt)
    steps_run = np.zeros(n, dtype=np.int64)
    todo = torch.arange(n)
    rhat = np.full((n, d), np.inf)
    first_kept = [0] * n
    while len(todo):
        rows = (todo[:, None] * C + torch.arange(C)).reshape(-1)
        k = len(todo)
        draws = np.empty((k, C, steps, d), dtype=np.float32)
        s_m = torch.zeros(k, m.shape[1], dtype=dt)
        s_m2, s_e = torch.zeros_like(s_m), torch.zeros_like(s_m)
        scale_rows = scale[todo].repeat_interleave(C)
        for t in range(steps):
            acc = step(rows, scale_rows)
            accepted[:, todo] += acc.to(dt).reshape(2, k, C).sum(2)
            draws[:, :, t] = xi[rows].reshape(k, C, d).numpy()
            mm = m[rows].reshape(k, C, -1)
            s_m += mm.sum(1)
            s_m2 += (mm**2).sum(1)
            s_e += torch.exp(mm).sum(1)
            if callback is not None:
                callback("sampling", t + 1, steps)
        steps_run[todo.numpy()] += steps
        still = []
        for j, i in enumerate(todo.tolist()):
            blocks_xi[i].append(draws[j])
            blocks_sum[i].append((s_m[j], s_m2[j], s_e[j]))
            use = blocks_xi[i][first_kept[i]:]
            rhat[i] = split_rhat(np.concatenate(use, axis=1).transpose(2, 0, 1))
            if not np.all(rhat[i] <= rhat_max) and steps_run[i] + steps <= max_steps:
                still.append(i)
        if still:
            # not yet converged: refit those samples' proposals on their latest block (C × steps draws,
            # pooled), count what was drawn so far as warm-up and draw a new block with the refitted kernel
            sel = torch.as_tensor(still, dtype=torch.long)
            latest = torch.as_tensor(np.stack([blocks_xi[i][-1] for i in still]), dtype=dt)   # (k, C, T, d)
            mu, A_new = moment_fit(latest.reshape(len(still), -1, d))
            rows_sel = (sel[:, None] * C + torch.arange(C)).reshape(-1)
            mu_r[rows_sel], A_r[rows_sel] = rep(mu), rep(A_new)
            for i in still:
                first_kept[i] = len(blocks_xi[i])
        todo = torch.as_tensor(still, dtype=torch.long)

    N = m.shape[1]
    mean_xi = torch.zeros(n, d, dtype=dt)
    mean_m, mean_e, std_m = (torch.zeros(n, N, dtype=dt) for _ in range(3))
    ess_out = np.zeros((n, d))
    used = np.zeros(n, dtype=np.int64)
    for i in range(n):
        first = first_kept[i]
        x = np.concatenate(blocks_xi[i][first:], axis=1)               # (C, T, d)
        cnt = x.shape[1] * C
        used[i] = x.shape[1]
        sm = sum(b[0] for b in blocks_sum[i][first:])
        sm2 = sum(b[1] for b in blocks_sum[i][first:])
        se = sum(b[2] for b in blocks_sum[i][first:])
        mean_m[i], mean_e[i] = sm / cnt, se / cnt
        std_m[i] = (sm2 / cnt - mean_m[i] ** 2).clamp_min(0).sqrt()
        mean_xi[i] = torch.as_tensor(x.astype(np.float64).mean((0, 1)))
        ess_out[i] = ess(x.transpose(2, 0, 1))
    acceptance = (accepted / torch.as_tensor(steps_run * C, dtype=dt)).numpy()
    return McmcResult(mean_xi, mean_m, mean_e, std_m, rhat, ess_out, acceptance, scale.numpy(), used,
                      steps_run)

"""Bayesian references for heat data sets: ``map``, ``laplace`` and ``mcmc``.

Each method returns per-sample errors in the trainer's metrics, computed with the
estimator that minimises each (E[m | y] for errors in m, E[e^m | y] for errors in e^m):

| method | m estimate | e^m estimate |
|---|---|---|
| ``map`` | m_MAP | e^{m_MAP} |
| ``laplace`` | m_MAP (the Laplace mean) | exp(m_MAP + ½ var m) (its lognormal mean) |
| ``mcmc`` | posterior mean of m | posterior mean of e^m |

``rel_error_target`` is the error in the network's target: the KL coefficients ξ (KL
prior) or the nodal m (full-field prior). ``map_*`` errors are kept beside the others.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pdegrow.errors import PdegrowError
from pdegrow.reference.heat_data import HeatReferenceData, load_heat_reference_data
from pdegrow.reference.heat_map import laplace, multistart_map
from pdegrow.reference.heat_mcmc import sample_posterior
from pdegrow.reference.results import ReferenceResult

#: callback(stage, done, total): progress of a stage ("MAP", "warm-up", "sampling", …)
Progress = Callable[[str, int, int], None]


def relative_errors(est: torch.Tensor, true: torch.Tensor,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """‖est − true‖ / ‖true‖ per row (weighted: √(Σ w d²) / √(Σ w t²)), as the trainer's metrics."""
    if weights is None:
        return (est - true).norm(dim=1) / true.norm(dim=1).clamp_min(1e-30)
    return ((weights * (est - true) ** 2).sum(1) / (weights * true**2).sum(1).clamp_min(1e-30)).sqrt()


def field_errors(data: HeatReferenceData, mean_m: torch.Tensor, mean_exp_m: torch.Tensor,
                 xi: torch.Tensor | None, prefix: str = "") -> dict[str, np.ndarray]:
    """The trainer's heat metrics for an estimate of m (nodal, L²) and of e^m, and of the target."""
    out = {
        "rel_error_field": relative_errors(mean_m, data.m_true),
        "rel_error_field_l2": relative_errors(mean_m, data.m_true, data.lumped_mass),
        "rel_error_conductivity": relative_errors(mean_exp_m, data.m_true.exp()),
    }
    if data.xi_true is not None and xi is not None:
        out["rel_error_target"] = relative_errors(xi, data.xi_true)
    else:
        out["rel_error_target"] = out["rel_error_field"]
    return {prefix + k: v.numpy() for k, v in out.items()}


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def run_reference(data_path: str | os.PathLike, method: str, indices: np.ndarray, *,
                  starts: int | None = None, seed: int = 0, chains: int = 4, warmup: int = 300,
                  steps: int = 1000,
                  max_steps: int | None = None, rhat_max: float = 1.05, batch: int | None = None,
                  progress: Progress | None = None) -> ReferenceResult:
    """The ``method`` reference on the samples ``indices`` of a heat file (see the module docstring).

    ``starts``: multistart MAP starts per sample (ξ = 0 and prior draws; default 4 for a KL
    prior, 1 for a full-field prior); ``chains``, ``warmup``, ``steps``, ``max_steps``
    (default 4 × steps), ``rhat_max``: the sampler (KL prior only); ``batch``: samples solved at once.
    """
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    data = load_heat_reference_data(data_path, indices)
    kind = data.prior.kind
    if method == "mcmc" and kind != "kl":
        raise PdegrowError(f"{data_path}: 'mcmc' is implemented for the KL prior (a few coefficients); "
                           f"for the full-field {kind!r} prior use --method map or laplace")
    if starts is None:
        starts = 4 if kind == "kl" else 1
    if starts < 1 or chains < 2 or steps < 8 or warmup < 0:
        raise PdegrowError("need starts ≥ 1, chains ≥ 2, steps ≥ 8 and warmup ≥ 0")
    max_steps = 4 * steps if max_steps is None else max_steps
    if max_steps < steps:
        raise PdegrowError(f"--max-steps {max_steps} is below --steps {steps}")
    n = len(indices)
    batch = batch or (n if kind == "kl" else 16)
    post = data.posterior
    info: dict[str, Any] = {"prior": kind, "dim": post.dim, "noise_level": data.noise_level,
                            "n_sensors": int(data.y.shape[1]), "n_nodes": int(data.m_true.shape[1]),
                            "settings": {"starts": starts, "seed": seed}}

    # --- MAP (every method starts from it)
    parts = []
    n_chunks = len(_chunks(n, batch))
    for k, sl in enumerate(_chunks(n, batch)):
        cb = None if progress is None else (lambda it, active, k=k: progress("MAP", k, n_chunks))
        parts.append(multistart_map(post, data.y[sl], n_starts=starts, seed=seed + k, callback=cb))
    xi_map = torch.cat([p.xi for p in parts])
    converged = torch.cat([p.converged for p in parts])
    n_optima = torch.cat([p.n_optima for p in parts])
    m_map = data.prior.to_field(xi_map)
    info["map"] = {"converged": int(converged.sum()), "not_converged": int((~converged).sum()),
                   "samples_with_several_optima": int((n_optima > 1).sum()),
                   "max_grad_norm": float(torch.cat([p.grad_norm for p in parts]).max()),
                   "gauss_newton_iterations": max(p.iterations for p in parts)}
    estimates: dict[str, np.ndarray] = {"map_m": m_map.numpy(), "map_n_optima": n_optima.numpy()}
    if kind == "kl":
        estimates["map_xi"] = xi_map.numpy()
    map_errors = field_errors(data, m_map, m_map.exp(), xi_map if kind == "kl" else None)
    if progress is not None:
        progress("MAP", 1, 1)

    if method == "map":
        errors = map_errors
    else:
        prior_var = data.prior.variance()
        lap = [laplace(post, data.y[sl], xi_map[sl], prior_var) for sl in _chunks(n, batch)]
        var_m = torch.cat([r.var_m for r in lap])
        std_m = var_m.sqrt()
        inside = ((data.m_true - m_map).abs() <= 1.959964 * std_m).to(torch.float64)
        coverage = inside.mean(1)
        info["laplace"] = {"coverage_95": float(coverage.mean()),
                           "coverage_95_stderr": float(coverage.std() / np.sqrt(n)) if n > 1 else None}
        estimates.update({"laplace_std_m": std_m.numpy(), "laplace_coverage_95": coverage.numpy()})
        if method == "laplace":
            mean_exp = torch.cat([r.mean_exp_m for r in lap])
            estimates.update({"mean_m": m_map.numpy(), "mean_exp_m": mean_exp.numpy(),
                              "std_m": std_m.numpy()})
            errors = field_errors(data, m_map, mean_exp, xi_map if kind == "kl" else None)
        else:
            hessian = torch.cat([r.hessian for r in lap])
            res = sample_posterior(post, data.y, xi_map, hessian, chains=chains, warmup=warmup, steps=steps,
                                   max_steps=max_steps, rhat_max=rhat_max, seed=seed, callback=progress)
            rhat = res.rhat.max(1)
            info["mcmc"] = {"sampler": "independence-t + random-walk Metropolis", "chains": chains,
                            "warmup": warmup, "steps": steps, "max_steps": max_steps, "rhat_max": rhat_max,
                            "max_rhat": float(rhat.max()), "min_ess": float(res.ess.min()),
                            "median_min_ess": float(np.median(res.ess.min(1))),
                            "acceptance_independence": float(res.acceptance[0].mean()),
                            "acceptance_random_walk": float(res.acceptance[1].mean()),
                            "samples_extended": int((res.steps_run > steps).sum())}
            bad = rhat > rhat_max
            if bad.any():
                worst = int(np.argmax(rhat))
                raise PdegrowError(
                    f"MCMC did not converge: split-R̂ up to {rhat.max():.3f} > {rhat_max} on "
                    f"{int(bad.sum())} of {n} samples (worst: sample {int(indices[worst])}) after "
                    f"{max_steps} steps per chain; "
                    f"run longer (e.g. --steps {2 * steps} --max-steps {4 * max_steps}) "
                    "or with more --chains")
            estimates.update({"mean_m": res.mean_m.numpy(), "mean_exp_m": res.mean_exp_m.numpy(),
                              "std_m": res.std_m.numpy(), "mean_xi": res.mean_xi.numpy(),
                              "rhat": res.rhat, "ess": res.ess})
            errors = field_errors(data, res.mean_m, res.mean_exp_m, res.mean_xi)
        errors.update({"map_" + k: v for k, v in map_errors.items()})
    info["wall_s"] = round(time.perf_counter() - t0, 2)
    info["cpu_s"] = round(time.process_time() - cpu0, 2)
    info["torch_threads"] = torch.get_num_threads()
    return ReferenceResult("heat", method, np.asarray(indices, dtype=np.int64), errors, estimates, info)

"""Navier–Stokes Bayesian reference: 4D-Var MAP of w₀ from w(T) and its Laplace posterior.

``run_reference(data_path, "map" | "laplace", indices, **opts)`` reads a ``navier_stokes``
data set (P1, full field or sensors), rebuilds the generator's discrete dynamics in torch
(:mod:`~pdegrow.reference.ns_forward`, checked against the stored clean w(T) from the stored
w₀ on the selected samples before anything else), and

* ``map``: minimises the negative log posterior Φ(ξ) of :mod:`~pdegrow.reference.ns_posterior`
  (prior-whitened coordinates, the file's noise model σ = η·RMS(w(T)) with its log-determinant)
  by batched L-BFGS (:mod:`~pdegrow.reference.batched_lbfgs`) in Fourier-preconditioned
  coordinates, gradients by reverse-mode AD through the time stepping (the discrete adjoint);
* ``laplace``: the MAP, then the Fisher/Gauss–Newton Hessian of the likelihood at the MAP in
  low-rank form (:mod:`~pdegrow.reference.low_rank`: exact SVD of the Jacobian for sensors,
  randomised for the full field) and the pointwise posterior standard deviation of w₀, with
  the coverage of the pointwise 95 % intervals (|ŵ₀ − w₀| ≤ 1.96 std) on each sample.

The error is the networks' metric ``rel_error_target`` = ‖ŵ₀ − w₀‖/‖w₀‖ over the grid.

Noise level 0: the likelihood has no scale (σ = 0) and the MAP would be an exact
inversion of w(T), which is not what a noisy-data reference means; such files are refused
unless ``assumed_noise_level`` gives the σ/RMS to weight the misfit with.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pdegrow.contract import open_dataset
from pdegrow.errors import PdegrowError
from pdegrow.reference import batched_lbfgs, low_rank
from pdegrow.reference.allocator import keep_freed_memory
from pdegrow.reference.ns_forward import TorusP1Dynamics
from pdegrow.reference.ns_posterior import (
    NSPosterior,
    apply_multiplier,
    fourier_preconditioner,
    prior_pointwise_variance,
)
from pdegrow.reference.results import ReferenceResult

log = logging.getLogger(__name__)

PROBLEM = "navier_stokes"
OBSERVATIONS = ("full", "sensors")
#: options of ``run_reference`` and their defaults
DEFAULTS: dict[str, Any] = {
    "max_iter": 300,            # L-BFGS iterations per sample
    "gtol": 1e-5,               # stop when ‖∇Φ‖∞ (preconditioned coordinates) ≤ gtol
    "ftol": 1e-12,              # … or when a step lowers Φ by less than ftol·|Φ|
    "history": 10,              # L-BFGS pairs
    "batch_size": 50,           # samples optimised together
    "device": "auto",           # "auto" (CUDA when present), "cpu", "cuda", "cuda:1" …
    "rank": 256,                # Laplace: Hessian rank (full field; sensors are exact)
    "oversample": 10,
    "power_iters": 1,
    "chunk": 256,               # Laplace: fields per batched Jacobian product
    "seed": 0,                  # Laplace: random test vectors
    "checkpoint_every": 20,     # time steps recomputed in the adjoint instead of stored
    "assumed_noise_level": None,
    "forward_tolerance": 0.01,  # max relative L² mismatch to the stored clean w(T)
    "starts": 1,                # MAP starts: one, from the prior mean (the only value accepted)
    "progress": None,           # progress(stage, done, total), e.g. the CLI's progress bars
}


@dataclass
class NSData:
    """What the reference needs from one data set, for the selected samples."""

    resolution: int
    nu: float
    dt: float
    n_steps: int
    final_time: float
    time_scheme: str
    observation: str
    noise_level: float
    forcing: np.ndarray             # (R, R)
    prior_eigenvalues: np.ndarray   # (R, R)
    sensor_index: np.ndarray | None
    y: np.ndarray                   # (n, m)
    w0: np.ndarray                  # (n, R, R)
    clean: np.ndarray | None        # (n, m) clean observations, when stored


def _scheme(cfg: dict, attr: str) -> str:
    scheme = cfg.get("time_scheme")
    if scheme in ("cn_ab2", "cn_heun"):
        return scheme
    if "Adams-Bashforth" in attr:
        return "cn_ab2"
    if "Heun" in attr:
        return "cn_heun"
    raise PdegrowError(f"unknown Navier–Stokes time scheme {scheme or attr!r}")


def load_data(path: str | os.PathLike, indices: np.ndarray, assumed_noise_level: float | None = None
              ) -> NSData:
    """Read and check a ``navier_stokes`` file for the reference (one line per problem)."""
    with open_dataset(path, PROBLEM) as f:
        n_samples = int(f.attrs["n_samples"])
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= n_samples:
            raise PdegrowError(f"{path}: sample indices must lie in 0…{n_samples - 1}")
        if len(np.unique(idx)) != len(idx):
            raise PdegrowError(f"{path}: repeated sample indices")
        cfg = json.loads(str(f.attrs.get("config", "{}")))
        degree = int(f.attrs.get("degree", cfg.get("degree", 1)))
        if degree != 1:
            raise PdegrowError(f"{path}: the Navier–Stokes reference models P1 data only (degree {degree})")
        observation = str(f.attrs.get("observation", cfg.get("observation", "")))
        if observation not in OBSERVATIONS:
            raise PdegrowError(f"{path}: unknown observation kind {observation!r} "
                               f"(one of {', '.join(OBSERVATIONS)})")
        noise = float(f.attrs.get("noise_level", cfg.get("noise_level", 0.0)))
        if not noise > 0:
            if assumed_noise_level is None:
                raise PdegrowError(f"{path}: noise_level is {noise:g}: the likelihood has no scale and the "
                                   "MAP is ill-posed (an exact inversion); a reference needs noisy data "
                                   "(Python API: assumed_noise_level=… weights the misfit)")
            noise = float(assumed_noise_level)
            if not (noise > 0 and math.isfinite(noise)):
                raise PdegrowError(f"assumed_noise_level must be positive, got {assumed_noise_level}")
        for name in ("operators/forcing", "operators/prior_eigenvalues", "targets/vorticity_0"):
            if name not in f:
                raise PdegrowError(f"{path}: lacks {name}, which the Navier–Stokes reference needs")
        r = int(f.attrs.get("resolution", cfg.get("resolution", 0)))
        dt = float(f.attrs.get("dt", cfg.get("dt", 0.0)))
        final_time = float(f.attrs.get("final_time", cfg.get("final_time", 0.0)))
        if not (dt > 0 and final_time > 0):
            raise PdegrowError(f"{path}: dt and final_time must be positive (dt={dt}, T={final_time})")
        n_steps = round(final_time / dt)
        sensor_index = None
        sel = np.sort(idx)
        order = np.argsort(np.argsort(idx))                       # h5py reads sorted indices
        if observation == "full":
            y = f["inputs/vorticity_T"][sel].reshape(len(sel), -1)
            clean = (f["targets/vorticity_T"][sel].reshape(len(sel), -1) if "targets/vorticity_T" in f
                     else (y.copy() if noise == 0 else None))
        else:
            sensor_index = np.asarray(f["operators/sensor_index"][()], dtype=np.int64)
            if sensor_index.min() < 0 or sensor_index.max() >= r * r:
                raise PdegrowError(f"{path}: operators/sensor_index lies outside the {r}×{r} grid")
            y = f["inputs/observations"][sel]
            clean = f["inputs/observations_clean"][sel] if "inputs/observations_clean" in f else None
        data = NSData(
            resolution=r, nu=float(f.attrs.get("nu", cfg.get("nu", 0.0))), dt=dt, n_steps=n_steps,
            final_time=final_time, time_scheme=_scheme(cfg, str(f.attrs.get("time_scheme", ""))),
            observation=observation, noise_level=noise, forcing=f["operators/forcing"][()],
            prior_eigenvalues=f["operators/prior_eigenvalues"][()], sensor_index=sensor_index,
            y=np.asarray(y, dtype=np.float64)[order], w0=f["targets/vorticity_0"][sel][order],
            clean=None if clean is None else np.asarray(clean, dtype=np.float64)[order])
    if data.forcing.shape != (r, r) or data.prior_eigenvalues.shape != (r, r) or data.w0.shape[1:] != (r, r):
        raise PdegrowError(f"{path}: operator or field shapes do not match resolution {r}")
    if not np.all(np.isfinite(data.y)):
        raise PdegrowError(f"{path}: non-finite observations")
    return data


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise PdegrowError(f"unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PdegrowError(f"device {name!r}: CUDA is not available here")
    return dev


def build(data: NSData, device: torch.device, checkpoint_every: int = 20) -> NSPosterior:
    """The posterior of ``data`` on ``device``."""
    dyn = TorusP1Dynamics(data.resolution, data.nu, data.dt, data.n_steps, torch.as_tensor(data.forcing),
                          data.time_scheme, checkpoint_every, torch.float64, device)
    si = None if data.sensor_index is None else torch.as_tensor(data.sensor_index)
    return NSPosterior(dyn, torch.as_tensor(data.prior_eigenvalues), data.noise_level, si)


def forward_mismatch(post: NSPosterior, data: NSData) -> np.ndarray | None:
    """Per sample ‖obs(G(w₀)) − clean‖/‖clean‖ from the stored w₀ (None when no clean data is stored)."""
    if data.clean is None:
        return None
    dev = post.dynamics.device
    with torch.no_grad():
        obs = post.observe(post.dynamics(torch.as_tensor(data.w0, device=dev))).cpu().numpy()
    return np.linalg.norm(obs - data.clean, axis=1) / np.maximum(np.linalg.norm(data.clean, axis=1), 1e-300)


def sigma_estimate(y: torch.Tensor, noise_level: float, full: bool) -> torch.Tensor:
    """σ̂ = η RMS(y) (full field: / √(1+η²), as E mean(y²) = (1+η²) mean(w(T)²)): for the preconditioner."""
    rms = y.pow(2).mean(-1).sqrt()
    return noise_level * rms / (math.sqrt(1.0 + noise_level**2) if full else 1.0)


def compute_map(post: NSPosterior, y: torch.Tensor, final_time: float, nu: float, *, max_iter: int = 300,
                gtol: float = 1e-5, ftol: float = 1e-12, history: int = 10,
                callback: Callable[[int, int], None] | None = None
                ) -> tuple[torch.Tensor, batched_lbfgs.LbfgsResult]:
    """ξ* (B, R, R), the MAP in whitened coordinates, for observations y (B, m)."""
    r = post.dynamics.resolution
    dev = post.dynamics.device
    y = y.to(dev)
    sig = sigma_estimate(y, post.noise_level, post.sensor_index is None)
    pre = fourier_preconditioner(post.prior_eigenvalues, nu, final_time, post.n_obs, sig)

    def fun(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            eta = x.view(-1, r, r).detach().requires_grad_(True)
            total = post.terms(apply_multiplier(eta, pre[rows]), y[rows])["total"]
            (g,) = torch.autograd.grad(total.sum(), eta)
        return total.detach(), g.flatten(1)

    x0 = torch.zeros(len(y), r * r, dtype=torch.float64, device=dev)
    res = batched_lbfgs.minimize(fun, x0, max_iter=max_iter, gtol=gtol, ftol=ftol, history=history,
                                 callback=callback)
    return apply_multiplier(res.x.view(-1, r, r), pre), res


def laplace_std(post: NSPosterior, xi_map: torch.Tensor, *, rank: int = 256, oversample: int = 10,
                power_iters: int = 1, chunk: int = 256, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(std of w₀ (B, R, R), retained Fisher eigenvalues s² (B, k), exact) at the MAP ξ* (B, R, R)."""
    r = post.dynamics.resolution
    dev = post.dynamics.device
    B, D, m = len(xi_map), r * r, post.n_obs + 1
    xi_map = xi_map.detach()
    with torch.no_grad():
        sig_star = post.sigma(post.dynamics(post.initial_field(xi_map)))

    def rowwise(t: torch.Tensor, apply) -> torch.Tensor:
        k = t.shape[1]
        flat = t.reshape(B * k, -1)
        out = []
        for start in range(0, B * k, chunk):
            rows = torch.arange(start, min(start + chunk, B * k), device=dev) // k
            out.append(apply(xi_map[rows], sig_star[rows], flat[start:start + len(rows)]))
        return torch.cat(out).reshape(B, k, -1)

    def jvp_rows(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        fmap = post.fisher_map(s)
        with torch.no_grad(), warnings.catch_warnings():
            # torch.func's first use scripts a helper and warns that torch.jit.script is deprecated
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            return torch.func.jvp(fmap, (x,), (t.view(-1, r, r),))[1]

    def vjp_rows(x: torch.Tensor, s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        fmap = post.fisher_map(s)
        with torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fmap(xg), xg, u)
        return g.flatten(1)

    gen = torch.Generator(device=dev).manual_seed(int(seed))
    s, vh, exact = low_rank.jacobian_svd(lambda t: rowwise(t, jvp_rows), lambda u: rowwise(u, vjp_rows),
                                         B, D, m, rank, oversample, power_iters, gen, torch.float64, dev)
    var = low_rank.laplace_pointwise_variance(prior_pointwise_variance(post.symbol), s,
                                              vh.reshape(B, -1, r, r), post.initial_field)
    return var.sqrt(), s**2, exact


def run_reference(data_path: str | os.PathLike, method: str, samples: np.ndarray,
                  **opts: Any) -> ReferenceResult:
    """The ``map`` or ``laplace`` reference of a Navier–Stokes data set on the samples ``samples``."""
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise PdegrowError(f"navier_stokes reference: unknown option(s) {', '.join(unknown)} "
                           f"(known: {', '.join(DEFAULTS)})")
    if method not in ("map", "laplace"):
        raise PdegrowError(f"navier_stokes reference: method {method!r} is not implemented (map, laplace)")
    o = {**DEFAULTS, **opts}
    for key in ("max_iter", "history", "batch_size", "rank", "chunk", "checkpoint_every"):
        if int(o[key]) < 1:
            raise PdegrowError(f"navier_stokes reference: {key} must be a positive integer, got {o[key]}")
    if o["starts"] is not None and int(o["starts"]) != 1:
        raise PdegrowError("navier_stokes reference: the MAP uses one start (the prior mean); "
                           "starts must be 1")
    progress = o.pop("progress")
    indices = np.asarray(samples, dtype=np.int64).reshape(-1)
    data = load_data(data_path, indices, o["assumed_noise_level"])
    device = resolve_device(str(o["device"]))
    malloc_tuned = device.type == "cpu" and keep_freed_memory()
    post = build(data, device, int(o["checkpoint_every"]))
    t_start, cpu_start = time.perf_counter(), time.process_time()

    mismatch = forward_mismatch(post, data)
    if mismatch is not None and not float(mismatch.max()) < float(o["forward_tolerance"]):
        raise PdegrowError(f"{data_path}: the reference's dynamics reproduce the stored clean w(T) only to "
                           f"{float(mismatch.max()):.2%} (tolerance {float(o['forward_tolerance']):.2%}); "
                           "the file was not made by this generator's P1 scheme")

    n, r = len(indices), data.resolution
    y_all = torch.as_tensor(data.y, device=device)
    map_w0 = np.empty((n, r, r))
    std_w0 = np.empty((n, r, r)) if method == "laplace" else None
    iters, conv, misfit, sigma = (np.empty(n) for _ in range(4))
    eig_min, exact_all = np.full(n, np.nan), True
    bs = int(o["batch_size"])
    for start in range(0, n, bs):
        sl = slice(start, min(start + bs, n))

        def cb(it: int, active: int, start: int = start, stop: int = sl.stop) -> None:
            if progress is not None:
                progress("MAP", start + (stop - start - active), n)
        xi, res = compute_map(post, y_all[sl], data.final_time, data.nu, max_iter=int(o["max_iter"]),
                              gtol=float(o["gtol"]), ftol=float(o["ftol"]), history=int(o["history"]),
                              callback=cb)
        with torch.no_grad():
            terms = post.terms(xi, y_all[sl])
        map_w0[sl] = post.initial_field(xi).detach().cpu().numpy()
        iters[sl], conv[sl] = res.iterations.cpu().numpy(), res.converged.cpu().numpy()
        misfit[sl] = (2.0 * terms["misfit"] / post.n_obs).cpu().numpy()
        sigma[sl] = terms["sigma"].cpu().numpy()
        log.info("navier_stokes %s: samples %d–%d, L-BFGS %d iterations (max)", method, sl.start, sl.stop - 1,
                 int(iters[sl].max()))
        if std_w0 is not None:
            std, s2, exact = laplace_std(post, xi, rank=int(o["rank"]), oversample=int(o["oversample"]),
                                         power_iters=int(o["power_iters"]), chunk=int(o["chunk"]),
                                         seed=int(o["seed"]) + start)
            std_w0[sl] = std.cpu().numpy()
            eig_min[sl] = s2[:, -1].cpu().numpy()
            exact_all &= exact
            if progress is not None:
                progress("Laplace", sl.stop, n)

    err = np.linalg.norm((map_w0 - data.w0).reshape(n, -1), axis=1) / \
        np.maximum(np.linalg.norm(data.w0.reshape(n, -1), axis=1), 1e-300)
    estimates: dict[str, np.ndarray] = {"map_w0": map_w0, "map_iterations": iters,
                                        "map_converged": conv.astype(np.int8),
                                        "misfit_per_observation": misfit, "noise_sigma": sigma}
    info: dict[str, Any] = {
        "estimator": "MAP (4D-Var, exact noise model)" if method == "map"
        else "Laplace at the MAP (mean = MAP; low-rank Fisher/Gauss-Newton Hessian)",
        "problem_settings": {"observation": data.observation, "noise_level": data.noise_level,
                             "resolution": r, "final_time": data.final_time, "dt": data.dt,
                             "n_steps": data.n_steps, "nu": data.nu, "time_scheme": data.time_scheme},
        "device": str(device), "torch_threads": torch.get_num_threads(), "malloc_tuned": malloc_tuned,
        "options": {k: v for k, v in o.items() if v is None or isinstance(v, (int, float, str))},
        "forward_check_max_rel_error": None if mismatch is None else float(mismatch.max()),
        "map": {"converged": int(conv.sum()), "samples": n, "iterations_mean": float(iters.mean()),
                "iterations_max": int(iters.max()), "misfit_per_observation_mean": float(misfit.mean())},
        "wall_s": round(time.perf_counter() - t_start, 2), "cpu_s": round(time.process_time() - cpu_start, 2),
    }
    if std_w0 is not None:
        inside = np.abs(map_w0 - data.w0) <= 1.96 * std_w0
        estimates |= {"std_w0": std_w0, "coverage_95": inside.reshape(n, -1).mean(1),
                      "fisher_smallest_retained_eigenvalue": eig_min}
        info["laplace"] = {"exact": bool(exact_all), "rank": int(o["rank"]),
                           "coverage_95_mean": float(inside.mean()),
                           "smallest_retained_eigenvalue_max": float(np.nanmax(eig_min)),
                           "posterior_std_mean": float(std_w0.mean()),
                           "prior_std": math.sqrt(prior_pointwise_variance(post.symbol))}
    return ReferenceResult(problem=PROBLEM, method=method, sample_indices=indices,
                           errors={"rel_error_target": err}, estimates=estimates, info=info)

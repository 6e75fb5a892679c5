"""Observations simulated from the prior predictive of a Navier–Stokes file, with its own dynamics.

A ``navier_stokes`` data set (P1) holds everything its forward map needs (``operators/forcing``,
``operators/prior_eigenvalues``, ν, Δt, T, the time scheme, the sensors), and
:mod:`pdegrow.reference.ns_forward` re-runs the generator's discrete scheme in torch, reproducing
the stored w(T) from the stored w₀ to round-off. A draw j is then

    ξ ~ N(0, I_{R×R}),   w₀ = L ξ = R · IFFT(√λ ⊙ FFT(ξ))   (the generator's own prior draw),
    w(T) = G(w₀)   (n_steps time steps),   y = obs(w(T)) + σ ε,   σ = η · RMS_grid(w(T)),

ε ~ N(0, I_m): the file's additive noise model (η = ``noise_level``; obs = the whole grid or the
sensor nodes). Each draw costs one forward run of ``n_steps`` steps (no gradient, float64, batched);
no FEniCSx is involved. Draw j uses ``numpy.random.default_rng([seed, 104729, j])`` alone (ξ first,
then ε), so the draws do not depend on how many are asked for. Before any draw, the dynamics are
checked against the first stored sample (its clean w(T) from its w₀): a file whose dynamics this
model does not reproduce is refused rather than padded with samples of another law.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch

from pdegrow.errors import PdegrowError

log = logging.getLogger(__name__)

#: the arrays a simulated Navier–Stokes sample provides, per observation kind
NS_NAMES = {"full": ("inputs/vorticity_T", "targets/vorticity_T", "targets/vorticity_0"),
            "sensors": ("inputs/observations", "inputs/observations_clean", "targets/vorticity_0")}
#: the largest relative L² mismatch to the stored clean w(T) accepted before simulating
FORWARD_TOLERANCE = 1e-8


def ns_names(path: str | os.PathLike) -> tuple[str, ...]:
    """The arrays a simulated sample of the ``navier_stokes`` file ``path`` provides."""
    from pdegrow.contract import open_dataset

    with open_dataset(path, "navier_stokes") as f:
        cfg = json.loads(str(f.attrs.get("config", "{}")))
        observation = str(f.attrs.get("observation", cfg.get("observation", "")))
    if observation not in NS_NAMES:
        raise PdegrowError(f"simulated_inputs: {path}: unknown observation kind {observation!r}")
    return NS_NAMES[observation]


def simulate_ns_samples(path: str | os.PathLike, n: int, seed: int, chunk: int = 256,
                        device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """``n`` ≥ 1 prior-predictive samples of the ``navier_stokes`` file ``path`` (float64 arrays, first
    axis = draw), keyed like the file's own arrays (:data:`NS_NAMES` for its observation kind)."""
    if n < 1:
        raise PdegrowError(f"simulated_inputs: asked for {n} samples (at least 1)")
    from pdegrow.contract import open_dataset
    from pdegrow.reference.navier_stokes import build, forward_mismatch, load_data

    data = load_data(path, np.arange(1), assumed_noise_level=1.0)   # settings (+ one sample to check)
    with open_dataset(path, "navier_stokes") as f:
        noise_level = float(f.attrs.get("noise_level", 0.0))
    post = build(data, torch.device(device))
    mismatch = forward_mismatch(post, data)
    if mismatch is not None and not float(mismatch.max()) <= FORWARD_TOLERANCE:
        raise PdegrowError(f"simulated_inputs: {path}: the torch dynamics miss the stored w(T) by "
                           f"{float(mismatch.max()):.2e} (relative); refusing to simulate from another model")
    r, m = data.resolution, post.n_obs
    xi = np.empty((n, r, r))
    eps = np.empty((n, m))
    for j in range(n):
        rng = np.random.default_rng([int(seed), 104729, j])
        xi[j], eps[j] = rng.standard_normal((r, r)), rng.standard_normal(m)
    w0s, clean, noisy = [], [], []
    with torch.no_grad():
        for a in range(0, n, chunk):
            x = torch.as_tensor(xi[a:a + chunk], dtype=torch.float64, device=post.dynamics.device)
            w0 = post.initial_field(x)
            wT = post.dynamics(w0, checkpoint=False)
            obs = post.observe(wT)
            rms = wT.flatten(-2).pow(2).mean(-1).sqrt()
            y = obs + noise_level * rms[:, None] * torch.as_tensor(eps[a:a + chunk], dtype=torch.float64,
                                                                   device=obs.device)
            w0s.append(w0.cpu().numpy())
            clean.append(obs.cpu().numpy())
            noisy.append(y.cpu().numpy())
    log.info("simulated %d Navier–Stokes samples: %d forward runs × %d steps", n, n, data.n_steps)
    w0_all, clean_all, noisy_all = (np.concatenate(v) for v in (w0s, clean, noisy))
    if data.observation == "full":
        return {"inputs/vorticity_T": noisy_all.reshape(n, r, r),
                "targets/vorticity_T": clean_all.reshape(n, r, r), "targets/vorticity_0": w0_all}
    return {"inputs/observations": noisy_all, "inputs/observations_clean": clean_all,
            "targets/vorticity_0": w0_all}

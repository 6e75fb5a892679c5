"""Observations simulated from the prior predictive with the forward model stored in a heat file.

For a heat data set with a KL prior the file holds everything the forward map needs (cell
stiffness, load, Dirichlet nodes, observation matrix, KL basis): draw ξ ~ N(0, I),
m = m̄ + Φ(√λ ⊙ ξ), solve K_ff(e^m) T_f = F_f, observe y = B T (1 + σ ε), ε ~ N(0, I), the
file's relative noise. Each draw costs one forward solve (a dense batched solve of the free
nodes); no FEniCSx is involved. Draw j uses ``numpy.random.default_rng([seed, 104729, j])``
alone, so the draws do not depend on how many are asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from pdegrow.regularizers.heat_physics import HeatOperators, kl_to_field, solve_temperature


def simulate_heat_samples(ops: HeatOperators, n: int, noise_level: float, seed: int,
                          chunk: int = 512) -> dict[str, np.ndarray]:
    """``n`` prior-predictive samples: ``inputs/observations``, ``targets/kl_coefficients``,
    ``targets/log_conductivity``, ``targets/temperature`` (float64 arrays, first axis = draw)."""
    if ops.kl_basis is None or ops.kl_eigenvalues is None or ops.prior_mean is None:
        raise ValueError("simulated samples need a KL prior in the data file")
    if ops.observation is None:
        from pdegrow.errors import PdegrowError

        raise PdegrowError("simulated_inputs needs operators/observation_matrix, which this data file "
                           "lacks (a degree > 1 file of an older pdegrow: regenerate it)")
    k, s = ops.kl_basis.shape[1], ops.observation.shape[0]
    xi = np.empty((n, k))
    eps = np.empty((n, s))
    for j in range(n):
        rng = np.random.default_rng([int(seed), 104729, j])
        xi[j], eps[j] = rng.standard_normal(k), rng.standard_normal(s)
    out: dict[str, list[np.ndarray]] = {"inputs/observations": [], "targets/log_conductivity": [],
                                        "targets/temperature": []}
    with torch.no_grad():
        for a in range(0, n, chunk):
            x = torch.as_tensor(xi[a:a + chunk], dtype=ops.load.dtype, device=ops.load.device)
            m = kl_to_field(x, ops.prior_mean, ops.kl_basis, ops.kl_eigenvalues)
            T = solve_temperature(m, ops)
            y = (T @ ops.observation.T).cpu().numpy() * (1.0 + noise_level * eps[a:a + chunk])
            out["inputs/observations"].append(y)
            out["targets/log_conductivity"].append(m.cpu().numpy())
            out["targets/temperature"].append(T.cpu().numpy())
    result = {key: np.concatenate(v) if v else np.empty((0,)) for key, v in out.items()}
    result["targets/kl_coefficients"] = xi
    return result

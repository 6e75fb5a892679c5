"""The Gaussian priors of the heat data sets, in white-noise coordinates ξ ~ N(0, I).

Both priors are an affine map of standard normal coordinates, m = m̄ + G ξ, so the
negative log prior is ½‖ξ‖² and every reference works in ξ:

* ``kl`` (K modes): G = Φ diag(√λ), Φ the KL modes (orthonormal in the consistent P1 mass
  matrix M, ΦᵀMΦ = I), λ their eigenvalues; ξ are the stored ``kl_coefficients``.
* ``spde`` (Matérn ν = 1, full field, Lindgren, Rue & Lindström 2011): G = diag(s) A⁻¹ diag(√M_L)
  with A = δM + γK (consistent mass M, unit stiffness K = Σ_c K_c from ``cell_stiffness``,
  M_L the lumped mass) and s the node scaling to the marginal variance; ξ is nodal white
  noise (N coordinates). Needs ``operators/mass_matrix_*`` (CSR), ``operators/spde_coefficients``
  (δ, γ) and ``operators/spde_scale`` in the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from pdegrow.errors import PdegrowError

MASS_KEYS = ("mass_matrix_data", "mass_matrix_indices", "mass_matrix_indptr")


def consistent_mass(ops: dict[str, np.ndarray], where: str = "the data file") -> scipy.sparse.csr_matrix:
    """The consistent P1 mass matrix M_ij = ∫ φ_i φ_j dx stored as CSR arrays in a heat file."""
    missing = [k for k in MASS_KEYS if k not in ops]
    if missing:
        raise PdegrowError(f"{where} has no consistent mass matrix (operators/{missing[0]}): it was "
                           "written by an older pdegrow; regenerate it with 'pdegrow generate'")
    n = int(np.asarray(ops["load_vector"]).shape[0])
    data, indices, indptr = (np.asarray(ops[k]) for k in MASS_KEYS)
    if indptr.shape != (n + 1,) or indices.shape != data.shape or indptr[-1] != len(data) \
            or (len(indices) and (indices.min() < 0 or indices.max() >= n)):
        raise PdegrowError(f"{where}: operators/mass_matrix_* are not a valid {n}×{n} CSR matrix")
    return scipy.sparse.csr_matrix((data.astype(float), indices.astype(np.int64), indptr.astype(np.int64)),
                                   shape=(n, n))


def unit_stiffness(cells: np.ndarray, cell_stiffness: np.ndarray, n: int) -> scipy.sparse.csr_matrix:
    """K = Σ_c K_c scattered to the nodes cells[c] (unit-coefficient P1 stiffness), sparse."""
    rows = np.repeat(cells, 3, axis=1).reshape(-1)
    cols = np.tile(cells, (1, 3)).reshape(-1)
    return scipy.sparse.coo_matrix((cell_stiffness.reshape(-1), (rows, cols)), shape=(n, n)).tocsr()


@dataclass
class KLPrior:
    """m = m̄ + Φ (√λ ⊙ ξ): G = Φ diag(√λ) (N, K)."""

    mean: torch.Tensor      # (N,)
    G: torch.Tensor         # (N, K)
    kind: str = "kl"

    @property
    def dim(self) -> int:
        return int(self.G.shape[1])

    def to_field(self, xi: torch.Tensor) -> torch.Tensor:
        """m = m̄ + G ξ for a batch ξ (B, K) → (B, N)."""
        return self.mean + xi @ self.G.T

    def pullback(self, g: torch.Tensor) -> torch.Tensor:
        """Gᵀ g over the last axis: (…, N) → (…, K) (chain rule ∂/∂ξ = Gᵀ ∂/∂m)."""
        return g @ self.G

    def push(self, v: torch.Tensor) -> torch.Tensor:
        """G v over the last axis: (…, K) → (…, N) (no mean)."""
        return v @ self.G.T

    def variance(self) -> torch.Tensor:
        """Prior pointwise variance diag(G Gᵀ) (N,)."""
        return (self.G**2).sum(1)


class SPDEPrior:
    """m = m̄ + s ⊙ A⁻¹(√M_L ⊙ ξ), A = δM + γK symmetric, one sparse LU for every application."""

    kind = "spde"

    def __init__(self, mean: np.ndarray, mass: scipy.sparse.csr_matrix, stiffness: scipy.sparse.csr_matrix,
                 delta: float, gamma: float, scale: np.ndarray, lumped_mass: np.ndarray) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.lu = scipy.sparse.linalg.splu((delta * mass + gamma * stiffness).tocsc())
        self.scale = np.asarray(scale, dtype=float)
        self.sqrt_ml = np.sqrt(np.asarray(lumped_mass, dtype=float))
        self.n = len(self.scale)

    @property
    def dim(self) -> int:
        return self.n

    def _solve(self, x: np.ndarray) -> np.ndarray:
        """A⁻¹ applied to the last axis of x (…, N)."""
        flat = x.reshape(-1, self.n)
        return self.lu.solve(np.ascontiguousarray(flat.T)).T.reshape(x.shape)

    def push(self, v: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.scale * self._solve(self.sqrt_ml * v.detach().cpu().numpy()),
                               dtype=v.dtype, device=v.device)

    def to_field(self, xi: torch.Tensor) -> torch.Tensor:
        return self.mean.to(xi.device) + self.push(xi)

    def pullback(self, g: torch.Tensor) -> torch.Tensor:
        """Gᵀ g = √M_L ⊙ A⁻¹(s ⊙ g) (A symmetric)."""
        return torch.as_tensor(self.sqrt_ml * self._solve(self.scale * g.detach().cpu().numpy()),
                               dtype=g.dtype, device=g.device)

    def variance(self, block: int = 256) -> torch.Tensor:
        """diag(G Gᵀ) = s² ⊙ diag(A⁻¹ M_L A⁻¹), by blocks of unit vectors."""
        var = np.zeros(self.n)
        for start in range(0, self.n, block):
            cols = np.arange(start, min(start + block, self.n))
            e = np.zeros((len(cols), self.n))
            e[np.arange(len(cols)), cols] = self.sqrt_ml[cols]
            var += (self._solve(e) ** 2).sum(0)
        return torch.as_tensor(self.scale**2 * var, dtype=torch.float64)


def prior_from_file(ops: dict[str, np.ndarray], geometry: dict[str, np.ndarray], config: dict,
                    where: str = "the data file") -> KLPrior | SPDEPrior:
    """The prior the file was drawn from, or a :class:`PdegrowError` if the file does not describe it."""
    kind = config.get("prior")
    n = len(ops["load_vector"])
    mean = np.asarray(ops.get("prior_mean", np.full(n, float(config.get("prior_mean", 0.0)))))
    if kind == "kl":
        if "kl_basis" not in ops or "kl_eigenvalues" not in ops:
            raise PdegrowError(f"{where}: KL prior without operators/kl_basis and kl_eigenvalues")
        lam = np.asarray(ops["kl_eigenvalues"], dtype=float)
        G = np.asarray(ops["kl_basis"], dtype=float) * np.sqrt(lam)
        return KLPrior(torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(G, dtype=torch.float64))
    if kind == "spde":
        need = [k for k in ("spde_coefficients", "spde_scale") if k not in ops]
        if need:
            raise PdegrowError(f"{where}: the SPDE prior is not described in the file (no "
                               f"operators/{need[0]}); regenerate the data set with this pdegrow")
        mass = consistent_mass(ops, where)
        n = mass.shape[0]
        stiff = unit_stiffness(np.asarray(geometry["cells"], dtype=np.int64),
                               np.asarray(ops["cell_stiffness"], dtype=float), n)
        delta, gamma = (float(v) for v in np.asarray(ops["spde_coefficients"]).reshape(-1)[:2])
        return SPDEPrior(mean, mass, stiff, delta, gamma, np.asarray(ops["spde_scale"]), ops["lumped_mass"])
    raise PdegrowError(f"{where}: prior {kind!r} is not one the reference knows (kl, spde)")

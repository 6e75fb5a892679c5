"""The heat forward map y(ξ), its exact relative-noise posterior, gradient by the adjoint.

Discrete model (P1, the operators stored in the file; :mod:`pdegrow.regularizers.heat_physics`):
K(e^m) = Σ_c κ_c K_c with κ_c = mean of e^m over the cell's vertices, T solves
K_ff T_f = F_f on the free nodes (T = 0 on the Dirichlet nodes), the observations are
t = B T. With relative noise y_s = t_s (1 + σ ε_s), ε ~ N(0, 1), and the prior ξ ~ N(0, I),
m = m̄ + G ξ, the negative log posterior is (up to a constant)

    f(ξ) = ½‖ξ‖² + Σ_s log|t_s| + ½ Σ_s ((y_s − t_s)/(σ t_s))²,
    ∂f/∂t_s = 1/t_s − y_s (y_s − t_s)/(σ² t_s³).

Gradient by the adjoint: K w = Bᵀ ∂f/∂t (K symmetric), then
∂f/∂m_j = −wᵀ (∂K/∂m_j) T = −(e^{m_j}/3) Σ_{c ∋ j} w_cᵀ K_c T_c, and ∂f/∂ξ = ξ + Gᵀ ∂f/∂m.
The sensor Jacobian ∂t_s/∂m uses one adjoint per sensor (K w_s = B_sᵀ). The expected
(Fisher) Gauss–Newton weight per sensor is c_s = (1 + 2σ²)/(σ² t_s²), so the Gauss–Newton
Hessian in ξ is H = I + J_ξᵀ diag(c) J_ξ.

Solves are batched (samples × chains, float64): a dense LU for small meshes, a sparse LU
per sample (scipy) for large ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from pdegrow.regularizers.heat_physics import HeatOperators, cell_conductivity

#: free nodes up to which K_ff is factorised densely (batched); above, a sparse LU per sample
DENSE_LIMIT = 500


# ------------------------------------------------------------------- pure maths

def relative_noise_nll(t: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Σ_s log|t_s| + ½ ((y_s − t_s)/(σ t_s))²: −log N(y_s; t_s, σ² t_s²) up to a constant, (…, S) → (…)."""
    return (torch.log(t.abs()) + 0.5 * ((y - t) / (sigma * t)) ** 2).sum(-1)


def relative_noise_dnll(t: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """∂/∂t_s of :func:`relative_noise_nll`: 1/t_s − y_s (y_s − t_s)/(σ² t_s³)."""
    return 1.0 / t - y * (y - t) / (sigma**2 * t**3)


def fisher_weight(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Expected Fisher information of y ~ N(t, σ²t²) about t: (1 + 2σ²)/(σ² t²)."""
    return (1.0 + 2.0 * sigma**2) / (sigma**2 * t**2)


def stiffness_sensitivity(w: torch.Tensor, T: torch.Tensor, m: torch.Tensor, cells: torch.Tensor,
                          cell_stiffness: torch.Tensor) -> torch.Tensor:
    """−wᵀ (∂K(e^m)/∂m_j) T for every node j: the adjoint gradient's last step.

    K = Σ_c κ_c K_c, κ_c = (1/3) Σ_{v∈c} e^{m_v}, so ∂K/∂m_j = (e^{m_j}/3) Σ_{c∋j} K_c and
    the result is −(e^{m_j}/3) Σ_{c∋j} w_cᵀ K_c T_c. Shapes: w (B, R, N) (R adjoints per
    sample) or (B, N); T, m (B, N) → the shape of w.
    """
    squeeze = w.ndim == 2
    if squeeze:
        w = w[:, None]
    q = torch.einsum("brci,cij,bcj->brc", w[:, :, cells], cell_stiffness, T[:, cells])   # (B, R, C)
    out = torch.zeros_like(w)
    out.index_add_(2, cells.reshape(-1), (q[..., None] / 3.0).expand(-1, -1, -1, 3).reshape(*q.shape[:2], -1))
    out = -torch.exp(m)[:, None, :] * out
    return out[:, 0] if squeeze else out


# ------------------------------------------------------------------- solves

class _DenseFactor:
    def __init__(self, K: torch.Tensor) -> None:
        self.lu, self.piv = torch.linalg.lu_factor(K)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        return torch.linalg.lu_solve(self.lu, self.piv, rhs)


class _SparseFactor:
    def __init__(self, lus: list[Any]) -> None:
        self.lus = lus

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        r = rhs.detach().cpu().numpy()
        if r.shape[0] != len(self.lus):
            r = np.broadcast_to(r, (len(self.lus), *r.shape[1:]))
        x = [lu.solve(np.ascontiguousarray(b)) for lu, b in zip(self.lus, r, strict=True)]
        return torch.as_tensor(np.stack(x), dtype=rhs.dtype, device=rhs.device)


class HeatForward:
    """T(m) on the free nodes for batches of m, with factorisations kept for the adjoints."""

    def __init__(self, ops: HeatOperators, dense_limit: int = DENSE_LIMIT) -> None:
        self.ops = ops
        self.free = ops.free
        self.n = ops.n_nodes
        self.n_free = len(self.free)
        self.obs_free = ops.observation[:, self.free]                 # (S, Nf)
        self.load_free = ops.load[self.free]                          # (Nf,)
        self.sparse = self.n_free > dense_limit
        cells = ops.cells.cpu().numpy()
        pos = np.full(self.n, -1)
        pos[self.free.cpu().numpy()] = np.arange(self.n_free)
        rows = pos[np.repeat(cells, 3, axis=1).reshape(-1)]
        cols = pos[np.tile(cells, (1, 3)).reshape(-1)]
        self._keep = (rows >= 0) & (cols >= 0)
        self._rows, self._cols = rows[self._keep], cols[self._keep]
        self._local = ops.cell_stiffness.cpu().numpy().reshape(len(cells), 9)
        if not self.sparse:   # vec(K_ff) = P κ: P (Nf², C) holds the free-free entries of every K_c
            cell_of = np.repeat(np.arange(len(cells)), 9)[self._keep]
            self._assembly = scipy.sparse.csr_matrix(
                (self._local.reshape(-1)[self._keep], (self._rows * self.n_free + self._cols, cell_of)),
                shape=(self.n_free**2, len(cells)))

    def stiffness(self, m: torch.Tensor) -> torch.Tensor:
        """K_ff(e^m), dense (B, Nf, Nf): the free-node block of
        :func:`~pdegrow.regularizers.heat_physics.dense_stiffness`, as one sparse product vec(K_ff) = P κ."""
        kappa = cell_conductivity(m, self.ops.cells).cpu().numpy()
        K = np.ascontiguousarray((self._assembly @ kappa.T).T).reshape(-1, self.n_free, self.n_free)
        return torch.as_tensor(K, dtype=m.dtype, device=m.device)

    def factor(self, m: torch.Tensor) -> _DenseFactor | _SparseFactor:
        if not self.sparse:
            return _DenseFactor(self.stiffness(m))
        kappa = cell_conductivity(m, self.ops.cells).cpu().numpy()   # (B, C)
        lus = []
        for k in kappa:
            vals = (k[:, None] * self._local).reshape(-1)[self._keep]
            K = scipy.sparse.coo_matrix((vals, (self._rows, self._cols)), shape=(self.n_free,) * 2).tocsc()
            lus.append(scipy.sparse.linalg.splu(K))
        return _SparseFactor(lus)

    def temperature(self, m: torch.Tensor) -> torch.Tensor:
        """T_f (B, Nf) only (one solve per sample, no factorisation kept)."""
        rhs = self.load_free.expand(m.shape[0], -1)
        if not self.sparse:
            K = self.stiffness(m).cpu().numpy()
            b = rhs.cpu().numpy()[..., None]
            try:
                T = np.linalg.solve(K, b)[..., 0]
            except np.linalg.LinAlgError:   # e^m over/underflowed somewhere: those rows get NaN
                T = np.full(b.shape[:-1], np.nan)
                for i in range(len(K)):
                    try:
                        T[i] = np.linalg.solve(K[i], b[i])[..., 0]
                    except np.linalg.LinAlgError:
                        pass
            return torch.as_tensor(T, dtype=m.dtype, device=m.device)
        return self.factor(m).solve(rhs[..., None])[..., 0]

    def full(self, v_free: torch.Tensor) -> torch.Tensor:
        """A free-node vector (…, Nf) → all nodes (…, N), zero on the Dirichlet nodes."""
        out = torch.zeros(*v_free.shape[:-1], self.n, dtype=v_free.dtype, device=v_free.device)
        out[..., self.free] = v_free
        return out

    def sensitivity(self, w_free: torch.Tensor, T_free: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """−wᵀ(∂K/∂m)T at all nodes for adjoints w (B, [R,] Nf)."""
        return stiffness_sensitivity(self.full(w_free), self.full(T_free), m, self.ops.cells,
                                     self.ops.cell_stiffness)


# ------------------------------------------------------------------- the posterior

@dataclass
class Evaluation:
    f: torch.Tensor                      # (B,) −log posterior (up to a constant)
    t: torch.Tensor                      # (B, S) predicted observations
    m: torch.Tensor                      # (B, N)
    grad: torch.Tensor | None = None     # (B, d) ∂f/∂ξ
    jac: torch.Tensor | None = None      # (B, S, d) ∂t/∂ξ


class HeatPosterior:
    """f(ξ) = −log π(ξ | y) for the relative-noise heat problem, batched over rows of ξ and y."""

    def __init__(self, forward: HeatForward, prior: Any, sigma: float) -> None:
        if sigma <= 0:
            from pdegrow.errors import PdegrowError

            raise PdegrowError("the reference needs noisy observations (noise_level > 0)")
        self.forward, self.prior, self.sigma = forward, prior, float(sigma)

    @property
    def dim(self) -> int:
        return int(self.prior.dim)

    def value(self, xi: torch.Tensor, y: torch.Tensor) -> Evaluation:
        """f only (one forward solve per row)."""
        m = self.prior.to_field(xi)
        T = self.forward.temperature(m)
        t = T @ self.forward.obs_free.T
        f = 0.5 * (xi**2).sum(-1) + relative_noise_nll(t, y, self.sigma)
        return Evaluation(f, t, m)

    def gradient(self, xi: torch.Tensor, y: torch.Tensor) -> Evaluation:
        """f and ∂f/∂ξ by one forward and one adjoint solve (the same factorisation)."""
        m = self.prior.to_field(xi)
        fac = self.forward.factor(m)
        T = fac.solve(self.forward.load_free.expand(m.shape[0], -1)[..., None])[..., 0]
        t = T @ self.forward.obs_free.T
        g_t = relative_noise_dnll(t, y, self.sigma)
        w = fac.solve((g_t @ self.forward.obs_free)[..., None])[..., 0]          # K w = Bᵀ ∂f/∂t
        grad_m = self.forward.sensitivity(w, T, m)
        f = 0.5 * (xi**2).sum(-1) + relative_noise_nll(t, y, self.sigma)
        return Evaluation(f, t, m, grad=xi + self.prior.pullback(grad_m))

    def jacobian(self, xi: torch.Tensor, y: torch.Tensor) -> Evaluation:
        """f, ∂f/∂ξ and the sensor Jacobian ∂t/∂ξ (S adjoints, one factorisation with 1 + S right sides)."""
        m = self.prior.to_field(xi)
        fac = self.forward.factor(m)
        rhs = torch.cat([self.forward.load_free[:, None], self.forward.obs_free.T], dim=1)   # (Nf, 1 + S)
        X = fac.solve(rhs.expand(m.shape[0], -1, -1))
        T, W = X[..., 0], X[..., 1:].transpose(1, 2)                                    # (B, Nf), (B, S, Nf)
        t = T @ self.forward.obs_free.T
        jac_m = self.forward.sensitivity(W, T, m)                                       # (B, S, N)
        jac = self.prior.pullback(jac_m)
        g_t = relative_noise_dnll(t, y, self.sigma)
        f = 0.5 * (xi**2).sum(-1) + relative_noise_nll(t, y, self.sigma)
        grad = xi + torch.einsum("bs,bsd->bd", g_t, jac)
        return Evaluation(f, t, m, grad=grad, jac=jac)

    def gauss_newton(self, ev: Evaluation) -> torch.Tensor:
        """J̃ = diag(√c) J_ξ (B, S, d): the Fisher Gauss–Newton Hessian is I + J̃ᵀJ̃."""
        return fisher_weight(ev.t, self.sigma).sqrt()[..., None] * ev.jac

"""The eigen-solve of the topological derivative in the row space of the states, when rows are few.

A_r = σ″(0) X̃ᵀ diag(λ_r) X̃ (X̃ the P × d augmented states, λ_r the costates of unit r;
Krishnanunni, Bui-Thanh, Dawson, arXiv 2502.06885; ``docs/growth.md``).  With the Gram matrix
G = X̃ X̃ᵀ = U diag(s) Uᵀ (the q positive eigenvalues kept), W = X̃ᵀ U diag(s)^{-1/2} (d × q) has
orthonormal columns spanning the row space of X̃, and X̃ = Y Wᵀ with Y = U diag(s)^{1/2} (P × q).  So

    A_r = W B_r Wᵀ,   B_r = σ″(0) Yᵀ diag(λ_r) Y   (q × q),

every non-zero eigenpair (θ, w) of A_r is (θ, W y) with (θ, y) one of B_r, and on the
orthogonal complement of the row space (dimension d − q) A_r is zero.  Hence
λ_max(A_r) = max(λ_max(B_r), 0) when q < d.  The Lanczos products cost 4·P·q·n instead of
4·P·d·n and its basis q/d of the memory: a gain when P (hence q ≤ P) is well below d — wide
networks on few samples, or a subsample of the rows.  Directions with s_i ≤ ``rtol``·max s
(singular values ≤ √rtol of the largest) are dropped: A_r changes by at most
2·√rtol·‖X̃‖²·max|λ|, below the rounding of the products themselves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pdegrow.growth.eigensolvers import TopEigenpairs, canonical_sign, lanczos_top_eigenpairs

#: Gram eigenvalues s_i ≤ RTOL·max s are dropped (singular values below 1e-7 of the largest).
RTOL = 1e-14

__all__ = ["RTOL", "row_space_basis", "row_space_top_eigenpairs", "use_row_space"]


def use_row_space(rows: int, dim: int) -> bool:
    """Solve in the row space when it has at most half the dimensions (the Gram matrix's eigh,
    O(P³), and the map back, O(n·q·d), are then paid back by the first few Lanczos steps)."""
    return 2 * rows <= dim


def row_space_basis(x_aug: Tensor, rtol: float = RTOL) -> tuple[Tensor, Tensor]:
    """(Y (P, q), W (d, q)) with X̃ = Y Wᵀ and WᵀW = I, from the eigh of G = X̃X̃ᵀ in float64."""
    x = x_aug.double()
    s, u = torch.linalg.eigh(x @ x.T)
    keep = s > rtol * float(s[-1].clamp_min(torch.finfo(torch.float64).tiny))
    u, s = u[:, keep], s[keep]
    root = s.sqrt()
    return u * root, x.T @ (u / root)


def row_space_top_eigenpairs(
    x_aug: Tensor, lam: Tensor, *, sigma2: float = 1.0, rtol: float = RTOL, **lanczos_kw: object
) -> TopEigenpairs:
    """Top eigenpair of every A_r = σ″(0) X̃ᵀ diag(λ_r) X̃ by batched Lanczos on B_r (q × q), mapped back.

    ``x_aug`` (P, d), ``lam`` (P, n); the Lanczos runs in their dtype.  Units whose B_r has no
    positive eigenvalue get max(θ, 0) = 0 when q < d (A_r vanishes on the complement of the row
    space); their vector is then the mapped Ritz vector, not an eigenvector for 0 (such units
    get no row of the inserted block anyway).
    """
    dtype = x_aug.dtype
    y64, w64 = row_space_basis(x_aug, rtol)
    y, w = y64.to(dtype), w64.to(dtype)
    q, d = y.shape[1], x_aug.shape[1]
    lam_t = lam.to(dtype)

    def matvec(v: Tensor, idx: Tensor) -> Tensor:
        part = lam_t if idx.numel() == lam_t.shape[1] else lam_t[:, idx]
        z = (y @ v.T).mul_(part)
        return (z.T @ y).mul_(sigma2)

    pairs = lanczos_top_eigenpairs(matvec, lam.shape[1], q, dtype=dtype, device=x_aug.device,
                                   **lanczos_kw)  # type: ignore[arg-type]
    vectors = pairs.vectors @ w.T
    vectors = canonical_sign(vectors / vectors.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny))
    values = pairs.values.clamp_min(0) if q < d else pairs.values
    return TopEigenpairs(values, vectors, "lanczos", pairs.iterations, pairs.residuals)

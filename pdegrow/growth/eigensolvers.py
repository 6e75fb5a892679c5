"""Top eigenpair of every block of a block-diagonal symmetric operator.

The topological derivative (Krishnanunni, Bui-Thanh, Dawson, arXiv 2502.06885;
``docs/growth.md``) needs, for every output unit r of a candidate block, the largest
*algebraic* eigenvalue of the symmetric, generally indefinite matrix

    A_r = σ''(0) Σ_p λ_{p,r} x̃_p x̃_pᵀ        (d × d, d = fan-in + 1)

and its eigenvector.  Two solvers share one result type:

* :func:`dense_top_eigenpairs` — batched ``torch.linalg.eigh`` on the stacked
  blocks (n, d, d).  Memory n·d², cost O(n·d³).
* :func:`lanczos_top_eigenpairs` — batched Lanczos with full
  reorthogonalisation that only needs ``matvec(V, idx)`` = [A_r v_r]_{r ∈ idx}
  for a stack of vectors, one per block.  For the topological derivative this
  is two GEMMs, A_r v_r = X̃ᵀ(λ_r ⊙ X̃ v_r) for all r at once, so A_r is never
  formed; memory is the Krylov basis (m·n·d) plus whatever the matvec needs.
  Blocks leave the iteration as soon as their Ritz pair has converged, so the
  later iterations only multiply the unconverged blocks.

Eigenvectors are unit-norm with a canonical sign (the entry of largest
magnitude is positive), so the two solvers return the same vectors for
simple eigenvalues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "TopEigenpairs",
    "canonical_sign",
    "dense_top_eigenpairs",
    "lanczos_top_eigenpairs",
]


@dataclass
class TopEigenpairs:
    """Largest algebraic eigenvalue and unit eigenvector of every block.

    values: (n,) eigenvalues; vectors: (n, d) unit eigenvectors (canonical sign);
    method: "dense" or "lanczos"; iterations: Lanczos steps taken (0 for dense);
    residuals: (n,) ‖A_r v_r − θ_r v_r‖ (Lanczos estimate; zeros for dense).
    """

    values: Tensor
    vectors: Tensor
    method: str
    iterations: int = 0
    residuals: Tensor | None = None


def canonical_sign(vectors: Tensor) -> Tensor:
    """Flip each row of ``vectors`` (…, d) so that its entry of largest magnitude is positive."""
    idx = vectors.abs().argmax(dim=-1, keepdim=True)
    sign = torch.sign(torch.gather(vectors, -1, idx))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return vectors * sign


def dense_top_eigenpairs(blocks: Tensor) -> TopEigenpairs:
    """Top eigenpair of each symmetric block of ``blocks`` (n, d, d) by batched ``eigh``.

    ``torch.linalg.eigh`` returns eigenvalues in ascending order, so the largest
    algebraic eigenvalue is the last one (not the largest in magnitude).
    """
    if blocks.ndim != 3 or blocks.shape[-1] != blocks.shape[-2]:
        raise ValueError(f"blocks must have shape (n, d, d), got {tuple(blocks.shape)}")
    sym = 0.5 * (blocks + blocks.transpose(-1, -2))
    evals, evecs = torch.linalg.eigh(sym)
    values = evals[:, -1]
    vectors = canonical_sign(evecs[:, :, -1])
    return TopEigenpairs(values, vectors, "dense", 0, torch.zeros_like(values))


#: A second Gram–Schmidt pass is made for a block whose vector kept less than this fraction of its
#: norm in the first (Daniel–Gragg–Kaufman–Stewart criterion, 1/√2): "twice is enough".
REORTHOGONALISE_BELOW = 0.7071067811865476


def _project_out(w: Tensor, q: Tensor) -> Tensor:
    """w − Σ_i (q_iᵀ w) q_i per block: w (k, d), q (j, k, d)."""
    coef = torch.einsum("jkd,kd->jk", q, w)
    return w - torch.einsum("jk,jkd->kd", coef, q)


def _orthogonalise(w: Tensor, q: Tensor) -> Tensor:
    """Remove from w (k, d) its components along the orthonormal q (j, k, d), block by block.

    One classical Gram–Schmidt pass for every block, a second one only for the blocks whose
    vector lost more than 1 − 1/√2 of its norm in the first (DGKS): the second pass is what
    cancellation needs, and it is needed by few blocks.
    """
    if q.shape[0] == 0:
        return w
    before = w.norm(dim=1)
    w = _project_out(w, q)
    again = w.norm(dim=1) < REORTHOGONALISE_BELOW * before
    if bool(again.all()):
        return _project_out(w, q)
    if bool(again.any()):
        sub = again.nonzero().squeeze(1)
        w = w.clone()
        w[sub] = _project_out(w[sub], q[:, sub])
    return w


def lanczos_top_eigenpairs(
    matvec: Callable[[Tensor, Tensor], Tensor],
    n_blocks: int,
    dim: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    tol: float | None = None,
    max_basis: int | None = None,
    max_restarts: int = 3,
    check_every: int = 4,
    seed: int = 0,
    start: Tensor | None = None,
) -> TopEigenpairs:
    """Largest algebraic eigenpair of n symmetric d×d operators by batched Lanczos.

    ``matvec(V, idx)`` takes V (k, d) — one vector per block index in ``idx`` (k,)
    — and returns [A_{idx[i]} V[i]]_i (k, d).  Lanczos with full
    reorthogonalisation builds an orthonormal Krylov basis Q_j per block and
    the tridiagonal T_j = Q_jᵀ A Q_j; the Ritz pair (θ, Q_j y) of the largest
    eigenvalue of T_j converges when the residual estimate
    β_j |y_j| = ‖A v − θ v‖ ≤ tol · max_r |θ_r| (a scale common to all blocks,
    because only blocks near the global maximum matter for growth; then
    |θ − λ| ≤ residual²/gap).  A converged block leaves the iteration.
    After ``max_basis`` steps the unconverged blocks restart from their
    current Ritz vector (explicit restart), at most ``max_restarts`` times.
    If a Krylov space is exhausted (β ≈ 0, e.g. d small) the iteration
    continues with a random vector orthogonal to the basis, which keeps
    T_j an exact projection.

    Memory: the basis, (steps taken)·n·d entries (≤ max_basis·n·d), plus the matvec's own.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if tol is None:
        tol = 1e-8 if dtype == torch.float64 else 1e-4
    m = min(dim, max_basis if max_basis is not None else 120)
    m = max(m, 1)
    gen = torch.Generator(device="cpu").manual_seed(seed)

    values = torch.full((n_blocks,), float("nan"), dtype=dtype, device=device)
    vectors = torch.zeros(n_blocks, dim, dtype=dtype, device=device)
    residuals = torch.full((n_blocks,), float("inf"), dtype=dtype, device=device)

    if start is None:
        v = torch.randn(n_blocks, dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    else:
        v = start.to(device=device, dtype=dtype).clone()
    active = torch.arange(n_blocks, device=device)
    total_steps = 0
    scale = torch.zeros((), dtype=dtype, device=device)

    for _restart in range(max_restarts + 1):
        if active.numel() == 0:
            break
        # basis[i, p] is the i-th Lanczos vector of block active[p]: only active blocks are kept
        # (compacted when blocks converge, so no step gathers a copy of the basis), and it grows
        # by doubling, so a fast convergence never allocates max_basis·n·d.
        basis = torch.empty(min(m, 16), active.numel(), dim, dtype=dtype, device=device)
        alpha = torch.zeros(n_blocks, m, dtype=torch.float64, device=device)
        beta = torch.zeros(n_blocks, m, dtype=torch.float64, device=device)
        q = v[active]
        basis[0] = q / q.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        for j in range(m):
            idx = active
            if idx.numel() == 0:
                break
            q = basis[j]
            w = matvec(q, idx)
            total_steps += 1
            a = (q * w).sum(dim=1)
            alpha[idx, j] = a.double()
            w = _orthogonalise(w, basis[: j + 1])
            b = w.norm(dim=1)
            last = j == m - 1
            check = last or (j + 1) % check_every == 0 or j + 1 == dim
            # Exhausted Krylov spaces: continue with a random orthogonal vector, β = 0.
            op_scale = torch.maximum(a.abs().max(), scale) if a.numel() else scale
            tiny = b <= 1e3 * torch.finfo(dtype).eps * op_scale.clamp_min(torch.finfo(dtype).tiny)
            if not last and bool(tiny.any()):
                rnd = torch.randn(int(tiny.sum()), dim, generator=gen, dtype=torch.float64).to(device, dtype)
                rnd = _orthogonalise(rnd, basis[: j + 1, tiny])
                w = w.clone()
                w[tiny] = rnd
                b = torch.where(tiny, torch.zeros_like(b), b)
            beta[idx, j] = b.double()
            if not last:
                nrm = w.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
                if j + 1 >= basis.shape[0]:
                    size = (min(m, 2 * basis.shape[0]), *basis.shape[1:])
                    grown = torch.empty(size, dtype=dtype, device=device)
                    grown[: basis.shape[0]] = basis
                    basis = grown
                basis[j + 1] = w / nrm
            if not check:
                continue
            k = j + 1
            t = torch.diag_embed(alpha[idx, :k])
            if k > 1:
                off = beta[idx, : k - 1]
                t = t + torch.diag_embed(off, offset=1) + torch.diag_embed(off, offset=-1)
            evals, evecs = torch.linalg.eigh(t)
            theta = evals[:, -1]
            y = evecs[:, :, -1]
            res = (beta[idx, j] * y[:, -1]).abs()
            if k == dim:
                res = torch.zeros_like(res)  # the Krylov space is the whole space: exact
            scale = torch.maximum(scale, theta.abs().max().to(dtype))
            done = res <= tol * scale.double()
            if last or bool(done.any()):
                sel = torch.ones_like(done) if last else done
                ids = idx[sel]
                vec = torch.einsum("ki,ikd->kd", y[sel].to(dtype), basis[:k, sel])
                vec = vec / vec.norm(dim=1, keepdim=True)
                values[ids] = theta[sel].to(dtype)
                vectors[ids] = vec
                residuals[ids] = res[sel].to(dtype)
                active = idx[~done]
                if last:
                    v = vectors.clone()
                elif active.numel():
                    basis = basis[: max(k + 1, min(m, 16)), ~done]   # compact: converged blocks leave
        del basis
    vectors = canonical_sign(vectors)
    return TopEigenpairs(values, vectors, "lanczos", total_steps, residuals)

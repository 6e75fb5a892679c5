"""Upper bounds on the topological derivative, to skip the eigen-solve of depths that cannot win.

The derivative at depth t is D_t = max_r λ_max(A_r), A_r = σ″(0) Σ_s λ_{s,r} x̃_s x̃_sᵀ
(Krishnanunni, Bui-Thanh, Dawson, arXiv 2502.06885; ``docs/growth.md``).  Split the costates into
their positive and negative parts, λ = λ⁺ − λ⁻; with σ″(0) > 0,

    A_r = A_r⁺ − A_r⁻,   A_r^± = σ″(0) Σ_s λ^±_{s,r} x̃_s x̃_sᵀ ⪰ 0,

so vᵀA_r v ≤ vᵀA_r⁺v for every v and λ_max(A_r) ≤ λ_max(A_r⁺).  A_r⁺ is positive semi-definite,
so its largest eigenvalue is at most the sum of its eigenvalues and at most the root of the sum
of their squares:

    λ_max(A_r) ≤ min( tr A_r⁺, ‖A_r⁺‖_F ),
    tr A_r⁺    = σ″(0) Σ_s λ⁺_{s,r} ‖x̃_s‖²,
    ‖A_r⁺‖_F²  = σ″(0)² Σ_{s,s'} λ⁺_{s,r} λ⁺_{s',r} (x̃_sᵀ x̃_s')²      (Gram matrix G = X̃ X̃ᵀ).

The trace costs O(P·n), the Frobenius norm O(P²·(d + n)) — a fraction of one product A_r v of
the Lanczos solve for all r (4·P·n·d) while P ≲ d, and it needs every sample on one process, so
a sharded operator is bounded by its (all-reduced) trace alone.  A depth whose bound max_r ub_r
is below the largest derivative already solved cannot be t* (:func:`pruned_derivatives`); the
insertion chosen is the one of the full search.  Such a depth has no derivative: it is logged as
null beside its bound (:func:`logged_derivatives`), and max_t D_t over the solved depths is the
maximum over all depths, since every skipped D_t ≤ its bound < a solved one
(:func:`pdegrow.growth.topological_report.solved_derivatives` reads it back).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pdegrow.growth.eigensolvers import TopEigenpairs
from pdegrow.growth.topological_operators import (
    DenseFeatureOperator,
    DepthOperator,
    ShardedOperator,
    top_eigenpairs,
)

#: The Gram matrix (P × P) is formed only up to this many rows; above, the trace bound alone.
MAX_GRAM_ROWS = 4096

#: Relative margin added to a bound computed in the operator's precision (float32 rounding).
BOUND_MARGIN = 1e-3

__all__ = ["BOUND_MARGIN", "MAX_GRAM_ROWS", "eigenvalue_upper_bounds", "logged_derivatives",
           "operator_bounds", "pruned_derivatives"]


def eigenvalue_upper_bounds(
    x_aug: Tensor, lam: Tensor, *, sigma2: float = 1.0, max_gram_rows: int = MAX_GRAM_ROWS,
    reduce: Callable[[list[Tensor]], None] | None = None,
) -> Tensor:
    """ub_r ≥ λ_max(A_r) for every unit r: min(tr A_r⁺, ‖A_r⁺‖_F) (see the module docstring), float64.

    x_aug (P, d) the augmented states x̃, lam (P, n) the costates (with J's 1/S).  ``reduce``
    (this process holds a share of the rows): the trace is summed over processes and the
    Frobenius norm, which needs all pairs of rows, is not used.
    """
    if sigma2 <= 0:
        raise ValueError(f"the bound needs σ″(0) > 0, got {sigma2}")
    pos = lam.clamp_min(0)
    trace = (pos.T @ x_aug.pow(2).sum(1)).double()
    if reduce is not None:
        reduce([trace])
        return trace * sigma2 * (1 + BOUND_MARGIN)
    if x_aug.shape[0] > max_gram_rows:
        return trace * sigma2 * (1 + BOUND_MARGIN)
    g = x_aug @ x_aug.T
    fro = ((pos.T @ g.pow(2)) * pos.T).sum(1).double().clamp_min(0).sqrt()
    return torch.minimum(trace, fro) * sigma2 * (1 + BOUND_MARGIN)


def operator_bounds(op: DepthOperator) -> Tensor | None:
    """:func:`eigenvalue_upper_bounds` of a dense-network feature operator (sharded or not); None for
    other operators (stored blocks are solved densely anyway; conv and token operators are not bounded)."""
    local = op.local if isinstance(op, ShardedOperator) else op
    if not isinstance(local, DenseFeatureOperator):
        return None
    reduce = op.reduce if isinstance(op, ShardedOperator) else None
    return eigenvalue_upper_bounds(local.x_aug, local.lam, sigma2=local.sigma2, reduce=reduce)


def pruned_derivatives(
    ops: Sequence[DepthOperator], *, method: str = "auto", **solver_kw: object
) -> tuple[Tensor, list[TopEigenpairs | None], Tensor]:
    """The topological derivative per depth, solving only the depths that can hold the maximum.

    Depths are visited in decreasing order of their bound max_r ub_r (unbounded operators first);
    a depth whose bound is below the largest derivative solved so far is skipped: its derivative
    is NaN and its eigenpairs None.  argmax over the finite entries, and the eigenpairs there,
    are those of solving every depth.  Returns (derivatives, eigenpairs, bounds per depth (inf
    where unbounded)).
    """
    bounds = [operator_bounds(op) for op in ops]
    top = torch.tensor([math.inf if b is None else float(b.max()) for b in bounds], dtype=torch.float64)
    order = sorted(range(len(ops)), key=lambda t: -float(top[t]))
    best = -math.inf
    pairs: list[TopEigenpairs | None] = [None] * len(ops)
    derivs = torch.full((len(ops),), math.nan, dtype=torch.float64)
    for t in order:
        if float(top[t]) < best:
            continue
        pairs[t] = top_eigenpairs(ops[t], method=method, **solver_kw)  # type: ignore[arg-type]
        derivs[t] = float(pairs[t].values.max())  # type: ignore[union-attr]
        best = max(best, float(derivs[t]))
    return derivs, pairs, top


def logged_derivatives(derivs: Tensor) -> list[float | None]:
    """The derivative per depth as a run logs it: D_t where depth t was solved, ``None`` (JSON null)
    where :func:`pruned_derivatives` skipped it (its bound, logged as ``derivative_bound``, is
    below a solved D_t', so D_t < max_t' D_t' without being known)."""
    return [float(d) if math.isfinite(float(d)) else None for d in derivs]


"""The eigen-solve of a sharded topological-derivative operator, its units split over processes.

Every unit r has its own eigenproblem A_r w = θ w (Krishnanunni, Bui-Thanh, Dawson, arXiv
2502.06885; ``docs/growth.md``), and the batched Lanczos of
:func:`~pdegrow.growth.eigensolvers.lanczos_top_eigenpairs` runs the n recurrences side by side.
Summing each product A_r v over the processes' samples (:class:`ShardedOperator`) leaves every
process to orthogonalise all n recurrences; here instead the processes exchange their states
and costates once (P·(n + d) numbers), and process k solves the units k, k + W, k + 2W, … on
all samples — the products, the re-orthogonalisation and the tridiagonal solves divided by W,
no communication per step — and the top eigenpairs are gathered.  Each unit starts from the
vector a one-process solve would start it from, so the eigenpairs agree with the serial solve to
the solver's tolerance (the convergence test is relative to the largest Ritz value among the
units a process holds).
"""

from __future__ import annotations

import torch

from pdegrow.growth.eigensolvers import TopEigenpairs, canonical_sign, lanczos_top_eigenpairs
from pdegrow.growth.topological_operators import ShardedOperator

__all__ = ["split_top_eigenpairs"]


def split_top_eigenpairs(
    op: ShardedOperator, *, tol: float | None = None, max_basis: int | None = None, max_restarts: int = 3,
    seed: int = 0,
) -> TopEigenpairs:
    """Top eigenpair of every A_r of ``op`` (``collective``, ``rebuild`` set), units split over processes."""
    c = op.collective
    if op.features is None or op.rebuild is None:
        raise ValueError("a split solve needs the operator's features and its rebuild")
    x, lam = op.features
    parts = c.gather((x.detach().cpu(), lam.detach().cpu()))
    full = op.rebuild(torch.cat([p[0] for p in parts]).to(x.device),
                      torch.cat([p[1] for p in parts]).to(x.device))
    n, d, dtype, device = op.n_blocks, op.dim, op.dtype, op.device
    mine = torch.arange(n, device=device)[c.rank::c.world]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    start = torch.randn(n, d, generator=gen, dtype=torch.float64)[mine.cpu()].to(device=device, dtype=dtype)

    def matvec(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return full.matvec(v, mine[idx])

    if mine.numel():
        pairs = lanczos_top_eigenpairs(matvec, int(mine.numel()), d, dtype=dtype, device=device, tol=tol,
                                       max_basis=max_basis, max_restarts=max_restarts, seed=seed + 1 + c.rank,
                                       start=start)
        res = pairs.residuals if pairs.residuals is not None else torch.zeros_like(pairs.values)
        mine_out = (pairs.values.cpu(), pairs.vectors.cpu(), res.cpu(), pairs.iterations)
    else:
        empty = torch.zeros(0, dtype=dtype)
        mine_out = (empty, torch.zeros(0, d, dtype=dtype), empty, 0)
    values = torch.empty(n, dtype=dtype)
    vectors = torch.empty(n, d, dtype=dtype)
    residuals = torch.empty(n, dtype=dtype)
    steps = 0
    for k, (val, vec, res, it) in enumerate(c.gather(mine_out)):
        values[k::c.world], vectors[k::c.world], residuals[k::c.world] = val, vec, res
        steps = max(steps, int(it))
    return TopEigenpairs(values.to(device), canonical_sign(vectors.to(device)), "lanczos", steps,
                         residuals.to(device))

"""The eigen-solve in the row space of the states (few rows, wide network) against batched eigh."""

from __future__ import annotations

import torch

from pdegrow.growth.topological_operators import DenseFeatureOperator, top_eigenpairs
from pdegrow.growth.topological_rowspace import row_space_basis, row_space_top_eigenpairs

DT = torch.float64


def _op(p: int = 12, n: int = 40, seed: int = 0) -> DenseFeatureOperator:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(p, n, generator=g, dtype=DT)
    lam = torch.randn(p, n, generator=g, dtype=DT) / p
    lam[:, 3] = -lam[:, 3].abs()          # unit 3: A_3 ⪯ 0, its top eigenvalue is 0 (null space)
    return DenseFeatureOperator(x, lam)


def test_row_space_basis_factorises_the_states():
    op = _op()
    y, w = row_space_basis(op.x_aug)
    assert y.shape == (12, 12) and w.shape == (41, 12)
    torch.testing.assert_close(y @ w.T, op.x_aug)
    torch.testing.assert_close(w.T @ w, torch.eye(12, dtype=DT))


def test_row_space_lanczos_matches_eigh_of_the_full_blocks():
    op = _op()
    dense = top_eigenpairs(op, method="dense")
    assert float(dense.values[3]) == 0.0 or abs(float(dense.values[3])) < 1e-12
    got = row_space_top_eigenpairs(op.x_aug, op.lam, tol=1e-12)
    scale = float(dense.values.abs().max())
    torch.testing.assert_close(got.values, dense.values.clamp_min(0), atol=1e-10 * scale, rtol=0)
    positive = dense.values > 1e-8 * scale
    cos = (got.vectors[positive] * dense.vectors[positive]).sum(1).abs()
    assert torch.all(cos > 1 - 1e-8)
    # the automatic route (12 rows ≤ 41 / 2 dimensions) is the row-space solve, in float32 too
    auto = top_eigenpairs(op, method="lanczos", tol=1e-12)
    torch.testing.assert_close(auto.values, got.values)
    f32 = top_eigenpairs(DenseFeatureOperator(op.x_aug[:, :-1].float(), op.lam.float()), method="lanczos")
    assert torch.allclose(f32.values.double(), dense.values.clamp_min(0), atol=1e-5 * scale, rtol=0)

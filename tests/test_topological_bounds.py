"""Upper bounds on the topological derivative and the depth search that skips depths they rule out."""

from __future__ import annotations

import math

import pytest
import torch

from pdegrow.growth.topological import topological_derivatives
from pdegrow.growth.topological_bounds import BOUND_MARGIN, eigenvalue_upper_bounds, pruned_derivatives
from pdegrow.growth.topological_operators import DenseFeatureOperator, augment

DT = torch.float64


def _op(seed: int, scale: float = 1.0, s: int = 60, n: int = 9) -> DenseFeatureOperator:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(s, n, generator=g, dtype=DT)
    lam = scale * torch.randn(s, n, generator=g, dtype=DT) / s
    return DenseFeatureOperator(x, lam)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_are_above_every_top_eigenvalue(seed):
    op = _op(seed)
    top = torch.linalg.eigvalsh(op.blocks())[:, -1]
    for rows in (10_000, 1):   # Frobenius and trace; trace alone
        ub = eigenvalue_upper_bounds(op.x_aug, op.lam, max_gram_rows=rows)
        assert torch.all(ub >= top)
    fro = eigenvalue_upper_bounds(op.x_aug, op.lam)
    assert torch.all(fro <= eigenvalue_upper_bounds(op.x_aug, op.lam, max_gram_rows=1))


def test_bound_is_exact_for_one_positive_sample():
    """A_r = λ x̃ x̃ᵀ (one sample, λ > 0): λ_max = λ‖x̃‖² = tr = ‖·‖_F, so the bound is attained."""
    x = torch.tensor([[0.3, -1.2, 2.0]], dtype=DT)
    lam = torch.tensor([[0.5, 2.0, -1.0]], dtype=DT)
    ub = eigenvalue_upper_bounds(augment(x), lam)
    sq = float(augment(x).pow(2).sum())
    torch.testing.assert_close(ub, torch.tensor([0.5 * sq, 2.0 * sq, 0.0], dtype=DT) * (1 + BOUND_MARGIN))


def test_pruned_search_chooses_what_the_full_search_chooses():
    # depth 1 dominates (costates 30× larger): depths 0 and 2 are ruled out by their bounds
    ops = [_op(3), _op(4, scale=30.0), _op(5)]
    full, full_pairs = topological_derivatives(ops, method="lanczos", tol=1e-12)
    derivs, pairs, bounds = pruned_derivatives(ops, method="lanczos", tol=1e-12)
    assert int(full.argmax()) == 1 and int(torch.nan_to_num(derivs, nan=-math.inf).argmax()) == 1
    assert pairs[0] is None and pairs[2] is None and math.isnan(derivs[0]) and math.isnan(derivs[2])
    assert torch.all(bounds >= full)
    assert float(bounds[0]) < float(full[1]) and float(bounds[2]) < float(full[1])
    torch.testing.assert_close(pairs[1].values, full_pairs[1].values)
    torch.testing.assert_close(pairs[1].vectors, full_pairs[1].vectors)
    # nothing can be ruled out: every depth solved, the same derivatives
    ops = [_op(3), _op(4), _op(5)]
    full, _ = topological_derivatives(ops, method="lanczos", tol=1e-12)
    derivs, pairs, bounds = pruned_derivatives(ops, method="lanczos", tol=1e-12)
    solved = ~torch.isnan(derivs)
    torch.testing.assert_close(derivs[solved], full[solved])
    assert int(torch.nan_to_num(derivs, nan=-math.inf).argmax()) == int(full.argmax())
    assert torch.all(bounds[~solved] < full.max())

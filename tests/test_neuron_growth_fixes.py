"""TINY's ridge on ill-conditioned moments and GradMax's cap at rank(G): closed forms, and the
strategies' proposals on networks where the unregularised / rank-blind versions go wrong."""

from __future__ import annotations

import pytest
import torch
from conftest import make_growth_ctx as make_ctx

from pdegrow.growth.base import build_strategy
from pdegrow.growth.gradmax import fan_in_gradient, gradmax_fan_out, numerical_rank
from pdegrow.growth.statistics import gather_statistics
from pdegrow.growth.tiny import best_update, least_squares_update, new_neurons, ridge_shift
from pdegrow.models import GrowableResNet

DT = torch.float64


def collinear_case(n: int = 48, dup: float = 1e-4):
    """An MLP whose hidden units come in near-duplicate pairs: S_hid is ill-conditioned."""
    torch.manual_seed(0)
    model = GrowableResNet.mlp(3, [2], width=5, depth=1, block="mlp", hidden=[6], activation="tanh").to(DT)
    first = model.blocks[0].layers[0]
    with torch.no_grad():
        first.weight[3:] = first.weight[:3] + dup * torch.randn(3, 5, dtype=DT)
        first.bias[3:] = first.bias[:3]
    g = torch.Generator().manual_seed(1)
    y = torch.randn(n, 3, generator=g, dtype=DT)
    return model, y, torch.sin(2 * y[:, :2] * y[:, 1:])


def test_ridge_update_solves_the_regularised_normal_equations():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(4, 30, generator=g, dtype=DT)
    v = torch.randn(3, 30, generator=g, dtype=DT)
    s, nh = b @ b.T / 30, b @ v.T / 30
    assert torch.allclose(best_update(s, nh), least_squares_update(b, v), atol=1e-12)   # ridge 0: the paper
    dw = best_update(s, nh, ridge=0.1)
    rho = 0.1 * float(torch.trace(s)) / 4
    assert torch.allclose(dw @ (s + rho * torch.eye(4, dtype=DT)), nh.T, atol=1e-12)
    # the minimiser of (1/n)‖V − ΔW B‖² + ρ̄‖ΔW‖²: its gradient vanishes
    grad = -2 * (v - dw @ b) @ b.T / 30 + 2 * rho * dw
    assert float(grad.abs().max()) < 1e-12
    with pytest.raises(ValueError):
        ridge_shift(s, -1.0)


def test_ridge_new_neurons_keeping_every_direction_give_the_ridge_solution():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 40, generator=g, dtype=DT)
    s_in = x @ x.T / 40
    n_proj = torch.randn(5, 3, generator=g, dtype=DT)
    nn_ = new_neurons(s_in, n_proj, max_neurons=10, ridge=0.05)
    rho = 0.05 * float(torch.trace(s_in)) / 5
    full = n_proj.T @ torch.linalg.inv(s_in + rho * torch.eye(5, dtype=DT))
    assert torch.allclose(nn_.omega @ nn_.alpha, full, atol=1e-10)


def test_tiny_update_stays_bounded_on_collinear_hidden_units():
    """Near-duplicate hidden units (condition of S_hid ≫ 1e6): the unregularised ΔW* is dominated by
    the noise along the tiny eigenvectors; the default ridge bounds it by ‖N_hid‖/ρ̄."""
    model, y, t = collinear_case()
    ctx = make_ctx(model, y, t)
    stats = gather_statistics(model, ctx.train_batches(), ctx.batch_loss).layers[(0, 0)]
    ev = torch.linalg.eigvalsh(stats.s_hid)
    assert float(ev.max() / ev.min()) > 1e6
    plain = float(best_update(stats.s_hid, stats.n_hid).norm())
    strat = build_strategy("tiny", {"neurons": 2})
    strat.setup(ctx)
    prop = strat.layer_proposals(ctx)[0]
    rho = strat.ridge * float(torch.trace(stats.s_hid)) / stats.s_hid.shape[0]
    assert strat.ridge > 0
    assert prop.update_norm <= float(torch.linalg.matrix_norm(stats.n_hid, 2)) / rho + 1e-12
    assert prop.update_norm < plain / 10
    assert prop.coefficient > 0


def test_numerical_rank():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(6, 2, generator=g, dtype=DT) @ torch.randn(2, 7, generator=g, dtype=DT)
    assert numerical_rank(a) == 2
    assert numerical_rank(torch.zeros(3, 3, dtype=DT)) == 0
    assert numerical_rank(torch.diag(torch.tensor([1.0, 1e-3], dtype=DT)), rel_tol=1e-2) == 1


def test_gradmax_adds_no_more_units_than_the_rank_of_g():
    """Two training samples: G = E[∂ℓ/∂z x̃ᵀ] has rank ≤ 2 < min(G.shape) = 5; asking for 4 units gives
    2, each of whose fan-in gets a gradient (before: 4, two of them with zero gradient forever)."""
    torch.manual_seed(0)
    model = GrowableResNet.mlp(3, [2], width=5, depth=1, block="mlp", hidden=[6], activation="tanh").to(DT)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(2, 3, generator=g, dtype=DT)
    t = torch.randn(2, 2, generator=g, dtype=DT)
    ctx = make_ctx(model, y, t)
    gcross = gather_statistics(model, ctx.train_batches(), ctx.batch_loss).layers[(0, 0)].grad_cross
    assert min(gcross.shape) == 5 and numerical_rank(gcross) == 2
    assert gradmax_fan_out(gcross, 4, 1.0).shape == (5, 2)
    strat = build_strategy("gradmax", {"neurons": 4, "every": 1})
    strat.setup(ctx)
    prop = strat.propose(ctx)
    assert prop is not None and prop.k == 2 and prop.info["rank"] == 2
    per_unit = fan_in_gradient(prop.fan_out, gcross).norm(dim=1)
    assert bool((per_unit > 1e-8 * per_unit.max()).all())


def test_trust_region_scale_on_a_first_order_model():
    """J(γ) = J₀ − cγ + kγ²: realised/predicted = 1 − kγ/c ≥ ½ iff γ ≤ c/(2k), the minimiser."""
    from pdegrow.growth.topological import trust_region_scale

    c, k, j0 = 0.3, 2.0, 1.0
    ch = trust_region_scale(lambda g: j0 - c * g + k * g * g, lambda g: -c * g, loss0=j0, start=1e-3,
                            max_evals=12)
    assert ch.valid and 0 < ch.eps <= c / (2 * k) + 1e-15 and 0.5 <= ch.ratio <= 1.0
    assert all(e > 0 for e, _ in ch.evaluations)                     # one sign only
    far = trust_region_scale(lambda g: j0 - c * g + k * g * g, lambda g: -c * g, loss0=j0, start=10.0,
                             max_evals=12)
    assert far.valid and far.eps <= c / (2 * k)                      # shrinks back into the region


def test_tiny_amplitude_stays_in_the_first_order_regime():
    model, y, t = collinear_case(dup=0.3)
    ctx = make_ctx(model, y, t)
    j0 = ctx.train_loss()
    strat = build_strategy("tiny", {"neurons": 2})
    strat.setup(ctx)
    prop = strat.propose(ctx)
    assert prop is not None and prop.info["amplitude"] == "trust_region" and prop.info["first_order_valid"]
    gamma, coef = prop.info["gamma"], prop.info["first_order_coefficient"]
    assert prop.predicted_change == pytest.approx(-gamma * coef)
    strat.apply(ctx, prop)
    realised = ctx.train_loss() - j0
    assert realised == pytest.approx(prop.info["line_search_change"], rel=1e-9, abs=1e-14)
    assert 0.5 <= realised / prop.predicted_change <= 2.0
    with pytest.raises(Exception, match="amplitude"):
        build_strategy("tiny", {"amplitude": "largest"})

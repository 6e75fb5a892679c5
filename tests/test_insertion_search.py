"""Choosing ε of an inserted block (Approach II and random insertion): the second-order model,
its bound and significance, the loss from stored states in large batches, and no dead blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TensorBatch
from conftest import conv_growth_case as conv_case
from conftest import make_growth_ctx as make_ctx

from pdegrow.growth.base import apply_proposal, build_strategy
from pdegrow.growth.stored_states import large_batches, loss_from_states, merge_batches, split_rows
from pdegrow.growth.topological import (
    augment,
    choose_epsilon,
    contribution_statistics,
    epsilon_bound,
    form_blocks,
    predicted_change,
    second_order_contributions,
)
from pdegrow.growth.topological_insertion import admissible_block, model_depth_operators
from pdegrow.growth.topological_report import plot_topological_history
from pdegrow.models import GrowableResNet

DT = torch.float64


def mlp_case(n: int = 40, width: int = 5, seed: int = 0):
    torch.manual_seed(seed)
    model = GrowableResNet.mlp(3, [2], width=width, depth=2, block="perceptron", activation="tanh").to(DT)
    g = torch.Generator().manual_seed(seed + 1)
    y = torch.randn(n, 3, generator=g, dtype=DT)
    return model, y, torch.sin(2 * y[:, :2] * y[:, 1:])


def few_samples_case(seed: int):
    """The issue's failure: fewer samples (S = 5) than the width (n = 8)."""
    torch.manual_seed(seed)
    model = GrowableResNet.mlp(3, [2], width=8, depth=1, block="perceptron", activation="tanh").to(DT)
    g = torch.Generator().manual_seed(seed + 10)
    y = torch.randn(5, 3, generator=g, dtype=DT)
    return model, y, torch.sin(3 * y[:, :2])


# ------------------------------------------------------------------------------ pure functions


def test_choose_epsilon_on_a_quartic_stays_where_the_second_order_model_holds():
    """J(ε) = J₀ − (ε²/2)C + Kε⁴: ratio realised/predicted = 1 − 2Kε²/C ≥ ½ iff ε² ≤ C/(4K),
    which is also the minimiser; the choice must lie in that band, never past it."""
    c, k, j0 = 2.0, 5.0, 1.0
    calls: list[float] = []

    def loss(e: float) -> float:
        calls.append(e)
        return j0 - 0.5 * e * e * c + k * e**4

    ch = choose_epsilon(loss, c, loss0=j0, target_decrease=0.001, max_evals=8)
    assert len(calls) <= 8 and 0.0 not in calls
    assert ch.valid and 0.5 <= ch.ratio <= 2.0
    assert abs(ch.eps) <= math.sqrt(c / (4 * k)) + 1e-12
    assert ch.predicted == pytest.approx(predicted_change(ch.eps, c))
    assert ch.realised == pytest.approx(loss(ch.eps) - j0)
    assert ch.realised == min(d for _, d in ch.evaluations)  # the best valid trial


def test_choose_epsilon_is_bounded_and_refuses_an_increase():
    c, j0 = 3.0, 2.0
    ch = choose_epsilon(lambda e: j0 - 0.5 * e * e * c, c, loss0=j0, target_decrease=0.01, eps_max=0.3)
    assert ch.eps == pytest.approx(0.3) and ch.ratio == pytest.approx(1.0)  # exact quadratic: up to the bound
    assert all(abs(e) <= 0.3 + 1e-15 for e, _ in ch.evaluations)
    up = choose_epsilon(lambda e: j0 + e * e, c, loss0=j0, target_decrease=0.01, max_evals=6)
    assert up.eps == 0.0 and len(up.evaluations) == 6
    # the cubic term picks the sign: J = J₀ − (ε²/2)C + ε³ decreases more for ε < 0
    odd = choose_epsilon(lambda e: j0 - 0.5 * e * e * c + e**3, c, loss0=j0, target_decrease=0.01)
    assert odd.eps < 0
    with pytest.raises(ValueError):
        choose_epsilon(lambda e: j0, 0.0, loss0=j0, target_decrease=0.01)


def test_contributions_sum_to_the_quadratic_form_and_their_standard_error():
    g = torch.Generator().manual_seed(3)
    x, lam = torch.randn(30, 4, generator=g, dtype=DT), torch.randn(30, 4, generator=g, dtype=DT)
    w = torch.randn(4, 5, generator=g, dtype=DT)
    a = form_blocks(augment(x), lam)
    z = augment(x) @ w.T
    c = second_order_contributions(z, lam)
    assert float(c.sum()) == pytest.approx(float(torch.einsum("ri,rij,rj->", w, a, w)), rel=1e-12)
    total, se, t = contribution_statistics(c)
    u = 30 * c
    assert total == pytest.approx(float(u.mean()))
    assert se == pytest.approx(float(u.std()) / math.sqrt(30), rel=1e-12)
    assert t == pytest.approx(total / se)
    assert contribution_statistics(torch.full((4,), 0.5))[2] == math.inf
    assert epsilon_bound(torch.tensor([[0.5, -4.0]]), 2.0) == pytest.approx(0.5)
    assert epsilon_bound(torch.zeros(2, 2), 1.0) == math.inf


# ------------------------------------------------------------------------------ stored states


@pytest.mark.parametrize("case", [mlp_case, conv_case])
def test_loss_from_stored_states_equals_the_full_loss_with_the_block_inserted(case):
    model, y, t = case()
    if not model.is_conv:  # a corrector reads the inputs, not the stored states
        from pdegrow.models.blocks import MLPCorrector

        q = MLPCorrector(3, [2], hidden=[4]).to(DT)
        model.add_corrector(q)
    size = 2 if model.is_conv else 7
    ctx = make_ctx(model, y, t, batch=size)
    batches = large_batches(ctx, eval_elements=(4 * 25 if model.is_conv else 20) * model.stream_width)
    assert 1 < len(batches) < math.ceil(y.shape[0] / size)    # merged
    assert sum(len(b) for b in batches) == y.shape[0]
    ops, j0 = model_depth_operators(ctx, batches=batches, keep_features=True)
    assert j0 == pytest.approx(ctx.train_loss(), rel=1e-12)  # merging keeps J
    from pdegrow.growth.topological import ProposedRows

    w = model.stream_width
    fan = w * 9 if model.is_conv else w
    g = torch.Generator().manual_seed(5)
    rows = ProposedRows(torch.randn(w, fan, generator=g, dtype=DT), torch.randn(w, generator=g, dtype=DT),
                        torch.ones(w, dtype=torch.bool), 0.0, torch.zeros(w))
    for depth in range(model.depth + 1):
        block = admissible_block(model, rows, 0.3)
        x = ops[depth].features[0]
        stored = loss_from_states(ctx, depth, batches, split_rows(x, batches), block)
        assert model.depth == len(ops) - 1 and model.lift.__class__.__name__ != "_Replay"  # restored
        model.insert_block(depth, block)
        assert stored == pytest.approx(ctx.train_loss(), rel=1e-12)
        del model.blocks[depth]


def test_merge_batches_concatenates_every_field_in_order():
    bs = [TensorBatch(torch.arange(3 * i, 3 * i + 3), torch.arange(3) + i) for i in range(5)]
    merged = merge_batches(bs, 7)
    assert [len(b) for b in merged] == [9, 6]
    assert torch.equal(torch.cat([b.inputs for b in merged]), torch.arange(15))


# ------------------------------------------------------------------------------ topological insertion


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_few_samples_epsilon_bounded_and_prediction_matches_realised(seed):
    """S = 5 < n = 8: the old line search went far outside the quadratic regime (ε = −35.5 logged
    −504 against a realised −0.24). Now |ε z| ≤ 1 and the logged prediction is within 2× of the
    realised change, which the trainer would measure."""
    model, y, t = few_samples_case(seed)
    ctx = make_ctx(model, y, t)
    j0 = ctx.train_loss()
    strat = build_strategy("topological_insertion", {"min_significance": 0.0})
    prop = strat.propose(ctx)
    assert prop is not None
    info = prop.info
    assert info["coefficient"] == pytest.approx(info["eigenvalue_sum"], rel=1e-6)
    assert abs(info["eps"]) <= info["eps_max"] * (1 + 1e-12)
    ops, _ = model_depth_operators(ctx, keep_features=True)
    with torch.no_grad():
        z = prop.block.last_layer()(ops[prop.depth].features[0])   # ε already folded into W, b
    assert float(z.abs().max()) <= 1.0 + 1e-9
    assert prop.predicted_change == pytest.approx(predicted_change(info["eps"], info["coefficient"]))
    apply_proposal(model, prop)
    realised = ctx.train_loss() - j0
    assert realised == pytest.approx(info["realised_change_at_eps"], rel=1e-9, abs=1e-14)
    assert info["quadratic_valid"] and 0.5 <= realised / prop.predicted_change <= 2.0


def test_the_proposal_runs_the_layers_below_the_chosen_depth_once():
    """The ε search reads the stored x_t*: the lift and block 0 run once per (merged) batch — in the
    derivative pass — however many ε are tried (before: once per batch per line-search evaluation)."""
    model, y, t = mlp_case(n=48)
    ctx = make_ctx(model, y, t, batch=8)           # 6 training batches, merged into one
    calls = {"lift": 0, "block0": 0, "batch_loss": 0}
    model.lift.register_forward_hook(lambda *_: calls.__setitem__("lift", calls["lift"] + 1))
    model.blocks[0].register_forward_hook(lambda *_: calls.__setitem__("block0", calls["block0"] + 1))
    inner = ctx.batch_loss

    def counting(b):
        calls["batch_loss"] += 1
        return inner(b)

    ctx.batch_loss = counting
    strat = build_strategy("topological_insertion", {"min_significance": 0.0})
    prop = strat.propose(ctx)
    assert prop is not None and prop.info["line_search_evals"] >= 2
    assert calls["lift"] == 1
    assert calls["batch_loss"] == 1 + prop.info["line_search_evals"]
    assert calls["block0"] == (1 + prop.info["line_search_evals"] if prop.depth == 0 else 1)


def test_insignificant_decrease_is_not_inserted():
    model, y, t = mlp_case()
    ctx = make_ctx(model, y, t)
    strat = build_strategy("topological_insertion", {"min_significance": 1e9})
    assert strat.propose(ctx) is None
    assert strat.history[-1]["reason"] == "not significant" and model.depth == 2


# ------------------------------------------------------------------------------ random insertion


def test_random_insertion_refuses_blocks_that_cannot_decrease_the_loss():
    """Zero head: the loss does not depend on the stream, every costate is 0, every C = 0 and no ε
    decreases the loss. The old strategy inserted the block anyway with ε = 0 (σ′(0) = 0: zero
    gradient forever); now every draw is rejected and growth ends."""
    model, y, t = mlp_case()
    with torch.no_grad():
        model.head.linear.weight.zero_() if hasattr(model.head, "linear") else None
        for p in model.head.parameters():
            p.zero_()
    ctx = make_ctx(model, y, t)
    strat = build_strategy("random_insertion", {"max_draws": 3})
    assert strat.propose(ctx) is None
    assert model.depth == 2


@pytest.mark.parametrize("seed", range(6))
def test_random_insertion_blocks_are_alive(seed):
    model, y, t = mlp_case()
    ctx = make_ctx(model, y, t)
    ctx.generator.manual_seed(seed)
    j0 = ctx.train_loss()
    prop = build_strategy("random_insertion", {}).propose(ctx)
    assert prop is not None
    info = prop.info
    for r in info["rejected"]:       # a draw is rejected only when it cannot decrease the loss
        assert r["coefficient"] <= 0 or r["eps"] == 0.0
    assert info["eps"] != 0.0 and info["coefficient"] > 0 and prop.predicted_change < 0
    apply_proposal(model, prop)
    assert ctx.train_loss() - j0 == pytest.approx(info["realised_change_at_eps"], rel=1e-9, abs=1e-14)
    loss = F.mse_loss(model(y), t)
    gw = torch.autograd.grad(loss, model.blocks[prop.depth].last_layer().weight)[0]
    assert float(gw.norm()) > 0.0


# ------------------------------------------------------------------------------ report


def test_report_figure_labels_which_change_is_which(tmp_path):
    events = [{"epoch": 10, "predicted_change": -0.02, "realised_change": -0.018,
               "info": {"derivative": [0.1, 0.3], "t_star": 1, "ratio": 0.9, "quadratic_valid": True}}]
    out = plot_topological_history(events, tmp_path / "fig.png")
    assert out is not None and out.stat().st_size > 1000


def test_threshold_check_and_proposal_share_one_derivative_pass():
    model, y, t = mlp_case(n=48)
    ctx = make_ctx(model, y, t, batch=8)
    calls = {"lift": 0}
    model.lift.register_forward_hook(lambda *_: calls.__setitem__("lift", calls["lift"] + 1))
    strat = build_strategy("topological_insertion", {"trigger": "threshold", "threshold": 0.0,
                                                     "check_every": 1, "min_significance": 0.0})
    ctx.state.phase_epoch = 1
    assert strat.when(ctx) and calls["lift"] == 1
    prop = strat.propose(ctx)
    assert prop is not None and calls["lift"] == 1        # the proposal reused the check's pass
    apply_proposal(model, prop)
    strat.after_growth(ctx, type("E", (), {"where": {"depth": prop.depth}})())
    ctx.state.epoch += 1
    assert strat.when(ctx) and calls["lift"] == 2         # new weights: a new pass

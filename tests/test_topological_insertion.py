"""The topological-insertion strategy on the growable residual network (pdegrow.models)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import conv_growth_case as conv_case
from conftest import make_growth_ctx as make_ctx

from pdegrow.growth.base import apply_proposal, build_strategy
from pdegrow.growth.topological import collect_depth_operators, top_eigenpairs
from pdegrow.growth.topological_insertion import TopologicalInsertion, model_depth_operators
from pdegrow.models import GrowableResNet

DT = torch.float64


def mlp_case():
    torch.manual_seed(0)
    model = GrowableResNet.mlp(3, [2], width=5, depth=2, block="perceptron", activation="tanh").to(DT)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(40, 3, generator=g, dtype=DT)
    return model, y, torch.sin(y[:, :2] * y[:, 1:])


@pytest.mark.parametrize("case", [mlp_case, conv_case])
def test_hooked_costates_match_return_states(case):
    model, y, t = case()
    ctx = make_ctx(model, y, t)
    ops, j = model_depth_operators(ctx, mode="features")
    ref, jr = collect_depth_operators(lambda u: model(u, return_states=True)[::-1], F.mse_loss,
                                      [(y[i : i + 16], t[i : i + 16]) for i in range(0, y.shape[0], 16)],
                                      mode="features", padding_mode="circular" if model.is_conv else "zeros")
    assert len(ops) == model.depth + 1 and j == pytest.approx(jr)
    for a, b in zip(ops, ref, strict=True):
        torch.testing.assert_close(a.lam, b.lam)


@pytest.mark.parametrize("case", [mlp_case, conv_case])
def test_proposal_inserts_admissible_block_and_predicts_the_change(case):
    model, y, t = case()
    ctx = make_ctx(model, y, t)
    ops, j0 = model_depth_operators(ctx)
    strat = build_strategy("topological_insertion", {"fraction": 0.5, "line_search_evals": 12})
    assert isinstance(strat, TopologicalInsertion)
    prop = strat.propose(ctx)
    assert prop is not None and prop.action == "insert"
    info = prop.info
    derivs = [float(top_eigenpairs(op).values.max()) for op in ops]
    assert info["derivative"] == pytest.approx(derivs, rel=1e-6)
    assert prop.depth == info["t_star"] == max(range(len(derivs)), key=derivs.__getitem__)
    assert model.depth == len(ops) - 1  # the line search left the model unchanged
    assert ctx.train_loss() == pytest.approx(j0)
    apply_proposal(model, prop)
    after = ctx.train_loss()
    assert after - j0 == pytest.approx(info["line_search_change"], rel=1e-9, abs=1e-12)
    assert after < j0 and prop.predicted_change < 0
    assert float(model.blocks[prop.depth].scale) == 1.0  # ε folded into the weights
    # the second-order prediction is accurate at small ε along the same direction
    blk = model.blocks[prop.depth]
    eps = 1e-3
    with torch.no_grad():
        blk.scale.fill_(eps / info["eps"])
    fd = (ctx.train_loss() - j0) / (eps**2 / 2)
    assert fd == pytest.approx(-info["coefficient"], rel=1e-2)


def test_budget_and_nonpositive_derivative_stop_growth():
    model, y, t = mlp_case()
    ctx = make_ctx(model, y, t)
    assert TopologicalInsertion(max_depth=2).propose(ctx) is None
    assert TopologicalInsertion(max_layers=0).propose(ctx) is None
    assert TopologicalInsertion(min_derivative=1e9).propose(ctx) is None
    assert model.depth == 2
    with pytest.raises(ValueError):
        TopologicalInsertion(trigger="sometimes")


def test_threshold_trigger_checks_the_derivative():
    model, y, t = mlp_case()
    ctx = make_ctx(model, y, t)
    s = TopologicalInsertion(trigger="threshold", threshold=0.0, check_every=2)
    ctx.state.phase_epoch = 1
    assert not s.when(ctx)
    ctx.state.phase_epoch = 2
    assert s.when(ctx) and len(s.history) == 1
    s_hi = TopologicalInsertion(trigger="threshold", threshold=1e9, check_every=1)
    assert not s_hi.when(ctx)
    state = s.state_dict()
    s2 = TopologicalInsertion()
    s2.load_state_dict(state)
    assert s2.history == s.history


@pytest.mark.parametrize("name,opts", [("random_insertion", {}), ("net2deeper", {"position": "random"}),
                                       ("net2deeper", {})])
def test_baselines_insert_a_block_and_keep_or_lower_the_loss(name, opts):
    model, y, t = mlp_case()
    ctx = make_ctx(model, y, t)
    j0 = ctx.train_loss()
    strat = build_strategy(name, dict(opts))
    prop = strat.propose(ctx)
    assert prop is not None and prop.action == "insert" and 0 <= prop.depth <= model.depth
    apply_proposal(model, prop)
    after = ctx.train_loss()
    assert model.depth == 3
    if name == "net2deeper":
        assert after == j0  # identity block: the function is exactly unchanged
        if not opts:
            assert prop.depth == 2
    else:
        assert after <= j0 + 1e-12
        assert after - j0 == pytest.approx(prop.info["line_search_change"], abs=1e-12)


def test_report_figure_from_events(tmp_path):
    from pdegrow.growth.topological_report import plot_topological_history

    events = [{"epoch": 10, "predicted_change": -0.02, "realised_change": -0.01,
               "info": {"derivative": [0.1, 0.3, 0.2], "t_star": 1}},
              {"epoch": 20, "predicted_change": 0.0, "realised_change": 0.0, "info": {}}]
    out = plot_topological_history(events, tmp_path / "fig.png")
    assert out is not None and out.stat().st_size > 1000
    assert plot_topological_history(events[1:], tmp_path / "none.png") is None

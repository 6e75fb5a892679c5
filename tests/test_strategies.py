"""The neuron-growth strategies of the literature: TINY, GradMax, folding, Net2WiderNet,
random neurons, forward thinking — their mathematics against closed forms and finite
differences, and the growth contract (function kept, optimizer state kept, CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_function
from conftest import make_growth_ctx as make_ctx

from pdegrow.growth.base import build_strategy
from pdegrow.growth.folding import fold_points, folding_neurons, typical_instances, weighted_kmeans
from pdegrow.growth.gradmax import fan_in_gradient, gradmax_fan_out, new_weight_gradient_norm
from pdegrow.growth.statistics import gather_statistics, shared_statistics, widenable_layers
from pdegrow.growth.tiny import (
    AmplitudeProbe,
    apply_tiny,
    best_update,
    least_squares_update,
    new_neurons,
    tiny_layer_proposal,
)
from pdegrow.models import GrowableResNet, make_optimizer, sync_optimizer

torch.set_num_threads(1)
DT = torch.float64


def mlp_case(hidden=(6,), depth=2, activation="tanh", n=48):
    torch.manual_seed(0)
    model = GrowableResNet.mlp(3, [2], width=5, depth=depth, block="mlp", hidden=list(hidden),
                               activation=activation).to(DT)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(n, 3, generator=g, dtype=DT)
    return model, y, torch.sin(2 * y[:, :2] * y[:, 1:])


# ------------------------------------------------------------------------------------------ TINY


def test_best_update_is_the_least_squares_solution():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(7, 40, generator=g, dtype=DT)          # B: (h+1) × n
    v = torch.randn(4, 40, generator=g, dtype=DT)          # V_goal: m × n
    ref = torch.linalg.lstsq(b.T, v.T).solution.T           # argmin ‖V − ΔW B‖
    assert torch.allclose(least_squares_update(b, v), ref, atol=1e-10)
    n = b.shape[1]
    assert torch.allclose(best_update(b @ b.T / n, b @ v.T / n), ref, atol=1e-10)
    # the residual is orthogonal to the rows of B (normal equations)
    resid = v - ref @ b
    assert torch.allclose(resid @ b.T, torch.zeros(4, 7, dtype=DT), atol=1e-9)


def test_tiny_new_neurons_are_the_best_rank_k_fix():
    """Σ_k ω_k α_kᵀ minimises ‖V − Ω A X‖ over rank k, and the bottleneck drops by Σ λ_k² (/n)."""
    g = torch.Generator().manual_seed(3)
    n, d, m, k = 200, 5, 3, 2
    x = torch.randn(n, d, generator=g, dtype=DT) @ torch.randn(d, d, generator=g, dtype=DT)
    v = torch.randn(n, m, generator=g, dtype=DT)
    s, nn_ = x.T @ x / n, x.T @ v / n
    nw = new_neurons(s, nn_, k)
    fit = x @ nw.alpha.T @ nw.omega.T                    # (n, m)
    drop = (v.pow(2).sum() - (v - fit).pow(2).sum()) / n
    assert torch.allclose(drop, torch.tensor(nw.gain, dtype=DT), rtol=1e-9)
    for _ in range(20):   # no other rank-k product does better
        a = torch.randn(k, d, generator=g, dtype=DT)
        w = torch.linalg.lstsq(x @ a.T, v).solution.T     # best fan-out for this fan-in
        other = x @ a.T @ w.T
        assert (v - other).pow(2).sum() >= (v - fit).pow(2).sum() - 1e-9


def _fd_slope(model, ctx, prop, gammas=(1e-3, 5e-4)):
    probe = AmplitudeProbe(model, prop)
    try:
        probe.gamma = 0.0
        j0 = ctx.train_loss()
        slopes = []
        for gmm in gammas:
            probe.gamma = gmm
            slopes.append((ctx.train_loss() - j0) / gmm)
    finally:
        probe.remove()
    return slopes


@pytest.mark.parametrize("project,update", [(False, False), (True, True), (True, False)])
def test_tiny_first_order_gain_matches_finite_differences(project, update):
    model, y, t = mlp_case()
    ctx = make_ctx(model, y, t)
    stats = gather_statistics(model, ctx.train_batches(), ctx.batch_loss)
    prop = tiny_layer_proposal(stats.layers[(1, 0)], 3, project=project, update_existing=update)
    assert prop.neurons.k == 3 and prop.coefficient > 0
    if not project and not update:   # c = σ'(0) Σ λ_k² exactly (tanh: σ'(0) = 1)
        assert prop.coefficient == pytest.approx(prop.neurons.gain, rel=1e-10)
    slopes = _fd_slope(model, ctx, prop)
    # J(γ) − J(0) = −γ c + O(γ²): the FD slope → −c linearly in γ
    extrapolated = 2 * slopes[1] - slopes[0]
    assert extrapolated == pytest.approx(-prop.coefficient, rel=1e-3)
    assert abs(slopes[1] + prop.coefficient) < 0.02 * prop.coefficient


def test_tiny_probe_and_apply_agree_and_gamma_zero_keeps_function():
    model, y, t = mlp_case()
    ctx = make_ctx(model, y, t)
    stats = gather_statistics(model, ctx.train_batches(), ctx.batch_loss)
    prop = tiny_layer_proposal(stats.layers[(0, 0)], 2)
    probe = AmplitudeProbe(model, prop)
    probe.gamma = 0.3
    with torch.no_grad():
        probed = model(y)
    probe.remove()
    m0, m1 = copy.deepcopy(model), copy.deepcopy(model)
    apply_tiny(m0, prop, 0.0)
    apply_tiny(m1, prop, 0.3)
    with torch.no_grad():
        assert_same_function(m0(y), model(y))
        assert torch.allclose(m1(y), probed, atol=1e-12)
    assert m1.blocks[0].hidden == [8]


def test_tiny_natural_gradient_invariance_under_input_reparametrisation():
    """x̃ → M x̃ (M invertible) and h̃ → P h̃ give the same function update: α → M^{-T}α, ω unchanged."""
    g = torch.Generator().manual_seed(5)
    n, d, h, m = 300, 4, 6, 3
    x = torch.cat([torch.randn(n, d, generator=g, dtype=DT), torch.ones(n, 1, dtype=DT)], 1)
    hh = torch.cat([torch.tanh(torch.randn(n, h, generator=g, dtype=DT)), torch.ones(n, 1, dtype=DT)], 1)
    goal = torch.randn(n, m, generator=g, dtype=DT)
    mx = torch.randn(d + 1, d + 1, generator=g, dtype=DT) + 3 * torch.eye(d + 1, dtype=DT)
    mh = torch.randn(h + 1, h + 1, generator=g, dtype=DT) + 3 * torch.eye(h + 1, dtype=DT)

    def update(xs, hs):
        stats = type("S", (), {})()
        stats.block, stats.layer = 0, 0
        stats.s_in, stats.s_hid, stats.c_in_hid = xs.T @ xs / n, hs.T @ hs / n, xs.T @ hs / n
        stats.n_in, stats.n_hid = xs.T @ goal / n, hs.T @ goal / n
        p = tiny_layer_proposal(stats, 2)
        neurons = torch.tanh(xs @ p.neurons.alpha.T) @ p.neurons.omega.T
        return hs @ p.delta_w.T, neurons, p

    dw_a, nn_a, pa = update(x, hh)
    dw_b, nn_b, pb = update(x @ mx.T, hh @ mh.T)
    assert torch.allclose(dw_a, dw_b, atol=1e-9)           # ΔW* h̃ unchanged
    assert torch.allclose(nn_a, nn_b, atol=1e-9)           # Σ ω_k σ(α_kᵀ x̃) unchanged
    assert pa.neurons.lambdas[:2] == pytest.approx(pb.neurons.lambdas[:2].tolist(), rel=1e-9)
    assert pa.coefficient == pytest.approx(pb.coefficient, rel=1e-9)


# ------------------------------------------------------------------------------------------ GradMax


def test_gradmax_fan_out_maximises_the_new_weights_gradient():
    model, y, t = mlp_case()
    ctx = make_ctx(model, y, t)
    stats = gather_statistics(model, ctx.train_batches(), ctx.batch_loss).layers[(1, 0)]
    gcross = stats.grad_cross
    k, c = 2, 0.7
    omega = gradmax_fan_out(gcross, k, c)
    # the formula ∂J/∂A = σ'(0) Ωᵀ G is the autograd gradient of the widened network
    m2 = copy.deepcopy(model)
    m2.widen(1, 0, k, fan_in=torch.zeros(k, 5, dtype=DT), bias=torch.zeros(k, dtype=DT), fan_out=omega)
    with torch.no_grad():
        assert_same_function(m2(y), model(y))
    loss = F.mse_loss(m2(y), t)
    lw = m2.blocks[1].layers[0]
    gw, gb = torch.autograd.grad(loss, [lw.weight, lw.bias])
    auto = torch.cat([gw[-k:], gb[-k:, None]], 1)
    assert torch.allclose(auto, fan_in_gradient(omega, gcross), atol=1e-12)
    best = new_weight_gradient_norm(omega, gcross)
    gen = torch.Generator().manual_seed(9)
    for _ in range(50):
        q, _ = torch.linalg.qr(torch.randn(omega.shape[0], k, generator=gen, dtype=DT))
        assert new_weight_gradient_norm(c * q, gcross) <= best + 1e-12   # orthogonal columns of norm c
        r = torch.randn(omega.shape[0], 1, generator=gen, dtype=DT)      # one unit, same norm
        assert new_weight_gradient_norm(c * r / r.norm(), gcross) <= new_weight_gradient_norm(
            gradmax_fan_out(gcross, 1, c), gcross) + 1e-12


def test_gradmax_and_tiny_coincide_for_whitened_inputs_without_projection():
    """With E[x̃x̃ᵀ] = I and V_goal not projected (``project = false``), TINY's SVD of
    S^{-1/2}N = N = −Gᵀ is GradMax's: ω_k ∝ GradMax's fan-out u_k (top left singular vectors of G),
    α_k ∝ the fan-in rows GradMax's first gradient step produces (−∂J/∂A rows ∝ top right singular
    vectors of G), and λ_k are G's singular values."""
    g = torch.Generator().manual_seed(11)
    n, d, m, k = 64, 4, 5, 3
    q, _ = torch.linalg.qr(torch.randn(n, d + 1, generator=g, dtype=DT))
    x = q * n**0.5                                  # whitened: xᵀx/n = I
    goal = torch.randn(n, m, generator=g, dtype=DT)
    s_in = x.T @ x / n
    assert torch.allclose(s_in, torch.eye(d + 1, dtype=DT), atol=1e-12)
    n_in = x.T @ goal / n
    gcross = -n_in.T                                 # G = E[∂ℓ/∂z x̃ᵀ], g = −∂ℓ/∂z
    tiny = new_neurons(s_in, n_in, k)
    omega = gradmax_fan_out(gcross, k, 1.0)
    step = -fan_in_gradient(omega, gcross)           # GradMax's first fan-in update direction (k × (d+1))
    sv = torch.linalg.svdvals(gcross)
    for j in range(k):
        w_t = tiny.omega[:, j] / tiny.omega[:, j].norm()
        a_t = tiny.alpha[j] / tiny.alpha[j].norm()
        assert abs(float(w_t @ omega[:, j])) == pytest.approx(1.0, abs=1e-10)
        assert abs(float(a_t @ step[j] / step[j].norm())) == pytest.approx(1.0, abs=1e-10)
        assert float(tiny.lambdas[j]) == pytest.approx(float(sv[j]), rel=1e-10)


# ------------------------------------------------------------------------------------------ folding


def test_fold_point_is_the_first_switch_on_the_segment_and_the_new_hyperplane_passes_through_it():
    g = torch.Generator().manual_seed(2)
    d, h = 4, 7
    w, b = torch.randn(h, d, generator=g, dtype=DT), torch.randn(h, generator=g, dtype=DT)
    x_t = torch.randn(5, d, generator=g, dtype=DT) * 2
    anchor = torch.randn(d, generator=g, dtype=DT)
    x_f, unit, tau = fold_points(x_t, anchor, w, b)
    z_f = x_f @ w.T + b
    for i in range(5):
        assert abs(float(z_f[i, unit[i]])) < 1e-10                       # some unit switches at x_f
        if torch.isfinite(tau[i]):
            # x_f on the ray x_t → anchor; no unit changes sign strictly before it
            assert torch.allclose(x_f[i], x_t[i] + tau[i] * (anchor - x_t[i]), atol=1e-12)
            sgn = torch.sign(x_t[i] @ w.T + b)
            for s in torch.linspace(0, 0.999, 50, dtype=DT):
                p = x_t[i] + s * tau[i] * (anchor - x_t[i])
                assert torch.equal(torch.sign(p @ w.T + b), sgn)
    wn, bn = folding_neurons(x_t, x_f, scale=1.0)
    assert torch.allclose((wn * x_f).sum(1) + bn, torch.zeros(5, dtype=DT), atol=1e-10)   # W x_f + b = 0
    assert torch.allclose((wn * x_t).sum(1) + bn, torch.ones(5, dtype=DT), atol=1e-10)    # x_t on the + side
    cos = F.cosine_similarity(wn, x_t - x_f, dim=1)
    assert torch.allclose(cos, torch.ones(5, dtype=DT), atol=1e-12)                      # along x_t − x_f


def test_weighted_kmeans_finds_the_typical_mistake():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(60, 2, generator=g, dtype=DT) * 0.1
    b = torch.randn(20, 2, generator=g, dtype=DT) * 0.1 + torch.tensor([5.0, 5.0], dtype=DT)
    x = torch.cat([a, b])
    w = torch.cat([torch.full((60,), 0.01, dtype=DT), torch.ones(20, dtype=DT)])   # mistakes in blob b
    cent, lab = weighted_kmeans(x, w, 2, generator=torch.Generator().manual_seed(0))
    idx = typical_instances(x, w, cent, lab, 1)
    assert int(idx[0]) >= 60
    centre_b = b.mean(0)
    assert float((x[idx[0]] - centre_b).norm()) == pytest.approx(float((b - centre_b).norm(dim=1).min()))


def test_folding_strategy_hyperplane_through_fold_point_and_predictions_unchanged():
    model, y, t = mlp_case(activation="relu")
    ctx = make_ctx(model, y, t)
    strat = build_strategy("folding", {"neurons": 2, "clusters": 4})
    strat.setup(ctx)
    with torch.no_grad():
        before = model(y)
    prop = strat.propose(ctx)
    assert prop is not None and prop.action == "widen" and prop.k >= 1
    key = (prop.depth, prop.layer)
    stats = shared_statistics(ctx, keep_samples=strat.sample_size)
    x = stats.layers[key].samples
    first = model.blocks[key[0]].layers[key[1]]
    x_f, _, _ = fold_points(x[torch.tensor(prop.info["sample_index"])], x.mean(0), first.weight.detach(),
                            first.bias.detach())
    assert torch.allclose((prop.fan_in * x_f).sum(1) + prop.bias, torch.zeros(prop.k, dtype=DT), atol=1e-9)
    strat.apply(ctx, prop)
    with torch.no_grad():
        assert_same_function(model(y), before)


# ------------------------------------------------------------------------------------------ contract

STRATEGIES = {
    "tiny": {"neurons": 3},
    "gradmax": {"neurons": 3, "every": 1},
    "folding": {"neurons": 2, "clusters": 4},
    "net2wider": {"neurons": 3},
    "random_neurons": {"neurons": 3},
    "forward_thinking": {"hidden": [4]},
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_keeps_function_and_optimizer_state(name):
    model, y, t = mlp_case()
    opt = make_optimizer("adam", model, 1e-2)
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(model(y), t).backward()
        opt.step()
    params = list(model.parameters())
    state = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params}
    ctx = make_ctx(model, y, t, epoch=3)
    strat = build_strategy(name, STRATEGIES[name])
    strat.setup(ctx)
    j0 = ctx.train_loss()
    with torch.no_grad():
        before = model(y)
    prop = strat.propose(ctx)
    assert prop is not None
    n0 = model.n_parameters()
    strat.apply(ctx, prop)
    sync_optimizer(opt, model)
    assert model.n_parameters() > n0
    with torch.no_grad():
        after = model(y)
    if name == "tiny":   # TINY moves along its update: the loss drops by the line-searched amount
        assert prop.info["gamma"] > 0 and prop.predicted_change < 0
        assert ctx.train_loss() == pytest.approx(j0 + prop.info["line_search_change"], rel=1e-9, abs=1e-12)
        assert ctx.train_loss() < j0
    elif name == "net2wider":
        assert torch.allclose(after, before, atol=1e-12)
    else:
        assert_same_function(after, before)
    for p in params:   # every old parameter object is still optimised, its moments are the leading slice
        assert any(q is p for q in opt.param_groups[0]["params"])
        for k, v in state[id(p)].items():
            now = opt.state[p][k]
            if v.dim() == 0:
                assert torch.equal(now, v)
            else:
                assert torch.equal(now[tuple(slice(0, s) for s in v.shape)], v)
    opt.zero_grad()
    F.mse_loss(model(y), t).backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_statistics_pass_is_shared_and_batched():
    model, y, t = mlp_case(hidden=(4, 3))
    ctx = make_ctx(model, y, t)
    keys = widenable_layers(model)
    assert keys == [(0, 0), (0, 1), (1, 0), (1, 1)]
    calls = []
    orig = ctx.batch_loss

    def counting(b):
        calls.append(len(b))
        return orig(b)

    ctx.batch_loss = counting
    s1 = shared_statistics(ctx)
    s2 = shared_statistics(ctx)
    assert s1 is s2 and len(calls) == 3          # 48 samples / 16: one pass for every layer
    # moments equal the per-sample definition (computed here with one big batch)
    x, hid, outs = {}, {}, {}
    lay = model.blocks[1].layers
    def grab_out(m, a, o):
        hid["h"], outs["z"] = a[0], o

    def grab_in(m, a, o):
        x["x"] = a[0]

    hooks = [lay[1].register_forward_hook(grab_out), lay[0].register_forward_hook(grab_in)]
    loss = F.mse_loss(model(y), t, reduction="sum") / t.shape[1]
    for h in hooks:
        h.remove()
    (gz,) = torch.autograd.grad(loss, [outs["z"]])
    xa = torch.cat([x["x"], torch.ones(48, 1, dtype=DT)], 1).detach()
    ha = torch.cat([hid["h"], torch.ones(48, 1, dtype=DT)], 1).detach()
    st = s1.layers[(1, 0)]
    assert torch.allclose(st.s_in, xa.T @ xa / 48, atol=1e-12)
    assert torch.allclose(st.n_hid, ha.T @ (-gz) / 48, atol=1e-12)
    assert torch.allclose(st.c_in_hid, xa.T @ ha / 48, atol=1e-12)
    with torch.no_grad():   # a weight change invalidates the cache
        model.blocks[0].layers[0].weight.add_(0.01)
    assert shared_statistics(ctx) is not s1


def test_strategies_need_mlp_blocks_and_reject_unknown_options():
    from pdegrow.errors import PdegrowError

    torch.manual_seed(0)
    model = GrowableResNet.mlp(3, [2], width=5, depth=1, block="perceptron").to(DT)
    ctx = make_ctx(model, torch.zeros(4, 3, dtype=DT), torch.zeros(4, 2, dtype=DT))
    with pytest.raises(PdegrowError, match="hidden layers of MLP blocks"):
        build_strategy("tiny", {}).setup(ctx)
    with pytest.raises(PdegrowError, match="unknown option"):
        build_strategy("gradmax", {"nuerons": 3})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_on_cuda(name):
    model, y, t = mlp_case()
    dev = torch.device("cuda")
    model, y, t = model.to(dev), y.to(dev), t.to(dev)
    ctx = make_ctx(model, y, t, epoch=1)
    ctx.device = dev
    strat = build_strategy(name, STRATEGIES[name])
    strat.setup(ctx)
    with torch.no_grad():
        before = model(y)
    prop = strat.propose(ctx)
    assert prop is not None
    strat.apply(ctx, prop)
    assert all(p.device.type == "cuda" for p in model.parameters())
    if name not in ("tiny", "net2wider"):
        with torch.no_grad():
            assert torch.equal(model(y), before)

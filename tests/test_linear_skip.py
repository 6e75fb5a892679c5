"""The linear skip path output = L(y) + f_θ(y) ([model] linear_skip = "ridge"): the ridge fit against the
normal equations, growth keeps the function with a skip, and a skip run round-trips through model.pt."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import conv_fields_config, conv_growth_case, make_growth_ctx, write_shifted_vorticity

from pdegrow.growth.base import apply_proposal, build_strategy
from pdegrow.models import GrowableResNet, LinearSkip
from pdegrow.models.linear_skip import LAMBDA_GRID, fit_ridge, ridge_path, ridge_solve


def _normal_equations(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(Wᵀ, b) from numpy.linalg.solve of the normal equations of (1/n)‖[X 1]θ − Y‖² + λ‖W‖² (the
    intercept unpenalised): ([X 1]ᵀ[X 1] + nλ diag(1, …, 1, 0)) θ = [X 1]ᵀ Y."""
    n, p = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    pen = n * lam * np.diag(np.r_[np.ones(p), 0.0])
    theta = np.linalg.solve(a.T @ a + pen, a.T @ y)
    return theta[:p], theta[p]


def test_ridge_equals_a_direct_solve_of_the_normal_equations():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)) + 0.3
    y = x @ rng.standard_normal((6, 3)) + 0.5 + 0.1 * rng.standard_normal((40, 3))
    for lam in (1e-3, 0.3, 5.0):
        wt, b = ridge_solve(torch.as_tensor(x), torch.as_tensor(y), lam)
        w_ref, b_ref = _normal_equations(x, y, lam)
        np.testing.assert_allclose(wt.numpy(), w_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b.numpy(), b_ref, rtol=1e-10, atol=1e-12)


def test_ridge_path_picks_the_lowest_validation_error():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 2))
    x, xv = rng.standard_normal((12, 8)), rng.standard_normal((30, 8))
    y, yv = x @ w + 0.8 * rng.standard_normal((12, 2)), xv @ w + 0.8 * rng.standard_normal((30, 2))
    lams = [1e-4, 1e-2, 0.1, 1.0, 10.0]
    errors, (wt, b, lam) = ridge_path(*(torch.as_tensor(a) for a in (x, y, xv, yv)), lams)
    expect = []
    for candidate in lams:
        w_ref, b_ref = _normal_equations(x, y, candidate)
        expect.append(float(((xv @ w_ref + b_ref - yv) ** 2).mean()))
    np.testing.assert_allclose(errors, expect, rtol=1e-9)
    assert lam == lams[int(np.argmin(expect))] and 0 < int(np.argmin(expect)) < len(lams) - 1
    w_ref, b_ref = _normal_equations(x, y, lam)
    np.testing.assert_allclose(wt.numpy(), w_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.numpy(), b_ref, rtol=1e-9, atol=1e-12)
    # λ = 0 in the config: the grid on the validation pairs; a λ > 0 is used as given
    assert fit_ridge(*(torch.as_tensor(a) for a in (x, y, xv, yv)))[2] in LAMBDA_GRID
    assert fit_ridge(torch.as_tensor(x), torch.as_tensor(y), None, None, 0.5)[2] == 0.5


def _skip_case() -> tuple[GrowableResNet, torch.Tensor, torch.Tensor]:
    model, y, t = conv_growth_case()
    skip = LinearSkip([1, 5, 5], [1, 5, 5]).to(torch.float64)
    g = torch.Generator().manual_seed(5)
    skip.set_map(0.2 * torch.randn(25, 25, generator=g, dtype=torch.float64),
                 torch.randn(25, generator=g, dtype=torch.float64), 0.1)
    model.set_skip(skip)
    return model, y, t


def test_growth_with_a_skip_keeps_the_function_and_the_derivative_sees_it():
    model, y, t = _skip_case()
    before = model(y)
    assert not torch.equal(before, model.head(model.states(y)[-1]))        # the skip contributes
    model.insert_block(1, model.new_block("conv_perceptron", zero_init=True))
    assert torch.equal(model(y), before)                                    # identity block: exactly
    assert [n for n, _ in model.named_parameters() if n.startswith("skip")] == []   # frozen: buffers
    # topological insertion with the skip: its line search (run from stored states) and the loss of the
    # model after the insertion agree, so the skip is in both; ε = 0 is the old function exactly
    ctx = make_growth_ctx(model, y, t)
    j0 = ctx.train_loss()
    prop = build_strategy("topological_insertion", {"fraction": 0.0, "line_search_evals": 12}).propose(ctx)
    assert prop is not None and prop.action == "insert"
    assert torch.equal(model(y), before)                                    # the search left it unchanged
    apply_proposal(model, prop)
    assert ctx.train_loss() - j0 == pytest.approx(prop.info["line_search_change"], rel=1e-9, abs=1e-12)
    with torch.no_grad():
        model.blocks[prop.depth].scale.fill_(0.0)
    assert torch.equal(model(y), before)


def test_skip_survives_the_spec_and_stays_frozen_under_unfreeze():
    model, y, _ = _skip_case()
    spec = model.spec()
    assert spec["skip"]["kind"] == "linear_skip" and spec["skip"]["lam"] == 0.1
    rebuilt = GrowableResNet.from_spec(json.loads(json.dumps(spec))).double()
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt(y), model(y))
    rebuilt.unfreeze("all")
    assert all(not n.startswith("skip") for n, _ in rebuilt.named_parameters())
    assert "skip" not in GrowableResNet.conv(1, 1, 3, 1).spec()                # old specs unchanged
    trainable = LinearSkip([2], [3], trainable=True)
    assert sorted(n for n, _ in trainable.named_parameters()) == ["bias", "weight"]


def test_ridge_skip_run_round_trips_through_model_pt(tmp_path):
    """A grown run with the frozen ridge skip: it starts at the ridge estimator, keeps that map through
    training and growth, and model.pt (predict, export) gives the trainer's function."""
    from pdegrow.cli import main
    from pdegrow.data.bundle import prepare_data
    from pdegrow.inference import load_model
    from pdegrow.training.config import load_config
    from pdegrow.training.model_setup import build_model

    data = write_shifted_vorticity(tmp_path / "ns.h5", 6, 40)
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(conv_fields_config(
        data="n_test = 10\nnormalize_targets = \"scalar\"\n", model="linear_skip = \"ridge\"\n",
        rest="[optim]\nbatch_size = 8\n[train]\nmax_epochs = 3\nphase_epochs = 1\n"
             "[growth]\nstrategy = \"topological_insertion\"\nmax_layers = 1\nfraction = 0.0\n"))
    cfg = load_config(cfg_path, {"run.dtype": "float64"})
    bundle = prepare_data(str(data), cfg.data, cfg.run.seed, torch.device("cpu"), torch.float64)
    start = build_model(cfg, bundle).double()
    x, t = bundle.train.inputs, bundle.train.targets
    wt, b, lam, _ = fit_ridge(x, t, bundle.val.inputs, bundle.val.targets)
    ridge = (x.flatten(1) @ wt + b).reshape(t.shape)
    torch.testing.assert_close(start(x), ridge, rtol=1e-10, atol=1e-10)      # f_θ starts at 0
    assert start.skip.lam == lam

    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--data", str(data), "--out", str(run),
                 "--set", "run.dtype=float64", "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["growth_events"] == 1 and math.isfinite(summary["test"]["rel_error_target"])
    pm = load_model(run)
    assert pm.model.skip is not None and pm.model.depth == 2
    torch.testing.assert_close(pm.model.skip.weight, start.skip.weight, rtol=0, atol=0)   # frozen
    obs = np.random.default_rng(3).standard_normal((4, 6, 6))
    want = pm.fields(pm.predict(obs))["vorticity_0"]
    head_only = pm.model.head(pm.model.states(pm.network_input(obs))[-1])
    assert float(head_only.detach().abs().max()) > 0                               # f_θ trained
    from pdegrow.training.evaluate import layer_predictions, load_trained, predict

    trained = load_trained(run)                       # the report's per-layer fields include the skip
    np.testing.assert_array_equal(layer_predictions(trained, obs)[-1][1], predict(trained, obs))
    assert main(["export", str(run)]) == 0
    got = torch.jit.load(str(run / "model.torchscript.pt"))(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)

"""The label-free heat posterior loss: closed-form value, finite-difference gradient, amortised
MAP on one observation = the MAP found by direct optimisation, and its use in the trainer."""

import h5py
import numpy as np
import pytest
import torch

from pdegrow.data.bundle import prepare_data
from pdegrow.errors import PdegrowError
from pdegrow.reference.heat_forward import relative_noise_nll
from pdegrow.regularizers.heat_physics import HeatOperators, kl_to_field, solve_temperature
from pdegrow.regularizers.heat_posterior import kl_neg_log_posterior
from pdegrow.training.config import DataConfig, build_config
from pdegrow.training.trainer import Trainer

torch.set_num_threads(1)
D = torch.float64


@pytest.fixture(scope="module")
def heat(heat_paper_file):
    with h5py.File(heat_paper_file) as f:
        ops = HeatOperators.from_arrays({k: f["operators"][k][()] for k in f["operators"]},
                                        {k: f["geometry"][k][()] for k in f["geometry"]}, dtype=D)
        arrays = {k: torch.as_tensor(f[k][()], dtype=D) for k in
                  ("inputs/observations", "inputs/observations_clean", "targets/kl_coefficients")}
        level = float(f.attrs["noise_level"])
    return ops, arrays, level


def test_value_closed_form(heat):
    ops, a, level = heat
    xi, y_clean = a["targets/kl_coefficients"][:4], a["inputs/observations_clean"][:4]
    # y = T(ξ): the misfit vanishes, only ½‖ξ‖² + Σ log T_s remains
    ref = 0.5 * (xi**2).sum(1) + torch.log(y_clean).sum(1)
    assert torch.allclose(kl_neg_log_posterior(xi, y_clean, ops, level), ref, rtol=1e-10, atol=1e-10)
    # y = 1.1 T: each sensor adds ½ (0.1/σ)²
    T = torch.tensor([[2.0, 4.0]], dtype=D)
    expect = np.log(8.0) + 2 * 0.5 * (0.1 / 0.05) ** 2
    assert relative_noise_nll(T, 1.1 * T, 0.05).item() == pytest.approx(expect, rel=1e-12)


def test_gradient_finite_differences(heat):
    ops, a, level = heat
    xi = (a["targets/kl_coefficients"][:2] * 0.7).clone().requires_grad_(True)
    y = a["inputs/observations"][:2]
    assert torch.autograd.gradcheck(lambda x: kl_neg_log_posterior(x, y, ops, level), (xi,),
                                    eps=1e-6, atol=1e-7)


def _direct_map(y, ops, level):
    xi = torch.zeros(1, ops.kl_basis.shape[1], dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS([xi], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        v = kl_neg_log_posterior(xi, y, ops, level).sum()
        v.backward()
        return v

    opt.step(closure)
    return xi.detach()


def test_amortised_map_on_one_input_is_the_map(heat):
    """Trained on a single y, the loss's minimiser over (bias-only) networks is the MAP point."""
    ops, a, level = heat
    y = a["inputs/observations"][5:6]
    xi_map = _direct_map(y, ops, level)
    head = torch.nn.Linear(1, xi_map.shape[1]).double()
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        v = kl_neg_log_posterior(head(torch.ones(1, 1, dtype=D)), y, ops, level).sum()
        v.backward()
        return v

    opt.step(closure)
    xi_net = head(torch.ones(1, 1, dtype=D)).detach()
    assert torch.allclose(xi_net, xi_map, atol=1e-5)
    # and the MAP explains the data to about the noise level
    T = solve_temperature(kl_to_field(xi_map, ops.prior_mean, ops.kl_basis, ops.kl_eigenvalues), ops)
    rel = ((T @ ops.observation.T - y) / y).abs().mean()
    assert rel < 3 * level


def test_bundle_returns_raw_observations_with_log_transform(heat_paper_file):
    cfg = DataConfig(n_train=20, n_val=5, n_test=10, input_transform="log", noisy_copies=2)
    data = prepare_data(str(heat_paper_file), cfg, 0, torch.device("cpu"), D)
    with h5py.File(heat_paper_file) as f:
        y = f["inputs/observations"][data.splits["train"]]
    raw = data.to_physical_input(data.train.inputs[: len(y)])
    np.testing.assert_allclose(raw.numpy(), y, rtol=1e-10)


def _cfg(**train):
    return build_config({
        "run": {"seed": 0, "device": "cpu", "dtype": "float64", "progress": False},
        "data": {"n_train": 20, "n_val": 5, "n_test": 20, "input_transform": "log", "noisy_copies": 2},
        "model": {"width": 16, "depth": 1},
        "optim": {"lr": 3e-3, "batch_size": 60},
        "train": {"max_epochs": 30, "phase_epochs": 30, "patience": 30, **train},
    }, "test")


def test_trainer_label_free_objective_decreases(heat_paper_file, tmp_path):
    trainer = Trainer(_cfg(supervised_weight=0.0, posterior_weight=1.0), heat_paper_file, tmp_path / "run")
    before = trainer.train_loss()
    summary = trainer.run()
    assert "term_posterior" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert trainer.train_loss() < before - 1.0
    assert np.isfinite(summary["test"]["rel_error_field"])


def test_objective_settings_refused(heat_paper_file, tmp_path):
    with pytest.raises(PdegrowError, match="both 0"):
        _cfg(supervised_weight=0.0, posterior_weight=0.0)
    cfg = _cfg(posterior_weight=1.0)
    cfg.data.target = "targets/log_conductivity"
    with pytest.raises(PdegrowError, match="kl_coefficients"):
        Trainer(cfg, heat_paper_file, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_simulated_samples_follow_the_file_model(heat, heat_paper_file):
    """Prior-predictive draws solve the stored discrete problem, have N(0, I) coefficients and
    relative noise of the file's level, and do not depend on how many are drawn."""
    from pdegrow.data.simulated import simulate_heat_samples
    from pdegrow.regularizers.heat_physics import heat_residual

    ops, a, level = heat
    sim = simulate_heat_samples(ops, 400, level, seed=3, chunk=150)
    xi = torch.as_tensor(sim["targets/kl_coefficients"])
    m, T = torch.as_tensor(sim["targets/log_conductivity"]), torch.as_tensor(sim["targets/temperature"])
    assert heat_residual(m, T, ops).abs().max() < 1e-9
    assert torch.allclose(m, kl_to_field(xi, ops.prior_mean, ops.kl_basis, ops.kl_eigenvalues))
    assert abs(xi.mean()) < 4 / np.sqrt(xi.numel()) and abs(xi.var() - 1) < 0.05
    ratio = torch.as_tensor(sim["inputs/observations"]) / (T @ ops.observation.T) - 1
    assert abs(ratio.std() / level - 1) < 0.05
    few = simulate_heat_samples(ops, 7, level, seed=3)
    np.testing.assert_allclose(few["inputs/observations"], sim["inputs/observations"][:7], rtol=1e-12)


def test_trainer_appends_simulated_samples(heat_paper_file, tmp_path):
    cfg = _cfg(supervised_weight=0.0, posterior_weight=1.0)
    cfg.data.simulated_inputs = 30
    data = prepare_data(str(heat_paper_file), cfg.data, 0, torch.device("cpu"), D)
    assert len(data.train) == 20 * 3 + 30
    assert data.train.groups[-30:].tolist() == list(range(80, 110))
    cfg.data.aux = ["targets/temperature", "targets/log_conductivity", "inputs/observations_clean"]
    with pytest.raises(PdegrowError, match="observations_clean cannot be simulated"):
        prepare_data(str(heat_paper_file), cfg.data, 0, torch.device("cpu"), D)

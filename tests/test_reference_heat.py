"""Heat references: adjoint vs finite differences, stored prior operators, closed forms, MAP → truth,
MCMC on a known Gaussian, the CLI and its refusals (real data files from the real solver)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import run_cli

from pdegrow.contract import open_dataset
from pdegrow.errors import PdegrowError
from pdegrow.reference.diagnostics import ess, split_rhat
from pdegrow.reference.heat_data import load_heat_reference_data
from pdegrow.reference.heat_forward import Evaluation, HeatForward, stiffness_sensitivity
from pdegrow.reference.heat_map import laplace, multistart_map
from pdegrow.reference.heat_mcmc import sample_posterior
from pdegrow.reference.heat_prior import KLPrior, consistent_mass
from pdegrow.reference.results import read_reference
from pdegrow.regularizers.heat_physics import dense_stiffness

F64 = torch.float64


def _ops(path: Path) -> dict[str, np.ndarray]:
    with open_dataset(path) as f:
        return {k: f["operators"][k][()] for k in f["operators"]}


# ---------------------------------------------------------------- stored operators (item 6)

def test_kl_modes_orthonormal_in_the_consistent_mass(heat_paper_file):
    ops = _ops(heat_paper_file)
    M = consistent_mass(ops)
    phi = ops["kl_basis"]
    np.testing.assert_allclose(phi.T @ (M @ phi), np.eye(phi.shape[1]), atol=1e-10)
    np.testing.assert_allclose(np.asarray(M.sum(1)).ravel(), ops["lumped_mass"], rtol=1e-12)
    assert M.sum() == pytest.approx(1.0)                       # ∫_Ω 1 dx on the unit square
    lumped = phi.T @ (ops["lumped_mass"][:, None] * phi)
    assert np.abs(lumped - np.eye(phi.shape[1])).max() > 0.05   # not orthonormal in the lumped mass


def test_old_file_without_mass_refused(heat_default_file, tmp_path):
    old = tmp_path / "old.h5"
    shutil.copy(heat_default_file, old)
    with h5py.File(old, "a") as f:
        del f["operators/mass_matrix_data"]
    with pytest.raises(PdegrowError, match="no consistent mass matrix"):
        load_heat_reference_data(old, np.arange(2))
    with h5py.File(old, "a") as f:
        del f["operators/spde_scale"]
    proc = run_cli("reference", str(old), "--method", "map", "--samples", "0:2", "--no-progress",
                   check=False)
    assert proc.returncode == 2 and "not described" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("old.reference-*"))


def test_spde_prior_variance_and_adjointness(heat_default_file):
    d = load_heat_reference_data(heat_default_file, np.arange(3))
    prior = d.prior
    # the node scaling makes the marginal variance σ² = 1 at every node (closed form)
    np.testing.assert_allclose(prior.variance().numpy(), d.config["variance"], rtol=1e-8)
    g = torch.randn(3, prior.dim, dtype=F64)
    xi = torch.randn(3, prior.dim, dtype=F64)
    lhs = (prior.push(xi) * g).sum(1)
    rhs = (xi * prior.pullback(g)).sum(1)
    np.testing.assert_allclose(lhs.numpy(), rhs.numpy(), rtol=1e-10)


# ---------------------------------------------------------------- adjoint vs finite differences

def test_sensitivity_is_the_derivative_of_the_stiffness(heat_paper_file):
    d = load_heat_reference_data(heat_paper_file, np.arange(2))
    ops = d.posterior.forward.ops
    gen = torch.Generator().manual_seed(1)
    m, v, w, T = (torch.randn(2, ops.n_nodes, generator=gen, dtype=F64) for _ in range(4))
    h = 1e-6
    dK = (dense_stiffness(m + h * v, ops) - dense_stiffness(m - h * v, ops)) / (2 * h)
    fd = -torch.einsum("bi,bij,bj->b", w, dK, T)
    exact = (stiffness_sensitivity(w, T, m, ops.cells, ops.cell_stiffness) * v).sum(1)
    np.testing.assert_allclose(exact.numpy(), fd.numpy(), rtol=1e-7)


@pytest.mark.parametrize("fixture", ["heat_paper_file", "heat_default_file"])
def test_adjoint_gradient_and_jacobian_match_finite_differences(fixture, request):
    d = load_heat_reference_data(request.getfixturevalue(fixture), np.arange(3))
    post = d.posterior
    gen = torch.Generator().manual_seed(0)
    xi = 0.5 * torch.randn(3, post.dim, generator=gen, dtype=F64)
    v = torch.randn(3, post.dim, generator=gen, dtype=F64)
    ev, evj = post.gradient(xi, d.y), post.jacobian(xi, d.y)
    np.testing.assert_allclose(ev.grad.numpy(), evj.grad.numpy(), rtol=1e-9, atol=1e-9)
    h = 1e-5
    plus, minus = post.value(xi + h * v, d.y), post.value(xi - h * v, d.y)
    fd_f = (plus.f - minus.f) / (2 * h)
    np.testing.assert_allclose((ev.grad * v).sum(1).numpy(), fd_f.numpy(), rtol=1e-6)
    fd_t = (plus.t - minus.t) / (2 * h)
    np.testing.assert_allclose(torch.einsum("bsd,bd->bs", evj.jac, v).numpy(), fd_t.numpy(),
                               rtol=1e-6, atol=1e-9 * fd_t.abs().max().item())


def test_sparse_and_dense_solves_agree(heat_default_file):
    d = load_heat_reference_data(heat_default_file, np.arange(2))
    ops = d.posterior.forward.ops
    m = d.m_true
    dense, sparse = HeatForward(ops), HeatForward(ops, dense_limit=0)
    assert not dense.sparse and sparse.sparse
    np.testing.assert_allclose(sparse.temperature(m).numpy(), dense.temperature(m).numpy(), rtol=1e-10)
    # and both reproduce the stored temperature of the FEniCSx solve
    with open_dataset(heat_default_file) as f:
        T_file = f["targets/temperature"][0:2]
    np.testing.assert_allclose(dense.full(dense.temperature(m)).numpy(), T_file, rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------- closed forms on a linear-Gaussian toy

class LinearGaussian:
    """f(ξ) = ½‖ξ‖² + ½‖(y − Jξ)/s‖²: the posterior is N(μ, Σ), Σ = (I + JᵀJ/s²)⁻¹, μ = Σ Jᵀy/s²."""

    def __init__(self, J: torch.Tensor, s: float) -> None:
        self.J, self.s = J, s
        self.prior = KLPrior(torch.zeros(J.shape[1], dtype=F64), torch.eye(J.shape[1], dtype=F64))

    @property
    def dim(self) -> int:
        return self.J.shape[1]

    def value(self, xi: torch.Tensor, y: torch.Tensor) -> Evaluation:
        t = xi @ self.J.T
        return Evaluation(0.5 * (xi**2).sum(1) + 0.5 * (((y - t) / self.s) ** 2).sum(1), t, xi)

    def jacobian(self, xi: torch.Tensor, y: torch.Tensor) -> Evaluation:
        ev = self.value(xi, y)
        ev.grad = xi - (y - ev.t) @ self.J / self.s**2
        ev.jac = self.J.expand(len(xi), -1, -1)
        return ev

    gradient = jacobian

    def gauss_newton(self, ev: Evaluation) -> torch.Tensor:
        return ev.jac / self.s

    def exact(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cov = torch.linalg.inv(torch.eye(self.dim, dtype=F64) + self.J.T @ self.J / self.s**2)
        return y @ self.J @ cov / self.s**2, cov


def test_map_and_laplace_equal_the_closed_form():
    gen = torch.Generator().manual_seed(2)
    toy = LinearGaussian(torch.randn(5, 7, generator=gen, dtype=F64), 0.3)
    y = torch.randn(4, 5, generator=gen, dtype=F64)
    mu, cov = toy.exact(y)
    res = multistart_map(toy, y, n_starts=3)
    assert bool(res.converged.all()) and int(res.n_optima.max()) == 1
    np.testing.assert_allclose(res.xi.numpy(), mu.numpy(), atol=1e-9)
    lap = laplace(toy, y, res.xi, toy.prior.variance())
    np.testing.assert_allclose(lap.xi_cov.numpy(), cov.expand(4, -1, -1).numpy(), atol=1e-12)
    np.testing.assert_allclose(lap.var_m.numpy(), cov.diagonal().expand(4, -1).numpy(), atol=1e-12)


def test_mcmc_recovers_a_2d_gaussian_posterior():
    toy = LinearGaussian(torch.tensor([[2.0, 1.0], [0.0, 0.5], [1.0, -1.0]], dtype=F64), 0.5)
    y = torch.tensor([[1.0, 0.2, -0.5], [0.3, -1.0, 2.0]], dtype=F64)
    mu, cov = toy.exact(y)
    xi_map = multistart_map(toy, y).xi
    H = torch.linalg.inv(cov).expand(2, -1, -1).clone()
    res = sample_posterior(toy, y, xi_map, H * 0.7, chains=4, warmup=150, steps=2000, seed=5)
    assert res.rhat.max() < 1.05
    se = torch.sqrt(cov.diagonal()).numpy() / np.sqrt(res.ess)          # MC standard error of the mean
    assert np.all(np.abs(res.mean_xi.numpy() - mu.numpy()) < 5 * se)
    var_mc = res.std_m.numpy() ** 2                                     # m = ξ here
    np.testing.assert_allclose(var_mc, cov.diagonal().expand(2, -1).numpy(), rtol=0.15)
    # e^m of a Gaussian: E[e^ξ] = exp(μ + ½σ²)
    np.testing.assert_allclose(res.mean_exp_m.numpy(), torch.exp(mu + 0.5 * cov.diagonal()).numpy(),
                               rtol=0.05)


def test_diagnostics_on_known_chains():
    rng = np.random.default_rng(0)
    iid = rng.standard_normal((4, 4000))
    assert split_rhat(iid) == pytest.approx(1.0, abs=0.01)
    assert 12000 < ess(iid) < 20000
    phi, x = 0.9, np.zeros((4, 4000))                      # AR(1): ESS ≈ n (1 − φ)/(1 + φ)
    e = rng.standard_normal(x.shape)
    for t in range(1, x.shape[1]):
        x[:, t] = phi * x[:, t - 1] + np.sqrt(1 - phi**2) * e[:, t]
    assert ess(x) == pytest.approx(16000 * 0.1 / 1.9, rel=0.3)
    shifted = iid.copy()
    shifted[0] += 1.0
    assert split_rhat(shifted) > 1.05


# ---------------------------------------------------------------- MAP → truth as the noise → 0

def test_map_reaches_the_truth_as_the_noise_vanishes(tmp_path):
    errors = []
    for noise in (1e-2, 1e-4):
        out = tmp_path / f"heat-{noise:g}.h5"
        run_cli("generate", "heat", "--preset", "paper", "--set", "nx=8", "--set", "ny=8",
                "--set", "n_modes=4", "--set", "n_sensors=40", "--set", f"noise_level={noise}",
                "--n-samples", "4", "--seed", "1",
                "--out", str(out), "--no-progress")
        run_cli("reference", str(out), "--method", "map", "--samples", "all", "--no-progress")
        ref = read_reference(tmp_path / f"heat-{noise:g}.reference-map.h5")
        errors.append(ref.errors["rel_error_field"].max())
        np.testing.assert_array_equal(ref.sample_indices, np.arange(4))
    assert errors[1] < 0.01 and errors[1] < errors[0] / 10


# ---------------------------------------------------------------- the CLI: results, refusals

def test_cli_map_laplace_mcmc_on_the_paper_setting(heat_paper_file, tmp_path):
    data = tmp_path / "heat.h5"
    shutil.copy(heat_paper_file, data)
    for method in ("map", "laplace"):
        proc = run_cli("reference", str(data), "--method", method, "--samples", "0:12", "--no-progress")
        assert "rel_error_conductivity" in proc.stdout
    lap = read_reference(tmp_path / "heat.reference-laplace.h5")
    mp = read_reference(tmp_path / "heat.reference-map.h5")
    np.testing.assert_allclose(lap.estimates["mean_m"], mp.estimates["map_m"])
    assert 0.5 < lap.info["laplace"]["coverage_95"] <= 1.0
    assert np.all(lap.estimates["std_m"] <= 1.0 + 1e-9)                 # never above the prior std
    proc = run_cli("reference", str(data), "--method", "mcmc", "--samples", "0:6", "--chains", "4",
                   "--warmup", "200", "--steps", "600", "--no-progress", "--json")
    summary = json.loads(proc.stdout)
    assert summary["info"]["mcmc"]["max_rhat"] <= 1.05
    ref = read_reference(tmp_path / "heat.reference-mcmc.h5")
    assert set(ref.errors) >= {"rel_error_field", "rel_error_field_l2", "rel_error_conductivity",
                               "rel_error_target", "map_rel_error_field"}
    assert ref.estimates["mean_exp_m"].shape == ref.estimates["mean_m"].shape == (6, 100)
    # E[e^m] ≥ e^{E[m]} (Jensen), node by node
    assert np.all(ref.estimates["mean_exp_m"] >= np.exp(ref.estimates["mean_m"]) * (1 - 1e-12))
    assert json.loads((tmp_path / "heat.reference-mcmc.json").read_text())["n_samples"] == 6


def test_cli_spde_map_and_laplace(heat_default_file, tmp_path):
    out = tmp_path / "spde-laplace.h5"
    run_cli("reference", str(heat_default_file), "--method", "laplace", "--samples", "0:4", "--out", str(out),
            "--no-progress")
    ref = read_reference(out)
    assert ref.info["map"]["not_converged"] == 0
    assert np.all(ref.estimates["std_m"] < 1.0 + 1e-9) and ref.estimates["std_m"].min() < 0.9
    assert ref.errors["rel_error_field"].mean() < 1.0


@pytest.mark.parametrize("args, message", [
    (["--method", "map", "--samples", "0:1000"], "outside"),
    (["--method", "map", "--samples", "79,80"], "outside"),
    (["--method", "mcmc", "--samples", "0:2", "--warmup", "0", "--steps", "8", "--max-steps", "8",
      "--chains", "2"], "run longer"),
])
def test_cli_refusals(heat_paper_file, tmp_path, args, message):
    out = tmp_path / "r.h5"
    proc = run_cli("reference", str(heat_paper_file), *args, "--out", str(out), "--no-progress", check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_refuses_spde_mcmc_existing_output_and_other_problems(heat_default_file, tmp_path):
    proc = run_cli("reference", str(heat_default_file), "--method", "mcmc", "--samples", "0:2",
                   "--out", str(tmp_path / "x.h5"), check=False)
    assert proc.returncode == 2 and "KL prior" in proc.stderr
    (tmp_path / "x.h5").write_text("keep me")
    proc = run_cli("reference", str(heat_default_file), "--method", "map", "--samples", "0:2",
                   "--out", str(tmp_path / "x.h5"), check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert (tmp_path / "x.h5").read_text() == "keep me"
    pytest.importorskip("sklearn")
    from pdegrow.data.prototypes import load_table, write_table

    reg = write_table(load_table("diabetes"), tmp_path / "diabetes.h5", seed=0)
    proc = run_cli("reference", str(reg), "--method", "map", check=False)
    assert proc.returncode == 2 and "no Bayesian reference" in proc.stderr


def test_a_killed_run_leaves_no_results_file(heat_paper_file, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-m", "pdegrow", "reference", str(heat_paper_file),
                             "--method", "mcmc", "--samples", "all", "--steps", "4000", "--out", str(out),
                             "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and not out.with_suffix(".json").exists()
    # the same command then runs from the start (nothing to clean up by hand)
    run_cli("reference", str(heat_paper_file), "--method", "map", "--samples", "0:3", "--out", str(out),
            "--no-progress")
    assert read_reference(out).n == 3

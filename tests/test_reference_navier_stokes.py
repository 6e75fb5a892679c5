"""Navier–Stokes references: the torch dynamics against the DOLFINx solver and the stored files,
adjoint/JVP vs finite differences, batched L-BFGS, low-rank Laplace vs dense closed forms,
MAP → truth as the noise vanishes, and the refusals (real files from the real generator)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import generate_with_sets, run_cli

from pdegrow.errors import PdegrowError
from pdegrow.reference import batched_lbfgs, low_rank
from pdegrow.reference.dispatch import run_reference as dispatch_reference
from pdegrow.reference.navier_stokes import build, forward_mismatch, laplace_std, load_data, run_reference
from pdegrow.reference.ns_forward import TorusP1Dynamics, advection, mass_apply, stiffness_apply
from pdegrow.reference.ns_posterior import apply_sqrt_prior, prior_pointwise_variance
from pdegrow.reference.results import read_reference

F64 = torch.float64
R = 12
GEN = ("generate", "navier-stokes", "--resolution", str(R), "--final-time", "0.1", "--set", "dt=0.005",
       "--n-samples", "6", "--seed", "1", "--no-progress")


def _generate(path: Path, *sets: str) -> Path:
    return generate_with_sets(GEN, path, *sets)


@pytest.fixture(scope="module")
def ns_full(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("ns") / "full.h5", "noise_level=0.01")


@pytest.fixture(scope="module")
def ns_sensors(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("ns") / "sensors.h5", "noise_level=0.01", "observation=sensors",
                     "n_sensors=16")


# ---------------------------------------------------------------- the dynamics

def test_operators_equal_the_dolfinx_matrices():
    from solvers.navier_stokes import TorusVorticitySolver

    n = 8
    s = TorusVorticitySolver(n, 1, 1e-3, 1e-3)

    def dense(A):
        ai, aj, av = A.getValuesCSR()
        out = np.zeros(A.getSize())
        for row in range(len(ai) - 1):
            out[row, aj[ai[row]:ai[row + 1]]] = av[ai[row]:ai[row + 1]]
        return out

    basis = torch.eye(n * n, dtype=F64).reshape(n * n, n, n)      # periodic dof p = grid.ravel()[p]
    np.testing.assert_allclose(mass_apply(basis).reshape(n * n, -1).numpy().T / n**2, dense(s.M), atol=1e-15)
    np.testing.assert_allclose(stiffness_apply(basis).reshape(n * n, -1).numpy().T, dense(s.K), atol=1e-13)
    rng = np.random.default_rng(0)
    w = rng.standard_normal(n * n)
    psi, adv = s.vector(), s.vector()
    s.stream_function(s.vector(w), psi)
    s.advection(s.vector(w), adv)
    dyn = TorusP1Dynamics(n, 1e-3, 1e-3, 1, torch.zeros(n, n))
    wt = torch.tensor(w.reshape(n, n))
    psi_t = torch.fft.irfft2(torch.fft.rfft2(wt) * dyn.stream_hat, s=(n, n))
    np.testing.assert_allclose(psi_t.numpy().ravel(), psi.array, atol=1e-15)
    np.testing.assert_allclose(advection(psi_t, wt).numpy().ravel(), adv.array, atol=1e-15)


@pytest.mark.parametrize("scheme", ["cn_ab2", "cn_heun"])
def test_dynamics_equal_the_dolfinx_time_stepping(scheme):
    from solvers.navier_stokes import TorusVorticitySolver, forcing_function, sample_vorticity

    n, dt, steps = 10, 2e-3, 25
    s = TorusVorticitySolver(n, 1, 1e-3, dt, forcing_function, "petsc", scheme)
    w0 = sample_vorticity(np.random.default_rng(4), n)
    ref = s.to_grid(s.run(s.from_grid(w0), steps)[0])
    gx, gy = s.space.grid_coordinates()
    dyn = TorusP1Dynamics(n, 1e-3, dt, steps, torch.tensor(forcing_function(np.stack([gx, gy]))), scheme,
                          checkpoint_every=7)
    out = dyn(torch.tensor(w0)).numpy()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-12


def test_forward_reproduces_the_stored_clean_fields(ns_full, ns_sensors):
    for path in (ns_full, ns_sensors):
        data = load_data(path, np.arange(6))
        mismatch = forward_mismatch(build(data, torch.device("cpu")), data)
        assert mismatch is not None and mismatch.max() < 1e-12


def test_checkpointed_gradient_equals_the_plain_one():
    dyn = TorusP1Dynamics(8, 1e-3, 5e-3, 13, torch.zeros(8, 8), checkpoint_every=4)
    w0 = (0.3 * torch.randn(2, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(0))).requires_grad_()
    (g1,) = torch.autograd.grad(dyn(w0, checkpoint=True).pow(3).sum(), w0)
    (g2,) = torch.autograd.grad(dyn(w0, checkpoint=False).pow(3).sum(), w0)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- derivatives vs finite differences

@pytest.mark.parametrize("kind", ["full", "sensors"])
def test_adjoint_gradient_matches_finite_differences(kind, ns_full, ns_sensors):
    data = load_data(ns_full if kind == "full" else ns_sensors, np.array([0, 3]))
    post = build(data, torch.device("cpu"), checkpoint_every=6)
    gen = torch.Generator().manual_seed(1)
    xi = torch.randn(2, R, R, dtype=F64, generator=gen)
    v = torch.randn(2, R, R, dtype=F64, generator=gen)
    y = torch.as_tensor(data.y)
    _, g = post.value_and_grad(xi, y)
    h = 1e-5
    with torch.no_grad():
        fd = (post.terms(xi + h * v, y)["total"] - post.terms(xi - h * v, y)["total"]) / (2 * h)
    np.testing.assert_allclose((g * v).sum((1, 2)).numpy(), fd.numpy(), rtol=1e-6)


def test_fisher_map_jvp_and_vjp_match_finite_differences_and_each_other(ns_sensors):
    data = load_data(ns_sensors, np.array([1]))
    post = build(data, torch.device("cpu"))
    gen = torch.Generator().manual_seed(2)
    xi, v = (torch.randn(1, R, R, dtype=F64, generator=gen) for _ in range(2))
    u = torch.randn(1, post.n_obs + 1, dtype=F64, generator=gen)
    fmap = post.fisher_map(torch.tensor([0.01], dtype=F64))
    with torch.no_grad():
        jv = torch.func.jvp(fmap, (xi,), (v,))[1]
        h = 1e-5
        fd = (fmap(xi + h * v) - fmap(xi - h * v)) / (2 * h)
    np.testing.assert_allclose(jv.numpy(), fd.numpy(), rtol=1e-6, atol=1e-6 * float(fd.abs().max()))
    x = xi.clone().requires_grad_()
    (jtu,) = torch.autograd.grad(fmap(x), x, u)
    assert float((jv * u).sum()) == pytest.approx(float((jtu * v).sum()), rel=1e-10)


# ---------------------------------------------------------------- L-BFGS and the low-rank Laplace

def test_batched_lbfgs_solves_independent_quadratics_and_rosenbrock():
    gen = torch.Generator().manual_seed(0)
    B, D = 4, 20
    Q = torch.randn(B, D, D, dtype=F64, generator=gen)
    A = Q @ Q.transpose(1, 2) / D + torch.eye(D, dtype=F64) * torch.arange(1, B + 1, dtype=F64)[:, None, None]
    b = torch.randn(B, D, dtype=F64, generator=gen)

    def quad(x, rows):
        Ax = torch.einsum("bij,bj->bi", A[rows], x)
        return 0.5 * (x * Ax).sum(-1) - (b[rows] * x).sum(-1), Ax - b[rows]

    res = batched_lbfgs.minimize(quad, torch.zeros(B, D, dtype=F64), max_iter=300, gtol=1e-10, ftol=0.0)
    torch.testing.assert_close(res.x, torch.linalg.solve(A, b), rtol=0, atol=1e-7)

    def rosen(x, rows):
        x = x.clone().requires_grad_()
        f = (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(-1)
        (g,) = torch.autograd.grad(f.sum(), x)
        return f.detach(), g

    x0 = -0.3 * torch.arange(3, dtype=F64)[:, None].expand(3, 5).clone()
    res = batched_lbfgs.minimize(rosen, x0, max_iter=1000, gtol=1e-9, ftol=0.0)
    torch.testing.assert_close(res.x, torch.ones(3, 5, dtype=F64), rtol=0, atol=1e-6)
    assert bool(res.converged.all())


@pytest.mark.parametrize("n_data, rank, exact", [(6, 10, True), (50, 20, False)])
def test_low_rank_laplace_equals_the_dense_posterior_covariance(n_data, rank, exact):
    """Exact SVD (m ≤ rank + oversample), and the randomised one on a Jacobian of rank 12 < 30 columns."""
    gen = torch.Generator().manual_seed(3)
    B, D, jrank = 2, 60, 12
    J = (torch.randn(B, n_data, jrank, dtype=F64, generator=gen) * torch.logspace(1, -2, jrank, dtype=F64)) \
        @ torch.randn(B, jrank, D, dtype=F64, generator=gen)
    Lmat = torch.randn(D, D, dtype=F64, generator=gen)
    Lmat = Lmat + Lmat.T                                          # a symmetric square-root prior
    s, vh, was_exact = low_rank.jacobian_svd(lambda t: t @ J.transpose(1, 2), lambda u: u @ J, B, D, n_data,
                                             rank, oversample=10, power_iters=1, generator=gen)
    assert was_exact == exact and vh.shape[1] == min(rank, n_data)
    var = low_rank.laplace_pointwise_variance(torch.diagonal(Lmat @ Lmat), s, vh, lambda v: v @ Lmat)
    cov = Lmat @ torch.linalg.inv(torch.eye(D, dtype=F64) + J.transpose(1, 2) @ J) @ Lmat
    torch.testing.assert_close(var, torch.diagonal(cov, dim1=1, dim2=2), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", ["full", "sensors"])
def test_laplace_std_equals_the_dense_fisher_posterior(kind, ns_full, ns_sensors):
    data = load_data(ns_full if kind == "full" else ns_sensors, np.array([2]))
    post = build(data, torch.device("cpu"))
    xi = 0.5 * torch.randn(1, R, R, dtype=F64, generator=torch.Generator().manual_seed(5))
    std, s2, exact = laplace_std(post, xi, rank=R * R, oversample=0, power_iters=1, chunk=64)
    assert exact == (kind == "sensors")
    with torch.no_grad():
        sig = post.sigma(post.dynamics(post.initial_field(xi)))
    J = torch.autograd.functional.jacobian(lambda x: post.fisher_map(sig)(x.view(1, R, R))[0],
                                           xi.reshape(-1))
    Lmat = post.initial_field(torch.eye(R * R, dtype=F64).view(-1, R, R)).reshape(R * R, -1)
    cov = Lmat @ torch.linalg.inv(torch.eye(R * R, dtype=F64) + J.T @ J) @ Lmat.T
    torch.testing.assert_close(std[0].reshape(-1) ** 2, torch.diagonal(cov), rtol=1e-7, atol=1e-12)
    assert prior_pointwise_variance(post.symbol) == pytest.approx(float(torch.diagonal(Lmat @ Lmat.T).mean()))
    torch.testing.assert_close(torch.diagonal(Lmat @ Lmat.T), torch.full((R * R,), float(torch.diagonal(
        Lmat @ Lmat.T).mean()), dtype=F64))


def test_whitening_is_the_generators_draw():
    from solvers.navier_stokes import prior_eigenvalues, sample_vorticity

    lam = torch.tensor(prior_eigenvalues(R))
    xi = np.random.default_rng(7).standard_normal((R, R))
    w = apply_sqrt_prior(torch.tensor(xi), R * lam[:, : R // 2 + 1].sqrt()).numpy()
    np.testing.assert_allclose(w, sample_vorticity(np.random.default_rng(7), R), atol=1e-14)


# ---------------------------------------------------------------- MAP

def test_map_recovers_w0_as_the_noise_vanishes(ns_full, tmp_path):
    quiet = _generate(tmp_path / "quiet.h5", "noise_level=1e-5")
    errs = {}
    for name, path in (("noisy", ns_full), ("quiet", quiet)):
        res = run_reference(path, "map", np.arange(4), batch_size=2)
        errs[name] = res.errors["rel_error_target"]
        with h5py.File(path) as f:
            w0 = f["targets/vorticity_0"][:4]
        assert res.estimates["map_w0"].shape == (4, R, R)
        expect = np.linalg.norm((res.estimates["map_w0"] - w0).reshape(4, -1), axis=1) / \
            np.linalg.norm(w0.reshape(4, -1), axis=1)
        np.testing.assert_allclose(errs[name], expect)
        assert res.info["map"]["converged"] == 4
    assert errs["noisy"].mean() < 0.2
    assert errs["quiet"].max() < 2e-3 < errs["noisy"].min()


def test_laplace_through_the_cli_writes_the_results_file(ns_sensors, tmp_path):
    out = tmp_path / "ref.h5"
    proc = run_cli("reference", str(ns_sensors), "--method", "laplace", "--samples", "0:3", "--out", str(out),
                   "--no-progress")
    assert "rel_error_target" in proc.stdout
    ref = read_reference(out)
    assert ref.problem == "navier_stokes" and ref.method == "laplace"
    assert ref.estimates["std_w0"].shape == (3, R, R) and np.all(ref.estimates["std_w0"] > 0)
    assert ref.info["laplace"]["exact"] is True
    assert 0.0 < ref.info["laplace"]["coverage_95_mean"] <= 1.0


def test_cli_navier_stokes_options_reach_the_solver(ns_full, heat_paper_file, tmp_path):
    out = tmp_path / "ref.h5"
    run_cli("reference", str(ns_full), "--method", "laplace", "--samples", "0:2", "--out", str(out),
            "--rank", "5", "--power-iters", "0", "--device", "cpu", "--batch-size", "1", "--max-iter", "2",
            "--no-progress")
    ref = read_reference(out)
    assert ref.info["laplace"]["rank"] == 5 and ref.info["laplace"]["exact"] is False
    assert ref.info["map"]["iterations_max"] <= 2
    assert ref.info["device"] == "cpu" and ref.info["options"]["batch_size"] == 1
    proc = run_cli("reference", str(heat_paper_file), "--method", "map", "--rank", "5", "--out",
                   str(tmp_path / "heat.h5"), "--no-progress", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("pdegrow reference: error: --rank: Navier-Stokes options, "
                                   f"but {heat_paper_file} is a heat data set")
    assert not (tmp_path / "heat.h5").exists()


# ---------------------------------------------------------------- bad input

def _copy_with(src: Path, dst: Path, **attrs) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
    return dst


def test_bad_inputs_get_one_clear_line(ns_full, tmp_path):
    with pytest.raises(PdegrowError, match="noise_level is 0"):
        run_reference(_copy_with(ns_full, tmp_path / "n0.h5", noise_level=0.0), "map", np.arange(2))
    with pytest.raises(PdegrowError, match="unknown observation kind 'pressure'"):
        run_reference(_copy_with(ns_full, tmp_path / "obs.h5", observation="pressure"), "map", np.arange(2))
    with pytest.raises(PdegrowError, match="reproduce the stored clean w"):
        run_reference(_copy_with(ns_full, tmp_path / "nu.h5", nu=0.05), "map", np.arange(2))
    with pytest.raises(PdegrowError, match="P1"):
        run_reference(_copy_with(ns_full, tmp_path / "p2.h5", degree=2), "map", np.arange(2))
    with pytest.raises(PdegrowError, match="outside the file's 6 samples"):
        dispatch_reference(ns_full, "map", "0:9")
    with pytest.raises(PdegrowError, match="must lie in 0…5"):
        run_reference(ns_full, "map", np.array([2, 6]))
    with pytest.raises(PdegrowError, match="repeated sample indices"):
        run_reference(ns_full, "map", np.array([1, 1]))
    with pytest.raises(PdegrowError, match="unknown option"):
        run_reference(ns_full, "map", np.arange(2), chains=4)
    with pytest.raises(PdegrowError, match="not implemented"):
        run_reference(ns_full, "mcmc", np.arange(2))
    proc = run_cli("reference", str(tmp_path / "n0.h5"), "--method", "map", "--samples", "0:2", "--out",
                   str(tmp_path / "r.h5"), "--no-progress", check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "noise_level is 0" in proc.stderr
    assert not (tmp_path / "r.h5").exists()


def test_a_zero_noise_file_runs_with_an_assumed_noise_level(ns_full, tmp_path):
    path = _copy_with(ns_full, tmp_path / "n0.h5", noise_level=0.0)
    res = run_reference(path, "map", np.arange(2), assumed_noise_level=0.01)
    assert res.info["problem_settings"]["noise_level"] == 0.01
    assert np.all(res.errors["rel_error_target"] < 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_map_on_cuda_equals_the_cpu_map(ns_full):
    cpu = run_reference(ns_full, "map", np.arange(3), device="cpu")
    gpu = run_reference(ns_full, "map", np.arange(3), device="cuda")
    np.testing.assert_allclose(gpu.estimates["map_w0"], cpu.estimates["map_w0"], rtol=0,
                               atol=1e-4 * np.abs(cpu.estimates["map_w0"]).max())  # same minimiser to gtol
    assert gpu.info["device"].startswith("cuda")

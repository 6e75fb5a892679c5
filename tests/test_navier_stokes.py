"""Navier–Stokes vorticity on the periodic torus: convergence, invariants, prior, generation."""

from __future__ import annotations

import json
import sys

from mpi4py import MPI  # noqa: F401  (before dolfinx)

import numpy as np
import pytest
import ufl
from conftest import ROOT, assert_same_samples, kill_and_resume, run_cli
from dolfinx import fem

from pdegrow.cli import main
from pdegrow.contract import open_dataset
from pdegrow.generation import sample_rng
from solvers.navier_stokes import (
    NavierStokesRecipe,
    TorusVorticitySolver,
    forcing_function,
    make_problem,
    prior_eigenvalues,
    sample_vorticity,
    sensor_indices,
)

TWO_PI = 2.0 * np.pi


def taylor_green(x: np.ndarray) -> np.ndarray:
    """w₀ = sin 2πx sin 2πy: ψ = w/(8π²), u·∇w = 0, so w(t) = e^{−8π²νt} w₀ exactly."""
    return np.sin(TWO_PI * x[0]) * np.sin(TWO_PI * x[1])


def taylor_green_l2_error(solver: TorusVorticitySolver, w, t: float) -> float:
    x = ufl.SpatialCoordinate(solver.msh)
    exact = ufl.sin(TWO_PI * x[0]) * ufl.sin(TWO_PI * x[1]) * np.exp(-2 * TWO_PI**2 * solver.nu * t)
    e = solver.as_function(w) - exact
    return float(np.sqrt(fem.assemble_scalar(fem.form(e * e * ufl.dx(degree=6)))))


def rates(errors: list[float]) -> np.ndarray:
    """Observed orders for successive halvings."""
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


# ---------------------------------------------------------------- periodicity

@pytest.mark.parametrize("degree", [1, 2])
def test_periodic_prolongation_identifies_images_and_corners(degree):
    n = 6
    s = TorusVorticitySolver(n, degree=degree, forcing=None)
    S = s.space
    x = s.V.tabulate_dof_coordinates()[:, :2]
    assert S.n_periodic == (degree * n) ** 2            # Lagrange dofs on the torus
    classes: dict[int, list[int]] = {}
    for i, j in enumerate(S.mesh_to_periodic):
        classes.setdefault(int(j), []).append(i)
    for members in classes.values():
        shifts = x[members] - x[members[0]]
        np.testing.assert_allclose(shifts, np.round(shifts), atol=1e-12)   # images differ by ℤ²
    corner = classes[0]                                                     # the vertex (0, 0)
    assert len(corner) == 4
    assert sorted(map(tuple, np.round(x[corner]))) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    sizes = np.bincount([len(m) for m in classes.values()])
    assert sizes[2] == 2 * (degree * n - 1) and sizes[4] == 1           # side pairs, one corner class
    # vertex dofs come first in grid order: field[j, i] = w(i/n, j/n)
    grid = s.to_grid(s.interpolate(lambda p: np.cos(TWO_PI * p[0]) + 2 * np.sin(TWO_PI * p[1])))
    gx, gy = S.grid_coordinates()
    np.testing.assert_allclose(grid, np.cos(TWO_PI * gx) + 2 * np.sin(TWO_PI * gy), atol=1e-13)
    # the periodic Galerkin matrices: M 1 = cell areas sum to |Ω| = 1, K 1 = 0
    assert s.mass_weights.sum() == pytest.approx(1.0, abs=1e-13)
    ones = s.vector(np.ones(S.n_periodic))
    assert _mult(s.K, ones).norm() < 1e-11


def _mult(A, x):
    y = A.createVecLeft()
    A.mult(x, y)
    return y


@pytest.mark.parametrize("degree", [1, 2])
def test_precomputed_advection_equals_the_assembled_weak_form(degree):
    s = TorusVorticitySolver(8, degree=degree)
    w = s.from_grid(30 * sample_vorticity(sample_rng(5, 0), 8))
    fast, reference = s.advection(w, s.vector()), s.advection_assembled(w, s.vector())
    assert reference.norm() > 1e-3
    np.testing.assert_allclose(fast.array, reference.array, atol=1e-12 * np.abs(reference.array).max())


def test_periodic_images_hold_identical_values_and_the_flow_is_translation_equivariant():
    n, steps = 12, 20
    w0 = 30 * sample_vorticity(sample_rng(2, 0), n)
    s = TorusVorticitySolver(n, nu=1e-3, dt=0.01, forcing=None)     # f would break the symmetry
    wT, _ = s.run(s.from_grid(w0), steps)
    # mesh dofs on x = 0 and x = 1 (and y = 0, y = 1) that are images carry the same value
    values = s.as_function(wT).x.array
    x = s.V.tabulate_dof_coordinates()[:, :2]
    for axis in (0, 1):
        left = np.flatnonzero(np.isclose(x[:, axis], 0.0))
        right = np.flatnonzero(np.isclose(x[:, axis], 1.0))
        other = 1 - axis
        left, right = left[np.argsort(x[left, other])], right[np.argsort(x[right, other])]
        np.testing.assert_allclose(x[left, other], x[right, other], atol=1e-14)
        assert len(left) == n + 1
        np.testing.assert_array_equal(values[left], values[right])
    # a shift of the initial field by whole cells (across the seam) shifts the solution
    shifted, _ = s.run(s.from_grid(np.roll(w0, (5, 3), axis=(0, 1))), steps)
    np.testing.assert_allclose(s.to_grid(shifted), np.roll(s.to_grid(wT), (5, 3), axis=(0, 1)),
                               atol=1e-11 * np.abs(s.to_grid(wT)).max())


# ---------------------------------------------------------------- convergence

@pytest.mark.parametrize("degree, order", [(1, 2.0), (2, 3.0)])
def test_taylor_green_error_converges_in_h(degree, order):
    nu, final_time, dt = 0.01, 0.25, 0.0025          # time error ≪ space error
    errors = []
    for n in (8, 16, 32):
        s = TorusVorticitySolver(n, degree=degree, nu=nu, dt=dt, forcing=None)
        wT, _ = s.run(s.interpolate(taylor_green), round(final_time / dt))
        errors.append(taylor_green_l2_error(s, wT, final_time))
    observed = rates(errors)
    assert np.all(np.abs(observed - order) < 0.15), (errors, observed)


@pytest.mark.parametrize("scheme", ["cn_heun", "cn_ab2"])
def test_error_converges_in_dt_at_second_order(scheme):
    """Taylor–Green (ν = 0.05) and a strongly nonlinear forced flow, each against a
    reference with Δt/8 on the same mesh, so that only the time error is measured."""
    cases = [(lambda s: s.interpolate(taylor_green), 0.05, None, 0.4, 0.1),
             (lambda s: s.from_grid(30 * sample_vorticity(sample_rng(1, 0), 16)), 1e-3,
              forcing_function, 0.5, 0.05)]
    for initial, nu, forcing, final_time, dt0 in cases:
        dts = [dt0, dt0 / 2, dt0 / 4]
        results = []
        for dt in [*dts, dts[-1] / 8]:
            s = TorusVorticitySolver(16, nu=nu, dt=dt, forcing=forcing, time_scheme=scheme)
            results.append(s.run(initial(s), round(final_time / dt))[0].array.copy())
        errors = [np.abs(r - results[-1]).max() for r in results[:-1]]
        observed = rates(errors)
        assert np.all(np.abs(observed - 2.0) < 0.15), (scheme, errors, observed)


# ---------------------------------------------------------------- invariants

def test_unforced_energy_and_enstrophy_decay_and_the_mean_stays_zero():
    n = 16
    s = TorusVorticitySolver(n, nu=1e-3, dt=0.01, forcing=None)
    w0 = s.from_grid(30 * sample_vorticity(sample_rng(3, 0), n))
    scale = np.abs(w0.array).max()
    history = [(s.kinetic_energy(w0), s.enstrophy(w0), s.mean(w0))]
    s.run(w0, 60, callback=lambda _, w: history.append(
        (s.kinetic_energy(w), s.enstrophy(w), s.mean(w))))
    energy, enstrophy, mean = np.array(history).T
    assert np.all(np.diff(energy) < 0) and np.all(np.diff(enstrophy) < 0)
    assert energy[-1] > 0.8 * energy[0]                 # decays, but only by viscosity
    assert np.abs(mean).max() < 1e-14 * scale
    # the advection alone conserves them: wᵀN = ψᵀN = 1ᵀN = 0 (Arakawa-like)
    N = s.advection(w0, s.vector())
    psi = s.stream_function(w0, s.vector())
    for v in (w0, psi, s.mass_weights):
        assert abs(N.dot(v)) < 1e-12 * N.norm() * v.norm()


# ---------------------------------------------------------------- the prior

def test_the_sampler_has_the_target_spectrum():
    n, draws = 16, 3000
    lam = prior_eigenvalues(n)
    rng = np.random.default_rng(11)
    power = np.zeros((n, n))
    for _ in range(draws):
        w = sample_vorticity(rng, n)
        w_hat = np.fft.fft2(w)
        assert abs(w_hat[0, 0]) < 1e-12                  # zero mean, exactly
        power += np.abs(w_hat) ** 2
    empirical = power / draws / n**4                     # E|ŵ_k|² = n⁴ λ_k
    mask = lam > 0
    ratio = empirical[mask] / lam[mask]
    # |ŵ_k|²/(n⁴λ_k) ~ Exp(1) (χ²₁ on the four self-conjugate modes): std ≤ √2/√draws
    assert np.abs(ratio - 1).max() < 6 * np.sqrt(2 / draws)
    assert abs(ratio.mean() - 1) < 4 / np.sqrt(draws * mask.sum())
    # the closed form: λ_k = 7^{3/2} (4π²|k|² + 49)^{−5/2}
    assert lam[0, 1] == pytest.approx(7**1.5 * (4 * np.pi**2 + 49) ** -2.5, rel=1e-14)
    assert lam[3, 2] == pytest.approx(7**1.5 * (4 * np.pi**2 * 13 + 49) ** -2.5, rel=1e-14)
    # and the pointwise variance Σ_k λ_k
    w = np.stack([sample_vorticity(rng, n) for _ in range(2000)])
    assert w.var(axis=0).mean() == pytest.approx(lam.sum(), rel=0.05)


# ---------------------------------------------------------------- the forward problem

def test_samples_are_grid_images_drawn_from_the_rng_alone():
    r = NavierStokesRecipe(resolution=8, final_time=0.05, dt=0.01, observation="sensors", n_sensors=5,
                           noise_level=0.1, snapshot_times=[0.02, 0.05])
    p = make_problem(r)
    a, b = p.solve(4, sample_rng(9, 4)), p.solve(4, sample_rng(9, 4))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert set(a) == set(p.sample_specs())
    for name, (shape, _) in p.sample_specs().items():
        assert a[name].shape == shape
    np.testing.assert_array_equal(a["targets/vorticity_0"], sample_vorticity(sample_rng(9, 4), 8))
    np.testing.assert_array_equal(a["targets/vorticity_snapshots"][-1], a["targets/vorticity_T"])
    static = p.static_arrays()
    idx = sensor_indices(r)
    np.testing.assert_array_equal(a["inputs/observations_clean"], a["targets/vorticity_T"].ravel()[idx])
    np.testing.assert_array_equal(static["geometry/sensors"][:, 0], static["geometry/grid_x"].ravel()[idx])
    assert not np.array_equal(a["inputs/observations"], a["inputs/observations_clean"])
    assert len(np.unique(idx)) == 5


def test_the_finite_element_path_agrees_with_a_pseudo_spectral_solver():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_navier_stokes import spectral_solve

    n, final_time = 32, 0.2
    r = NavierStokesRecipe(resolution=n, final_time=final_time, dt=2e-3, prior_scale=343.0)
    sample = make_problem(r).solve(0, sample_rng(0, 0))
    gx, gy = np.meshgrid(np.arange(n) / n, np.arange(n) / n, indexing="xy")
    w_spec = spectral_solve(sample["targets/vorticity_0"], forcing_function(np.stack([gx, gy])),
                            r.nu, final_time, r.dt)
    difference = np.linalg.norm(sample["inputs/vorticity_T"] - w_spec) / np.linalg.norm(w_spec)
    assert difference < 0.01


# ---------------------------------------------------------------- generation through the CLI

TINY = ["--resolution", "8", "--final-time", "0.04", "--set", "dt=0.01", "--no-progress"]


@pytest.mark.mpi
def test_one_and_two_ranks_give_identical_files(tmp_path):
    extra = [*TINY, "--set", 'observation="sensors"', "--set", "n_sensors=7", "--set", "noise_level=0.05",
             "--set", "snapshot_times=[0.02]", "--n-samples", "9"]
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    run_cli("generate", "navier-stokes", *extra, "--out", str(one))
    proc = run_cli("generate", "navier-stokes", *extra, "--out", str(two), "--flush-every", "2",
                   mpi_ranks=2)
    assert "ranks         2" in proc.stdout
    assert_same_samples(one, two)
    with open_dataset(two, "navier_stokes") as f:
        assert f["inputs/observations"].shape == (9, 7)
        assert f["targets/vorticity_snapshots"].shape == (9, 1, 8, 8)
        assert f.attrs["resolution"] == 8 and f.attrs["final_time"] == 0.04 and f.attrs["dt"] == 0.01
        assert f.attrs["nu"] == 1e-3
        assert json.loads(f.attrs["config"])["observation"] == "sensors"
        np.testing.assert_array_equal(f["geometry/grid_x"][0], np.arange(8) / 8)


def test_resume_after_a_kill_gives_the_uninterrupted_file(tmp_path):
    args = ["generate", "navier-stokes", "--resolution", "16", "--final-time", "0.1", "--set", "dt=0.001",
            "--n-samples", "200", "--flush-every", "2", "--no-progress"]
    n_parts, generated = kill_and_resume(args, tmp_path)
    assert n_parts < 100, "the run was not killed midway"
    assert generated <= 200 - 2 * n_parts


@pytest.mark.parametrize(
    "args, message",
    [
        (["--resolution", "2"], "resolution must be in 4…4096, got 2"),
        (["--set", "dt=inf"], "dt = inf is not a finite number"),
        (["--final-time", "0.0015"], "is not a whole number of steps"),
        (["--final-time", "-1"], "dt and final_time must be positive"),
        (["--set", 'observation="sparse"'], "observation = 'sparse' is not one of"),
        (["--resolution", "8", "--set", 'observation="sensors"', "--set", "n_sensors=65"],
         "n_sensors must be in 1…64"),
        (["--set", "snapshot_times=[2.0]"], "snapshot time 2.0 must lie in (0, final_time]"),
        (["--set", "degree=4"], "degree must be 1, 2 or 3"),
        (["--set", "viscosity=0.1"], "unknown key viscosity"),
        (["--preset", "fno"], "unknown navier-stokes preset 'fno' (available: default)"),
    ],
)
def test_bad_input_gets_one_clear_message(tmp_path, capsys, args, message):
    out = tmp_path / "d.h5"
    code = main(["generate", "navier-stokes", "--n-samples", "2", *args, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_navier_stokes_flags_are_refused_for_heat(tmp_path):
    proc = run_cli("generate", "heat", "--final-time", "1", "--out", str(tmp_path / "h.h5"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("pdegrow generate: error: --final-time does not apply to the heat "
                                   "problem (its recipe has no 'final_time' key)")


def test_preset_file_matches_the_recipe_defaults():
    from solvers.navier_stokes import load_recipe

    recipe = load_recipe("default", None, {})
    assert recipe == NavierStokesRecipe(n_samples=recipe.n_samples)
    text = (ROOT / "datasets" / "README.md").read_text()
    for name in ("targets/vorticity_0", "inputs/vorticity_T", "geometry/grid_x", "inputs/observations"):
        assert name in text

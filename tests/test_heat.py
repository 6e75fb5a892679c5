"""The heat forward model: convergence, sensors, priors, and the stored operators."""

from __future__ import annotations

import dataclasses

from mpi4py import MPI  # noqa: F401  (before dolfinx)

import h5py
import numpy as np
import pytest
import ufl
from dolfinx import fem

from pdegrow.errors import PdegrowError
from solvers.heat import (
    HeatProblem,
    HeatRecipe,
    load_recipe,
    matern_correlation,
    spde_marginal_variance,
)


def small(**changes) -> HeatRecipe:
    base = dict(nx=8, ny=8, n_sensors=9, prior="spde", correlation_length=0.3)
    return HeatRecipe(**{**base, **changes})


def test_manufactured_solution_converges_at_rate_two():
    """T = sin(πx)sin(πy), m = ½ sin(2πx)cos(πy): the L2 error of P1 falls as h²."""

    def m_exact(x):
        return 0.5 * ufl.sin(2 * ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1])

    def t_exact(x):
        return ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1])

    def source(x):
        return -ufl.div(ufl.exp(m_exact(x)) * ufl.grad(t_exact(x)))

    errors, sizes = [], [8, 16, 32]
    for n in sizes:
        problem = HeatProblem(small(nx=n, ny=n), source=source)
        nodes = problem.nodes
        m_nodes = 0.5 * np.sin(2 * np.pi * nodes[:, 0]) * np.cos(np.pi * nodes[:, 1])
        problem.solve_temperature(m_nodes)
        x = ufl.SpatialCoordinate(problem.msh)
        err2 = fem.assemble_scalar(fem.form(
            (problem.T - t_exact(x)) ** 2 * ufl.dx(metadata={"quadrature_degree": 6})))
        errors.append(np.sqrt(err2))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 2e-3
    assert np.all(np.abs(rates - 2.0) < 0.15), rates


def test_sensors_are_exact_for_a_linear_field():
    problem = HeatProblem(small(sensor_layout="random", n_sensors=12, sensor_seed=5))
    T = fem.Function(problem.V)
    T.interpolate(lambda x: 0.3 + 2.0 * x[0] - 1.5 * x[1])
    expected = 0.3 + 2.0 * problem.sensors[:, 0] - 1.5 * problem.sensors[:, 1]
    np.testing.assert_allclose(problem.observation_matrix @ T.x.array, expected, atol=1e-13)


def test_sensors_exact_for_linear_field_with_p2():
    problem = HeatProblem(small(degree=2, n_sensors=5))
    T = fem.Function(problem.V)
    T.interpolate(lambda x: 1.0 - x[0] + 4.0 * x[1])
    expected = 1.0 - problem.sensors[:, 0] + 4.0 * problem.sensors[:, 1]
    np.testing.assert_allclose(problem.observation_matrix @ T.x.array, expected, atol=1e-12)


def test_sensor_outside_the_domain_is_rejected():
    with pytest.raises(PdegrowError, match=r"sensor 1 at \(1.5, 0.5\) lies outside"):
        HeatProblem(small(sensor_layout="given", sensors=[[0.5, 0.5], [1.5, 0.5]]))


def test_kl_basis_is_mass_orthonormal_and_solves_the_eigenproblem():
    recipe = load_recipe("paper", None, {})
    problem = HeatProblem(recipe)
    M = problem.mass.toarray()
    phi, lam = problem.kl_basis, problem.kl_eigenvalues
    np.testing.assert_allclose(phi.T @ M @ phi, np.eye(recipe.n_modes), atol=1e-10)
    assert np.all(np.diff(lam) <= 0) and lam[-1] > 0
    from solvers.heat import squared_exponential

    C = squared_exponential(problem.nodes, recipe.variance, recipe.correlation_length)
    residual = M @ C @ M @ phi - (M @ phi) * lam
    assert np.abs(residual).max() < 1e-10 * lam[0]
    # the 12 modes of a smooth kernel carry most of the prior variance ∫ σ² dx = 1
    assert 0.8 < lam.sum() <= recipe.variance + 1e-9


def test_spde_field_matches_target_variance_and_matern_correlation():
    recipe = small(nx=40, ny=40, variance=2.0, correlation_length=0.2)
    problem = HeatProblem(recipe)
    nodes = problem.nodes
    # exact discrete covariance of the scaled field: σ² at every node by construction,
    # and the Matérn ν = 1 correlation in the interior
    var = problem.spde_scale**2 * spde_marginal_variance(problem.spde_lu, problem.sqrt_lumped_mass)
    np.testing.assert_allclose(var, recipe.variance, rtol=1e-10)
    centre = np.argmin(((nodes - 0.5) ** 2).sum(1))
    e = np.zeros(len(nodes))
    e[centre] = 1.0
    # Cov(:, c) = s ⊙ A⁻¹ M_L A⁻¹ (s ⊙ e_c)
    column = problem.spde_scale * problem.spde_lu.solve(
        problem.lumped_mass * problem.spde_lu.solve(problem.spde_scale * e))
    r = np.linalg.norm(nodes - nodes[centre], axis=1)
    near = (r > 0) & (r < 0.3)
    corr = column[near] / recipe.variance
    assert np.abs(corr - matern_correlation(r[near], recipe.correlation_length)).max() < 0.05
    # and the samples have it, within sampling error (N = 600: std of s² ≈ σ²·√(2/N) ≈ 6 %)
    rng = np.random.default_rng(0)
    samples = np.stack([problem.draw_log_conductivity(rng)[0] for _ in range(600)])
    assert abs(samples[:, centre].var() / recipe.variance - 1.0) < 4 * np.sqrt(2 / 600)
    assert abs(samples.var(0).mean() / recipe.variance - 1.0) < 0.1
    assert abs(samples.mean()) < 0.1


def test_stored_operators_give_a_vanishing_residual(heat_paper_file, heat_default_file):
    """K(e^m) T − F from operators/ with the stored (m, T) vanishes on the free nodes."""
    for path in (heat_paper_file, heat_default_file):
        with h5py.File(path) as f:
            cells = f["geometry/cells"][...]
            K_loc = f["operators/cell_stiffness"][...]
            F = f["operators/load_vector"][...]
            free = np.setdiff1d(np.arange(len(F)), f["operators/dirichlet_nodes"][...])
            B = f["operators/observation_matrix"][...]
            for i in range(5):
                m = f["targets/log_conductivity"][i]
                T = f["targets/temperature"][i]
                kappa_cell = np.exp(m)[cells].mean(axis=1)
                KT = np.zeros_like(F)
                np.add.at(KT, cells, np.einsum("c,cij,cj->ci", kappa_cell, K_loc, T[cells]))
                residual = (KT - F)[free]
                assert np.linalg.norm(residual) < 1e-10 * np.linalg.norm(F)
                np.testing.assert_allclose(T[f["operators/dirichlet_nodes"][...]], 0.0, atol=1e-14)
                np.testing.assert_allclose(B @ T, f["inputs/observations_clean"][i], rtol=1e-12)
            if "operators/kl_basis" in f:
                m0 = f["targets/log_conductivity"][0]
                xi = f["targets/kl_coefficients"][0]
                lam = f["operators/kl_eigenvalues"][...]
                recon = f["operators/prior_mean"][...] + f["operators/kl_basis"][...] @ (np.sqrt(lam) * xi)
                np.testing.assert_allclose(recon, m0, atol=1e-12)


def test_noise_is_relative_and_of_the_stated_level(heat_paper_file):
    with h5py.File(heat_paper_file) as f:
        y, y0 = f["inputs/observations"][...], f["inputs/observations_clean"][...]
        level = f.attrs["noise_level"]
    ratio = (y / y0 - 1.0).ravel()
    assert abs(ratio.std() / level - 1.0) < 0.15
    assert abs(ratio.mean()) < 3 * level / np.sqrt(ratio.size)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(n_samples=0), "n_samples must be positive"),
        (dict(nx=2, ny=2, n_sensors=64), "mesh too coarse for the sensors"),
        (dict(dirichlet_sides=["north"]), "dirichlet_sides"),
        (dict(prior="kl", n_modes=500), "n_modes must be in"),
        (dict(correlation_length=-1.0), "must be positive"),
    ],
)
def test_bad_recipe_values_are_rejected(changes, message):
    with pytest.raises(PdegrowError, match=message):
        dataclasses.replace(small(), **changes)


def test_a_failed_solve_is_reported_not_returned():
    problem = HeatProblem(small())
    m = np.zeros(len(problem.nodes))
    m[:] = -800.0  # e^m underflows to 0: a singular matrix
    with pytest.raises(PdegrowError, match="heat solve failed"):
        problem.solve_temperature(m)

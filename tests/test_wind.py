"""The wind (mass-consistent) forward model: convergence, divergence, grid operators, generation."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import scipy.sparse
from conftest import assert_same_samples, kill_and_resume, run_cli

from pdegrow.cli import main
from pdegrow.contract import open_dataset
from solvers.wind_grid import (
    divergence_operator,
    gaussian_hills,
    gaussian_hills_normal,
    ground_normals,
    log_profile,
)

L = H = 1000.0
HILLS = np.array([[500.0, 500.0, 150.0, 120.0]])
SMALL = ["--preset", "small", "--no-progress"]


def _problem(n: int, alpha_v: float = 0.5):
    from solvers.wind import WindProblem, WindRecipe

    r = WindRecipe(length=L, height=H, nx=n, ny=n, nz=n, vertical_stretch=1.0, n_hills=1,
                   hill_height=[150.0, 150.0], hill_width=[120.0, 120.0], alpha_v=alpha_v, grid_nx=4,
                   grid_ny=4, grid_nz=4, mast_layout="given", masts=[[500.0, 500.0]], mast_heights=[10.0])
    p = WindProblem(r)
    p.set_terrain(HILLS)
    return p


def _manufactured(points: np.ndarray, a_inv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """λ* = 1000 sin(πx/L) sin(πy/L) cos(πz/2H) (0 on the sides and the top) and
    w = (3, 1.5, 3 h_x + 1.5 h_y), divergence-free and tangent to the ground z = h: with
    u₀ = w − A⁻¹∇λ* the exact solution is λ = λ*, u = w. Returns (u₀, λ*, w) at ``points``."""
    x, y, z = points.T
    a, b, c = math.pi * x / L, math.pi * y / L, math.pi * z / (2 * H)
    lam = 1000 * np.sin(a) * np.sin(b) * np.cos(c)
    grad = 1000 * np.column_stack([math.pi / L * np.cos(a) * np.sin(b) * np.cos(c),
                                   math.pi / L * np.sin(a) * np.cos(b) * np.cos(c),
                                   -math.pi / (2 * H) * np.sin(a) * np.sin(b) * np.sin(c)])
    h = gaussian_hills(x, y, HILLS)
    hx, hy = -(x - 500.0) / 120.0**2 * h, -(y - 500.0) / 120.0**2 * h
    w = np.column_stack([np.full_like(x, 3.0), np.full_like(x, 1.5), 3.0 * hx + 1.5 * hy])
    return w - grad * a_inv, lam, w


def test_manufactured_solution_converges_and_the_divergence_vanishes():
    from mpi4py import MPI  # noqa: F401  (before dolfinx)

    from dolfinx import fem

    errors, divergence = [], []
    for n in (4, 8, 16):
        p = _problem(n)
        u0, lam_exact, w = _manufactured(p.dofs, p.a_inv)
        u, lam = p.adjust(u0)
        m = p.lumped_mass
        errors.append([math.sqrt(m @ (lam - lam_exact) ** 2 / m.sum()),
                       math.sqrt(m @ ((u - w) ** 2).sum(1) / m.sum())])
        div, vol = p.divergence_cells(u)
        divergence.append(math.sqrt(vol @ div**2 / vol.sum()))
        # the discrete u = u₀ + A⁻¹∇λ is weakly divergence-free and tangent to the ground:
        # ∫ u·∇φ_i dx = (D u₀)_i + (K λ)_i = 0 for every φ_i that vanishes on the open boundary
        K = fem.assemble_matrix(p.a).to_scipy()
        weak = p.divergence_t @ u0.T.ravel() + K @ lam
        scale = np.abs(p.divergence_t @ u0.T.ravel()).max()
        assert np.abs(weak[p.free]).max() < 1e-8 * scale
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates[:, 0] > 1.8), (errors, rates)          # λ in L²: order 2
    assert np.all(rates[:, 1] > 1.3), (errors, rates)          # recovered u at the nodes
    div_rates = np.log2(np.array(divergence[:-1]) / np.array(divergence[1:]))
    assert np.all(div_rates > 0.4), (divergence, div_rates)    # ∇·u_h → 0 (boundary layer: ~h^½)


def test_a_sample_is_mass_consistent_and_drawn_from_the_rng_alone():
    from pdegrow.generation import sample_rng
    from solvers.wind import WindProblem, load_recipe

    p = WindProblem(load_recipe("small", None, {}))
    a, b = p.solve(3, sample_rng(0, 3)), p.solve(3, sample_rng(0, 3))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    u0, _ = p.draw_first_guess(sample_rng(0, 3))
    u, lam = p.adjust(u0)
    np.testing.assert_array_equal(a["targets/velocity_nodes"], u)
    np.testing.assert_allclose(a["targets/velocity"], p.to_grid(u))
    assert np.abs(lam).max() > 0 and np.all(lam[~p.free] == 0)
    # the sensors sit at their heights above the mesh's ground (its P1 interpolant below the mast)
    ground = p.mast_ground_matrix @ p.dofs[:, 2]
    heights = np.tile(p.recipe.mast_heights, len(p.masts))
    np.testing.assert_allclose(p.mast_points[:, 2] - np.repeat(ground, len(p.recipe.mast_heights)), heights,
                               rtol=1e-12)
    assert np.all(np.abs(ground - gaussian_hills(p.masts[:, 0], p.masts[:, 1], p.hills)) < 60.0)
    # the stored u is tangent to the ground at the ground nodes: u·n = 0 to round-off
    ground = u[p.ground_dofs]
    assert np.abs((ground * p.ground_normals).sum(1)).max() < 1e-12 * np.abs(ground).max()
    assert np.all(p.ground_normals[:, 2] < 0)
    # observations: mast-major, then height, then (u, v, w); P1 interpolation on the mesh
    k = len(p.recipe.mast_heights)
    np.testing.assert_allclose(a["inputs/observations_clean"].reshape(-1, k, 3),
                               (p.mast_matrix @ u).reshape(-1, k, 3))
    # the log law through U_ref at z_ref, zero at the ground
    assert log_profile(np.array([0.0]), 7.0, 80.0, 0.1)[0] == 0.0
    assert log_profile(np.array([80.0]), 7.0, 80.0, 0.1)[0] == pytest.approx(7.0, rel=1e-14)


def test_grid_divergence_is_exact_on_linear_fields_and_the_ground_normal_on_a_plane():
    x, y = np.linspace(0, 1000, 5), np.linspace(0, 800, 4)
    sigma = np.linspace(0, 1, 6) ** 1.5
    ground = (40.0 + 0.1 * x[None, :] - 0.05 * y[:, None]
              + 20 * np.sin(x[None, :] / 300) * np.cos(y[:, None] / 250))
    z = ground[None] + sigma[:, None, None] * (1500.0 - ground[None])
    X, Y = np.broadcast_to(x[None, None], z.shape), np.broadcast_to(y[None, :, None], z.shape)
    G = np.array([[0.3, -1.2, 0.7], [2.0, 0.4, -0.5], [-0.1, 0.6, 1.1]])
    u = np.stack([G[i, 0] * X + G[i, 1] * Y + G[i, 2] * z + i for i in range(3)])
    D = divergence_operator(x, y, z)
    assert isinstance(D, scipy.sparse.csr_matrix) and D.shape == (z.size, 3 * z.size)
    np.testing.assert_allclose(D @ u.ravel(), np.trace(G), rtol=1e-10)
    plane = 40.0 + 0.1 * x[None, :] - 0.05 * y[:, None]
    n = ground_normals(x, y, plane)
    expected = np.array([0.1, -0.05, -1.0]) / math.sqrt(1 + 0.1**2 + 0.05**2)
    np.testing.assert_allclose(n, np.broadcast_to(expected[:, None, None], n.shape), rtol=1e-12)
    # the hills' exact normal against central differences of h
    hills = np.array([[400.0, 300.0, 150.0, 200.0], [700.0, 650.0, 80.0, 120.0]])
    px, py, d = np.array([350.0, 610.0, 820.0]), np.array([280.0, 590.0, 100.0]), 1e-3
    hx = (gaussian_hills(px + d, py, hills) - gaussian_hills(px - d, py, hills)) / (2 * d)
    hy = (gaussian_hills(px, py + d, hills) - gaussian_hills(px, py - d, hills)) / (2 * d)
    fd = np.column_stack([hx, hy, -np.ones(3)]) / np.sqrt(1 + hx**2 + hy**2)[:, None]
    np.testing.assert_allclose(gaussian_hills_normal(px, py, hills), fd, atol=1e-9)


def test_one_and_two_ranks_give_identical_files_and_info_works(tmp_path, capsys):
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    run_cli("generate", "wind", *SMALL, "--n-samples", "9", "--out", str(one))
    run_cli("generate", "wind", *SMALL, "--n-samples", "9", "--out", str(two), "--flush-every", "2",
            mpi_ranks=2)
    assert_same_samples(one, two)
    with open_dataset(two, "wind") as f:
        assert f["targets/velocity"].shape == (9, 3, 4, 6, 6)
        assert f["inputs/observations"].shape == (9, 3 * 3 * 3)
        assert f.attrs["noise_model"] == "additive"
        D = scipy.sparse.csr_matrix((f["operators/grid_divergence_data"][()],
                                     f["operators/grid_divergence_indices"][()],
                                     f["operators/grid_divergence_indptr"][()]))
        assert D.shape == (4 * 6 * 6, 3 * 4 * 6 * 6)
    assert main(["info", str(two)]) == 0
    assert "targets/velocity" in capsys.readouterr().out


def test_resume_after_a_kill_gives_the_uninterrupted_file(tmp_path):
    args = ["generate", "wind", *SMALL, "--n-samples", "150", "--flush-every", "3"]
    n_parts, generated = kill_and_resume(args, tmp_path)
    assert n_parts < 50, "the run was not killed midway"
    assert generated <= 150 - 3 * n_parts


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "hill_height=[2000.0, 2000.0]"], "not below the domain top"),
        (["--set", 'mast_layout="given"', "--set", "masts=[[5000.0, 10.0]]"], "lies outside the domain"),
        (["--set", "mast_heights=[-5.0, 10.0]"], "every mast height must be above ground"),
        (["--set", "mast_heights=[10.0, 1600.0]"], "is not below the domain top"),
        (["--set", "roughness=[0.0, 0.5]"], "roughness must be positive"),
        (["--set", "max_iterations=1"], "the CG + GAMG solve did not converge"),
    ],
)
def test_bad_wind_input_gets_one_line_and_leaves_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "w.h5"
    assert main(["generate", "wind", *SMALL, "--n-samples", "2", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
    parts = tmp_path / "w.h5.parts"
    assert not parts.exists() or not list(parts.glob("part-*.h5"))


def test_random_terrain_stores_the_ground_per_sample(tmp_path):
    out = tmp_path / "r.h5"
    assert main(["generate", "wind", *SMALL, "--n-samples", "2", "--set", 'terrain="random"',
                 "--set", 'components="uv"', "--out", str(out)]) == 0
    with h5py.File(out) as f:
        assert f["inputs/observations"].shape == (2, 3 * 3 * 2)          # masts × heights × (u, v)
        image = f["inputs/mast_image"][()]
        assert image.shape == (2, 3 * 2 + 1, 6, 6) and image[:, -1].sum() == 2 * 3
        np.testing.assert_allclose(np.sort(image[0, :-1][:, image[0, -1] > 0].ravel()),
                                   np.sort(f["inputs/observations"][0]))
        terrain, z = f["inputs/terrain"][()], f["targets/grid_z"][()]
        assert terrain.shape == (2, 6, 6) and not np.allclose(terrain[0], terrain[1])
        np.testing.assert_allclose(z[:, 0], terrain)
        np.testing.assert_allclose(z[:, -1], 1500.0)
        assert "operators/grid_divergence_data" not in f
        # the terrain-aware inputs: the masts, then the ground (flat vector; image's last channel)
        both = f["inputs/observations_terrain"][()]
        np.testing.assert_array_equal(both[:, :18], f["inputs/observations"][()])
        np.testing.assert_array_equal(both[:, 18:], terrain.reshape(2, -1))
        stacked = f["inputs/mast_image_terrain"][()]
        np.testing.assert_array_equal(stacked[:, :-1], image)
        np.testing.assert_array_equal(stacked[:, -1], terrain)

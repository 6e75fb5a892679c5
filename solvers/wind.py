"""Wind over terrain: the mass-consistent (diagnostic) wind model (DOLFINx 0.11).

Given a first guess u₀, find the field closest to it, in the weighted norm
∫ (u − u₀)ᵀ A (u − u₀), that conserves mass and does not cross the ground
(the model family of MATHEW, NUATMOS and WindNinja's mass-conserving solver):

    u = u₀ + A⁻¹∇λ,     −∇·(A⁻¹∇λ) = ∇·u₀   in Ω,
    λ = 0 on the open (lateral and top) boundaries,   (u₀ + A⁻¹∇λ)·n = 0 on the ground,

A = diag(α_h², α_h², α_v²). The ground condition is the natural one of the weak form

    ∫ A⁻¹∇λ·∇v dx = −∫ u₀·∇v dx      for all v ∈ V₀ (v = 0 on the open boundaries),

so that ∫ u·∇v dx = 0 for every such v: u is divergence-free and tangent to the
ground in the weak sense, exactly (to the solver's tolerance) for the discrete u.
At the ground nodes the recovered u is then projected on the ground's tangent plane,
u_i ← u_i − (u_i·n_i) n_i (n_i the exact normal of h): the nodal recovery alone
leaves a normal component of the order of the mesh size there.

Ω = [0, L]² × [h(x, y), H] with h a sum of Gaussian hills (fixed by ``terrain_seed``
or drawn per sample). The mesh is a structured tetrahedral box, stretched towards the
ground (η = H s^p) and deformed vertically, z = h + η (1 − h/H). λ is P1; u₀ is
interpolated at the nodes, the right-hand side is −Σ_k D_kᵀ u₀,k with
(D_k)_ij = ∫ ∂_k φ_j φ_i dx, and u is recovered at the nodes by the lumped L² projection
of the cell gradients, u_i = u₀,i + A⁻¹ (D λ)_i / m_i with m_i = ∫ φ_i dx. The
operator is assembled once per terrain (once for all samples when the terrain is
fixed) and solved by CG preconditioned with PETSc's GAMG (no hypre in the wheel).

Observations: anemometer masts at (x_m, y_m) with sensors at given heights above
ground (all three components or the horizontal ones, additive noise). Targets: u on a
regular (nx, ny, nz) grid in terrain-following coordinates (see
:mod:`solvers.wind_grid`), stored as (3, nz, ny, nx), and u at the mesh nodes.

The recipe, its validation, the fixed hills and the mast layout are in :mod:`solvers.wind_recipe`
(re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mpi4py import MPI  # before dolfinx / petsc4py (isort section "mpi")

import dolfinx.fem.petsc
import numpy as np
import scipy.sparse
import ufl
from dolfinx import fem, geometry, mesh
from petsc4py import PETSc

from pdegrow.errors import PdegrowError
from solvers.wind_grid import (
    divergence_operator,
    draw_hills,
    first_guess,
    gaussian_hills,
    gaussian_hills_normal,
    grid_levels,
    ground_normals,
)
from solvers.wind_recipe import WindRecipe, fixed_hills, load_recipe, mast_positions

__all__ = ["PROBLEM_NAME", "WindProblem", "WindRecipe", "barycentric_matrix", "fixed_hills", "load_recipe",
           "make_problem", "mast_positions"]

PROBLEM_NAME = "wind"


def make_problem(recipe: WindRecipe) -> WindProblem:
    return WindProblem(recipe)


def barycentric_matrix(points: np.ndarray, cells: np.ndarray, cell_dofs: np.ndarray, dof_coords: np.ndarray,
                       n_dofs: int) -> scipy.sparse.csr_matrix:
    """P1 interpolation (P × n_dofs): row p holds the barycentric coordinates of ``points[p]`` in its
    tetrahedron ``cells[p]`` (vertices ``dof_coords[cell_dofs[cells[p]]]``)."""
    dofs = cell_dofs[cells]                                   # (P, 4)
    X = dof_coords[dofs]                                      # (P, 4, 3)
    edges = (X[:, 1:] - X[:, :1]).transpose(0, 2, 1)          # (P, 3, 3): columns X_i − X_0
    lam = np.linalg.solve(edges, (points - X[:, 0])[..., None])[..., 0]
    weights = np.column_stack([1.0 - lam.sum(1), lam])
    rows = np.repeat(np.arange(len(points)), 4)
    return scipy.sparse.csr_matrix((weights.ravel(), (rows, dofs.ravel())), shape=(len(points), n_dofs))


class WindProblem:
    """The mass-consistent wind model on one rank (``MPI.COMM_SELF``)."""

    name = PROBLEM_NAME

    def __init__(self, recipe: WindRecipe) -> None:
        self.recipe = r = recipe
        L, H = r.length, r.height
        self.msh = mesh.create_box(MPI.COMM_SELF, [np.zeros(3), np.array([L, L, H])], [r.nx, r.ny, r.nz],
                                   mesh.CellType.tetrahedron)
        gx = self.msh.geometry.x
        gx[:, 2] = H * (gx[:, 2] / H) ** r.vertical_stretch           # the reference (flat) mesh
        self.reference_geometry = gx.copy()
        self.V = fem.functionspace(self.msh, ("Lagrange", 1))
        self.n_dofs = self.V.dofmap.index_map.size_local
        self.reference_dofs = self.V.tabulate_dof_coordinates().copy()
        self.cell_dofs = self.V.dofmap.list.astype(np.int64)
        tdim = self.msh.topology.dim
        self.msh.topology.create_connectivity(tdim - 1, tdim)

        # --- the weak form ∫ A⁻¹∇λ·∇v dx; λ = 0 on the lateral sides and the top
        lam, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        self.a_inv = np.array([1.0 / r.alpha_h**2, 1.0 / r.alpha_h**2, 1.0 / r.alpha_v**2])
        A_inv = ufl.as_matrix(np.diag(self.a_inv).tolist())
        self.a = fem.form(ufl.inner(A_inv * ufl.grad(lam), ufl.grad(v)) * ufl.dx)
        self.gradient_forms = [fem.form(ufl.grad(lam)[k] * v * ufl.dx) for k in range(3)]
        self.volume_form = fem.form(v * ufl.dx)

        def open_boundary(x: np.ndarray) -> np.ndarray:
            return (np.isclose(x[0], 0.0) | np.isclose(x[0], L) | np.isclose(x[1], 0.0)
                    | np.isclose(x[1], L) | np.isclose(x[2], H))

        facets = mesh.locate_entities_boundary(self.msh, tdim - 1, open_boundary)
        self.open_dofs = np.sort(fem.locate_dofs_topological(self.V, tdim - 1, facets))
        ground = mesh.locate_entities_boundary(self.msh, tdim - 1, lambda x: np.isclose(x[2], 0.0))
        self.ground_dofs = np.sort(fem.locate_dofs_topological(self.V, tdim - 1, ground))
        self.bc = fem.dirichletbc(PETSc.ScalarType(0.0), self.open_dofs, self.V)
        self.free = np.ones(self.n_dofs, dtype=bool)
        self.free[self.open_dofs] = False

        # --- the target grid: a regular grid of the reference box, mapped with the mesh
        self.grid_x = np.linspace(0.0, L, r.grid_nx)
        self.grid_y = np.linspace(0.0, L, r.grid_ny)
        self.grid_sigma = grid_levels(r.grid_nz, r.vertical_stretch)
        Z, Y, X = np.meshgrid(H * self.grid_sigma, self.grid_y, self.grid_x, indexing="ij")
        ref_points = np.column_stack([X.ravel(), Y.ravel(), Z.ravel()])
        inset = 1e-9 * np.array([L, L, H])
        ref_points = np.clip(ref_points, inset, np.array([L, L, H]) - inset)
        self.grid_matrix = self._locate(ref_points, "grid point")   # barycentric: fixed under deformation

        self.A = dolfinx.fem.petsc.create_matrix(self.a)
        self.ksp = PETSc.KSP().create(MPI.COMM_SELF)
        self.ksp.setType("cg")
        self.ksp.getPC().setType("gamg")
        self.ksp.setTolerances(rtol=r.rtol, atol=1e-50, max_it=r.max_iterations)
        self.ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
        self.rhs = PETSc.Vec().createSeq(self.n_dofs, comm=MPI.COMM_SELF)
        self.sol = PETSc.Vec().createSeq(self.n_dofs, comm=MPI.COMM_SELF)
        self.masts = mast_positions(r)
        self.mast_columns = np.column_stack([  # (row j, column i) of the grid column nearest to each mast
            np.rint(self.masts[:, 1] / L * (r.grid_ny - 1)), np.rint(self.masts[:, 0] / L * (r.grid_nx - 1))
        ]).astype(np.int64)
        inside = np.clip(self.masts, 1e-9 * L, (1 - 1e-9) * L)
        self.mast_ground_matrix = self._locate(  # the ground below each mast, on the reference mesh
            np.column_stack([inside, np.full(len(self.masts), 1e-9 * H)]), "mast")
        self.hills: np.ndarray | None = None
        if r.terrain == "fixed":
            self.set_terrain(fixed_hills(r))

    # ---------------------------------------------------------------- terrain
    def set_terrain(self, hills: np.ndarray) -> None:
        """Deform the mesh to the ground h of ``hills``, re-assemble every operator, set up GAMG."""
        r = self.recipe
        H = r.height
        ref = self.reference_geometry
        h = gaussian_hills(ref[:, 0], ref[:, 1], hills)
        if h.max(initial=0.0) >= H:
            raise PdegrowError(f"wind: the terrain reaches {h.max():.1f} m, not below the domain top "
                               f"height = {H:g} m")
        self.msh.geometry.x[:, 2] = h + ref[:, 2] * (1.0 - h / H)
        self.hills = np.asarray(hills, dtype=float).reshape(-1, 4)
        dof_ref = self.reference_dofs
        self.dof_ground = gaussian_hills(dof_ref[:, 0], dof_ref[:, 1], hills)
        self.dofs = dof_ref.copy()
        self.dofs[:, 2] = self.dof_ground + dof_ref[:, 2] * (1.0 - self.dof_ground / H)
        self.height_above_ground = self.dofs[:, 2] - self.dof_ground
        ground = dof_ref[self.ground_dofs]
        self.ground_normals = gaussian_hills_normal(ground[:, 0], ground[:, 1], hills)

        self.A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(self.A, self.a, bcs=[self.bc])
        self.A.assemble()
        self.gradient = [fem.assemble_matrix(f).to_scipy().tocsr() for f in self.gradient_forms]
        self.divergence_t = scipy.sparse.hstack([g.T for g in self.gradient], format="csr")  # (n, 3n)
        self.lumped_mass = fem.assemble_vector(self.volume_form).array.copy()
        self.ksp.setOperators(self.A)
        self.ksp.setUp()
        # heights above the mesh's (piecewise-linear) ground, so that every sensor is inside the mesh
        ground = self.mast_ground_matrix @ self.dofs[:, 2]
        self.mast_points = np.column_stack([np.repeat(self.masts, len(r.mast_heights), axis=0),
                                            (ground[:, None] + np.asarray(r.mast_heights)[None, :]).ravel()])
        self.mast_matrix = self._locate(self.mast_points, "mast sensor", self._mast_label)
        self.grid_points = self.grid_matrix @ self.dofs                 # (P, 3) physical

    def _mast_label(self, p: int) -> str:
        k = len(self.recipe.mast_heights)
        x = self.mast_points[p]
        return (f"mast {p // k} at ({x[0]:g}, {x[1]:g}), sensor {self.recipe.mast_heights[p % k]:g} m above "
                f"ground (z = {x[2]:.1f} m)")

    def _locate(self, points: np.ndarray, what: str, label: Callable[[int], str] | None = None,
                ) -> scipy.sparse.csr_matrix:
        """Interpolation matrix at ``points`` on the mesh as it is now (bounding-box tree)."""
        tree = geometry.bb_tree(self.msh, self.msh.topology.dim)
        colliding = geometry.compute_colliding_cells(
            self.msh, geometry.compute_collisions_points(tree, points), points)
        cells = np.empty(len(points), dtype=np.int64)
        for p in range(len(points)):
            found = colliding.links(p)
            if len(found) == 0:
                where = label(p) if label else f"{what} {p} at {tuple(np.round(points[p], 3))}"
                raise PdegrowError(f"wind: {where} lies outside the domain (below the ground or above "
                                   f"the top {self.recipe.height:g} m)")
            cells[p] = found[0]
        dof_coords = self.V.tabulate_dof_coordinates()
        return barycentric_matrix(points, cells, self.cell_dofs, dof_coords, self.n_dofs)

    # ---------------------------------------------------------------- the solve
    def right_hand_side(self, u0: np.ndarray) -> np.ndarray:
        """b_i = −∫ u₀·∇φ_i dx = −Σ_k (D_kᵀ u₀,k)_i on the free dofs, 0 on the open boundary."""
        b = -(self.divergence_t @ u0.T.ravel())
        b[~self.free] = 0.0
        return b

    def solve_potential(self, b: np.ndarray) -> np.ndarray:
        """λ from the right-hand side: CG + GAMG; a solve that does not converge raises."""
        self.rhs.array[:] = b
        self.ksp.solve(self.rhs, self.sol)
        reason = self.ksp.getConvergedReason()
        if reason < 0:
            raise PdegrowError(
                f"wind: the CG + GAMG solve did not converge (PETSc reason {reason} after "
                f"{self.ksp.getIterationNumber()} iterations, rtol {self.recipe.rtol:g}): raise "
                "max_iterations or rtol, or use a finer mesh")
        lam = self.sol.array.copy()
        lam[~self.free] = 0.0   # the Dirichlet rows hold λ = 0 only to the solver's tolerance
        return lam

    def recover(self, u0: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """u_i = u₀,i + A⁻¹ (D λ)_i / m_i at the nodes (lumped L² projection of ∇λ), then
        u_i ← u_i − (u_i·n_i) n_i at the ground nodes."""
        grad = np.column_stack([g @ lam for g in self.gradient]) / self.lumped_mass[:, None]
        u = u0 + grad * self.a_inv[None, :]
        g, n = self.ground_dofs, self.ground_normals
        u[g] -= (u[g] * n).sum(1)[:, None] * n
        return u

    def adjust(self, u0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mass-consistent field at the nodes (n, 3) and the potential λ, from u₀ at the nodes."""
        lam = self.solve_potential(self.right_hand_side(u0))
        return self.recover(u0, lam), lam

    def draw_first_guess(self, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
        """u₀ at the nodes and its parameters (speed, direction, roughness), all drawn from ``rng``."""
        r = self.recipe
        speed = rng.uniform(*r.speed)
        direction = math.radians(rng.uniform(*r.direction))
        roughness = math.exp(rng.uniform(math.log(r.roughness[0]), math.log(r.roughness[1])))
        M = r.perturbation_modes
        wavevectors = rng.standard_normal((M, 3)) * (2.0 * math.pi / r.perturbation_length)
        phases = rng.uniform(0.0, 2.0 * math.pi, size=M)
        coefficients = rng.standard_normal((M, 3)) / math.sqrt(max(M, 1))
        u0 = first_guess(self.dofs, self.height_above_ground, speed, direction, r.reference_height,
                         roughness, r.perturbation, wavevectors, phases, coefficients)
        return u0, {"speed": speed, "direction": direction, "roughness": roughness}

    def divergence_cells(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(∇·u_h per tetrahedron, tetrahedron volumes) of the P1 field with nodal values ``u`` (n, 3)."""
        X = self.dofs[self.cell_dofs]                                  # (C, 4, 3)
        J = X[:, 1:] - X[:, :1]                 # rows X_i − X_0: x = X_0 + Jᵀξ, so ∇_x φ = J⁻¹ ∇_ξ φ
        ref_grads = np.array([[-1.0, -1.0, -1.0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
        grads = np.linalg.solve(J, np.broadcast_to(ref_grads.T, (len(J), 3, 4))).transpose(0, 2, 1)
        div = np.einsum("cid,cid->c", grads, u[self.cell_dofs])
        return div, np.abs(np.linalg.det(J)) / 6.0

    # ---------------------------------------------------------------- ForwardProblem protocol
    def observe(self, u: np.ndarray) -> np.ndarray:
        """The mast values (M · K · C,): mast-major, then height, then component (u, v[, w])."""
        values = self.mast_matrix @ u                                   # (M·K, 3)
        return values[:, : len(self.recipe.components)].ravel()

    def mast_image(self, observations: np.ndarray) -> np.ndarray:
        """The observations as a horizontal image (K·c + 1, n_y, n_x) for a conv net: at the grid column
        nearest to each mast its K·c values (the mean where masts share a column), zeros elsewhere; the
        last channel counts the masts of each column."""
        r = self.recipe
        per_mast = observations.reshape(len(self.masts), -1)
        image = np.zeros((per_mast.shape[1] + 1, r.grid_ny, r.grid_nx))
        for (j, i), values in zip(self.mast_columns, per_mast, strict=True):
            image[:-1, j, i] += values
            image[-1, j, i] += 1.0
        occupied = image[-1] > 0
        image[:-1, occupied] /= image[-1, occupied]
        return image

    def to_grid(self, u: np.ndarray) -> np.ndarray:
        """u on the target grid, (3, nz, ny, nx)."""
        r = self.recipe
        return (self.grid_matrix @ u).T.reshape(3, r.grid_nz, r.grid_ny, r.grid_nx)

    def solve(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        r = self.recipe
        if r.terrain == "random":
            self.set_terrain(draw_hills(rng, r.n_hills, r.length, tuple(r.hill_height), tuple(r.hill_width)))
        u0, _ = self.draw_first_guess(rng)
        u, _ = self.adjust(u0)
        clean = self.observe(u)
        rms = float(np.sqrt(np.mean(clean**2)))
        noisy = clean + r.noise_level * rms * rng.standard_normal(len(clean))
        grid = self.to_grid(u)
        sample = {
            "inputs/observations": noisy,
            "inputs/observations_clean": clean,
            "inputs/mast_image": self.mast_image(noisy),
            "targets/velocity": grid,
            "targets/velocity_columns": grid.reshape(3 * r.grid_nz, r.grid_ny, r.grid_nx),
            "targets/velocity_nodes": u,
            "targets/first_guess": self.to_grid(u0),
        }
        if r.terrain == "random":
            z = self.grid_points[:, 2].reshape(r.grid_nz, r.grid_ny, r.grid_nx)
            sample["inputs/terrain"] = z[0].copy()
            sample["targets/grid_z"] = z.copy()
            # the inputs of a surrogate whose map may depend on the terrain: masts + ground heights
            sample["inputs/observations_terrain"] = np.concatenate([noisy, z[0].ravel()])
            sample["inputs/mast_image_terrain"] = np.concatenate([sample["inputs/mast_image"], z[0][None]])
        return sample

    def sample_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        r = self.recipe
        f8 = np.dtype(np.float64)
        n_obs = len(self.masts) * len(r.mast_heights) * len(r.components)
        grid = (3, r.grid_nz, r.grid_ny, r.grid_nx)
        specs = {
            "inputs/observations": ((n_obs,), f8),
            "inputs/observations_clean": ((n_obs,), f8),
            "inputs/mast_image": ((len(r.mast_heights) * len(r.components) + 1, r.grid_ny, r.grid_nx), f8),
            "targets/velocity": (grid, f8),
            "targets/velocity_columns": ((3 * r.grid_nz, r.grid_ny, r.grid_nx), f8),
            "targets/velocity_nodes": ((self.n_dofs, 3), f8),
            "targets/first_guess": (grid, f8),
        }
        if r.terrain == "random":
            specs["inputs/terrain"] = ((r.grid_ny, r.grid_nx), f8)
            specs["targets/grid_z"] = ((r.grid_nz, r.grid_ny, r.grid_nx), f8)
            specs["inputs/observations_terrain"] = ((n_obs + r.grid_ny * r.grid_nx,), f8)
            specs["inputs/mast_image_terrain"] = (
                (len(r.mast_heights) * len(r.components) + 2, r.grid_ny, r.grid_nx), f8)
        return specs

    def static_arrays(self) -> dict[str, np.ndarray]:
        r = self.recipe
        shape = (r.grid_nz, r.grid_ny, r.grid_nx)
        arrays = {
            "geometry/nodes": self.dofs if r.terrain == "fixed" else self.reference_dofs,
            "geometry/cells": self.cell_dofs,
            "geometry/masts": self.masts,
            "geometry/mast_heights": np.asarray(r.mast_heights, dtype=float),
            "geometry/grid_x": self.grid_x,
            "geometry/grid_y": self.grid_y,
            "geometry/grid_sigma": self.grid_sigma,
            "geometry/ground_nodes": self.ground_dofs.astype(np.int64),
            "operators/grid_interpolation_data": self.grid_matrix.data,
            "operators/grid_interpolation_indices": self.grid_matrix.indices.astype(np.int64),
            "operators/grid_interpolation_indptr": self.grid_matrix.indptr.astype(np.int64),
            "operators/alpha": np.array([r.alpha_h, r.alpha_h, r.alpha_v]),
        }
        if r.terrain == "fixed":
            z = self.grid_points[:, 2].reshape(shape)
            D = divergence_operator(self.grid_x, self.grid_y, z)
            arrays.update({
                "geometry/grid_z": z,
                "geometry/mast_points": self.mast_points,
                "geometry/hills": self.hills,
                "operators/lumped_mass": self.lumped_mass,
                "operators/grid_divergence_data": D.data,
                "operators/grid_divergence_indices": D.indices.astype(np.int64),
                "operators/grid_divergence_indptr": D.indptr.astype(np.int64),
                "operators/ground_normal": ground_normals(self.grid_x, self.grid_y, z[0]),
            })
        return arrays

    def file_attrs(self) -> dict[str, Any]:
        return {"noise_level": self.recipe.noise_level, "noise_model": "additive",
                "terrain": self.recipe.terrain, "components": self.recipe.components}

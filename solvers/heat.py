"""Steady heat conduction with a random log-conductivity (DOLFINx 0.11).

    −∇·(e^m ∇T) = f   in Ω = (0, 1)²,
               T = 0   on the Dirichlet sides Γ_D,
       e^m ∂T/∂n = 0   on the other sides,

P-``degree`` Lagrange elements for T; m is a P1 field and the conductivity is
its nodal exponential κ_h = I_h(e^m), so that on every triangle
∫_K κ_h ∇φ_i·∇φ_j = mean_K(κ) · (K_loc)_ij exactly — the identity the torch
physics loss relies on (``operators/cell_stiffness``).

The bilinear form is compiled once; per sample only κ's nodal values change,
the matrix is re-assembled into the same sparsity pattern and MUMPS re-uses
its symbolic analysis. Priors for m: a truncated Karhunen–Loève expansion of a
squared-exponential covariance (the network then predicts the KL
coefficients, arXiv 2211.06860) or a full-field SPDE/Matérn field
m = σ D⁻¹ (δM + γK)⁻¹ M_L^{1/2} ξ (Lindgren, Rue & Lindström 2011), where
D² = diag((δM + γK)⁻¹ M_L (δM + γK)⁻¹) rescales it to the marginal variance σ²
at every node: this removes the variance inflation that the natural (Neumann)
boundary conditions of the SPDE cause near ∂Ω, while δ/γ = 8/ρ² keeps the
Matérn ν = 1 correlation length ρ in the interior.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mpi4py import MPI  # before dolfinx / petsc4py (isort section "mpi")

import dolfinx.fem.petsc
import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import ufl
from dolfinx import fem, geometry, mesh
from petsc4py import PETSc

from pdegrow.contract_metadata import structured_grid_index
from pdegrow.errors import PdegrowError
from solvers import recipes

PROBLEM_NAME = "heat"
SIDES = ("left", "right", "bottom", "top")


@dataclass(frozen=True)
class HeatRecipe:
    """Everything that defines a heat data set; see ``datasets/heat-*.toml``."""

    n_samples: int = 100
    seed: int = 0
    nx: int = 32
    ny: int = 32
    degree: int = 1
    dirichlet_sides: list[str] = field(default_factory=lambda: list(SIDES))
    source: float = 1.0
    prior: Literal["kl", "spde"] = "spde"
    prior_mean: float = 0.0
    variance: float = 1.0
    correlation_length: float = 0.25
    n_modes: int = 12
    sensor_layout: Literal["grid", "random", "given"] = "grid"
    n_sensors: int = 64
    sensor_seed: int = 0
    sensors: list[list[float]] = field(default_factory=list)
    noise_level: float = 0.01

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise PdegrowError(f"heat recipe: {msg}")

        recipes.require_finite(self, "heat recipe")
        if self.n_samples <= 0:
            bad(f"n_samples must be positive, got {self.n_samples}")
        if self.nx < 1 or self.ny < 1:
            bad(f"mesh size nx={self.nx}, ny={self.ny} must be at least 1")
        if self.degree < 1:
            bad(f"degree must be at least 1, got {self.degree}")
        unknown = set(self.dirichlet_sides) - set(SIDES)
        if unknown or not self.dirichlet_sides:
            bad(f"dirichlet_sides must be a non-empty subset of {SIDES}, got {self.dirichlet_sides}")
        if self.variance <= 0 or self.correlation_length <= 0:
            bad("variance and correlation_length must be positive")
        if abs(self.prior_mean) + 8.0 * math.sqrt(self.variance) > 700.0:
            bad(f"prior_mean ± 8·√variance must lie within ±700, got prior_mean={self.prior_mean}, "
                f"variance={self.variance}: e^m would overflow")
        if self.source == 0:
            bad("source must be non-zero (with f = 0 the temperature and every observation are 0)")
        n_nodes = (self.nx + 1) * (self.ny + 1)
        if self.prior == "kl" and not 1 <= self.n_modes <= n_nodes:
            bad(f"n_modes must be in 1…{n_nodes} (the mesh's node count), got {self.n_modes}")
        if self.noise_level < 0:
            bad(f"noise_level must be non-negative, got {self.noise_level}")
        n_sensors = len(self.sensors) if self.sensor_layout == "given" else self.n_sensors
        if n_sensors < 1:
            bad("at least one sensor is needed")
        if n_sensors > n_nodes:
            bad(f"mesh too coarse for the sensors: {n_sensors} sensors but only {n_nodes} "
                f"nodes on the {self.nx}×{self.ny} mesh")
        if self.sensor_layout == "given":
            for k, s in enumerate(self.sensors):
                if len(s) != 2:
                    bad(f"a sensor needs two coordinates, got {s}")
                if not all(0.0 <= c <= 1.0 for c in s):
                    bad(f"sensor {k} at ({s[0]:g}, {s[1]:g}) lies outside the domain [0, 1]²")

    def memory_bytes(self) -> int:
        """A lower bound of the memory one rank's forward model takes, from its dense arrays:
        the observation matrix (sensors × dofs), the P-degree → P1 interpolation (nodes × dofs,
        degree > 1) and, for the KL prior, the covariance, the dense mass matrix, their product
        and the eigensolver's copy (4 × nodes²); the sparse operators are not counted."""
        nodes = (self.nx + 1) * (self.ny + 1)
        dofs = (self.degree * self.nx + 1) * (self.degree * self.ny + 1)
        n_sensors = len(self.sensors) if self.sensor_layout == "given" else self.n_sensors
        dense = n_sensors * dofs + (nodes * dofs if self.degree > 1 else 0)
        if self.prior == "kl":
            dense += 4 * nodes * nodes
        return 8 * dense

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(preset: str | None, config_file: str | None, overrides: dict[str, Any]) -> HeatRecipe:
    """The recipe of a preset (``datasets/heat-<preset>.toml``) or a file, with overrides."""
    return recipes.load_recipe(HeatRecipe, "heat", preset, config_file, overrides)


def make_problem(recipe: HeatRecipe) -> HeatProblem:
    return HeatProblem(recipe)


# ---------------------------------------------------------------- priors (pure numpy)

def squared_exponential(points: np.ndarray, variance: float, length: float) -> np.ndarray:
    """c(x, y) = σ² exp(−|x − y|² / (2ℓ²)) between all pairs of ``points``."""
    d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    return variance * np.exp(-d2 / (2.0 * length**2))


def kl_basis(mass: np.ndarray, covariance: np.ndarray, n_modes: int) -> tuple[np.ndarray, np.ndarray]:
    """Leading KL modes of the covariance operator (Cu)(x) = ∫ c(x, y) u(y) dy.

    Galerkin form of Cφ = λφ with nodal quadrature of the kernel:
    M C M φ = λ M φ, so the modes are M-orthonormal (ΦᵀMΦ = I).
    Returns (eigenvalues descending, basis of shape (n_nodes, n_modes)).
    """
    n = mass.shape[0]
    evals, evecs = scipy.linalg.eigh(mass @ covariance @ mass, mass,
                                     subset_by_index=[n - n_modes, n - 1])
    order = np.argsort(evals)[::-1]
    evecs = evecs[:, order]
    evecs *= np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(n_modes)])
    return evals[order], evecs


def matern_spde_coefficients(variance: float, correlation_length: float) -> tuple[float, float]:
    """(δ, γ) with (δ − γΔ)m = W giving a Matérn ν = 1 field in 2-D of the given
    marginal variance σ² and correlation length ρ = √(8ν)/κ:
    κ² = δ/γ = 8/ρ², σ² = 1/(4π δ γ)."""
    kappa = math.sqrt(8.0) / correlation_length
    gamma = 1.0 / (kappa * math.sqrt(4.0 * math.pi * variance))
    return kappa**2 * gamma, gamma


def spde_marginal_variance(lu: scipy.sparse.linalg.SuperLU, sqrt_lumped_mass: np.ndarray,
                           block: int = 512) -> np.ndarray:
    """diag(A⁻¹ M_L A⁻¹): the pointwise variance of m = A⁻¹ M_L^{1/2} ξ, ξ ~ N(0, I).

    Computed column block by column block (O(n·block) memory)."""
    n = len(sqrt_lumped_mass)
    var = np.zeros(n)
    for start in range(0, n, block):
        cols = np.arange(start, min(start + block, n))
        rhs = np.zeros((n, len(cols)))
        rhs[cols, np.arange(len(cols))] = sqrt_lumped_mass[cols]
        var += (lu.solve(rhs) ** 2).sum(axis=1)
    return var


def matern_correlation(r: np.ndarray, correlation_length: float) -> np.ndarray:
    """Matérn ν = 1 correlation (κr)K₁(κr), κ = √8/ρ, equal to 1 at r = 0."""
    from scipy.special import kv

    kr = np.sqrt(8.0) / correlation_length * np.asarray(r, dtype=float)
    with np.errstate(invalid="ignore"):
        out = kr * kv(1, kr)
    return np.where(kr == 0, 1.0, out)


def p1_cell_stiffness(nodes: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Unit-coefficient P1 element stiffness matrices, one 3×3 per triangle:
    (K_loc)_ij = |K| ∇λ_i·∇λ_j with λ the barycentric coordinates."""
    p = nodes[cells][..., :2]                       # (n_cells, 3, 2)
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    inv = np.empty((len(cells), 2, 2))              # rows: ∇λ_1, ∇λ_2
    inv[:, 0, 0], inv[:, 0, 1] = e2[:, 1] / det, -e2[:, 0] / det
    inv[:, 1, 0], inv[:, 1, 1] = -e1[:, 1] / det, e1[:, 0] / det
    grads = np.concatenate([-(inv[:, :1] + inv[:, 1:]), inv], axis=1)   # (n_cells, 3, 2)
    return 0.5 * np.abs(det)[:, None, None] * grads @ grads.transpose(0, 2, 1)


# ---------------------------------------------------------------- the forward problem

def _side_marker(side: str):
    return {
        "left": lambda x: np.isclose(x[0], 0.0),
        "right": lambda x: np.isclose(x[0], 1.0),
        "bottom": lambda x: np.isclose(x[1], 0.0),
        "top": lambda x: np.isclose(x[1], 1.0),
    }[side]


def sensor_points(recipe: HeatRecipe) -> np.ndarray:
    """Sensor coordinates (n, 2) of the recipe's layout."""
    if recipe.sensor_layout == "given":
        return np.asarray(recipe.sensors, dtype=float).reshape(-1, 2)
    n = recipe.n_sensors
    if recipe.sensor_layout == "random":
        rng = np.random.default_rng([recipe.sensor_seed, 2**31 - 1])
        return rng.uniform(0.05, 0.95, size=(n, 2))
    k = math.ceil(math.sqrt(n))
    ticks = (np.arange(k) + 0.5) / k
    grid = np.stack(np.meshgrid(ticks, ticks, indexing="xy"), -1).reshape(-1, 2)
    return grid[:n]


class HeatProblem:
    """The heat forward model on one rank (``MPI.COMM_SELF``)."""

    name = PROBLEM_NAME

    def __init__(self, recipe: HeatRecipe, source: Callable[[Any], Any] | None = None) -> None:
        """``source`` optionally replaces the recipe's constant f by a UFL expression of
        the spatial coordinate (used to verify the solver with manufactured solutions)."""
        self.recipe = r = recipe
        self.msh = mesh.create_unit_square(MPI.COMM_SELF, r.nx, r.ny, mesh.CellType.triangle)
        self.V = fem.functionspace(self.msh, ("Lagrange", r.degree))
        self.Q = fem.functionspace(self.msh, ("Lagrange", 1))   # m, κ and the stored fields

        # --- the weak form: ∫ κ ∇T·∇v dx = ∫ f v dx
        T, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        self.kappa = fem.Function(self.Q)
        f = fem.Constant(self.msh, PETSc.ScalarType(r.source))
        if source is not None:
            f = source(ufl.SpatialCoordinate(self.msh))
        self.a = fem.form(self.kappa * ufl.inner(ufl.grad(T), ufl.grad(v)) * ufl.dx)
        L = fem.form(f * v * ufl.dx)

        fdim = self.msh.topology.dim - 1
        facets = np.unique(np.concatenate([
            mesh.locate_entities_boundary(self.msh, fdim, _side_marker(s)) for s in r.dirichlet_sides]))
        self.bc_dofs = fem.locate_dofs_topological(self.V, fdim, facets)
        self.bc = fem.dirichletbc(PETSc.ScalarType(0.0), self.bc_dofs, self.V)

        # --- constant operators: matrix pattern, load vector, LU solver
        self.A = dolfinx.fem.petsc.create_matrix(self.a)
        self.b = dolfinx.fem.petsc.assemble_vector(L)
        dolfinx.fem.petsc.set_bc(self.b, [self.bc])
        self.T = fem.Function(self.V)
        self.ksp = PETSc.KSP().create(MPI.COMM_SELF)
        self.ksp.setOperators(self.A)
        self.ksp.setType("preonly")
        self.ksp.getPC().setType("lu")
        self.ksp.getPC().setFactorSolverType("mumps")

        # --- geometry and torch-side operators (P1, dof order of Q)
        self.nodes = self.Q.tabulate_dof_coordinates()[:, :2].copy()
        self.cells = self.Q.dofmap.list.astype(np.int64)
        u, w = ufl.TrialFunction(self.Q), ufl.TestFunction(self.Q)
        self.mass = fem.assemble_matrix(fem.form(u * w * ufl.dx)).to_scipy().tocsr()
        self.stiffness = fem.assemble_matrix(
            fem.form(ufl.inner(ufl.grad(u), ufl.grad(w)) * ufl.dx)).to_scipy().tocsr()
        self.lumped_mass = np.asarray(self.mass.sum(axis=1)).ravel()
        self.load_p1 = fem.assemble_vector(fem.form(f * w * ufl.dx)).array.copy()
        q_facets_dofs = fem.locate_dofs_topological(self.Q, fdim, facets)
        self.dirichlet_nodes = np.sort(q_facets_dofs).astype(np.int64)

        self.sensors = sensor_points(r)
        self.observation_matrix = self._observation_matrix(self.sensors, self.V)
        self.to_nodes = self._interpolation_to_nodes()
        # B on the stored P1 nodal fields (for degree > 1 it observes the P1 interpolant of T)
        self.nodal_observation_matrix = (self.observation_matrix if self.to_nodes is None
                                         else self._observation_matrix(self.sensors, self.Q))

        # --- prior
        if r.prior == "kl":
            cov = squared_exponential(self.nodes, r.variance, r.correlation_length)
            self.kl_eigenvalues, self.kl_basis = kl_basis(self.mass.toarray(), cov, r.n_modes)
        else:
            delta, gamma = matern_spde_coefficients(r.variance, r.correlation_length)
            self.spde_lu = scipy.sparse.linalg.splu((delta * self.mass + gamma * self.stiffness).tocsc())
            self.sqrt_lumped_mass = np.sqrt(self.lumped_mass)
            self.spde_scale = math.sqrt(r.variance) / np.sqrt(
                spde_marginal_variance(self.spde_lu, self.sqrt_lumped_mass))

    # -- construction helpers
    def _observation_matrix(self, points: np.ndarray, space: fem.FunctionSpace) -> np.ndarray:
        """B with (B T)_s = T(x_s) for T in ``space``: cells located once through the bounding-box
        tree."""
        pts = np.zeros((len(points), 3))
        pts[:, :2] = points
        tdim = self.msh.topology.dim
        tree = geometry.bb_tree(self.msh, tdim)
        colliding = geometry.compute_colliding_cells(
            self.msh, geometry.compute_collisions_points(tree, pts), pts)
        B = np.zeros((len(points), space.dofmap.index_map.size_local))
        probe = fem.Function(space)
        for s, x in enumerate(pts):
            cells = colliding.links(s)
            if len(cells) == 0:
                raise PdegrowError(f"heat recipe: sensor {s} at ({x[0]:g}, {x[1]:g}) lies outside "
                                   "the domain (0, 1)²")
            cell = cells[0]
            for dof in space.dofmap.cell_dofs(cell):
                probe.x.array[:] = 0.0
                probe.x.array[dof] = 1.0
                B[s, dof] = probe.eval(x, np.array([cell], dtype=np.int32))[0]
        return B

    def _interpolation_to_nodes(self) -> np.ndarray | None:
        """Matrix taking V-dofs to P1 nodal values (None when V is P1 itself)."""
        if self.recipe.degree == 1:
            return None
        source, target = fem.Function(self.V), fem.Function(self.Q)
        n_v = self.V.dofmap.index_map.size_local
        P = np.zeros((len(self.nodes), n_v))
        for j in range(n_v):
            source.x.array[:] = 0.0
            source.x.array[j] = 1.0
            target.interpolate(source)
            P[:, j] = target.x.array
        return P

    # -- ForwardProblem protocol
    def draw_log_conductivity(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """A prior draw m at the nodes, and its KL coefficients ξ (None for the SPDE prior)."""
        r = self.recipe
        if r.prior == "kl":
            xi = rng.standard_normal(r.n_modes)
            return r.prior_mean + self.kl_basis @ (np.sqrt(self.kl_eigenvalues) * xi), xi
        white = self.sqrt_lumped_mass * rng.standard_normal(len(self.nodes))
        return r.prior_mean + self.spde_scale * self.spde_lu.solve(white), None

    def solve_temperature(self, m: np.ndarray) -> np.ndarray:
        """T (V-dofs) for the log-conductivity m at the nodes: re-assemble A in place, LU solve."""
        self.kappa.x.array[:] = np.exp(m)
        self.A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(self.A, self.a, bcs=[self.bc])
        self.A.assemble()
        self.ksp.solve(self.b, self.T.x.petsc_vec)
        if (reason := self.ksp.getConvergedReason()) < 0:
            raise PdegrowError(
                f"heat solve failed (PETSc KSP reason {reason}); max |m| = {np.abs(m).max():.3g}: "
                "is the prior variance so large that e^m over- or underflows?")
        return self.T.x.array.copy()

    def solve(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        m, xi = self.draw_log_conductivity(rng)
        T = self.solve_temperature(m)
        clean = self.observation_matrix @ T
        noisy = clean * (1.0 + self.recipe.noise_level * rng.standard_normal(len(clean)))
        sample = {
            "inputs/observations": noisy,
            "inputs/observations_clean": clean,
            "targets/log_conductivity": m,
            "targets/temperature": T if self.to_nodes is None else self.to_nodes @ T,
        }
        if xi is not None:
            sample["targets/kl_coefficients"] = xi
        return sample

    def sample_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        n, s = len(self.nodes), len(self.sensors)
        specs = {
            "inputs/observations": ((s,), np.dtype(np.float64)),
            "inputs/observations_clean": ((s,), np.dtype(np.float64)),
            "targets/log_conductivity": ((n,), np.dtype(np.float64)),
            "targets/temperature": ((n,), np.dtype(np.float64)),
        }
        if self.recipe.prior == "kl":
            specs["targets/kl_coefficients"] = ((self.recipe.n_modes,), np.dtype(np.float64))
        return specs

    def static_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "geometry/nodes": self.nodes,
            "geometry/cells": self.cells,
            "geometry/sensors": self.sensors,
            "operators/cell_stiffness": p1_cell_stiffness(self.nodes, self.cells),
            "operators/load_vector": self.load_p1,
            "operators/dirichlet_nodes": self.dirichlet_nodes,
            "operators/lumped_mass": self.lumped_mass,
            "operators/prior_mean": np.full(len(self.nodes), self.recipe.prior_mean),
        }
        arrays["operators/observation_matrix"] = self.nodal_observation_matrix
        grid_index = structured_grid_index(self.nodes)
        if grid_index is not None:
            arrays["geometry/grid_index"] = grid_index
        mass = self.mass.tocsr().sorted_indices()
        arrays["operators/mass_matrix_data"] = mass.data
        arrays["operators/mass_matrix_indices"] = mass.indices.astype(np.int64)
        arrays["operators/mass_matrix_indptr"] = mass.indptr.astype(np.int64)
        if self.recipe.prior == "kl":
            arrays["operators/kl_basis"] = self.kl_basis
            arrays["operators/kl_eigenvalues"] = self.kl_eigenvalues
        else:
            arrays["operators/spde_coefficients"] = np.array(
                matern_spde_coefficients(self.recipe.variance, self.recipe.correlation_length))
            arrays["operators/spde_scale"] = self.spde_scale
        return arrays

    def file_attrs(self) -> dict[str, Any]:
        return {"noise_level": self.recipe.noise_level, "noise_model": "relative",
                "physics_operators_exact": self.recipe.degree == 1}

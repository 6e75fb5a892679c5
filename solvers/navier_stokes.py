"""2-D incompressible Navier–Stokes in vorticity form on the periodic unit torus (DOLFINx 0.11).

    ∂ₜw + u·∇w = νΔw + f,     u = ∇^⊥ψ = (∂ψ/∂y, −∂ψ/∂x),     −Δψ = w,     on 𝕋² = [0, 1)²,

with (FNO benchmark defaults) ν = 1e-3, f = 0.1(sin 2π(x+y) + cos 2π(x+y)), T = 1 and
w₀ ~ N(0, C), C = σ(−Δ + τ²I)^{−α}, σ = 7^{3/2}, τ = 7, α = 5/2, zero mean.

Discretisation. P-``degree`` Lagrange elements on a ``resolution``² triangle mesh of the
unit square made periodic by the prolongation P of :mod:`solvers.periodic` (every
matrix below is Pᵀ A P, every load vector Pᵀ b). The weak forms, for all test v:

    m(w, v)     = ∫ w v dx                      (mass M)
    k(w, v)     = ∫ ∇w·∇v dx                    (stiffness K)
    n(ψ, w; v)  = ∫ (∇^⊥ψ·∇w) v dx              (advection N(w), ψ = ψ[w])
    ℓ(v)        = ∫ f_h v dx                    (forcing F, f_h the interpolant of f)
    stream:  k(ψ, φ) = m(w, φ) ∀φ,   ∫ψ = 0       (K pinned at one dof, mean removed)

u_h = ∇^⊥ψ_h is exactly divergence free and its normal component is continuous, so
the semi-discrete advection conserves ∫w, ∫w² and ∫|u|² (wᵀN = ψᵀN = 1ᵀN = 0).

Time stepping, second order, diffusion implicit and advection explicit, with
A = M + ½Δtν K and B = M − ½Δtν K. ``cn_ab2`` (the preset; one advection per step):

    A wⁿ⁺¹   = B wⁿ + Δt F − Δt (3/2 N(wⁿ) − 1/2 N(wⁿ⁻¹))        (first step: cn_heun)

``cn_heun`` (Crank–Nicolson + Heun, the scheme of the FNO data generator):

    A w*     = B wⁿ + Δt F − Δt N(wⁿ)
    A wⁿ⁺¹   = B wⁿ + Δt F − ½Δt (N(wⁿ) + N(w*))

M, K, A, B, the pinned K and the LU factorisations of A and K are built once per
problem object and reused for every step and sample. The advection is applied
through operators precomputed from the weak form (exact for every degree, see
``TorusVorticitySolver.__init__``): per step only sparse products, no assembly;
the compiled UFL form ``advection_form`` is kept as the reference it is tested against.

Initial fields are drawn spectrally on the (res, res) grid of mesh vertices
(:func:`sample_vorticity`) and placed on the P1 nodes (interpolated into P-degree
when degree > 1). All stored fields are (res, res) images ``field[j, i] = w(i/res, j/res)``.

The recipe (parameters, validation, sensor layout) lives in :mod:`solvers.navier_stokes_recipe`,
the prior and the forcing in :mod:`solvers.navier_stokes_prior`; both are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mpi4py import MPI  # before dolfinx / petsc4py (isort section "mpi")

import dolfinx.fem.petsc
import numpy as np
import scipy.sparse
import ufl
from dolfinx import fem, mesh
from petsc4py import PETSc

from pdegrow.errors import PdegrowError
from solvers.navier_stokes_prior import TWO_PI, forcing_function, prior_eigenvalues, sample_vorticity
from solvers.navier_stokes_recipe import (
    MAX_RESOLUTION,
    TIME_SCHEMES,
    NavierStokesRecipe,
    load_recipe,
    sensor_indices,
)
from solvers.periodic import PeriodicSpace

__all__ = [
    "MAX_RESOLUTION", "PROBLEM_NAME", "TIME_SCHEMES", "TWO_PI", "NavierStokesProblem", "NavierStokesRecipe",
    "TorusVorticitySolver", "forcing_function", "load_recipe", "make_problem", "prior_eigenvalues",
    "sample_vorticity", "sensor_indices",
]

PROBLEM_NAME = "navier_stokes"


def make_problem(recipe: NavierStokesRecipe) -> NavierStokesProblem:
    return NavierStokesProblem(recipe)


# ---------------------------------------------------------------- the time stepper

class TorusVorticitySolver:
    """Semi-implicit (Crank–Nicolson + AB2 or Heun) P-``degree`` solver of the vorticity equation.

    Vectors are PETSc ``Vec`` of periodic coefficients (length ``space.n_periodic``).
    ``forcing`` is a callable f(x) for ``Function.interpolate`` or None for f = 0.
    """

    def __init__(self, resolution: int, degree: int = 1, nu: float = 1e-3, dt: float = 1e-3,
                 forcing: Callable[[np.ndarray], np.ndarray] | None = forcing_function,
                 lu_solver: str = "petsc", time_scheme: str = "cn_ab2") -> None:
        if time_scheme not in TIME_SCHEMES:
            raise PdegrowError(f"time_scheme must be one of {TIME_SCHEMES}, got {time_scheme!r}")
        self.resolution, self.degree, self.nu, self.dt = resolution, degree, nu, dt
        self.time_scheme = time_scheme
        self.msh = mesh.create_unit_square(MPI.COMM_SELF, resolution, resolution,
                                           mesh.CellType.triangle)
        self.V = fem.functionspace(self.msh, ("Lagrange", degree))
        self.space = S = PeriodicSpace(self.V, resolution)

        # --- the weak forms
        w, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        self.psi_h, self.w_h, self.f_h = fem.Function(self.V), fem.Function(self.V), fem.Function(self.V)
        u_h = ufl.as_vector((self.psi_h.dx(1), -self.psi_h.dx(0)))          # ∇^⊥ψ
        mass = w * v * ufl.dx                                                # m(w, v)
        stiffness = ufl.inner(ufl.grad(w), ufl.grad(v)) * ufl.dx             # k(w, v)
        advection = ufl.dot(u_h, ufl.grad(self.w_h)) * v * ufl.dx            # n(ψ, w; v)
        load = self.f_h * v * ufl.dx                                         # ℓ(v)
        self.advection_form = fem.form(advection)   # the reference (``advection_assembled``)

        # --- n(ψ, w; ·) as a precomputed operator, exact for every degree k:
        # ∂ψ, ∂w ∈ DG_{k−1} ⊂ Q = DG_{2k−2} and u·∇w ∈ Q, so with the L2 projections
        # G_x = M_Q⁻¹[∫ ∂ₓw q], G_y = M_Q⁻¹[∫ ∂_y w q] (exact) and C = [∫ q v]:
        #     N(w) = Pᵀ C ((G_y ψ) ⊙ (G_x w) − (G_x ψ) ⊙ (G_y w)),  products at Q's nodes.
        Q = fem.functionspace(self.msh, ("Discontinuous Lagrange", 2 * degree - 2))
        q, r = ufl.TrialFunction(Q), ufl.TestFunction(Q)
        P_sp = scipy.sparse.csr_matrix((np.ones(S.n_mesh), (np.arange(S.n_mesh), S.mesh_to_periodic)),
                                       shape=(S.n_mesh, S.n_periodic))
        M_Q_inv = _block_diagonal_inverse(_scipy(q * r * ufl.dx), Q.dofmap.list)
        self.G_x = (M_Q_inv @ _scipy(w.dx(0) * r * ufl.dx) @ P_sp).tocsr()
        self.G_y = (M_Q_inv @ _scipy(w.dx(1) * r * ufl.dx) @ P_sp).tocsr()
        self.G = scipy.sparse.vstack([self.G_x, self.G_y]).tocsr()          # [G_x; G_y]
        self.C = (P_sp.T @ _scipy(q * v * ufl.dx)).tocsr()
        self._psi_w = np.empty((S.n_periodic, 2))

        # --- constant operators, assembled, restricted (Pᵀ A P) and factorised once
        def periodic_matrix(a: ufl.Form) -> PETSc.Mat:
            A = dolfinx.fem.petsc.assemble_matrix(fem.form(a))
            A.assemble()
            return S.restrict(A)

        self.M = periodic_matrix(mass)
        self.K = periodic_matrix(stiffness)
        self.A = self.M.copy()
        self.A.axpy(0.5 * dt * nu, self.K)                                  # M + ½Δtν K
        self.B = self.M.copy()
        self.B.axpy(-0.5 * dt * nu, self.K)                                 # M − ½Δtν K
        self.K_pinned = self.K.copy()
        self.K_pinned.zeroRowsColumns([0], diag=1.0)                        # ψ(0, 0) = 0
        self.lu_A = _lu(self.A, lu_solver)
        self.lu_K = _lu(self.K_pinned, lu_solver)
        self.mass_weights = self.M.createVecLeft()                          # M 1 (∫φ_j)
        ones = self.M.createVecRight()
        ones.set(1.0)
        self.M.mult(ones, self.mass_weights)
        self.F = self.M.createVecLeft()
        if forcing is not None:
            self.f_h.interpolate(forcing)
            self.F.array[:] = S.restrict_vector(fem.assemble_vector(fem.form(load)).array)

        # --- work vectors (allocated once)
        self._b_mesh = np.zeros(S.n_mesh)
        self._b_mesh_vec = PETSc.Vec().createWithArray(self._b_mesh, comm=MPI.COMM_SELF)
        self._psi, self._psi_rhs = self.M.createVecLeft(), self.M.createVecLeft()
        self._rhs, self._base, self._wstar = (self.M.createVecLeft() for _ in range(3))
        self._n1, self._n2 = self.M.createVecLeft(), self.M.createVecLeft()
        self.P1 = self.V if degree == 1 else fem.functionspace(self.msh, ("Lagrange", 1))
        self.space_p1 = S if degree == 1 else PeriodicSpace(self.P1, resolution)

    # -- vectors
    def vector(self, values: np.ndarray | None = None) -> PETSc.Vec:
        """A periodic coefficient vector (zero, or a copy of ``values``)."""
        vec = self.M.createVecLeft()
        if values is not None:
            vec.array[:] = values
        return vec

    def from_grid(self, grid: np.ndarray) -> PETSc.Vec:
        """The P-degree field whose P1 interpolant has the vertex values ``grid`` (res, res)."""
        if self.degree == 1:
            return self.vector(grid.ravel())
        p1 = fem.Function(self.P1)
        p1.x.array[:] = self.space_p1.prolong(grid.ravel())
        target = fem.Function(self.V)
        target.interpolate(p1)
        return self.vector(self.space.periodic_values(target.x.array))

    def interpolate(self, func: Callable[[np.ndarray], np.ndarray]) -> PETSc.Vec:
        """The interpolant of a periodic function f(x) (x of shape (3, n))."""
        target = fem.Function(self.V)
        target.interpolate(func)
        return self.vector(self.space.periodic_values(target.x.array))

    def to_grid(self, w: PETSc.Vec) -> np.ndarray:
        """The (res, res) image of the vertex values of ``w``."""
        return self.space.to_grid(w.array_r).copy()

    def as_function(self, w: PETSc.Vec) -> fem.Function:
        """``w`` as a dolfinx Function on the (non-periodic) mesh: P w."""
        out = fem.Function(self.V)
        self.space.P.mult(w, out.x.petsc_vec)
        return out

    # -- the operators of one step
    def stream_function(self, w: PETSc.Vec, psi: PETSc.Vec) -> PETSc.Vec:
        """ψ with k(ψ, φ) = m(w − w̄, φ) ∀φ and ∫ψ = 0."""
        b = self._psi_rhs
        self.M.mult(w, b)
        b.axpy(-b.sum(), self.mass_weights)                    # compatible rhs: 1ᵀ(Mw − w̄ M1) = 0
        b.array[0] = 0.0                                       # the pinned dof
        self.lu_K.solve(b, psi)
        psi.shift(-psi.dot(self.mass_weights))                 # ∫ψ = 0 (|Ω| = 1)
        return psi

    def advection(self, w: PETSc.Vec, out: PETSc.Vec) -> PETSc.Vec:
        """N(w) = Pᵀ[n(ψ[w], w; φ_i)]_i through the precomputed operators (five sparse products)."""
        self._psi_w[:, 0] = self.stream_function(w, self._psi).array_r
        self._psi_w[:, 1] = w.array_r
        g = self.G @ self._psi_w                     # rows: [∂ₓ; ∂_y] at Q's nodes, cols: [ψ, w]
        nq = self.G_x.shape[0]
        out.array[:] = self.C @ (g[nq:, 0] * g[:nq, 1] - g[:nq, 0] * g[nq:, 1])
        return out

    def advection_assembled(self, w: PETSc.Vec, out: PETSc.Vec) -> PETSc.Vec:
        """N(w) assembled from the UFL form n(ψ, w; v) (compiled once, coefficients updated
        in place): the reference that ``advection`` must reproduce."""
        self.stream_function(w, self._psi)
        self.space.P.mult(self._psi, self.psi_h.x.petsc_vec)
        self.space.P.mult(w, self.w_h.x.petsc_vec)
        self._b_mesh[:] = 0.0
        fem.assemble_vector(self._b_mesh, self.advection_form)
        self.space.P.multTranspose(self._b_mesh_vec, out)
        return out

    def step(self, w: PETSc.Vec, out: PETSc.Vec) -> PETSc.Vec:
        """One Crank–Nicolson/Heun step wⁿ → wⁿ⁺¹ (``out`` may be ``w``)."""
        dt = self.dt
        n1 = self.advection(w, self._n1)
        self.B.mult(w, self._base)
        self._base.axpy(dt, self.F)                            # B wⁿ + Δt F
        self._rhs.waxpy(-dt, n1, self._base)
        self.lu_A.solve(self._rhs, self._wstar)                # A w* = B wⁿ + Δt F − Δt N(wⁿ)
        n2 = self.advection(self._wstar, self._n2)
        self._rhs.waxpy(-0.5 * dt, n1, self._base)
        self._rhs.axpy(-0.5 * dt, n2)
        self.lu_A.solve(self._rhs, out)                        # A wⁿ⁺¹ = … − ½Δt (N(wⁿ) + N(w*))
        return out

    def step_ab2(self, w: PETSc.Vec, n_prev: PETSc.Vec, n_now: PETSc.Vec) -> PETSc.Vec:
        """One Crank–Nicolson/Adams–Bashforth-2 step, in place: on entry ``n_prev`` holds
        N(wⁿ⁻¹); ``n_now`` receives N(wⁿ) and
        A wⁿ⁺¹ = B wⁿ + Δt F − Δt (3/2 N(wⁿ) − 1/2 N(wⁿ⁻¹))."""
        dt = self.dt
        self.advection(w, n_now)
        self.B.mult(w, self._base)
        self._base.axpy(dt, self.F)
        self._rhs.waxpy(-1.5 * dt, n_now, self._base)
        self._rhs.axpy(0.5 * dt, n_prev)
        self.lu_A.solve(self._rhs, w)
        return w

    def run(self, w0: PETSc.Vec, n_steps: int, record_steps: Sequence[int] = (),
            callback: Callable[[int, PETSc.Vec], None] | None = None
            ) -> tuple[PETSc.Vec, list[np.ndarray]]:
        """March ``n_steps`` steps from ``w0`` (left untouched); returns w(T) and the
        (res, res) images at the steps in ``record_steps``. ``cn_ab2`` starts with
        one ``cn_heun`` step (second order from the start) and then needs one
        advection per step instead of two."""
        w = w0.copy()
        record = set(record_steps)
        snapshots = []
        history = [self.M.createVecLeft(), self.M.createVecLeft()]   # N(wⁿ⁻¹), N(wⁿ)
        for n in range(1, n_steps + 1):
            if self.time_scheme == "cn_ab2" and n > 1:
                self.step_ab2(w, history[0], history[1])
                history.reverse()
            else:
                self.step(w, w)
                self._n1.copy(history[0])                        # N(w⁰) for the first AB2 step
            if n in record:
                snapshots.append(self.to_grid(w))
            if callback is not None:
                callback(n, w)
        return w, snapshots

    # -- diagnostics
    def mean(self, w: PETSc.Vec) -> float:
        """∫ w dx."""
        return float(w.dot(self.mass_weights))

    def enstrophy(self, w: PETSc.Vec) -> float:
        """½ ∫ w² dx = ½ wᵀ M w."""
        Mw = self.M.createVecLeft()
        self.M.mult(w, Mw)
        return 0.5 * float(w.dot(Mw))

    def kinetic_energy(self, w: PETSc.Vec) -> float:
        """½ ∫ |u|² dx = ½ ∫ |∇ψ|² dx = ½ ψᵀ K ψ."""
        psi = self.stream_function(w, self.M.createVecLeft())
        Kpsi = self.M.createVecLeft()
        self.K.mult(psi, Kpsi)
        return 0.5 * float(psi.dot(Kpsi))


def _scipy(a: ufl.Form) -> scipy.sparse.csr_matrix:
    """The assembled matrix of a bilinear form, as scipy CSR."""
    return fem.assemble_matrix(fem.form(a)).to_scipy().tocsr()


def _block_diagonal_inverse(M: scipy.sparse.csr_matrix, cell_dofs: np.ndarray) -> scipy.sparse.csr_matrix:
    """Inverse of a DG mass matrix, one dense k×k block per cell (``cell_dofs``: (cells, k))."""
    n_cells, k = cell_dofs.shape
    rows = np.repeat(cell_dofs, k, axis=1).ravel()            # (c, a, b) ↦ dof a of cell c
    cols = np.tile(cell_dofs, (1, k)).ravel()                 # (c, a, b) ↦ dof b of cell c
    blocks = np.asarray(M[rows, cols]).reshape(n_cells, k, k)
    return scipy.sparse.csr_matrix((np.linalg.inv(blocks).ravel(), (rows, cols)), shape=M.shape)


def _lu(A: PETSc.Mat, solver: str) -> PETSc.KSP:
    """A direct solver of A: PETSc's sequential LU (nested dissection) or MUMPS, factorised now."""
    ksp = PETSc.KSP().create(MPI.COMM_SELF)
    ksp.setOperators(A)
    ksp.setType("preonly")
    pc = ksp.getPC()
    pc.setType("lu")
    pc.setFactorSolverType(solver)
    if solver == "petsc":
        pc.setFactorOrdering("nd")
    ksp.setUp()
    return ksp


# ---------------------------------------------------------------- the forward problem

class NavierStokesProblem:
    """The Navier–Stokes forward model on one rank (``MPI.COMM_SELF``)."""

    name = PROBLEM_NAME

    def __init__(self, recipe: NavierStokesRecipe) -> None:
        self.recipe = r = recipe
        self.solver = TorusVorticitySolver(r.resolution, r.degree, r.nu, r.dt,
                                           forcing_function if r.forcing else None, r.lu_solver,
                                           r.time_scheme)
        self.record_steps = [round(t / r.dt) for t in r.snapshot_times]
        self.grid_x, self.grid_y = self.solver.space.grid_coordinates()
        self.sensor_index = sensor_indices(r) if r.observation == "sensors" else None

    def solve(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        r = self.recipe
        w0 = sample_vorticity(rng, r.resolution, r.prior_scale, r.prior_tau, r.prior_alpha)
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported just below
            wT_vec, snapshots = self.solver.run(self.solver.from_grid(w0), r.n_steps, self.record_steps)
        wT = self.solver.to_grid(wT_vec)
        if not np.all(np.isfinite(wT)):
            raise PdegrowError(f"navier_stokes: the vorticity blew up (non-finite values): "
                               f"dt={r.dt} is too large for resolution {r.resolution} and this prior")
        sample = {"targets/vorticity_0": w0}
        clean = wT.ravel()[self.sensor_index] if r.observation == "sensors" else wT
        sigma = r.noise_level * float(np.sqrt(np.mean(wT**2)))
        noisy = clean + sigma * rng.standard_normal(clean.shape) if r.noise_level > 0 else clean
        if r.observation == "sensors":
            sample["inputs/observations"] = noisy
            sample["inputs/observations_clean"] = clean
            sample["targets/vorticity_T"] = wT
        else:
            sample["inputs/vorticity_T"] = noisy
            if r.noise_level > 0:
                sample["targets/vorticity_T"] = wT
        if snapshots:
            sample["targets/vorticity_snapshots"] = np.stack(snapshots)
        return sample

    def sample_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        r = self.recipe
        grid, f64 = (r.resolution, r.resolution), np.dtype(np.float64)
        specs = {"targets/vorticity_0": (grid, f64)}
        if r.observation == "sensors":
            specs["inputs/observations"] = ((r.n_sensors,), f64)
            specs["inputs/observations_clean"] = ((r.n_sensors,), f64)
            specs["targets/vorticity_T"] = (grid, f64)
        else:
            specs["inputs/vorticity_T"] = (grid, f64)
            if r.noise_level > 0:
                specs["targets/vorticity_T"] = (grid, f64)
        if self.record_steps:
            specs["targets/vorticity_snapshots"] = ((len(self.record_steps), *grid), f64)
        return specs

    def static_arrays(self) -> dict[str, np.ndarray]:
        r = self.recipe
        x = np.stack([self.grid_x, self.grid_y])
        arrays = {
            "geometry/grid_x": self.grid_x,
            "geometry/grid_y": self.grid_y,
            "operators/forcing": forcing_function(x) if r.forcing else np.zeros_like(self.grid_x),
            "operators/prior_eigenvalues": prior_eigenvalues(
                r.resolution, r.prior_scale, r.prior_tau, r.prior_alpha),
        }
        if r.snapshot_times:
            arrays["geometry/snapshot_times"] = np.asarray(r.snapshot_times, dtype=np.float64)
        if self.sensor_index is not None:
            arrays["geometry/sensors"] = np.stack(
                [self.grid_x.ravel()[self.sensor_index], self.grid_y.ravel()[self.sensor_index]], axis=1)
            arrays["operators/sensor_index"] = self.sensor_index
        return arrays

    def file_attrs(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "nu": r.nu, "final_time": r.final_time, "dt": r.dt, "n_steps": r.n_steps,
            "resolution": r.resolution, "degree": r.degree, "forcing": r.forcing,
            "snapshot_times": np.asarray(r.snapshot_times, dtype=np.float64),
            "observation": r.observation, "noise_level": r.noise_level,
            "noise_model": "additive, sigma = noise_level * RMS of w(T) over the grid",
            "grid_layout": "field[j, i] = w(x = i/resolution, y = j/resolution)",
            "prior": f"N(0, {r.prior_scale:g} (-Laplacian + {r.prior_tau:g}^2 I)^(-{r.prior_alpha:g})), "
                     "zero mean",
            "time_scheme": {"cn_heun": "Crank-Nicolson diffusion + Heun advection",
                            "cn_ab2": "Crank-Nicolson diffusion + Adams-Bashforth-2 advection"}[
                                r.time_scheme],
        }

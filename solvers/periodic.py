"""Periodic Lagrange spaces on the unit torus without dolfinx_mpc.

The mesh is the ordinary unit square (``resolution`` × ``resolution`` cells,
triangles); a *periodic dof* is a class of mesh dofs whose coordinates differ
by an integer vector: a dof on the left side is one with its image on the
right side, the four corners are one dof. The periodic prolongation

    P ∈ {0, 1}^{n_mesh × n_per},   P_ij = 1  ⇔  mesh dof i is an image of periodic dof j,

maps periodic coefficient vectors to mesh coefficient vectors (u_mesh = P u),
and a bilinear form a(u, v) restricted to the periodic subspace is the Galerkin
matrix Pᵀ A P (``restrict``, PETSc ``MatPtAP``); a linear form is Pᵀ b.

Periodic dofs are numbered so that the mesh *vertices* come first, in grid
order: vertex (x, y) = (i/res, j/res) is periodic dof ``j·res + i``, so a P1
coefficient vector reshapes to the (res, res) image ``field[j, i] = w(i/res, j/res)``.
Higher-degree dofs (edge and cell points) follow.
"""

from __future__ import annotations

from mpi4py import MPI  # before dolfinx / petsc4py (isort section "mpi")

import numpy as np
from dolfinx import fem
from petsc4py import PETSc

from pdegrow.errors import PdegrowError


class PeriodicSpace:
    """The periodic identification of the dofs of a Lagrange space on the unit square.

    ``V`` must live on a ``resolution`` × ``resolution`` mesh of the unit square on
    ``MPI.COMM_SELF`` whose boundary vertices match by translation (as
    ``dolfinx.mesh.create_unit_square`` builds it).
    """

    def __init__(self, V: fem.FunctionSpace, resolution: int) -> None:
        if V.mesh.comm.size != 1:
            raise PdegrowError("PeriodicSpace needs a mesh on one rank (MPI.COMM_SELF)")
        self.V = V
        self.resolution = n = int(resolution)
        x = V.tabulate_dof_coordinates()[:, :2]
        self.n_mesh = x.shape[0]

        # wrap into [0, 1)² and key every dof by its rounded torus coordinate
        scaled = x * n
        wrapped = np.mod(np.round(scaled * 1e6).astype(np.int64), n * 10**6)
        is_vertex = np.all(np.abs(scaled - np.round(scaled)) < 1e-8, axis=1)
        vertex_id = np.where(is_vertex, wrapped[:, 1] // 10**6 * n + wrapped[:, 0] // 10**6, -1)
        if np.unique(vertex_id[is_vertex]).size != n * n:
            raise PdegrowError(f"the mesh does not hold the {n}×{n} periodic vertex grid")
        other = ~is_vertex
        keys, other_id = np.unique(wrapped[other, 0] * (n * 10**6) + wrapped[other, 1],
                                   return_inverse=True)
        self.mesh_to_periodic = np.empty(self.n_mesh, dtype=np.int64)
        self.mesh_to_periodic[is_vertex] = vertex_id[is_vertex]
        self.mesh_to_periodic[other] = n * n + other_id
        self.n_periodic = n * n + keys.size
        self.n_grid = n * n

        # P as a PETSc matrix: one unit entry per mesh dof (row)
        self.P = PETSc.Mat().createAIJ((self.n_mesh, self.n_periodic), nnz=1, comm=MPI.COMM_SELF)
        self.P.setValuesCSR(np.arange(self.n_mesh + 1, dtype=PETSc.IntType),
                            self.mesh_to_periodic.astype(PETSc.IntType), np.ones(self.n_mesh))
        self.P.assemble()

    def restrict(self, A: PETSc.Mat) -> PETSc.Mat:
        """Pᵀ A P: the Galerkin matrix of a bilinear form on the periodic subspace."""
        return A.ptap(self.P)

    def prolong(self, u: np.ndarray) -> np.ndarray:
        """P u: mesh coefficients of a periodic coefficient vector (numpy)."""
        return np.asarray(u)[self.mesh_to_periodic]

    def restrict_vector(self, b: np.ndarray) -> np.ndarray:
        """Pᵀ b: a linear form assembled on the mesh, restricted to the periodic subspace."""
        return np.bincount(self.mesh_to_periodic, weights=b, minlength=self.n_periodic)

    def periodic_values(self, u_mesh: np.ndarray) -> np.ndarray:
        """The periodic coefficients of a mesh vector that is already periodic (P⁺ u)."""
        out = np.empty(self.n_periodic)
        out[self.mesh_to_periodic] = u_mesh
        return out

    def to_grid(self, u: np.ndarray) -> np.ndarray:
        """The (res, res) image of the vertex values, ``field[j, i] = u(i/res, j/res)``."""
        return np.asarray(u)[: self.n_grid].reshape(self.resolution, self.resolution)

    def grid_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """(grid_x, grid_y), each (res, res), the coordinates of the entries of ``to_grid``."""
        ticks = np.arange(self.resolution) / self.resolution
        return np.meshgrid(ticks, ticks, indexing="xy")

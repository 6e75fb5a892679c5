"""Self-describing data-set arrays: named dimensions, units and long names (schema version 2).

A netCDF-4 file is an HDF5 file whose arrays name their axes through HDF5 *dimension scales*:
a 1-D dataset marked as a scale (its values are the coordinate) and attached to every axis it
labels. pdegrow writes one scale per dimension at the root of the file — ``sample``, ``node``,
``sensor``, ``cell``, ``mode``, ``y``, ``x``, ``time``, … — and attaches it to every array of
every group that has that axis, so

    xarray.open_dataset(path, group="inputs", engine="h5netcdf")
    xarray.open_dataset(path, group="targets", engine="h5netcdf")

give data sets whose variables share the named dimension ``sample`` (and ``y``/``x`` carry the
grid coordinates). Every array, scales included, gets a ``long_name`` and ``units`` attribute;
the problems are posed in nondimensional variables, so most units are ``"1"``.

Arrays this module does not know (a new problem's) get their own dimension names
(``<group>_<name>_axis<k>``, the first axis of ``inputs/``/``targets/`` arrays ``sample``), so
describing a file never fails. Only numpy and h5py are needed: ``solvers/`` may import it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import h5py
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArrayMeta:
    """The named axes of an array (the ``sample`` axis of ``inputs/``/``targets/`` left out), what
    it is and its units."""

    dims: tuple[str, ...]
    long_name: str
    units: str = "1"


HEAT: dict[str, ArrayMeta] = {
    "inputs/observations": ArrayMeta(("sensor",), "noisy temperature at the sensors"),
    "inputs/observations_clean": ArrayMeta(("sensor",), "temperature at the sensors (noise-free)"),
    "targets/log_conductivity": ArrayMeta(("node",), "log-conductivity m at the nodes"),
    "targets/kl_coefficients": ArrayMeta(("mode",), "Karhunen-Loeve coefficients xi of m"),
    "targets/temperature": ArrayMeta(("node",), "temperature T at the nodes"),
    "geometry/nodes": ArrayMeta(("node", "coordinate"), "node coordinates (x, y)"),
    "geometry/cells": ArrayMeta(("cell", "vertex"), "triangles: node index of each vertex"),
    "geometry/sensors": ArrayMeta(("sensor", "coordinate"), "sensor coordinates (x, y)"),
    "geometry/grid_index": ArrayMeta(("y", "x"), "node at each grid point: field[..., grid_index] is "
                                     "an image with axis 0 = y, axis 1 = x"),
    "operators/cell_stiffness": ArrayMeta(("cell", "vertex", "vertex_j"),
                                          "unit-coefficient P1 element stiffness matrices"),
    "operators/load_vector": ArrayMeta(("node",), "load vector F_i = integral of f phi_i"),
    "operators/dirichlet_nodes": ArrayMeta(("dirichlet_node",), "nodes where T = 0"),
    "operators/observation_matrix": ArrayMeta(("sensor", "node"),
                                              "observation matrix B: T at the sensors = B T"),
    "operators/lumped_mass": ArrayMeta(("node",), "lumped P1 mass (row sums of the mass matrix)"),
    "operators/mass_matrix_data": ArrayMeta(("mass_nonzero",), "P1 mass matrix, CSR values"),
    "operators/mass_matrix_indices": ArrayMeta(("mass_nonzero",), "P1 mass matrix, CSR column indices"),
    "operators/mass_matrix_indptr": ArrayMeta(("node_pointer",), "P1 mass matrix, CSR row pointers"),
    "operators/prior_mean": ArrayMeta(("node",), "prior mean of m"),
    "operators/kl_basis": ArrayMeta(("node", "mode"), "Karhunen-Loeve modes (mass-orthonormal)"),
    "operators/kl_eigenvalues": ArrayMeta(("mode",), "Karhunen-Loeve eigenvalues, descending"),
    "operators/spde_coefficients": ArrayMeta(("spde_coefficient",),
                                             "(delta, gamma) of A = delta M + gamma K"),
    "operators/spde_scale": ArrayMeta(("node",), "nodal scale s of the SPDE prior"),
}

NAVIER_STOKES: dict[str, ArrayMeta] = {
    "targets/vorticity_0": ArrayMeta(("y", "x"), "initial vorticity w0"),
    "inputs/vorticity_T": ArrayMeta(("y", "x"), "vorticity w(T) (observed)"),
    "inputs/observations": ArrayMeta(("sensor",), "noisy vorticity w(T) at the sensors"),
    "inputs/observations_clean": ArrayMeta(("sensor",), "vorticity w(T) at the sensors (noise-free)"),
    "targets/vorticity_T": ArrayMeta(("y", "x"), "vorticity w(T) (noise-free)"),
    "targets/vorticity_snapshots": ArrayMeta(("time", "y", "x"), "vorticity w at the snapshot times"),
    "geometry/grid_x": ArrayMeta(("y", "x"), "x coordinate of every image entry"),
    "geometry/grid_y": ArrayMeta(("y", "x"), "y coordinate of every image entry"),
    "geometry/snapshot_times": ArrayMeta(("time",), "snapshot times"),
    "geometry/sensors": ArrayMeta(("sensor", "coordinate"), "sensor coordinates (x, y)"),
    "operators/sensor_index": ArrayMeta(("sensor",), "flat index of each sensor into an image"),
    "operators/forcing": ArrayMeta(("y", "x"), "forcing f on the grid"),
    "operators/prior_eigenvalues": ArrayMeta(("wavenumber_y", "wavenumber_x"),
                                             "prior covariance eigenvalues in fft2 order"),
}

WIND_SPEED = "m s-1"
WIND: dict[str, ArrayMeta] = {
    "inputs/observations": ArrayMeta(("observation",), "noisy wind at the masts (mast, height, component)",
                                     WIND_SPEED),
    "inputs/observations_clean": ArrayMeta(("observation",), "wind at the masts (noise-free)", WIND_SPEED),
    "inputs/mast_image": ArrayMeta(("mast_channel", "y", "x"), "mast observations at their grid columns "
                                   "(last channel: masts per column)", WIND_SPEED),
    "inputs/terrain": ArrayMeta(("y", "x"), "ground height at the grid columns", "m"),
    "inputs/observations_terrain": ArrayMeta(("observation_terrain",), "noisy wind at the masts, then the "
                                             "ground height at the grid columns", "m s-1 | m"),
    "inputs/mast_image_terrain": ArrayMeta(("mast_terrain_channel", "y", "x"), "mast image, then the ground "
                                           "height at the grid columns as the last channel", "m s-1 | m"),
    "targets/velocity": ArrayMeta(("component", "level", "y", "x"), "wind velocity (u, v, w) on the grid",
                                  WIND_SPEED),
    "targets/velocity_nodes": ArrayMeta(("node", "component"), "wind velocity at the mesh nodes", WIND_SPEED),
    "targets/first_guess": ArrayMeta(("component", "level", "y", "x"), "first guess u0 on the grid",
                                     WIND_SPEED),
    "targets/velocity_columns": ArrayMeta(("column_channel", "y", "x"),
                                          "wind velocity with (component, level) as channels", WIND_SPEED),
    "targets/grid_z": ArrayMeta(("level", "y", "x"), "height of the grid points", "m"),
    "geometry/nodes": ArrayMeta(("node", "space"), "node coordinates (x, y, z)", "m"),
    "geometry/cells": ArrayMeta(("cell", "vertex"), "tetrahedra: node index of each vertex"),
    "geometry/ground_nodes": ArrayMeta(("ground_node",), "nodes on the ground"),
    "geometry/masts": ArrayMeta(("mast", "coordinate"), "mast positions (x, y)", "m"),
    "geometry/mast_heights": ArrayMeta(("mast_height",), "sensor heights above ground", "m"),
    "geometry/mast_points": ArrayMeta(("mast_point", "space"), "sensor coordinates (x, y, z)", "m"),
    "geometry/hills": ArrayMeta(("hill", "hill_parameter"), "hills (x_m, y_m, amplitude, width)", "m"),
    "geometry/grid_x": ArrayMeta(("x",), "grid x", "m"),
    "geometry/grid_y": ArrayMeta(("y",), "grid y", "m"),
    "geometry/grid_sigma": ArrayMeta(("level",), "height fraction of the grid levels (0 ground, 1 top)"),
    "geometry/grid_z": ArrayMeta(("level", "y", "x"), "height of the grid points", "m"),
    "operators/grid_interpolation_data": ArrayMeta(("interpolation_nonzero",), "nodes to grid, CSR values"),
    "operators/grid_interpolation_indices": ArrayMeta(("interpolation_nonzero",),
                                                      "nodes to grid, CSR column indices"),
    "operators/grid_interpolation_indptr": ArrayMeta(("grid_point_pointer",),
                                                     "nodes to grid, CSR row pointers"),
    "operators/grid_divergence_data": ArrayMeta(("divergence_nonzero",), "grid divergence, CSR values",
                                                "m-1"),
    "operators/grid_divergence_indices": ArrayMeta(("divergence_nonzero",),
                                                   "grid divergence, CSR column indices"),
    "operators/grid_divergence_indptr": ArrayMeta(("grid_point_pointer",),
                                                  "grid divergence, CSR row pointers"),
    "operators/ground_normal": ArrayMeta(("component", "y", "x"), "outward unit normal of the ground"),
    "operators/lumped_mass": ArrayMeta(("node",), "lumped P1 mass (volume of each node)", "m3"),
    "operators/alpha": ArrayMeta(("component",), "(alpha_h, alpha_h, alpha_v) of A"),
}

METADATA: dict[str, dict[str, ArrayMeta]] = {"heat": HEAT, "navier_stokes": NAVIER_STOKES, "wind": WIND}

DIMENSIONS: dict[str, str] = {
    "sample": "sample index",
    "node": "mesh node index",
    "sensor": "sensor index",
    "cell": "cell (triangle) index",
    "vertex": "local vertex of a cell",
    "vertex_j": "local vertex of a cell (second index)",
    "coordinate": "coordinate axis (0: x, 1: y)",
    "mode": "Karhunen-Loeve mode index",
    "dirichlet_node": "index into the Dirichlet nodes",
    "mass_nonzero": "index of a stored mass-matrix entry",
    "node_pointer": "CSR row pointer index",
    "spde_coefficient": "SPDE coefficient index (0: delta, 1: gamma)",
    "x": "x",
    "y": "y",
    "time": "time",
    "wavenumber_x": "wavenumber in x (fft2 order)",
    "wavenumber_y": "wavenumber in y (fft2 order)",
    "level": "grid level (height fraction)",
    "component": "velocity component (0: u, 1: v, 2: w)",
    "space": "coordinate axis (0: x, 1: y, 2: z)",
}
"""Long names of the dimension scales (coordinates x, y, time, level; all others are 0, 1, 2, …)."""

SAMPLE_GROUPS = ("inputs", "targets")


def array_metadata(problem: str, name: str, ndim: int) -> tuple[tuple[str, ...], str, str]:
    """(dims, long_name, units) of array ``name`` (``group/leaf``) with ``ndim`` axes in a file of
    ``problem``; a generic description when the name (or its rank) is not known."""
    sample = ("sample",) if name.split("/")[0] in SAMPLE_GROUPS else ()
    meta = METADATA.get(problem, {}).get(name)
    if meta is not None and len(sample) + len(meta.dims) == ndim:
        return (*sample, *meta.dims), meta.long_name, meta.units
    leaf = name.rsplit("/", 1)[-1]
    generic = tuple(f"{name.replace('/', '_')}_axis{k}" for k in range(len(sample), ndim))
    return (*sample, *generic)[:ndim], leaf.replace("_", " "), "unknown"


def structured_grid_index(nodes: np.ndarray, decimals: int = 10) -> np.ndarray | None:
    """For nodes that fill a tensor grid xs × ys: the (len(ys), len(xs)) array of node indices with
    ``index[j, i]`` the node at (xs[i], ys[j]) (xs, ys ascending), so ``field[..., index]`` is an
    image with axis 0 = y and axis 1 = x; None for any other node set."""
    nodes = np.asarray(nodes, dtype=np.float64)
    if nodes.ndim != 2 or nodes.shape[1] < 2 or len(nodes) == 0:
        return None
    xr, yr = np.round(nodes[:, 0], decimals), np.round(nodes[:, 1], decimals)
    xs, i = np.unique(xr, return_inverse=True)
    ys, j = np.unique(yr, return_inverse=True)
    if len(xs) * len(ys) != len(nodes):
        return None
    index = np.full((len(ys), len(xs)), -1, dtype=np.int64)
    index[j, i] = np.arange(len(nodes))
    if (index < 0).any():
        return None
    return index


def dimension_values(f: h5py.File, dim: str, size: int) -> np.ndarray:
    """The coordinate values of dimension ``dim``: x, y from the geometry, time from the snapshot
    times, wavenumbers in fft2 order; 0, 1, …, size − 1 otherwise."""
    geometry = f.get("geometry")
    candidates: list[np.ndarray] = []
    if geometry is not None:
        if dim in ("x", "y") and "grid_x" in geometry and "grid_y" in geometry:
            grid = geometry["grid_x" if dim == "x" else "grid_y"][()]
            if grid.ndim == 1:                                  # the ticks themselves (wind)
                candidates.append(grid)
            elif grid.ndim == 2:                                # every image entry's coordinate (NS)
                candidates.append(grid[0, :] if dim == "x" else grid[:, 0])
        if dim == "level" and "grid_sigma" in geometry:
            candidates.append(geometry["grid_sigma"][()])
        if dim in ("x", "y") and "grid_index" in geometry and "nodes" in geometry:
            nodes, index = geometry["nodes"][()], geometry["grid_index"][()]
            candidates.append(nodes[index[0, :], 0] if dim == "x" else nodes[index[:, 0], 1])
        if dim == "time" and "snapshot_times" in geometry:
            candidates.append(geometry["snapshot_times"][()])
    if dim.startswith("wavenumber_"):
        candidates.append(np.fft.fftfreq(size, 1.0 / size))
    for values in candidates:
        values = np.asarray(values).ravel()
        if values.shape == (size,):
            return values
    return np.arange(size, dtype=np.int64)


def describe_arrays(f: h5py.File, problem: str) -> None:
    """Create the dimension scales at the root of ``f`` and attach them to every array of
    ``inputs/ targets/ geometry/ operators/``; write ``long_name``/``units`` on every array.

    An axis whose size disagrees with a dimension of the same name already made (an array of
    unexpected shape) gets a dimension of its own instead, so this never fails on odd files.
    """
    arrays: list[tuple[str, h5py.Dataset]] = []
    for group in ("inputs", "targets", "geometry", "operators"):
        if group in f:
            arrays += [(f"{group}/{k}", v) for k, v in f[group].items() if isinstance(v, h5py.Dataset)]
    sizes: dict[str, int] = {}
    planned: list[tuple[h5py.Dataset, tuple[str, ...], str, str]] = []
    for name, ds in arrays:
        dims, long_name, units = array_metadata(problem, name, ds.ndim)
        if any(sizes.get(d, n) != n for d, n in zip(dims, ds.shape, strict=True)):
            log.warning("%s: shape %s does not match its named dimensions %s; described generically",
                        name, ds.shape, dims)
            dims = tuple(f"{name.replace('/', '_')}_axis{k}" for k in range(ds.ndim))
        for d, n in zip(dims, ds.shape, strict=True):
            sizes.setdefault(d, n)
        planned.append((ds, dims, long_name, units))
    scales = {}
    units_of = {dims[0]: units for _, dims, _, units in planned if len(dims) == 1}   # e.g. grid_x: m
    for dim, size in sizes.items():
        if dim in f:  # a root object of that name (a file written by other means): leave it alone
            continue
        scale = f.create_dataset(dim, data=dimension_values(f, dim, size))
        scale.make_scale(dim)
        scale.attrs["long_name"] = DIMENSIONS.get(dim, dim.replace("_", " "))
        scale.attrs["units"] = units_of.get(dim, "1") if dim in ("x", "y", "time", "level") else "1"
        scales[dim] = scale
    for ds, dims, long_name, units in planned:
        for k, dim in enumerate(dims):
            if dim in scales:
                ds.dims[k].attach_scale(scales[dim])
        ds.attrs.setdefault("long_name", long_name)
        ds.attrs.setdefault("units", units)

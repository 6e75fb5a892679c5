"""The per-problem schema of a data set (the tables of ``datasets/README.md``), checked on open.

Every array a problem's table lists has a documented shape in symbols — ``n`` the samples,
``S`` the sensors, ``N`` the nodes, ``R`` the grid size, … — and an element kind (float or
integer). :func:`schema_problems` of an open file lists, in one message, every required
array that is missing, every array whose shape breaks the table (a symbol takes one value
throughout the file; ``n`` is the ``n_samples`` attribute) or whose dtype is of the wrong
kind, and every missing attribute.

Which arrays are required depends on the recipe the file was generated from (its ``config``
attribute): a KL prior needs the KL basis, a sensor observation the sensor indices, and so
on. A file whose ``config`` holds no recipe (no ``n_samples``: written by other means than
``pdegrow generate``, e.g. with :func:`pdegrow.contract.create_dataset_file` from a script)
must hold only the problem's minimal arrays; the arrays it does hold are checked all the same.

``tests/test_contract_schema.py`` keeps :data:`TABLES` and the README's tables in agreement.
This module needs only numpy and h5py.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Recipe = dict[str, Any]


@dataclass(frozen=True)
class ArraySpec:
    """One row of a problem's table: name, shape in symbols (as the README writes it), element
    kind (``"f"`` float, ``"i"`` integer) and when the array is required (None: never)."""

    name: str
    shape: str
    kind: str
    required: Callable[[Recipe], bool] | None


def _always(r: Recipe) -> bool:
    return True


def _recipe(r: Recipe) -> bool:
    return "n_samples" in r


def _when(key: str, value: Any, default: Any = None) -> Callable[[Recipe], bool]:
    return lambda r: _recipe(r) and r.get(key, default) == value


def _snapshots(r: Recipe) -> bool:
    return _recipe(r) and bool(r.get("snapshot_times"))


CSR = "CSR arrays"
"""The shape entry of a sparse matrix's three 1-D arrays (``…_data``, ``…_indices``, ``…_indptr``);
any entry starting with ``CSR`` (e.g. ``"CSR (P × N)"``) means the same."""
_FIXED, _RANDOM = _when("terrain", "fixed", "fixed"), _when("terrain", "random")
_GRID = "CSR (P × N)"
_DIV = "CSR (P × 3P)"

TABLES: dict[str, list[ArraySpec]] = {
    "heat": [
        ArraySpec("inputs/observations", "(n, S)", "f", _always),
        ArraySpec("inputs/observations_clean", "(n, S)", "f", _recipe),
        ArraySpec("targets/log_conductivity", "(n, N)", "f", _recipe),
        ArraySpec("targets/kl_coefficients", "(n, K)", "f", _when("prior", "kl")),
        ArraySpec("targets/temperature", "(n, N)", "f", _recipe),
        ArraySpec("geometry/nodes", "(N, 2)", "f", _recipe),
        ArraySpec("geometry/cells", "(C, 3)", "i", _recipe),
        ArraySpec("geometry/sensors", "(S, 2)", "f", _recipe),
        ArraySpec("geometry/grid_index", "(ny+1, nx+1)", "i", None),  # schema version 2
        ArraySpec("operators/cell_stiffness", "(C, 3, 3)", "f", _recipe),
        ArraySpec("operators/load_vector", "(N,)", "f", _recipe),
        ArraySpec("operators/dirichlet_nodes", "(D,)", "i", _recipe),
        ArraySpec("operators/observation_matrix", "(S, N)", "f", _when("degree", 1, 1)),  # degree > 1: v2 on
        ArraySpec("operators/lumped_mass", "(N,)", "f", _recipe),
        ArraySpec("operators/mass_matrix_data", CSR, "f", None),     # older files lack them
        ArraySpec("operators/mass_matrix_indices", CSR, "i", None),
        ArraySpec("operators/mass_matrix_indptr", CSR, "i", None),
        ArraySpec("operators/prior_mean", "(N,)", "f", _recipe),
        ArraySpec("operators/kl_basis", "(N, K)", "f", _when("prior", "kl")),
        ArraySpec("operators/kl_eigenvalues", "(K,)", "f", _when("prior", "kl")),
        ArraySpec("operators/spde_coefficients", "(2,)", "f", None),  # older SPDE files lack them
        ArraySpec("operators/spde_scale", "(N,)", "f", None),
    ],
    "navier_stokes": [
        ArraySpec("targets/vorticity_0", "(n, R, R)", "f", _always),
        ArraySpec("inputs/vorticity_T", "(n, R, R)", "f", _when("observation", "full", "full")),
        ArraySpec("inputs/observations", "(n, S)", "f", _when("observation", "sensors")),
        ArraySpec("inputs/observations_clean", "(n, S)", "f", _when("observation", "sensors")),
        ArraySpec("targets/vorticity_T", "(n, R, R)", "f", None),
        ArraySpec("targets/vorticity_snapshots", "(n, K, R, R)", "f", _snapshots),
        ArraySpec("geometry/grid_x", "(R, R)", "f", _recipe),
        ArraySpec("geometry/grid_y", "(R, R)", "f", _recipe),
        ArraySpec("geometry/snapshot_times", "(K,)", "f", _snapshots),
        ArraySpec("geometry/sensors", "(S, 2)", "f", _when("observation", "sensors")),
        ArraySpec("operators/sensor_index", "(S,)", "i", _when("observation", "sensors")),
        ArraySpec("operators/forcing", "(R, R)", "f", _recipe),
        ArraySpec("operators/prior_eigenvalues", "(R, R)", "f", _recipe),
    ],
    "wind": [
        ArraySpec("inputs/observations", "(n, M·K·c)", "f", _always),
        ArraySpec("inputs/observations_clean", "(n, M·K·c)", "f", _recipe),
        ArraySpec("targets/velocity", "(n, 3, n_z, n_y, n_x)", "f", _recipe),
        ArraySpec("targets/velocity_nodes", "(n, N, 3)", "f", _recipe),
        ArraySpec("targets/first_guess", "(n, 3, n_z, n_y, n_x)", "f", _recipe),
        ArraySpec("inputs/mast_image", "(n, K·c + 1, n_y, n_x)", "f", None),   # added later
        ArraySpec("targets/velocity_columns", "(n, 3·n_z, n_y, n_x)", "f", None),
        ArraySpec("inputs/terrain", "(n, n_y, n_x)", "f", _RANDOM),
        ArraySpec("targets/grid_z", "(n, n_z, n_y, n_x)", "f", _RANDOM),
        ArraySpec("inputs/observations_terrain", "(n, M·K·c + n_y·n_x)", "f", None),   # added later
        ArraySpec("inputs/mast_image_terrain", "(n, K·c + 2, n_y, n_x)", "f", None),
        ArraySpec("geometry/nodes", "(N, 3)", "f", _recipe),
        ArraySpec("geometry/cells", "(C, 4)", "i", _recipe),
        ArraySpec("geometry/ground_nodes", "(G,)", "i", _recipe),
        ArraySpec("geometry/masts", "(M, 2)", "f", _recipe),
        ArraySpec("geometry/mast_heights", "(K,)", "f", _recipe),
        ArraySpec("geometry/mast_points", "(M·K, 3)", "f", _FIXED),
        ArraySpec("geometry/hills", "(n_hills, 4)", "f", _FIXED),
        ArraySpec("geometry/grid_x", "(n_x,)", "f", _recipe),
        ArraySpec("geometry/grid_y", "(n_y,)", "f", _recipe),
        ArraySpec("geometry/grid_sigma", "(n_z,)", "f", _recipe),
        ArraySpec("geometry/grid_z", "(n_z, n_y, n_x)", "f", _FIXED),
        ArraySpec("operators/grid_interpolation_data", _GRID, "f", _recipe),
        ArraySpec("operators/grid_interpolation_indices", _GRID, "i", _recipe),
        ArraySpec("operators/grid_interpolation_indptr", _GRID, "i", _recipe),
        ArraySpec("operators/grid_divergence_data", _DIV, "f", _FIXED),
        ArraySpec("operators/grid_divergence_indices", _DIV, "i", _FIXED),
        ArraySpec("operators/grid_divergence_indptr", _DIV, "i", _FIXED),
        ArraySpec("operators/ground_normal", "(3, n_y, n_x)", "f", _FIXED),
        ArraySpec("operators/lumped_mass", "(N,)", "f", _FIXED),
        ArraySpec("operators/alpha", "(3,)", "f", _recipe),
    ],
}
"""Every problem's arrays, in the order of its README table."""

ROOT_ATTRIBUTES = ("schema", "schema_version", "problem", "config", "n_samples", "base_seed", "versions",
                   "created", "complete")
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "heat": ("noise_level", "noise_model"),
    "navier_stokes": ("nu", "final_time", "dt", "resolution", "degree", "forcing", "snapshot_times",
                      "observation", "noise_level", "noise_model", "grid_layout", "prior", "time_scheme"),
    "wind": ("noise_level", "noise_model", "terrain", "components"),
}
"""The attributes a problem's generator writes (required of files generated from a recipe)."""


def parse_shape(shape: str) -> tuple[str, ...] | None:
    """``"(n, S)"`` → ``("n", "S")``; ``"(N,)"`` → ``("N",)``; a CSR entry → None (1-D, any length).
    An entry is a symbol, a whole number or an expression of them (``M·K·c``, ``ny+1``)."""
    if shape.startswith("CSR"):
        return None
    inner = shape.strip().removeprefix("(").removesuffix(")")
    return tuple(p.strip() for p in inner.split(",") if p.strip())


def _evaluate(expr: str, values: dict[str, int]) -> int | None:
    """The value of a shape entry (``·`` and ``×`` multiply), or None while a symbol is unknown."""
    node = ast.parse(expr.replace("·", "*").replace("×", "*"), mode="eval").body

    def ev(n: ast.AST) -> int | None:
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.Name):
            return values.get(n.id)
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub, ast.Mult)):
            a, b = ev(n.left), ev(n.right)
            if a is None or b is None:
                return None
            return a + b if isinstance(n.op, ast.Add) else a - b if isinstance(n.op, ast.Sub) else a * b
        raise ValueError(f"unsupported shape entry {expr!r}")

    return ev(node)


def _kind_ok(dtype: np.dtype, kind: str) -> bool:
    if kind == "i":
        return np.issubdtype(dtype, np.integer)
    return np.issubdtype(dtype, np.floating)


def _recipe_of(f: Any) -> Recipe:
    try:
        recipe = json.loads(f.attrs.get("config", "{}"))
    except (TypeError, ValueError):
        return {}
    return recipe if isinstance(recipe, dict) else {}


def schema_problems(f: Any) -> list[str]:
    """What in the open h5py file ``f`` breaks its problem's table (empty when nothing does, and
    for problems without a table); see the module docstring."""
    missing_attrs = [a for a in ROOT_ATTRIBUTES if a not in f.attrs]
    if missing_attrs:
        return [f"attribute(s) {', '.join(missing_attrs)} missing"]
    problem = str(f.attrs["problem"])
    table = TABLES.get(problem)
    if table is None:
        return []
    recipe = _recipe_of(f)
    problems: list[str] = []
    if _recipe(recipe):
        missing_attrs = [a for a in ATTRIBUTES.get(problem, ()) if a not in f.attrs]
        if missing_attrs:
            problems.append(f"attribute(s) {', '.join(missing_attrs)} missing")
    missing = [s.name for s in table if s.required is not None and s.required(recipe) and s.name not in f]
    if missing:
        problems.append(f"array(s) {', '.join(missing)} missing")
    values: dict[str, int] = {"n": int(f.attrs["n_samples"])}
    values.update({k: v for k, v in recipe.items() if isinstance(v, int) and re.fullmatch(r"n[a-z]", k)})
    present: list[tuple[ArraySpec, tuple[int, ...], tuple[str, ...]]] = []
    for spec in table:
        if spec.name not in f:
            continue
        obj = f[spec.name]
        if not hasattr(obj, "shape"):
            problems.append(f"{spec.name} is a group, not an array")
            continue
        if not _kind_ok(obj.dtype, spec.kind):
            problems.append(f"{spec.name} holds {obj.dtype}, the schema says "
                            f"{'integers' if spec.kind == 'i' else 'floating-point numbers'}")
        symbols = parse_shape(spec.shape) or ("?",)
        shape = tuple(int(x) for x in obj.shape)
        present.append((spec, shape, symbols))
        for symbol, size in zip(symbols, shape, strict=False):  # single symbols name their size
            if len(shape) == len(symbols) and symbol.isidentifier():
                values.setdefault(symbol, size)
    for spec, shape, symbols in present:
        bad = len(shape) != len(symbols)
        for symbol, size in zip(symbols, shape, strict=False):
            expected = None if bad or symbol == "?" else _evaluate(symbol, values)
            bad = bad or (expected is not None and expected != size)
        if bad:
            known = ", ".join(f"{k} = {v}" for k, v in values.items()
                              if any(re.search(rf"\b{re.escape(k)}\b", s) for s in symbols))
            problems.append(f"{spec.name} has shape {shape}, the schema says {spec.shape}"
                            + (f" ({known})" if known else ""))
    return problems


__all__ = ["ATTRIBUTES", "ArraySpec", "CSR", "ROOT_ATTRIBUTES", "TABLES", "parse_shape", "schema_problems"]

"""The per-problem schema: the README's tables and the checker agree; a real file passes; every
kind of breach (missing array or attribute, wrong shape, wrong dtype) is named in one message."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from pdegrow.contract import create_dataset_file, mark_complete, open_dataset
from pdegrow.contract_schema import CSR, TABLES, _evaluate, parse_shape
from pdegrow.errors import DataContractError

README = Path(__file__).resolve().parents[1] / "datasets" / "README.md"


def readme_tables() -> dict[str, dict[str, str]]:
    """{problem: {array name: shape}} from the ``### `problem` `` sections of datasets/README.md."""
    tables: dict[str, dict[str, str]] = {}
    problem = None
    for line in README.read_text().splitlines():
        head = re.fullmatch(r"### `(\w+)`", line.strip())
        if head:
            problem = head.group(1)
            tables[problem] = {}
            continue
        if line.startswith("## "):
            problem = None
        if problem is None or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        first = names[0]
        shapes = re.findall(r"\([^)]*\)", cells[1])  # "(M, 2), (K,)": one shape a name
        for k, name in enumerate(names):
            if name.startswith("…"):    # "`operators/mass_matrix_data`, `…_indices`": the same prefix
                name = first.rsplit("_", 1)[0] + name[1:]
            elif "/" not in name:       # "`geometry/grid_x`, `grid_y`": the same group
                name = first.split("/")[0] + "/" + name
            per_name = len(names) > 1 and len(shapes) == len(names)
            tables[problem][name] = shapes[k] if per_name else cells[1]
    return tables


def test_readme_tables_and_checker_agree() -> None:
    readme = readme_tables()
    assert set(readme) == set(TABLES), "a problem documented in datasets/README.md has no checker table"
    for problem, table in TABLES.items():
        assert {s.name: s.shape for s in table} == readme[problem], problem
    assert parse_shape("(n, S)") == ("n", "S") and parse_shape("(N,)") == ("N",) and parse_shape(CSR) is None
    assert _evaluate("K·c + 1", {"K": 3, "c": 2}) == 7 and _evaluate("ny+1", {"ny": 8}) == 9
    assert _evaluate("M·K·c", {"M": 2}) is None  # a symbol not known yet


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _error(path: Path) -> str:
    with pytest.raises(DataContractError) as info:
        open_dataset(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_generated_file_passes_and_every_breach_is_named(tmp_path: Path, heat_paper_file: Path) -> None:
    open_dataset(heat_paper_file, "heat").close()
    bad = _copy(heat_paper_file, tmp_path / "bad.h5")
    with h5py.File(bad, "r+") as f:
        del f["targets/temperature"]                     # required: the recipe is in the file
        del f["operators/kl_basis"]                      # required: the recipe's prior is "kl"
        cells = f["geometry/cells"][...]
        del f["geometry/cells"]
        f["geometry/cells"] = cells.astype(np.float64)   # integers expected
        lumped = f["operators/lumped_mass"][...]
        del f["operators/lumped_mass"]
        f["operators/lumped_mass"] = lumped[:-1]         # (N,) with N = the node count
        del f.attrs["noise_model"]
    message = _error(bad)
    for part in ("targets/temperature", "operators/kl_basis", "geometry/cells holds float64",
                 "operators/lumped_mass has shape", "noise_model"):
        assert part in message, (part, message)
    assert "mass_matrix" not in message                  # optional: older files lack it


def test_sample_count_and_shared_symbols(tmp_path: Path, heat_paper_file: Path) -> None:
    bad = _copy(heat_paper_file, tmp_path / "bad.h5")
    with h5py.File(bad, "r+") as f:
        f.attrs["n_samples"] = int(f.attrs["n_samples"]) + 1
    assert "inputs/observations has shape" in _error(bad)
    bad = _copy(heat_paper_file, tmp_path / "bad2.h5")
    with h5py.File(bad, "r+") as f:  # S sensors in the observations, S + 1 in the geometry
        sensors = f["geometry/sensors"][...]
        del f["geometry/sensors"]
        f["geometry/sensors"] = np.vstack([sensors, sensors[:1]])
    assert "geometry/sensors has shape" in _error(bad)


def _hand_made(path: Path, problem: str, specs: dict, config: dict | None = None) -> Path:
    f = create_dataset_file(path, problem=problem, config=config or {}, n_samples=3, base_seed=0, static={},
                            sample_specs=specs)
    mark_complete(f)
    f.close()
    return path


def test_hand_made_files_need_only_the_minimal_arrays(tmp_path: Path) -> None:
    f64 = np.dtype(np.float64)
    ok = _hand_made(tmp_path / "ok.h5", "navier_stokes",
                    {"inputs/vorticity_T": ((4, 4), f64), "targets/vorticity_0": ((4, 4), f64)})
    open_dataset(ok).close()
    no_target = _hand_made(tmp_path / "no.h5", "navier_stokes", {"inputs/vorticity_T": ((4, 4), f64)})
    assert "targets/vorticity_0 missing" in _error(no_target)
    skew = _hand_made(tmp_path / "skew.h5", "navier_stokes",
                      {"inputs/vorticity_T": ((4, 5), f64), "targets/vorticity_0": ((4, 4), f64)})
    assert "inputs/vorticity_T has shape (3, 4, 5)" in _error(skew)
    # a recipe in the file: every array its generator writes is required
    recipe = _hand_made(tmp_path / "recipe.h5", "navier_stokes",
                        {"inputs/vorticity_T": ((4, 4), f64), "targets/vorticity_0": ((4, 4), f64)},
                        config={"n_samples": 3, "seed": 0, "observation": "full"})
    message = _error(recipe)
    assert "geometry/grid_x" in message and "operators/prior_eigenvalues" in message and "nu" in message
    # problems without a table (prototypes) are not checked beyond the root attributes
    open_dataset(_hand_made(tmp_path / "r.h5", "regression", {"inputs/x": ((2,), f64)})).close()

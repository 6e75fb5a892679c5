"""Data sets open in netCDF tools (xarray + h5netcdf) with named dimensions, units and long names, and
files of schema version 1 (no dimension scales) still load and train."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_cli, write_tiny_config

from pdegrow.contract import create_dataset_file, mark_complete, open_dataset
from pdegrow.contract_metadata import describe_arrays, structured_grid_index

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")

GROUPS = ("inputs", "targets", "geometry", "operators")


def open_group(path: Path, group: str):
    return xr.open_dataset(path, group=group, engine="h5netcdf")


def test_heat_groups_share_named_dimensions(heat_paper_file: Path) -> None:
    inputs, targets = open_group(heat_paper_file, "inputs"), open_group(heat_paper_file, "targets")
    geometry, operators = open_group(heat_paper_file, "geometry"), open_group(heat_paper_file, "operators")
    with h5py.File(heat_paper_file) as f:
        n, version = int(f.attrs["n_samples"]), int(f.attrs["schema_version"])
        nodes, cells = f["geometry/nodes"][...], f["geometry/cells"][...]
    assert version == 2
    assert inputs["observations"].dims == ("sample", "sensor")
    assert targets["log_conductivity"].dims == ("sample", "node")
    assert targets["kl_coefficients"].dims == ("sample", "mode")
    assert inputs.sizes["sample"] == targets.sizes["sample"] == n
    assert geometry["nodes"].dims == ("node", "coordinate") and geometry.sizes["node"] == len(nodes)
    assert geometry["cells"].dims == ("cell", "vertex") and geometry.sizes["cell"] == len(cells)
    assert operators["kl_basis"].dims == ("node", "mode")
    info = json.loads(run_cli("info", str(heat_paper_file), "--json").stdout)
    assert info["datasets"]["targets/log_conductivity"]["dims"] == ["sample", "node"]
    assert "sample" not in info["datasets"]                     # the scales are not listed as data
    assert operators["observation_matrix"].dims == ("sensor", "node")
    assert targets.sizes["node"] == operators.sizes["node"] == len(nodes)
    for ds in (inputs, targets, geometry, operators):
        for name, var in ds.data_vars.items():
            assert var.attrs.get("long_name") and var.attrs.get("units"), name
            assert not any(d.startswith("phony_dim") for d in var.dims), name
    # the whole tree: coordinates of the root are inherited by every group
    tree = xr.open_datatree(heat_paper_file, engine="h5netcdf")
    np.testing.assert_array_equal(tree["targets"]["sample"].values, np.arange(n))
    assert tree["targets"]["sample"].attrs["long_name"] == "sample index"


def test_heat_grid_index_orders_nodes_as_an_image(heat_paper_file: Path) -> None:
    tree = xr.open_datatree(heat_paper_file, engine="h5netcdf")
    index = tree["geometry"]["grid_index"]
    assert index.dims == ("y", "x")
    nodes = tree["geometry"]["nodes"].values
    x, y = index["x"].values, index["y"].values
    grid = nodes[index.values]                                      # (ny+1, nx+1, 2)
    X, Y = np.meshgrid(x, y)
    np.testing.assert_allclose(grid[..., 0], X, atol=1e-12)
    np.testing.assert_allclose(grid[..., 1], Y, atol=1e-12)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)
    assert sorted(index.values.ravel().tolist()) == list(range(len(nodes)))   # a permutation
    # a nodal field becomes an image: m(x, y) = x + 2y
    field = nodes[:, 0] + 2 * nodes[:, 1]
    np.testing.assert_allclose(field[index.values], X + 2 * Y, atol=1e-12)


def test_structured_grid_index_of_a_shuffled_grid_and_of_scattered_points() -> None:
    rng = np.random.default_rng(0)
    xs, ys = np.linspace(0, 1, 5), np.linspace(0, 2, 4)
    X, Y = np.meshgrid(xs, ys)
    order = rng.permutation(20)
    nodes = np.stack([X.ravel(), Y.ravel()], 1)[order]
    index = structured_grid_index(nodes)
    assert index.shape == (4, 5)
    np.testing.assert_array_equal(nodes[index][..., 0], X)
    np.testing.assert_array_equal(nodes[index][..., 1], Y)
    assert structured_grid_index(rng.random((20, 2))) is None          # not a tensor grid
    assert structured_grid_index(nodes[:-1]) is None                   # one node missing


def test_navier_stokes_trajectory_has_a_time_coordinate(tmp_path: Path) -> None:
    out = tmp_path / "ns.h5"
    run_cli("generate", "navier-stokes", "--resolution", "8", "--final-time", "0.02", "--set", "dt=0.01",
            "--set", "snapshot_times=[0.01, 0.02]", "--n-samples", "3", "--out", str(out), "--no-progress")
    tree = xr.open_datatree(out, engine="h5netcdf")
    snaps = tree["targets"]["vorticity_snapshots"]
    assert snaps.dims == ("sample", "time", "y", "x")
    np.testing.assert_allclose(snaps["time"].values, [0.01, 0.02])
    np.testing.assert_allclose(snaps["x"].values, np.arange(8) / 8)
    np.testing.assert_allclose(snaps["y"].values, np.arange(8) / 8)
    w0 = tree["targets"]["vorticity_0"]
    assert w0.dims == ("sample", "y", "x") and w0.attrs["long_name"] == "initial vorticity w0"
    wT = tree["inputs"]["vorticity_T"]
    assert wT.dims == ("sample", "y", "x")
    # field[j, i] = w(x = i/R, y = j/R): the grid arrays agree with the coordinates
    gx = tree["geometry"]["grid_x"]
    np.testing.assert_allclose(gx.values, np.broadcast_to(gx["x"].values, (8, 8)))
    assert tree["operators"]["prior_eigenvalues"].dims == ("wavenumber_y", "wavenumber_x")
    np.testing.assert_array_equal(tree["operators"]["wavenumber_x"].values, np.fft.fftfreq(8, 1 / 8))
    # the last snapshot at T is the clean final state
    np.testing.assert_allclose(snaps.values[:, -1], tree["targets"]["vorticity_T"].values
                               if "vorticity_T" in tree["targets"] else wT.values, atol=1e-12)


def test_unknown_arrays_get_their_own_dimensions(tmp_path: Path) -> None:
    """A new problem's arrays are described generically; an array whose shape contradicts a named
    dimension gets its own, so describing a file never fails."""
    path = tmp_path / "odd.h5"
    f = create_dataset_file(path, problem="heat", config={}, n_samples=3, base_seed=0,
                            static={"geometry/nodes": np.zeros((4, 2)), "operators/load_vector": np.zeros(5),
                                    "operators/wind_speed": np.zeros((2, 7))},
                            sample_specs={"inputs/observations": ((6,), np.dtype(np.float64))})
    mark_complete(f)
    f.close()
    with h5py.File(path) as g:            # (pdegrow's reader would refuse it: 5 ≠ 4 nodes)
        assert g["operators/wind_speed"].attrs["units"] == "unknown"
    ops = open_group(path, "operators")
    assert ops["wind_speed"].dims == ("operators_wind_speed_axis0", "operators_wind_speed_axis1")
    assert ops["load_vector"].dims == ("operators_load_vector_axis0",)   # 5 ≠ 4 nodes
    assert open_group(path, "geometry")["nodes"].dims == ("node", "coordinate")
    assert open_group(path, "inputs")["observations"].dims == ("sample", "sensor")


def write_version_1(src: Path, dst: Path) -> Path:
    """The same arrays and attributes as ``src``, written as schema version 1 did: no dimension
    scales, no units, no grid index."""
    with h5py.File(src) as a, h5py.File(dst, "w") as b:
        for key, value in a.attrs.items():
            b.attrs[key] = value
        b.attrs["schema_version"] = 1
        for group in GROUPS:
            for name, ds in a[group].items():
                if name != "grid_index":
                    b.create_dataset(f"{group}/{name}", data=ds[()])
    return dst


def test_version_1_files_still_load_and_train(heat_paper_file: Path, tmp_path: Path) -> None:
    old = write_version_1(heat_paper_file, tmp_path / "v1.h5")
    with open_dataset(old) as f:
        assert int(f.attrs["schema_version"]) == 1 and "sample" not in f
    cfg = write_tiny_config(tmp_path)
    run_cli("train", "--config", str(cfg), "--data", str(old), "--out", str(tmp_path / "run"),
            "--no-progress")
    assert (tmp_path / "run" / "model.pt").exists()
    info = run_cli("info", str(old)).stdout
    assert "pdegrow-dataset v1" in info


def test_a_future_schema_version_is_refused(heat_paper_file: Path, tmp_path: Path) -> None:
    new = write_version_1(heat_paper_file, tmp_path / "v9.h5")
    with h5py.File(new, "r+") as f:
        f.attrs["schema_version"] = 9
    proc = run_cli("info", str(new), check=False)
    assert proc.returncode == 2 and "schema version 9" in proc.stderr


def test_describe_arrays_is_idempotent_on_root_names(tmp_path: Path) -> None:
    """A root object already named like a dimension is left alone (files written by other tools)."""
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("sample", data=np.arange(2) * 10)
        f.create_dataset("inputs/observations", data=np.zeros((2, 3)))
        describe_arrays(f, "heat")
        np.testing.assert_array_equal(f["sample"][...], [0, 10])
        assert f["inputs/observations"].attrs["long_name"] == "noisy temperature at the sensors"


def test_wind_fields_have_physical_units_and_grid_coordinates(tmp_path: Path) -> None:
    out = tmp_path / "wind.h5"
    run_cli("generate", "wind", "--preset", "small", "--n-samples", "2", "--out", str(out), "--no-progress")
    tree = xr.open_datatree(out, engine="h5netcdf")
    velocity = tree["targets"]["velocity"]
    assert velocity.dims == ("sample", "component", "level", "y", "x")
    assert velocity.attrs["units"] == "m s-1"
    np.testing.assert_array_equal(velocity["x"].values, tree["geometry"]["grid_x"].values)
    np.testing.assert_array_equal(velocity["level"].values, tree["geometry"]["grid_sigma"].values)
    assert velocity["x"].attrs["units"] == "m"
    for group in GROUPS:
        for name, var in tree[group].to_dataset().data_vars.items():
            assert var.attrs["units"] != "unknown", f"{group}/{name} is not described"

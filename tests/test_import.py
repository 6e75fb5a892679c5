"""``pdegrow import``: FNO .mat (v5 and v7.3) and .pt, PDEBench HDF5 → navier_stokes data sets.

The source files are built here in each format; values depend on (sample, x, y, t) in a known way,
so the axis order of the result is checked exactly."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from conftest import conv_fields_config, run_cli

from pdegrow.contract import open_dataset
from pdegrow.importing.sources import curl

N, R, T = 5, 8, 4
X = np.arange(R) / R


def field(n: int, t: float) -> np.ndarray:
    """An FNO-layout [x, y] field: value(x_i, y_j) = n + t + x_i + 10 y_j (asymmetric in x and y)."""
    return n + t + X[:, None] + 10 * X[None, :]


def fno_arrays() -> dict[str, np.ndarray]:
    times = np.arange(1, T + 1, dtype=np.float64)
    a = np.stack([field(n, 0.0) for n in range(N)])                                 # [N, x, y]
    u = np.stack([np.stack([field(n, t) for t in times], -1) for n in range(N)])    # [N, x, y, T]
    return {"a": a, "u": u, "t": times[None, :]}


def expected_image(n: int, t: float) -> np.ndarray:
    """pdegrow layout: image[j, i] = w(x_i, y_j)."""
    return field(n, t).T


def check_imported(out: Path, final_time: float = T) -> None:
    with open_dataset(out, "navier_stokes") as f:
        assert int(f.attrs["n_samples"]) == N
        for n in range(N):
            np.testing.assert_array_equal(f["targets/vorticity_0"][n], expected_image(n, 0.0))
            np.testing.assert_array_equal(f["inputs/vorticity_T"][n], expected_image(n, final_time))
        np.testing.assert_array_equal(f["geometry/grid_x"][0], X)
        np.testing.assert_array_equal(f["geometry/grid_y"][:, 0], X)
        assert float(f.attrs["final_time"]) == final_time


def test_fno_mat_v5(tmp_path: Path) -> None:
    src = tmp_path / "ns_V1e-3_N5_T4.mat"
    scipy.io.savemat(src, fno_arrays())
    out = tmp_path / "ns.h5"
    proc = run_cli("import", str(src), "--out", str(out), "--final-time", "3", "--nu", "1e-3")
    assert "5 samples of 8×8" in proc.stdout
    check_imported(out, final_time=3.0)
    with h5py.File(out) as f:
        assert float(f.attrs["nu"]) == 1e-3 and f.attrs["source"] == src.name


def test_fno_mat_v73_is_hdf5_with_reversed_axes(tmp_path: Path) -> None:
    """MATLAB v7.3 files are HDF5 with a 512-byte header; arrays appear with their axes reversed."""
    src = tmp_path / "ns73.mat"
    arrays = fno_arrays()
    with h5py.File(src, "w", userblock_size=512) as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=np.ascontiguousarray(value.T))
    with open(src, "r+b") as raw:
        raw.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Tue Dec  1 00:00:00 2026 "
                  b"HDF5 schema 1.00 .")
        raw.seek(124)
        raw.write(b"\x00\x02IM")
    with pytest.raises(NotImplementedError):
        scipy.io.loadmat(src)                      # what sends the reader to h5py
    out = tmp_path / "ns.h5"
    run_cli("import", str(src), "--out", str(out))
    check_imported(out)


def test_fno_pt_dict_and_snapshots_with_time_coordinate(tmp_path: Path) -> None:
    import torch
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")

    src = tmp_path / "ns.pt"
    arrays = fno_arrays()
    torch.save({k: torch.as_tensor(v) for k, v in arrays.items()}, src)
    out = tmp_path / "ns.h5"
    run_cli("import", str(src), "--out", str(out), "--snapshots", "all")
    check_imported(out)
    tree = xr.open_datatree(out, engine="h5netcdf")
    snaps = tree["targets"]["vorticity_snapshots"]
    assert snaps.dims == ("sample", "time", "y", "x")
    np.testing.assert_array_equal(snaps["time"].values, [1, 2, 3, 4])
    # label-based access agrees with the source's [n, x, y, t] layout
    value = snaps.sel(sample=2, time=3.0, x=X[5], y=X[1]).item()
    assert value == arrays["u"][2, 5, 1, 2]


def test_pt_with_other_objects_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    src = tmp_path / "evil.pt"
    src.write_bytes(pickle.dumps({"u": Payload()}))
    proc = run_cli("import", str(src), "--out", str(tmp_path / "x.h5"), check=False)
    assert proc.returncode == 2 and "loaded safely" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "x.h5").exists()


def pdebench_file(path: Path, **fields: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in fields.items():
            f.create_dataset(name, data=value)
        f.create_dataset("x-coordinate", data=(np.arange(R) + 0.5) / R)
        f.create_dataset("y-coordinate", data=(np.arange(R) + 0.5) / R)
        f.create_dataset("t-coordinate", data=np.linspace(0, 1, T + 1))   # one more time than states
    return path


def test_pdebench_vorticity_field(tmp_path: Path) -> None:
    times = np.linspace(0, 1, T + 1)[:T]
    w = np.stack([np.stack([field(n, t) for t in times]) for n in range(N)])       # [b, t, x, y]
    src = pdebench_file(tmp_path / "pde.h5", vorticity=w)
    out = tmp_path / "ns.h5"
    run_cli("import", str(src), "--out", str(out), "--snapshots", f"{times[1]},{times[3]}",
            "--noise-level", "0.1", "--seed", "4")
    with open_dataset(out) as f:
        np.testing.assert_array_equal(f["targets/vorticity_0"][3], expected_image(3, 0.0))
        clean = f["targets/vorticity_T"][...]
        np.testing.assert_array_equal(clean[3], expected_image(3, times[-1]))
        noise = f["inputs/vorticity_T"][...] - clean
        rms = np.sqrt((clean**2).mean(axis=(1, 2)))
        ratio = noise.std(axis=(1, 2)) / (0.1 * rms)
        assert np.all((ratio > 0.6) & (ratio < 1.4))              # 64 draws per sample
        np.testing.assert_allclose(f["geometry/snapshot_times"][...], [times[1], times[3]])
        np.testing.assert_array_equal(f["targets/vorticity_snapshots"][2, 0], expected_image(2, times[1]))
        np.testing.assert_allclose(f["geometry/grid_x"][0], (np.arange(R) + 0.5) / R)


def test_spectral_curl_of_a_trigonometric_velocity() -> None:
    x = np.arange(16) / 16
    Xg, Yg = np.meshgrid(x, x, indexing="ij")                       # [x, y]
    vx, vy = np.sin(2 * np.pi * Yg), np.cos(4 * np.pi * Xg) + np.sin(2 * np.pi * Xg)
    expected = -4 * np.pi * np.sin(4 * np.pi * Xg) + 2 * np.pi * np.cos(2 * np.pi * Xg) \
        - 2 * np.pi * np.cos(2 * np.pi * Yg)
    np.testing.assert_allclose(curl(vx, vy, 1.0, 1.0), expected, atol=1e-10)
    np.testing.assert_allclose(curl(vx, vy, 2.0, 2.0), expected / 2, atol=1e-10)   # twice the domain


def test_pdebench_velocity_gives_the_vorticity(tmp_path: Path) -> None:
    x = (np.arange(R) + 0.5) / R
    Xg, Yg = np.meshgrid(x, x, indexing="ij")
    vx = np.broadcast_to(np.sin(2 * np.pi * Yg), (2, T, R, R)).copy()
    vy = np.broadcast_to(np.sin(2 * np.pi * Xg), (2, T, R, R)).copy()
    src = pdebench_file(tmp_path / "cfd.hdf5", Vx=vx, Vy=vy, density=np.ones((2, T, R, R)))
    out = tmp_path / "ns.h5"
    run_cli("import", str(src), "--out", str(out))
    omega = 2 * np.pi * np.cos(2 * np.pi * Xg) - 2 * np.pi * np.cos(2 * np.pi * Yg)   # [x, y]
    with open_dataset(out) as f:
        np.testing.assert_allclose(f["targets/vorticity_0"][1], omega.T, atol=1e-10)


@pytest.mark.parametrize("args, message", [
    (["--final-time", "2.5"], "--final-time 2.5 is not a time of the file (its times: 1, 2, 3, 4)"),
    (["--snapshots", "1,x"], "expected 'all', 'none' or times"),
    (["--trajectory-key", "w"], "no array 'w'"),
    (["--noise-level", "-1"], "--noise-level must be finite and >= 0"),
])
def test_bad_import_input_gets_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    src = tmp_path / "ns.mat"
    scipy.io.savemat(src, fno_arrays())
    out = tmp_path / "ns.h5"
    proc = run_cli("import", str(src), "--out", str(out), *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "ns.h5.tmp").exists()


def test_existing_output_needs_overwrite_and_non_square_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "ns.mat"
    scipy.io.savemat(src, fno_arrays())
    out = tmp_path / "ns.h5"
    run_cli("import", str(src), "--out", str(out))
    proc = run_cli("import", str(src), "--out", str(out), check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    run_cli("import", str(src), "--out", str(out), "--overwrite", "--max-samples", "2")
    with open_dataset(out) as f:
        assert int(f.attrs["n_samples"]) == 2
    scipy.io.savemat(tmp_path / "rect.mat", {"u": np.zeros((2, 4, 6, 3))})
    proc = run_cli("import", str(tmp_path / "rect.mat"), "--out", str(tmp_path / "r.h5"), check=False)
    assert proc.returncode == 2 and "only square grids" in proc.stderr


def test_imported_data_trains(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((24, R, R))
    u = np.stack([a, 0.5 * (a + np.roll(a, 1, axis=1))], -1)
    scipy.io.savemat(tmp_path / "ns.mat", {"a": a, "u": u})
    data = tmp_path / "ns.h5"
    run_cli("import", str(tmp_path / "ns.mat"), "--out", str(data))
    cfg = tmp_path / "conv.toml"
    cfg.write_text(conv_fields_config())
    run_cli("train", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "run"),
            "--no-progress")
    assert (tmp_path / "run" / "model.pt").exists()

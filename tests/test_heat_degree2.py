"""Heat data of degree 2 carries the P1 observation matrix of its nodal fields and can be trained on,
and so can files that lack it (written before it was stored), unless a term needs it."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_cli, write_tiny_config


@pytest.fixture(scope="module")
def degree2_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deg2") / "heat-p2.h5"
    run_cli("generate", "heat", "--preset", "paper", "--set", "degree=2", "--n-samples", "50",
            "--seed", "1", "--out", str(out), "--no-progress")
    return out


def test_degree2_file_has_the_nodal_observation_matrix(degree2_file: Path) -> None:
    with h5py.File(degree2_file) as f:
        assert not bool(f.attrs["physics_operators_exact"])
        B = f["operators/observation_matrix"][...]
        nodes, sensors = f["geometry/nodes"][...], f["geometry/sensors"][...]
        T, clean = f["targets/temperature"][...], f["inputs/observations_clean"][...]
    assert B.shape == (len(sensors), len(nodes))
    # exact for a linear nodal field (P1 interpolation reproduces it)
    linear = 0.3 + 2.0 * nodes[:, 0] - 1.5 * nodes[:, 1]
    np.testing.assert_allclose(B @ linear, 0.3 + 2.0 * sensors[:, 0] - 1.5 * sensors[:, 1], atol=1e-12)
    np.testing.assert_allclose(B.sum(1), 1.0, atol=1e-12)
    # on the stored P1 interpolant of the P2 temperature: the P2 observation up to interpolation error
    rel = np.linalg.norm(T @ B.T - clean, axis=1) / np.linalg.norm(clean, axis=1)
    assert rel.mean() < 0.05 and rel.max() < 0.1   # 9×9 mesh: a few per cent


def without_observation_matrix(src: Path, dst: Path) -> Path:
    with h5py.File(src) as a, h5py.File(dst, "w") as b:
        for key, value in a.attrs.items():
            b.attrs[key] = value
        for group in a:
            a.copy(a[group], b, name=group)
        del b["operators/observation_matrix"]
    return dst


@pytest.mark.parametrize("drop", [False, True], ids=["written", "old-file-without-it"])
def test_degree2_data_train(degree2_file: Path, tmp_path: Path, drop: bool) -> None:
    data = without_observation_matrix(degree2_file, tmp_path / "old.h5") if drop else degree2_file
    cfg = write_tiny_config(tmp_path, n_test=10)
    proc = run_cli("train", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "run"),
                   "--no-progress", check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "model.pt").exists()


def test_a_term_that_needs_the_matrix_names_it(degree2_file: Path, tmp_path: Path) -> None:
    data = without_observation_matrix(degree2_file, tmp_path / "old.h5")
    cfg = write_tiny_config(tmp_path, n_test=10)
    proc = run_cli("train", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "run"),
                   "--set", "regularizers.model_constrained_weight=0.1", "--no-progress", check=False)
    assert proc.returncode == 2
    assert "operators/observation_matrix" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()

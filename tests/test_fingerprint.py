"""The forward-setting fingerprint: same recipe → same fingerprint (any seed, any size); another mesh,
sensors, noise or prior → refused by evaluate and predict with a message naming what differs."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import one_line_error, run_cli, train_tiny_run

from pdegrow.errors import PdegrowError
from pdegrow.fingerprint import (
    array_digest,
    check_same_setting,
    differences,
    fingerprint_of_path,
    fingerprint_parts,
    make_fingerprint,
)


def _generate(out: Path, *sets: str, n: int = 20, seed: int = 5) -> Path:
    args = [a for s in sets for a in ("--set", s)]
    run_cli("generate", "heat", "--preset", "paper", "--n-samples", str(n), "--seed", str(seed), *args,
            "--out", str(out), "--no-progress")
    return out


@pytest.fixture(scope="module")
def other_sensors(tmp_path_factory) -> Path:
    """The heat `paper` setting with the sensors of sensor_seed 1 (same number, other positions)."""
    return _generate(tmp_path_factory.mktemp("fp") / "sensors1.h5", "sensor_seed=1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, heat_paper_file) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("fprun"), heat_paper_file)[1]


def test_digest_and_differences_closed_cases():
    a = {"geometry/sensors": np.array([[0.1, 0.2], [0.3, 0.4]])}
    b = {"geometry/sensors": np.array([[0.1, 0.2], [0.3, 0.40000001]])}
    assert array_digest(a) != array_digest(b)
    assert array_digest(a) == array_digest({k: v.copy() for k, v in a.items()})
    cfg = {"nx": 9, "ny": 9, "n_sensors": 2, "sensor_seed": 0, "seed": 0, "n_samples": 10}
    p1 = fingerprint_parts("heat", cfg, {"noise_level": 0.05, "noise_model": "relative"}, a)
    p2 = fingerprint_parts("heat", {**cfg, "seed": 7, "n_samples": 99}, {"noise_level": 0.05,
                                                                       "noise_model": "relative"}, a)
    assert make_fingerprint(p1)["hash"] == make_fingerprint(p2)["hash"]   # seed and size are no setting
    noise = {"noise_level": 0.01, "noise_model": "relative"}
    p3 = fingerprint_parts("heat", {**cfg, "sensor_seed": 1}, noise, b)
    diff = differences(make_fingerprint(p1), make_fingerprint(p3))
    assert set(diff) == {"sensors", "noise"}
    assert "sensor_seed 1, the run's 0" in diff["sensors"] and "arrays differ: sensors" in diff["sensors"]
    # an array only one file holds (an older generator's file without the mass matrix) is no difference
    extra = {**a, "operators/mass_matrix_data": np.ones(3)}
    p4 = fingerprint_parts("heat", cfg, {"noise_level": 0.05, "noise_model": "relative"}, extra)
    assert differences(make_fingerprint(p1), make_fingerprint(p4)) == {}
    assert "noise_level 0.01, the run's 0.05" in diff["noise"]
    check_same_setting(make_fingerprint(p1), make_fingerprint(p3), "x.h5", allow=("sensors", "noise"))
    with pytest.raises(PdegrowError, match="x.h5 comes from another forward setting.*the sensors"):
        check_same_setting(make_fingerprint(p1), make_fingerprint(p3), "x.h5", allow=("noise",))
    check_same_setting(None, make_fingerprint(p3), "x.h5")   # a run without a fingerprint: nothing to check


def test_same_recipe_other_seed_and_size_share_the_fingerprint(heat_paper_file, tmp_path):
    other = _generate(tmp_path / "same.h5", n=12, seed=11)
    a, b = fingerprint_of_path(str(heat_paper_file)), fingerprint_of_path(str(other))
    assert a["hash"] == b["hash"] and a["parts"] == b["parts"]
    assert set(a["parts"]) == {"problem", "mesh", "sensors", "noise", "prior", "equation"}
    assert a["parts"]["sensors"]["values"]["n_sensors"] == 10


def test_run_stores_its_setting(trained, heat_paper_file):
    from pdegrow import tensorfile
    from pdegrow.inference import load_model

    tree, _ = tensorfile.load(trained / "model.pt")     # in the model file itself, not recomputed
    assert tree["setting"]["hash"] == fingerprint_of_path(str(heat_paper_file))["hash"]
    model = load_model(trained)
    assert model.setting is not None
    assert model.setting["hash"] == fingerprint_of_path(str(heat_paper_file))["hash"]


def test_evaluate_refuses_other_sensor_positions(trained, other_sensors, capsys):
    """The issue's case: a file of the same shapes but other sensor positions was scored (error ≈ 1.9,
    exit 0)."""
    from pdegrow.cli import main

    assert main(["evaluate", str(trained), "--data", str(other_sensors), "--json"]) == 2
    err = one_line_error(capsys)
    assert "comes from another forward setting" in err and "the sensors" in err
    assert "sensor_seed 1, the run's 0" in err and "--allow-different sensors" in err
    for part in ("mesh", "prior", "noise", "equation"):
        assert f"the {part}" not in err
    # asked for explicitly, it is scored (a study of the network off its setting)
    assert main(["evaluate", str(trained), "--data", str(other_sensors), "--json",
                 "--allow-different", "sensors"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_samples"] == 20


def test_evaluate_refuses_other_noise_and_mesh(trained, tmp_path, capsys):
    from pdegrow.cli import main

    noisy = _generate(tmp_path / "noise.h5", "noise_level=0.01", n=12)
    assert main(["evaluate", str(trained), "--data", str(noisy)]) == 2
    err = one_line_error(capsys)
    assert "the noise model (noise_level 0.01, the run's 0.05)" in err and "the sensors" not in err
    # a mesh of other size with the same number of sensors and modes: same shapes, other setting
    mesh = _generate(tmp_path / "mesh.h5", "nx=7", "ny=7", n=12)
    with h5py.File(mesh) as f:
        assert f["inputs/observations"].shape[1:] == (10,) and f["targets/kl_coefficients"].shape[1:] == (12,)
    assert main(["evaluate", str(trained), "--data", str(mesh)]) == 2
    err = one_line_error(capsys)
    assert "the mesh/grid (nx 7, the run's 9" in err


def test_evaluate_on_own_data_is_unchanged(trained, heat_paper_file, capsys):
    from pdegrow.cli import main

    assert main(["evaluate", str(trained), "--data", str(heat_paper_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_samples"] == 10

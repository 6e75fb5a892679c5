"""The generation driver: MPI ranks, resume after a kill, and bad input (through the CLI)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import assert_same_samples, kill_and_resume, run_cli

from pdegrow.cli import main
from pdegrow.contract import open_dataset
from pdegrow.errors import DataContractError

SMALL = ["--preset", "default", "--set", "nx=12", "--set", "ny=12", "--set", "n_sensors=9",
         "--no-progress"]


def test_one_and_two_ranks_give_identical_files(tmp_path):
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    run_cli("generate", "heat", *SMALL, "--n-samples", "23", "--out", str(one))
    proc = run_cli("generate", "heat", *SMALL, "--n-samples", "23", "--out", str(two),
                   "--flush-every", "4", mpi_ranks=2)
    assert "ranks         2" in proc.stdout
    assert_same_samples(one, two)
    assert not (tmp_path / "two.h5.parts").exists()
    with open_dataset(two) as f:
        assert f["targets/log_conductivity"].shape == (23, 13 * 13)
        assert f.attrs["n_samples"] == 23


def test_resume_after_a_kill_gives_the_uninterrupted_file(tmp_path):
    args = ["generate", "heat", "--preset", "default", "--n-samples", "1500", "--flush-every", "5",
            "--no-progress"]
    n_parts, generated = kill_and_resume(args, tmp_path)
    assert n_parts < 300, "the run was not killed midway"
    assert generated <= 1500 - 5 * n_parts


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "d.h5"
    assert main(["generate", "heat", *SMALL, "--n-samples", "2", "--out", str(out)]) == 0
    assert main(["generate", "heat", *SMALL, "--n-samples", "2", "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["generate", "heat", *SMALL, "--n-samples", "3", "--out", str(out), "--overwrite"]) == 0
    with open_dataset(out) as f:
        assert f.attrs["n_samples"] == 3


def test_resume_with_a_different_recipe_is_refused(tmp_path, capsys):
    out = tmp_path / "d.h5"
    parts = tmp_path / "d.h5.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(
        '{"problem": "heat", "config": {}, "n_samples": 2, "base_seed": 0}')
    assert main(["generate", "heat", *SMALL, "--n-samples", "2", "--out", str(out), "--resume"]) == 2
    assert "different config" in capsys.readouterr().err
    assert not out.exists()


def test_a_corrupt_part_file_is_named(tmp_path, capsys):
    out = tmp_path / "d.h5"
    assert main(["generate", "heat", *SMALL, "--n-samples", "2", "--out", str(out)]) == 0
    parts = tmp_path / "e.h5.parts"
    parts.mkdir()
    (parts / "part-x-r00000-000000.h5").write_bytes(b"not hdf5 at all")
    # a manifest for the same recipe, so only the part file is wrong
    from pdegrow.generation import make_manifest
    from solvers.heat import load_recipe

    recipe = load_recipe("default", None, {"nx": 12, "ny": 12, "n_sensors": 9, "n_samples": 2})
    import json

    (parts / "manifest.json").write_text(json.dumps(make_manifest("heat", recipe.to_dict(), 2, 0)))
    assert main(["generate", "heat", *SMALL, "--n-samples", "2", "--out", str(tmp_path / "e.h5"),
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert "part-x-r00000-000000.h5 is corrupt" in err


@pytest.mark.parametrize("preset, n_sensors", [("paper", 10), ("sensors50", 50)])
def test_heat_presets_generate_their_sensors(tmp_path, preset, n_sensors):
    """Each heat preset of the papers' mesh generates a file with its sensor count; ``sensors50`` is
    the ``paper`` recipe with 50 sensors (and a larger default size), nothing else changed."""
    out = tmp_path / f"{preset}.h5"
    assert main(["generate", "heat", "--preset", preset, "--n-samples", "3", "--out", str(out),
                 "--no-progress"]) == 0
    with open_dataset(out) as f:
        assert f["inputs/observations"].shape == (3, n_sensors)
        assert f["operators/observation_matrix"].shape == (n_sensors, 100)
        assert f["targets/kl_coefficients"].shape == (3, 12)
        sensors = f["geometry/sensors"][()]
        assert sensors.shape == (n_sensors, 2) and len(np.unique(sensors, axis=0)) == n_sensors
        assert np.all((sensors >= 0.05) & (sensors <= 0.95))
        assert np.all(f["inputs/observations_clean"][()] > 0)
    from solvers.heat import load_recipe

    paper, other = load_recipe("paper", None, {}).to_dict(), load_recipe(preset, None, {}).to_dict()
    changed = {k for k in paper if paper[k] != other[k]}
    assert changed <= {"n_sensors", "n_samples"} and other["n_sensors"] == n_sensors


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "nope"], "unknown heat preset 'nope' (available: default, paper, sensors50)"),
        (["--set", "colour=3"], "unknown key colour"),
        (["--set", "nx=ten"], "nx = 'ten' has the wrong type"),
        (["--n-samples", "0"], "n_samples must be positive"),
        (["--set", "nx=2", "--set", "ny=2"], "mesh too coarse for the sensors"),
        (["--set", 'sensor_layout="given"', "--set", "sensors=[[1.5, 0.5]]"], "lies outside"),
        (["--config", "/no/such/recipe.toml"], "config file /no/such/recipe.toml does not exist"),
    ],
)
def test_bad_generation_input_gets_one_clear_message(tmp_path, capsys, args, message):
    out = tmp_path / "d.h5"
    assert main(["generate", "heat", "--n-samples", "2", *args, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_unwritable_output_and_foreign_files(tmp_path, capsys):
    assert main(["generate", "heat", *SMALL, "--n-samples", "2", "--out", "/no/such/dir/d.h5"]) == 2
    assert "directory /no/such/dir does not exist" in capsys.readouterr().err
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    for path, message in [(plain, "not a pdegrow data set"), (text, "not an HDF5 file"),
                          (tmp_path / "missing.h5", "no such file")]:
        assert main(["info", str(path)]) == 2
        assert message in capsys.readouterr().err
        with pytest.raises(DataContractError):
            open_dataset(path)


def test_user_errors_print_no_traceback(tmp_path):
    proc = run_cli("generate", "heat", "--set", "colour=3", "--out", str(tmp_path / "x.h5"), check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("pdegrow generate: error: ")


def test_info_reports_shapes_and_config(heat_paper_file, capsys):
    assert main(["info", str(heat_paper_file), "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["problem"] == "heat" and info["n_samples"] == 80 and info["base_seed"] == 3
    assert info["datasets"]["targets/kl_coefficients"]["shape"] == [80, 12]
    assert info["datasets"]["geometry/nodes"]["shape"] == [100, 2]
    assert info["config"]["n_sensors"] == 10
    assert main(["info", str(heat_paper_file)]) == 0
    assert "inputs/observations" in capsys.readouterr().out

"""`pdegrow predict`: the portable model gives the trainer's predictions on .npy, .csv and data-set
observations; fields (not KL coefficients) with the geometry in the output; another setting refused."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import one_line_error, run_cli, train_tiny_run

from pdegrow.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory, heat_paper_file) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("predrun"), heat_paper_file)[1]


def _trainer_predictions(run: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, predictions) of every sample through the evaluation path of the training code."""
    from pdegrow.training.evaluate import load_eval_data, load_trained, predict

    tr = load_trained(run)
    d = load_eval_data(tr, str(data), "all")
    return d["inputs"], predict(tr, d["inputs"])


def test_predict_data_set_gives_fields_geometry_and_the_trainers_output(trained, heat_paper_file, tmp_path,
                                                                       capsys):
    out = tmp_path / "pred.h5"
    assert main(["predict", str(trained), "--obs", str(heat_paper_file), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    inputs, expected = _trainer_predictions(trained, heat_paper_file)
    with h5py.File(out) as f, h5py.File(heat_paper_file) as d:
        assert f.attrs["schema"] == "pdegrow-predictions" and f.attrs["problem"] == "heat"
        np.testing.assert_allclose(f["predictions/target"][()], expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(f["inputs/observations"][()], inputs)
        # m = m̄ + Φ(√λ ⊙ ξ) at the nodes, e^m beside it: fields, not coefficients
        xi = f["predictions/target"][()]
        m = d["operators/prior_mean"][()] + (xi * np.sqrt(d["operators/kl_eigenvalues"][()])) @ \
            d["operators/kl_basis"][()].T
        np.testing.assert_allclose(f["fields/log_conductivity"][()], m, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(f["fields/conductivity"][()], np.exp(m), rtol=1e-10)
        assert f["fields/log_conductivity"].shape == (80, 100)
        for g in ("nodes", "cells", "sensors"):
            np.testing.assert_array_equal(f[f"geometry/{g}"][()], d[f"geometry/{g}"][()])
        np.testing.assert_array_equal(f["truth/log_conductivity"][()], d["targets/log_conductivity"][()])
        true = d["targets/log_conductivity"][()]
    rel = np.mean(np.linalg.norm(m - true, axis=1) / np.linalg.norm(true, axis=1))
    assert summary["errors"]["rel_error_log_conductivity"] == pytest.approx(rel, rel=1e-6)
    assert summary["setting_checked"] is True
    # netCDF tools see named dimensions shared by the groups
    xr = pytest.importorskip("xarray")
    fields = xr.open_dataset(out, group="fields", engine="h5netcdf")
    assert fields["log_conductivity"].dims == ("sample", "node") and fields.sizes["node"] == 100
    inputs = xr.open_dataset(out, group="inputs", engine="h5netcdf")
    assert inputs["observations"].dims == ("sample", "sensor")


def test_predict_npy_csv_and_the_python_model_agree(trained, heat_paper_file, tmp_path, capsys):
    from pdegrow.inference import load_model

    inputs, expected = _trainer_predictions(trained, heat_paper_file)
    np.save(tmp_path / "obs.npy", inputs[:7])
    np.savetxt(tmp_path / "obs.csv", inputs[:7], delimiter=",", header="s0,s1,s2,s3,s4,s5,s6,s7,s8,s9",
               comments="")
    for name in ("obs.npy", "obs.csv"):
        assert main(["predict", str(trained), "--obs", str(tmp_path / name)]) == 0
        written = tmp_path / f"{Path(name).stem}.predictions.h5"
        assert "(an array carries no forward setting" in capsys.readouterr().out
        with h5py.File(written) as f:
            np.testing.assert_allclose(f["predictions/target"][()], expected[:7], rtol=1e-6, atol=1e-6)
            assert "truth" not in f and f["fields/log_conductivity"].shape == (7, 100)
        written.unlink()
    model = load_model(trained)   # one sample without the sample axis works too
    np.testing.assert_allclose(model.predict(inputs[3])[0], expected[3], rtol=1e-6, atol=1e-6)


def test_predict_bad_inputs_one_line(trained, heat_paper_file, tmp_path, capsys):
    np.save(tmp_path / "wrong.npy", np.ones((3, 7)))
    assert main(["predict", str(trained), "--obs", str(tmp_path / "wrong.npy")]) == 2
    assert "have shape (3, 7); the model expects (n, 10)" in one_line_error(capsys)
    bad = np.ones((3, 10))
    bad[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert main(["predict", str(trained), "--obs", str(tmp_path / "nan.npy")]) == 2
    assert "NaN/inf in 1 sample(s) (rows 1)" in one_line_error(capsys)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["predict", str(trained), "--obs", str(tmp_path / "obj.npy")]) == 2
    assert "not a readable .npy array" in one_line_error(capsys)   # never unpickled
    (tmp_path / "text.csv").write_text("a,b\nc,d\n")
    assert main(["predict", str(trained), "--obs", str(tmp_path / "text.csv")]) == 2
    assert "is not a CSV of numbers" in one_line_error(capsys)
    out = tmp_path / "p.h5"
    out.write_text("keep me")
    assert main(["predict", str(trained), "--obs", str(heat_paper_file), "--out", str(out)]) == 2
    assert "exists (use --overwrite" in one_line_error(capsys) and out.read_text() == "keep me"
    assert main(["predict", str(trained), "--obs", str(heat_paper_file), "--out", "/proc/x.h5"]) == 2
    assert "cannot write /proc/x.h5" in one_line_error(capsys)
    assert main(["predict", str(tmp_path), "--obs", str(heat_paper_file)]) == 2
    one_line_error(capsys)


def test_predict_refuses_another_setting(trained, tmp_path, capsys):
    other = tmp_path / "sensors2.h5"
    run_cli("generate", "heat", "--preset", "paper", "--n-samples", "8", "--set", "sensor_seed=2",
            "--out", str(other), "--no-progress")
    out = tmp_path / "p.h5"
    assert main(["predict", str(trained), "--obs", str(other), "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "another forward setting" in err and "the sensors (sensor_seed 2, the run's 0" in err
    assert not out.exists() and not Path(str(out) + ".tmp").exists()


def test_model_file_is_portable_and_old_files_still_load(trained, heat_paper_file, tmp_path, capsys):
    """model.pt holds the setting, decoder and geometry: a copy alone predicts the same fields. A file
    written before they existed is completed from the run's data file, and refused in one line when
    that file is gone."""
    import shutil

    from pdegrow import tensorfile
    from pdegrow.inference import load_model
    from pdegrow.training.runfiles import save_run_file

    tree, meta = tensorfile.load(trained / "model.pt")
    assert meta["kind"] == "model" and tree["format"] == 2
    assert tree["setting"]["parts"]["sensors"]["values"]["n_sensors"] == 10
    assert tree["fields"]["decoder"] == "kl" and tuple(tree["fields"]["kl"]["kl_basis"].shape) == (100, 12)
    alone = tmp_path / "elsewhere" / "model.pt"
    alone.parent.mkdir()
    shutil.copy(trained / "model.pt", alone)
    x = _trainer_predictions(trained, heat_paper_file)[0][:5]
    a, b = load_model(alone), load_model(trained)
    np.testing.assert_array_equal(a.fields(a.predict(x))["log_conductivity"],
                                  b.fields(b.predict(x))["log_conductivity"])
    assert a.geometry["cells"].shape == (162, 3)   # 9×9 squares, two triangles each
    # the training config is not validated to use the model: a key of another pdegrow version is fine
    future = {**tree, "config": {**tree["config"], "model": {**tree["config"]["model"], "future_key": 1}}}
    save_run_file(alone, "model", future)
    np.testing.assert_array_equal(load_model(alone).predict(x), b.predict(x))
    # an old model file: no setting, no fields
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    save_run_file(old / "model.pt", "model", {k: v for k, v in tree.items()
                                              if k not in ("setting", "fields", "format")})
    c = load_model(old)
    assert c.setting["hash"] == b.setting["hash"]
    np.testing.assert_array_equal(c.predict(x), b.predict(x))
    info = json.loads((old / "run.json").read_text())
    info["data"] = str(tmp_path / "gone.h5")
    info.pop("data_relative", None)
    (old / "run.json").write_text(json.dumps(info))
    assert main(["predict", str(old), "--obs", str(tmp_path / "x.npy")]) == 2
    assert "predates portable model files" in one_line_error(capsys)


def test_predict_carries_a_references_posterior_std(heat_paper_file, trained, tmp_path, capsys):
    """A Laplace reference beside the data: its posterior mean, MAP and pointwise std go into the output."""
    import shutil

    import pdegrow

    data = tmp_path / "copy.h5"
    shutil.copy(heat_paper_file, data)
    pdegrow.compute_reference(data, "laplace", "40:48", starts=1)
    out = tmp_path / "p.h5"
    assert main(["predict", str(trained), "--obs", str(data), "--out", str(out)]) == 0
    assert "Bayes reference (laplace): 8 samples under reference/" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f["reference"].attrs["method"] == "laplace"
        np.testing.assert_array_equal(f["reference/sample_indices"][()], np.arange(40, 48))
        std = f["reference/std_m"][()]
        assert std.shape == (8, 100) and (std >= 0).all() and std.max() > 0
        assert f["reference/mean_m"].shape == (8, 100)

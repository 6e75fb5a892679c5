"""`pdegrow export`: TorchScript and ONNX graphs with the normalisers and the KL decoder baked in give
the model's fields on observations of the data set (heat, MLP) and on images (Navier–Stokes-like, conv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RUN_HEAD, one_line_error

from pdegrow.cli import main
from pdegrow.inference import load_model

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*is deprecated:FutureWarning")

CONFIG = RUN_HEAD + """[data]
n_train = 30
n_val = 10
n_test = 10
input_transform = "log"
[model]
width = 8
depth = 2
[optim]
batch_size = 30
[train]
max_epochs = 2
"""


@pytest.fixture(scope="module")
def heat_run(tmp_path_factory, heat_paper_file) -> Path:
    d = tmp_path_factory.mktemp("export")
    (d / "cfg.toml").write_text(CONFIG)
    assert main(["train", "--config", str(d / "cfg.toml"), "--data", str(heat_paper_file), "--out",
                 str(d / "run"), "--no-progress"]) == 0
    return d / "run"


def _observations(path: Path, n: int = 6) -> np.ndarray:
    import h5py

    with h5py.File(path) as f:
        return f["inputs/observations"][:n]


def test_torchscript_gives_the_models_fields(heat_run, heat_paper_file, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["export", str(heat_run), "--out", str(out)]) == 0
    assert "checked against the model" in capsys.readouterr().out
    obs = _observations(heat_paper_file)
    model = load_model(heat_run)
    want = model.fields(model.predict(obs))["log_conductivity"]
    graph = torch.jit.load(str(out))
    got = graph(torch.as_tensor(obs, dtype=torch.float32)).double().numpy()
    assert got.shape == (6, 100)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert main(["export", str(heat_run)]) == 0 and (heat_run / "model.torchscript.pt").is_file()


def test_onnx_gives_the_models_fields(heat_run, heat_paper_file, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "m.onnx"
    assert main(["export", str(heat_run), "--format", "onnx", "--out", str(out)]) == 0
    obs = _observations(heat_paper_file, 9)   # another batch size than at export: the sample axis is dynamic
    model = load_model(heat_run)
    want = model.fields(model.predict(obs))["log_conductivity"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"observations": obs.astype(np.float32)})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_conv_image_model_exports(tmp_path, capsys):
    """A conv network on (R, R) images (field in, field out, scalar normalisers, float64)."""
    from test_evaluate_fields import _field_file

    from pdegrow.training.config import build_config
    from pdegrow.training.trainer import train

    data = _field_file(tmp_path / "ns.h5")
    cfg = build_config({
        "run": {"seed": 0, "device": "cpu", "progress": False, "dtype": "float64"},
        "data": {"problem": "navier_stokes", "input": "inputs/vorticity_T", "target": "targets/vorticity_0",
                 "aux": [], "n_train": 25, "n_val": 5, "n_test": 10, "normalize_targets": "scalar"},
        "model": {"kind": "conv", "width": 4, "depth": 1, "block": "conv", "hidden": [4],
                  "padding_mode": "circular"},
        "train": {"max_epochs": 2},
    }, "test")
    train(cfg, data, tmp_path / "run")
    assert main(["export", str(tmp_path / "run")]) == 0
    model = load_model(tmp_path / "run")
    x = np.random.default_rng(1).standard_normal((3, 6, 6))
    want = model.fields(model.predict(x))["vorticity_0"]
    got = torch.jit.load(str(tmp_path / "run" / "model.torchscript.pt"))(torch.as_tensor(x)).numpy()
    assert got.shape == (3, 6, 6)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # ONNX: onnxruntime has no float64 convolution on the CPU: one line, nothing left; in float32 the
    # circular padding survives the export
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    assert main(["export", str(tmp_path / "run"), "--format", "onnx"]) == 2
    assert "onnxruntime cannot run the exported graph (export with --dtype float32)" in one_line_error(capsys)
    assert not list((tmp_path / "run").glob("model.onnx*"))
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--dtype", "float32"]) == 0
    session = ort.InferenceSession(str(tmp_path / "run" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"observations": x.astype(np.float32)})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_export_bad_format_and_path(heat_run, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(heat_run), "--format", "tflite"])
    capsys.readouterr()
    assert main(["export", str(heat_run), "--out", "/proc/x.pt"]) == 2
    assert "cannot write /proc/x.pt" in one_line_error(capsys)

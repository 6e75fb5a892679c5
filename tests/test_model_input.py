"""One input pipeline: training, evaluate, inference and the exported graph feed the network the
same tensor, bit for bit, for the same stored observations (heat MLP with log inputs and simulated
normalisers; Navier–Stokes conv with coordinate channels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RUN_HEAD, conv_fields_config, write_shifted_vorticity


def _train(tmp_path: Path, config: str, data: Path) -> Path:
    from pdegrow.cli import main

    cfg = tmp_path / "cfg.toml"
    cfg.write_text(config)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--data", str(data), "--out", str(run), "--no-progress"]) == 0
    return run


def _net_inputs(model: torch.nn.Module, call: object) -> torch.Tensor:
    """What ``model`` receives while ``call()`` runs (its forward pre-hook)."""
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        call()  # type: ignore[operator]
    finally:
        handle.remove()
    return torch.cat(seen)


def _check_paths(run: Path, data: Path) -> None:
    """Every path's model input for the run's test samples equals the training split's."""
    import h5py

    from pdegrow.data.bundle import prepare_data
    from pdegrow.export import BakedModel
    from pdegrow.inference import load_model
    from pdegrow.training.evaluate import load_trained, predict

    trained = load_trained(run)
    cfg = trained.cfg
    idx = np.asarray(trained.splits["test"], dtype=np.int64)
    with h5py.File(data, "r") as f:
        raw = f[cfg.data.input][np.sort(idx)][np.argsort(np.argsort(idx))]
    dtype = next(trained.model.parameters()).dtype

    # the in-memory split, and the lazy one (simulated samples need the data in memory)
    for in_memory in ("yes",) if cfg.data.simulated_inputs else ("yes", "no"):
        cfg.data.in_memory = in_memory
        bundle = prepare_data(str(data), cfg.data, cfg.run.seed, torch.device("cpu"), dtype,
                              splits=trained.splits)
        assert torch.equal(bundle.input_norm.mean, trained.input_norm.mean)
        assert torch.equal(bundle.input_norm.std, trained.input_norm.std)
        training = bundle.test.get(torch.arange(len(idx))).inputs
        assert training.dtype == dtype and training.shape[0] == len(idx)

        evaluate = _net_inputs(trained.model, lambda: predict(trained, raw))
        assert torch.equal(evaluate, training), in_memory

    pm = load_model(run)
    inference = _net_inputs(pm.model, lambda: pm.predict(raw))
    assert torch.equal(inference, training)
    assert torch.equal(pm.network_input(raw), training)

    baked = BakedModel(pm)
    exported = _net_inputs(baked.net, lambda: baked(torch.as_tensor(raw)))
    assert torch.equal(exported, training)
    # and the physical observations come back from the model input
    back = bundle.to_physical_input(training).double().reshape(raw.shape)
    np.testing.assert_allclose(back.numpy(), raw, rtol=1e-5 if dtype == torch.float32 else 1e-12)


def test_heat_mlp_log_inputs_same_everywhere(tmp_path: Path, heat_paper_file: Path) -> None:
    config = RUN_HEAD + """[data]
n_train = 30
n_val = 10
n_test = 12
input_transform = "log"
simulated_inputs = 20
normalize_with_simulated = true
[model]
width = 8
[optim]
batch_size = 30
[train]
max_epochs = 2
[growth]
strategy = "fixed"
"""
    run = _train(tmp_path, config, heat_paper_file)
    _check_paths(run, heat_paper_file)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ns_conv_with_coordinates_same_everywhere(tmp_path: Path, dtype: str) -> None:
    data = write_shifted_vorticity(tmp_path / "ns.h5", 8, 28)
    config = conv_fields_config(data="n_test = 8\n", model="coordinates = true\n").replace(
        "[run]\n", f"[run]\ndtype = \"{dtype}\"\n")
    run = _train(tmp_path, config, data)
    _check_paths(run, data)

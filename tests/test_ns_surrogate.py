"""The Navier–Stokes surrogate's pieces: periodic coordinate channels in the conv lift, and the
experiments' NS configs load and train on a tiny file from the real generator."""

from __future__ import annotations

import json
import math

import torch

from pdegrow.models import GrowableResNet
from pdegrow.models.blocks import build_module, periodic_coordinates


def test_periodic_coordinates_are_the_grid_values():
    c = periodic_coordinates(4, 8, torch.float64)
    assert c.shape == (4, 4, 8)
    j, i = 3, 5                                           # field[j, i] = value at x = i/W, y = j/H
    expect = [math.sin(2 * math.pi * i / 8), math.cos(2 * math.pi * i / 8),
              math.sin(2 * math.pi * j / 4), math.cos(2 * math.pi * j / 4)]
    torch.testing.assert_close(c[:, j, i], torch.tensor(expect, dtype=torch.float64))


def test_coordinates_break_translation_equivariance_and_survive_the_spec():
    torch.manual_seed(0)
    y = torch.randn(2, 1, 8, 8, dtype=torch.float64)

    def shift(t: torch.Tensor) -> torch.Tensor:
        return torch.roll(t, shifts=(1, 3), dims=(-2, -1))

    plain = GrowableResNet.conv(1, 1, 4, 1, hidden=[4], padding_mode="circular").double()
    torch.testing.assert_close(plain(shift(y)), shift(plain(y)))          # circular conv: equivariant
    coord = GrowableResNet.conv(1, 1, 4, 1, hidden=[4], padding_mode="circular", coordinates=True).double()
    assert coord.lift.conv.in_channels == 5
    assert (coord(shift(y)) - shift(coord(y))).abs().max() > 1e-3       # position matters
    rebuilt = GrowableResNet.from_spec(coord.spec()).double()
    rebuilt.load_state_dict(coord.state_dict())
    torch.testing.assert_close(rebuilt(y), coord(y))
    assert "coordinates" not in plain.spec()["lift"]                      # old specs unchanged
    assert build_module(plain.spec()["lift"]).coordinates is False


def test_ns_best_configs_train_a_grown_network_on_a_tiny_file(tmp_path):
    """experiments/ns-best-T*.toml as shipped (only the sizes shrunk): simulated pairs join the training
    split, the lift reads coordinates, the network grows, and the run evaluates on the test split."""
    from conftest import ROOT, run_cli

    from pdegrow.cli import main
    from pdegrow.inference import load_model

    data = tmp_path / "ns.h5"
    run_cli("generate", "navier-stokes", "--resolution", "8", "--final-time", "0.02", "--set", "dt=0.005",
            "--set", "noise_level=0.01", "--n-samples", "12", "--seed", "3", "--no-progress",
            "--out", str(data))
    for name in ("ns-best-T0.2.toml", "ns-best-T1.toml"):
        run = tmp_path / name
        sets = ["data.n_train=6", "data.n_val=3", "data.n_test=3", "data.simulated_inputs=10",
                "optim.batch_size=8", "train.max_epochs=3", "train.phase_epochs=1", "train.patience=3"]
        args = ["train", "--config", str(ROOT / "experiments" / name), "--data", str(data), "--out", str(run)]
        assert main([*args, *[a for s in sets for a in ("--set", s)], "--no-progress"]) == 0
        summary = json.loads((run / "summary.json").read_text())
        assert math.isfinite(summary["test"]["rel_error_target"])
        # grown 1 → 3 blocks by the topological derivative: the size of the fixed depth-2 network
        # (lift 5·8·9 + 8 with the coordinate channels, conv block 2·(8·8·9 + 8), 2 × (8·8·9 + 8), head 9)
        assert summary["growth_events"] == 2
        assert summary["architecture"]["n_params"] == 368 + 1168 + 2 * 584 + 9
        assert json.loads((run / "config.json").read_text())["model"]["coordinates"] is True
        # fraction = 0: every output channel of each inserted block got its eigenvector row, so none is
        # identically zero (a zero channel of σ(W x + b) with σ = silu_tanh, σ′(0) = 0, never trains)
        inserted = [b for b in load_model(run).model.blocks if b.kind == "conv_perceptron"]
        assert len(inserted) == 2
        for block in inserted:
            w = block.last_layer().weight.detach().reshape(block.channels, -1)
            assert ((w != 0).any(dim=1) | (block.last_layer().bias.detach() != 0)).all()

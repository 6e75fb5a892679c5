"""The Navier–Stokes surrogate's pieces: periodic coordinate channels in the conv lift, and the
experiments' NS configs load and train on a tiny file from the real generator."""

from __future__ import annotations

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

"""Activation functions by name, including the admissible σ of Approach II.

``silu_tanh``: σ(z) = 2·SiLU(z) − tanh(z) = 2z·sigmoid(z) − tanh(z), with
σ(0) = 0, σ′(0) = 0, σ″(0) = 1 (Krishnanunni, Bui-Thanh & Dawson,
arXiv 2502.06885): a block σ(ε(Wx + b)) is then the identity perturbation of
order ε², the setting of the topological derivative.
"""

from __future__ import annotations

import torch
from torch import nn

from pdegrow.errors import PdegrowError


def silu_tanh(z: torch.Tensor) -> torch.Tensor:
    """σ(z) = 2·SiLU(z) − tanh(z); σ(0) = σ′(0) = 0, σ″(0) = 1."""
    return 2.0 * torch.nn.functional.silu(z) - torch.tanh(z)


class SiLUTanh(nn.Module):
    """Module form of :func:`silu_tanh`."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return silu_tanh(z)


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "silu_tanh": SiLUTanh,
    "identity": nn.Identity,
}

ACTIVATION_NAMES = tuple(sorted(_ACTIVATIONS))


def make_activation(name: str) -> nn.Module:
    """A fresh activation module from its name (one of :data:`ACTIVATION_NAMES`)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise PdegrowError(
            f"unknown activation {name!r} (known: {', '.join(ACTIVATION_NAMES)})") from None

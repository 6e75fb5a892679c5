"""Composable loss terms: what a regularizer sees of a training step.

A loss term is an ``nn.Module`` with a ``name`` and a float ``weight``; called
as ``term(batch, fwd)`` it returns the *weighted* scalar penalty. ``batch`` is
a :class:`pdegrow.data.loaders.Batch` (normalised inputs/targets, item and
group ids, auxiliary physical arrays); ``fwd`` a :class:`Forward` (the model's
prediction, its states x_0…x_L, and denormalisation helpers). The trainer sums
the data loss and every active term; each term's unweighted value is logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class Forward:
    """One forward pass: prediction (normalised units) and the states [x_0, …, x_L]."""

    model: nn.Module
    prediction: torch.Tensor
    states: list[torch.Tensor]
    to_physical_target: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)
    to_physical_input: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)

    def physical_prediction(self) -> torch.Tensor:
        """The prediction in the units of the data file's target."""
        return self.to_physical_target(self.prediction)


class LossTerm(nn.Module):
    """Base class: ``forward(batch, fwd)`` = ``weight · value(batch, fwd)``; ``last_value`` is logged."""

    name: str = "term"

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)
        self.last_value: float = float("nan")

    def value(self, batch: Any, fwd: Forward) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, batch: Any, fwd: Forward) -> torch.Tensor:
        v = self.value(batch, fwd)
        self.last_value = float(v.detach())
        return self.weight * v

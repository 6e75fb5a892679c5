"""Shared machinery of the strategies that add *neurons* to hidden layers of MLP blocks.

TINY, GradMax, folding, Net2WiderNet and random neurons all widen hidden
layer i of a block t (``GrowableResNet.widen``), so they share

* **when** — ``every`` = 0: the trainer's plateau test (default); ``every`` = E > 0:
  a fixed schedule, one growth event every E epochs of a phase (GradMax's
  schedule) until ``max_events``, then the plateau test ends training;
* the budget — ``max_events`` growth events, ``max_params`` parameters,
  ``max_width`` units per hidden layer;
* where, for the methods with no criterion of their own — ``layer_choice``:
  ``"cycle"`` (round robin over the widenable layers) or ``"random"``;
* a widening that also changes existing fan-out entries (Net2WiderNet's
  halving, TINY's ΔW*): :func:`widen_with_update`. Parameters keep their
  identity, so :func:`pdegrow.models.optim.sync_optimizer` keeps (and pads) the
  optimizer state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pdegrow.errors import PdegrowError
from pdegrow.growth.base import GrowthContext, GrowthProposal, GrowthStrategy
from pdegrow.growth.statistics import LayerKey, widenable_layers
from pdegrow.models.activations import make_activation

LAYER_CHOICES = ("cycle", "random")


def activation_slope_at_zero(block: nn.Module) -> float:
    """σ′(0) of a block's activation (autograd; 0 for ReLU as PyTorch defines it)."""
    act = getattr(block, "act", None) or make_activation(getattr(block, "activation_name", "tanh"))
    z = torch.zeros((), dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(act(z), z, allow_unused=True)
    return 0.0 if d is None else float(d)


def activation_at_zero(block: nn.Module) -> float:
    act = getattr(block, "act", None) or make_activation(getattr(block, "activation_name", "tanh"))
    return float(act(torch.zeros((), dtype=torch.float64)))


def fan_layers(model: nn.Module, key: LayerKey) -> tuple[nn.Linear, nn.Linear]:
    """(fan-in layer, fan-out layer) of hidden layer ``key = (t, i)``."""
    t, i = key
    block = model.blocks[t]  # type: ignore[union-attr, index]
    return block.layers[i], block.layers[i + 1]


@torch.no_grad()
def widen_with_update(model: nn.Module, key: LayerKey, fan_in: Tensor, bias: Tensor, fan_out: Tensor,
                      delta_out: Tensor | None = None, delta_out_bias: Tensor | None = None) -> None:
    """Widen hidden layer ``key`` by ``k = len(fan_in)`` units and add ``delta_out`` (m, h) /
    ``delta_out_bias`` (m,) to the existing fan-out weights/bias (in place, same Parameters)."""
    first, second = fan_layers(model, key)
    if delta_out is not None:
        second.weight.add_(delta_out.to(second.weight))
    if delta_out_bias is not None and second.bias is not None:
        second.bias.add_(delta_out_bias.to(second.bias))
    if fan_in.shape[0] == 0:
        return
    model.widen(key[0], key[1], int(fan_in.shape[0]), fan_in=fan_in.to(first.weight),  # type: ignore[operator]
                bias=bias.to(first.weight), fan_out=fan_out.to(second.weight))


class NeuronGrowth(GrowthStrategy):
    """Base class of the neuron-adding strategies (see the module docstring)."""

    name = "neurons"

    def __init__(self, neurons: int = 4, every: int = 0, max_events: int = 10, max_params: int | None = None,
                 max_width: int | None = None, layer_choice: str = "cycle"):
        if int(neurons) < 1:
            raise ValueError(f"neurons must be >= 1, got {neurons}")
        if layer_choice not in LAYER_CHOICES:
            raise ValueError(f"layer_choice must be one of {', '.join(LAYER_CHOICES)}, got {layer_choice!r}")
        self.neurons, self.every, self.max_events = int(neurons), int(every), int(max_events)
        self.max_params, self.max_width, self.layer_choice = max_params, max_width, layer_choice
        self.events = 0
        self.cursor = 0

    # ------------------------------------------------------------------ setup / when

    def setup(self, ctx: GrowthContext) -> None:
        if not widenable_layers(ctx.model):
            raise PdegrowError(
                f"strategy {self.name!r} adds neurons to hidden layers of MLP blocks; the model has none "
                f"(use [model] kind = 'mlp', block = 'mlp', hidden = [...])")

    def when(self, ctx: GrowthContext) -> bool:
        s = ctx.state
        if self.every > 0 and self.events < self.max_events:
            return s.phase_epoch >= self.every
        return super().when(ctx)

    # ------------------------------------------------------------------ budget and where

    def candidates(self, ctx: GrowthContext, k: int | None = None) -> list[LayerKey]:
        """Widenable layers that can take ``k`` (default ``neurons``) more units within the budget."""
        k = self.neurons if k is None else k
        model = ctx.model
        if self.events >= self.max_events:
            return []
        out = []
        for key in widenable_layers(model):
            first, second = fan_layers(model, key)
            width = first.out_features
            if self.max_width is not None and width + 1 > self.max_width:
                continue
            if self.max_params is not None:
                per_unit = first.in_features + 1 + second.out_features
                if model.n_parameters() + per_unit > self.max_params:
                    continue
            out.append(key)
        return out

    def units_allowed(self, ctx: GrowthContext, key: LayerKey, k: int) -> int:
        """``k`` clipped to the width and parameter budget of layer ``key``."""
        first, second = fan_layers(ctx.model, key)
        if self.max_width is not None:
            k = min(k, self.max_width - first.out_features)
        if self.max_params is not None:
            per_unit = first.in_features + 1 + second.out_features
            k = min(k, (self.max_params - ctx.model.n_parameters()) // per_unit)
        return max(int(k), 0)

    def pick_layer(self, ctx: GrowthContext, keys: list[LayerKey]) -> LayerKey:
        """Round robin (``cycle``) or uniform (``random``, from the run's strategy generator)."""
        if self.layer_choice == "random":
            return keys[int(torch.randint(0, len(keys), (1,), generator=ctx.generator))]
        key = keys[self.cursor % len(keys)]
        self.cursor += 1
        return key

    def next_layer(self, ctx: GrowthContext) -> tuple[LayerKey, int] | None:
        """Where the next neurons go and how many fit the budget; None when nothing can grow."""
        keys = self.candidates(ctx)
        if not keys:
            return None
        key = self.pick_layer(ctx, keys)
        k = self.units_allowed(ctx, key, self.neurons)
        return (key, k) if k >= 1 else None

    def widen_proposal(self, key: LayerKey, fan_in: Tensor, bias: Tensor, fan_out: Tensor,
                       predicted: float | None, info: dict[str, Any]) -> GrowthProposal:
        return GrowthProposal("widen", depth=key[0], layer=key[1], k=int(fan_in.shape[0]), fan_in=fan_in,
                              bias=bias, fan_out=fan_out, predicted_change=predicted, info=info)

    def after_growth(self, ctx: GrowthContext, event: Any) -> None:
        self.events += 1

    def state_dict(self) -> dict[str, Any]:
        return {"events": self.events, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.events, self.cursor = int(state.get("events", 0)), int(state.get("cursor", 0))


__all__ = ["NeuronGrowth", "activation_at_zero", "activation_slope_at_zero", "fan_layers",
           "widen_with_update"]

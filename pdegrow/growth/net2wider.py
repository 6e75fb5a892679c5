"""Net2WiderNet (Chen, Goodfellow, Shlens, "Net2Net: Accelerating Learning via Knowledge
Transfer", ICLR 2016) on the hidden layers of MLP blocks.

Duplicate k units j of hidden layer i (chosen uniformly without replacement
from the run's strategy generator): the copy gets the same fan-in row and
bias; unit j's fan-out column ω_j is split between the original and the copy,
ω_j ← (1 − r)ω_j and ω_copy = r ω_j. With r = ½ this is the paper's halving;
``split_noise`` δ > 0 draws r ∈ [½ − δ, ½ + δ] per entry, which keeps the
function *exactly* (the two columns still sum to ω_j, the two units compute
the same activation) while breaking the symmetry between original and copy.
Where: ``layer_choice`` (round robin by default). Predicted change 0.
"""

from __future__ import annotations

import torch

from pdegrow.growth.base import GrowthContext, GrowthProposal, register_strategy
from pdegrow.growth.neurons import NeuronGrowth, fan_layers, widen_with_update


def net2wider_split(fan_in: torch.Tensor, bias: torch.Tensor, fan_out: torch.Tensor, units: torch.Tensor,
                    ratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(new fan-in rows, new biases, new fan-out columns, change of the old fan-out) for duplicating
    ``units`` with split ``ratio`` (m, k): new = r·ω_j, old ω_j changes by −r·ω_j."""
    cols = fan_out[:, units]
    new_cols = ratio * cols
    delta = torch.zeros_like(fan_out)
    delta[:, units] = -new_cols
    return fan_in[units].clone(), bias[units].clone(), new_cols, delta


@register_strategy
class Net2WiderStrategy(NeuronGrowth):
    """Net2WiderNet (see the module docstring)."""

    name = "net2wider"

    def __init__(self, neurons: int = 4, every: int = 0, max_events: int = 10, max_params: int | None = None,
                 max_width: int | None = None, layer_choice: str = "cycle", split_noise: float = 0.1):
        super().__init__(neurons=neurons, every=every, max_events=max_events, max_params=max_params,
                         max_width=max_width, layer_choice=layer_choice)
        if not 0.0 <= split_noise < 0.5:
            raise ValueError(f"split_noise must be in [0, 0.5), got {split_noise}")
        self.split_noise = float(split_noise)

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        keys = self.candidates(ctx)
        if not keys:
            return None
        key = self.pick_layer(ctx, keys)
        first, second = fan_layers(ctx.model, key)
        h = first.out_features
        k = min(self.units_allowed(ctx, key, self.neurons), h)
        if k < 1:
            return None
        units = torch.randperm(h, generator=ctx.generator)[:k]
        ratio = 0.5 + self.split_noise * (2 * torch.rand(second.out_features, k, generator=ctx.generator,
                                                         dtype=torch.float64) - 1)
        w1 = first.weight.detach().double().cpu()
        b1 = first.bias.detach().double().cpu()
        w2 = second.weight.detach().double().cpu()
        fan_in, bias, fan_out, delta = net2wider_split(w1, b1, w2, units, ratio)
        return GrowthProposal("custom", depth=key[0], layer=key[1], k=k, predicted_change=0.0,
                              info={"units": [int(u) for u in units]},
                              payload=(key, fan_in, bias, fan_out, delta))

    def apply(self, ctx: GrowthContext, proposal: GrowthProposal) -> None:
        key, fan_in, bias, fan_out, delta = proposal.payload
        widen_with_update(ctx.model, key, fan_in, bias, fan_out, delta)


__all__ = ["Net2WiderStrategy", "net2wider_split"]

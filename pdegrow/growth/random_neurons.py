"""Random neurons: the baseline of the neuron-adding strategies (TINY, GradMax, folding).

Same schedule, budget and layer choice as they have (:class:`~pdegrow.growth.neurons.NeuronGrowth`);
only *how* is blind: ``neurons`` units with random fan-in (uniform ±1/√fan_in, PyTorch's
default, drawn from the run's strategy generator), bias 0 and fan-out 0 — so the function
is unchanged and the new fan-out gets gradient. Predicted change 0.
"""

from __future__ import annotations

import math

import torch

from pdegrow.growth.base import GrowthContext, GrowthProposal, register_strategy
from pdegrow.growth.neurons import NeuronGrowth, fan_layers


@register_strategy
class RandomNeuronsStrategy(NeuronGrowth):
    """Random fan-in, zero fan-out, in a layer chosen by ``layer_choice``."""

    name = "random_neurons"

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        if (where := self.next_layer(ctx)) is None:
            return None
        key, k = where
        first, second = fan_layers(ctx.model, key)
        bound = 1.0 / math.sqrt(first.in_features)
        u = torch.rand(k, first.in_features, generator=ctx.generator, dtype=torch.float64)
        fan_in = (2 * u - 1) * bound
        return self.widen_proposal(key, fan_in, torch.zeros(k, dtype=torch.float64),
                                   torch.zeros(second.out_features, k, dtype=torch.float64), 0.0, {})


__all__ = ["RandomNeuronsStrategy"]

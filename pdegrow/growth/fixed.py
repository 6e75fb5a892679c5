"""The fixed-architecture baseline: train the configured network until the validation
loss plateaus (early stopping); never grows. Same trainer as every strategy."""

from __future__ import annotations

from typing import Any

from torch import nn

from pdegrow.growth.base import GrowthContext, GrowthProposal, GrowthStrategy, register_strategy


@register_strategy
class FixedStrategy(GrowthStrategy):
    """No growth. Regularizers from ``[regularizers]``: manifold on x_L, sparsity on all blocks."""

    name = "fixed"

    def __init__(self) -> None:
        pass

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        return None

    def loss_terms(self, ctx: GrowthContext) -> list[nn.Module]:
        kit = ctx.regularizers
        if kit is None:
            return []
        terms = [kit.manifold(kit.manifold_weight(0))]
        terms += [kit.sparsity(b) for b in ctx.model.blocks]
        return [t for t in terms if t is not None]

    def state_dict(self) -> dict[str, Any]:
        return {}

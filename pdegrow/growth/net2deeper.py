"""Baseline: Net2DeeperNet (Chen, Goodfellow, Shlens 2016) — insert an identity block.

In a residual network the identity layer is a zero-initialised branch:
x + σ(W x + b) with W = b = 0 and σ(0) = 0 (``activation`` tanh by default,
so σ′(0) = 1 and the new weights receive gradient).  *Where*: at the end
(``position = "end"``, t = L) or at a uniformly random depth (``"random"``).
Unlike Approach I nothing is frozen; unlike Approach II the function is
unchanged at insertion (predicted change 0).
"""

from __future__ import annotations

import torch

from pdegrow.growth.base import GrowthContext, GrowthProposal, GrowthStrategy, register_strategy


@register_strategy
class Net2Deeper(GrowthStrategy):
    """Insert zero-initialised (identity) blocks on plateaus, within the layer/depth/parameter budget."""

    name = "net2deeper"

    def __init__(self, max_layers: int = 10, max_depth: int | None = None, max_params: int | None = None,
                 position: str = "end", block: str = "perceptron", activation: str = "tanh",
                 kernel_size: int = 3):
        if position not in ("end", "random"):
            raise ValueError(f"position must be 'end' or 'random', got {position!r}")
        self.max_layers, self.max_depth, self.max_params = int(max_layers), max_depth, max_params
        self.position, self.block, self.activation = position, block, activation
        self.kernel_size = int(kernel_size)
        self.inserted = 0

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        model = ctx.model
        if self.inserted >= self.max_layers or (self.max_depth is not None and model.depth >= self.max_depth):
            return None
        kind = self.block
        if model.is_conv and "conv" not in kind:
            kind = "conv_perceptron"
        kwargs = {"activation": self.activation, "zero_init": True}
        if model.is_conv:
            kwargs.update(kernel_size=self.kernel_size,
                          padding_mode=getattr(model.lift, "padding_mode", "zeros"))
        block = model.new_block(kind, **kwargs)
        if self.max_params is not None:
            if model.n_parameters() + sum(p.numel() for p in block.parameters()) > self.max_params:
                return None
        t = model.depth
        if self.position == "random":
            t = int(torch.randint(0, model.depth + 1, (1,), generator=ctx.generator))
        return GrowthProposal("insert", depth=t, block=block, predicted_change=0.0)

    def after_growth(self, ctx: GrowthContext, event: object) -> None:
        self.inserted += 1

    def state_dict(self) -> dict[str, int]:
        return {"inserted": self.inserted}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.inserted = int(state.get("inserted", 0))

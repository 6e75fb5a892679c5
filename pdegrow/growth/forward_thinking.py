"""Forward thinking (Hettinger, Christensen, Ehlert, Humpherys, Jarvis, Wade, "Forward Thinking:
Building and Training Neural Networks One Layer at a Time", 2017).

Train one layer at a time: after a phase, every trained layer is frozen and
a new layer is trained on the frozen layers' output, together with the
output layer. In the residual network the new layer is the block
x_{t+1} = x_t + g(x_t), its input the frozen x_t. This is Approach I's
mechanics (:class:`~pdegrow.growth.layerwise.LayerwiseStrategy`) without its
regularizers and without SRL; the new block is an MLP block with a random
first layer and a zero last layer (``new_block(..., zero_init=True)``), so the
function is kept at insertion (the paper re-initialises the output layer —
``reinit_head = true`` does that, and then the function changes).
Stop after ``max_layers`` layers or when a layer's phase improved the best
validation loss by less than ``saturation_tol`` (relative).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from pdegrow.growth.base import GrowthContext, GrowthProposal, register_strategy
from pdegrow.growth.layerwise import LayerwiseStrategy


@register_strategy
class ForwardThinkingStrategy(LayerwiseStrategy):
    """Forward thinking (see the module docstring)."""

    name = "forward_thinking"

    def __init__(self, max_layers: int = 6, saturation_tol: float = 0.0, block: str = "mlp",
                 activation: str = "tanh", hidden: list[int] | None = None, reinit_head: bool = False):
        super().__init__(max_layers=max_layers, saturation_tol=saturation_tol, block=block,
                         activation=activation, hidden=hidden, train_head=True, srl_steps=0,
                         prune=False)  # no regularizers, no pruning
        self.reinit_head = bool(reinit_head)

    def apply(self, ctx: GrowthContext, proposal: GrowthProposal) -> None:
        super().apply(ctx, proposal)
        if self.reinit_head and proposal.action == "insert":
            for m in ctx.model.head.modules():
                if hasattr(m, "reset_parameters") and m is not ctx.model.head:
                    m.reset_parameters()

    def loss_terms(self, ctx: GrowthContext) -> list[nn.Module]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict()

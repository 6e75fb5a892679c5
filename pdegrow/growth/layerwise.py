"""Approach I — layerwise training, then sequential residual learning (SRL).

Krishnanunni & Bui-Thanh, "Layerwise training of deep neural networks …",
arXiv 2211.06860 (CMAME 2025):

1. train the initial network;
2. freeze the lift and every trained block (the head stays trainable unless
   ``train_head = false``), append the block x + σ(W x + b) with W = b = 0 —
   the exact identity, so the loss is unchanged at insertion (predicted change 0);
3. train it with the manifold regularizer on its output N⁽ˡ⁾ (weight w₀·factor^l,
   the papers' ×0.5 / ×1.5 schedule), ℓ¹ sparsity on its weights, and the global
   physics terms; prune |w| < tol when its phase ends;
4. repeat until the validation loss saturates: the best validation loss of a
   new phase improved on the previous one by less than ``saturation_tol``
   (relative), or ``max_layers`` blocks were added;
5. SRL (``srl_steps`` > 0): freeze everything; fit small networks Q_j in turn
   to y − N(x) − Σ_{i<j} Q_i(x) (the data loss of the sum with only Q_j
   trainable is exactly that fit); Q_j's output is scaled by the RMS of the
   residual it starts from; stop when an SRL step saturates or after ``srl_steps``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pdegrow.errors import PdegrowError
from pdegrow.growth.base import (
    GrowthContext,
    GrowthProposal,
    GrowthStrategy,
    apply_proposal,
    register_strategy,
)
from pdegrow.models.blocks import ConvCorrector, MLPCorrector, block_options


def _saturated(bests: list[float], tol: float) -> bool:
    """The newest phase improved the previous best validation loss by less than ``tol`` (relative)."""
    if len(bests) < 2:
        return False
    prev, cur = bests[-2], bests[-1]
    return (prev - cur) < tol * abs(prev)


@register_strategy
class LayerwiseStrategy(GrowthStrategy):
    """Approach I with optional SRL (see the module docstring)."""

    name = "layerwise"

    def __init__(self, max_layers: int = 10, saturation_tol: float = 0.01, block: str = "perceptron",
                 activation: str = "tanh", hidden: list[int] | None = None, train_head: bool = True,
                 srl_steps: int = 0, srl_hidden: list[int] | None = None, srl_activation: str = "tanh",
                 srl_saturation_tol: float = 0.01, prune: bool = True):
        self.max_layers, self.saturation_tol = int(max_layers), float(saturation_tol)
        self.block, self.activation, self.hidden = block, activation, list(hidden or [])
        if self.hidden and "hidden" not in block_options(block):
            raise PdegrowError(f"[growth] hidden = {self.hidden}: block {block!r} has no hidden layers "
                               "(use block = 'mlp' or 'conv', or leave hidden out)")
        self.train_head, self.prune = bool(train_head), bool(prune)
        self.srl_steps, self.srl_hidden = int(srl_steps), list(srl_hidden or [32, 32])
        self.srl_activation, self.srl_saturation_tol = srl_activation, float(srl_saturation_tol)
        self.added = 0            # blocks added so far
        self.correctors = 0       # SRL networks added so far
        self.stage = "layers"     # "layers" → "srl" → "done"
        self.layer_phases = 0     # finished phases of the layer stage (initial one included)
        self.pruned: list[int] = []

    # -- when: the default (phase plateau or max epochs) --

    def prepare(self, ctx: GrowthContext) -> GrowthProposal | None:
        """Prune |w| < ``prune_tol`` in the block just trained, before the next is proposed."""
        kit = ctx.regularizers
        if (self.stage == "layers" and self.added > 0 and self.prune and kit is not None
                and kit.cfg.prune_tol > 0):
            return GrowthProposal("prune", depth=ctx.model.depth - 1, predicted_change=None,
                                  info={"prune_tol": kit.cfg.prune_tol})
        return None

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        bests = ctx.state.phase_best_vals
        if self.stage == "layers":
            self.layer_phases += 1
            layer_bests = bests[:self.layer_phases]
            if self.added < self.max_layers and not (self.added > 0 and
                                                     _saturated(layer_bests, self.saturation_tol)):
                kwargs: dict[str, Any] = {"activation": self.activation}
                if self.hidden:
                    kwargs["hidden"] = self.hidden
                kind = self.block
                if ctx.model.is_conv and kind == "perceptron":
                    kind = "conv_perceptron"
                block = ctx.model.new_block(kind, zero_init=True, **kwargs)
                return GrowthProposal("insert", depth=ctx.model.depth, block=block, predicted_change=0.0,
                                      info={"layer": self.added + 1})
            self.stage = "srl" if self.srl_steps > 0 else "done"
        if self.stage == "srl":
            if self.correctors >= self.srl_steps or (
                    self.correctors > 0 and _saturated(bests, self.srl_saturation_tol)):
                self.stage = "done"
            else:
                scale = self._residual_rms(ctx)
                if ctx.model.is_conv:
                    lift = ctx.model.lift   # a 3-D net's corrector reads the input as its lift does
                    q = ConvCorrector(ctx.data.input_shape[0], ctx.data.target_shape[0], self.srl_hidden,
                                      activation=self.srl_activation, scale=scale,
                                      padding_mode=getattr(lift, "padding_mode", "zeros"),
                                      spatial_dims=getattr(lift, "spatial_dims", 2),
                                      levels=getattr(lift, "levels", 0))
                else:
                    q = MLPCorrector(int(torch.tensor(ctx.data.input_shape).prod()),
                                     list(ctx.data.target_shape), self.srl_hidden, self.srl_activation,
                                     scale=scale)
                q.zero_init()
                return GrowthProposal("corrector", block=q, predicted_change=0.0,
                                      info={"corrector": self.correctors + 1, "residual_rms": scale})
        return None

    @staticmethod
    @torch.no_grad()
    def _residual_rms(ctx: GrowthContext) -> float:
        total, count = 0.0, 0
        for batch in ctx.train_batches():
            r = batch.targets - ctx.model(batch.inputs)
            total += float(r.double().pow(2).sum())
            count += r.numel()
        return max((total / max(count, 1)) ** 0.5, 1e-6)

    def apply(self, ctx: GrowthContext, proposal: GrowthProposal) -> None:
        model = ctx.model
        if proposal.action == "prune":
            assert ctx.regularizers is not None and proposal.depth is not None
            self.pruned.append(ctx.regularizers.prune(model.blocks[proposal.depth]))
            proposal.info["weights_pruned"] = self.pruned[-1]
        elif proposal.action == "insert":
            model.freeze("lift")
            model.freeze("blocks")
            model.freeze("correctors")
            (model.unfreeze if self.train_head else model.freeze)("head")
            apply_proposal(model, proposal)
            self.added += 1
        else:
            model.freeze("all")
            apply_proposal(model, proposal)
            self.correctors += 1

    def loss_terms(self, ctx: GrowthContext) -> list[nn.Module]:
        kit = ctx.regularizers
        if kit is None or self.stage != "layers":
            return []
        terms = [kit.manifold(kit.manifold_weight(self.added))]
        if self.added > 0:
            terms.append(kit.sparsity(ctx.model.blocks[-1]))
        return [t for t in terms if t is not None]

    def state_dict(self) -> dict[str, Any]:
        return {"added": self.added, "correctors": self.correctors, "stage": self.stage,
                "layer_phases": self.layer_phases, "pruned": list(self.pruned)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.added, self.correctors = int(state["added"]), int(state["correctors"])
        self.stage, self.layer_phases = str(state["stage"]), int(state["layer_phases"])
        self.pruned = list(state.get("pruned", []))

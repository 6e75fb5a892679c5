"""Baseline for Approach II: insert an admissible block at a random depth with random rows.

Same block family σ(ε(W x + b)) (σ = silu_tanh), same ε line search and
budget as :class:`~pdegrow.growth.topological_insertion.TopologicalInsertion`;
only *where* (uniform over 0 … L, from the run's strategy generator) and *how*
(W̃ rows i.i.d. Gaussian, each of unit norm, like the eigenvector rows) differ —
the comparison isolates what the topological derivative contributes.
Predicted change: −(ε²/2) Σ_r w̃_rᵀ A_r w̃_r is not computed (None).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from pdegrow.growth.base import GrowthContext, GrowthProposal, register_strategy
from pdegrow.growth.topological import ProposedRows
from pdegrow.growth.topological_insertion import (
    TopologicalInsertion,
    admissible_block,
    fold_scale,
    search_block_scale,
)


@register_strategy
class RandomInsertion(TopologicalInsertion):
    """Random depth, random unit rows, ε by line search (``trigger`` = plateau only)."""

    name = "random_insertion"

    def __init__(self, max_layers: int = 10, max_depth: int | None = None, max_params: int | None = None,
                 kernel_size: int = 3, eps_init: float = 0.1, line_search_evals: int = 16,
                 refine_steps: int = 4, fold: bool = True, freeze_old: bool = False):
        super().__init__(max_layers=max_layers, max_depth=max_depth, max_params=max_params,
                         kernel_size=kernel_size, line_search_evals=line_search_evals,
                         refine_steps=refine_steps, fold=fold, freeze_old=freeze_old)
        self.eps_init = float(eps_init)

    def when(self, ctx: GrowthContext) -> bool:
        s = ctx.state
        return s.plateau or s.phase_epoch >= s.max_phase_epochs

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        if not self._budget_left(ctx):
            return None
        t0 = time.perf_counter()
        model = ctx.model
        t = int(torch.randint(0, model.depth + 1, (1,), generator=ctx.generator))
        w = model.stream_width
        fan_in = w * self.kernel_size**2 if model.is_conv else w
        rows = torch.randn(w, fan_in + 1, generator=ctx.generator, dtype=torch.float64)
        rows = rows / rows.norm(dim=1, keepdim=True)
        proposed = ProposedRows(rows[:, :-1].float(), rows[:, -1].float(), torch.ones(w, dtype=torch.bool),
                                float("nan"), torch.full((w,), float("nan")))
        block = admissible_block(model, proposed, 0.0, self.kernel_size)
        ls = search_block_scale(ctx, block, t, self.eps_init, self.line_search_evals, self.refine_steps)
        if self.fold:
            fold_scale(block)
        info: dict[str, Any] = {"eps": ls.eps, "line_search_change": ls.loss - ls.loss0,
                                "line_search_evals": len(ls.evaluations),
                                "proposal_s": round(time.perf_counter() - t0, 4)}
        if not math.isfinite(ls.loss):
            return None
        return GrowthProposal("insert", depth=t, block=block, predicted_change=None, info=info)

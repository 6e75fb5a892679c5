"""Baseline for Approach II: insert an admissible block at a random depth with random rows.

Same block family σ(ε(W x + b)) (σ = silu_tanh), same choice of ε and the same
budget as :class:`~pdegrow.growth.topological_insertion.TopologicalInsertion`;
only *where* (uniform over 0 … L, from the run's strategy generator) and *how*
(W̃ rows i.i.d. Gaussian, each of unit norm, like the eigenvector rows) differ —
the comparison isolates what the topological derivative contributes.

The second-order coefficient C = Σ_r w̃_rᵀ A_r w̃_r of the random rows is
computed from the states and costates at the drawn depth (one forward +
backward pass), so ε comes from the same second-order model and the
predicted change −(ε²/2)·C is logged as for Approach II.  A draw is
**rejected and re-drawn** (depth and rows, at most ``max_draws`` times) when
C ≤ 0 (no ε decreases the loss at second order), when its decrease is not
significant (``min_significance``, default 0: any positive C), or when no ε
decreases the loss: a block with ε = 0 would stay at zero forever, since
σ′(0) = 0 gives its weights no gradient.  When every draw is rejected,
growth ends.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from pdegrow.growth.base import GrowthContext, GrowthProposal, register_strategy
from pdegrow.growth.stored_states import EVAL_ELEMENTS, large_batches
from pdegrow.growth.topological import ProposedRows
from pdegrow.growth.topological_insertion import (
    TopologicalInsertion,
    admissible_block,
    fold_scale,
    model_depth_operators,
    search_info,
)


def random_rows(n_out: int, fan_in: int, generator: torch.Generator) -> ProposedRows:
    """n_out rows [W_r, b_r] of length fan_in + 1, i.i.d. Gaussian, each of unit norm."""
    rows = torch.randn(n_out, fan_in + 1, generator=generator, dtype=torch.float64)
    rows = rows / rows.norm(dim=1, keepdim=True)
    return ProposedRows(rows[:, :-1].float(), rows[:, -1].float(), torch.ones(n_out, dtype=torch.bool),
                        float("nan"), torch.full((n_out,), float("nan")))


@register_strategy
class RandomInsertion(TopologicalInsertion):
    """Random depth, random unit rows, ε as for Approach II (``trigger`` = plateau only)."""

    name = "random_insertion"

    def __init__(self, max_layers: int = 10, max_depth: int | None = None, max_params: int | None = None,
                 kernel_size: int = 3, eps_target_decrease: float = 0.01, max_preactivation: float = 1.0,
                 ratio_min: float = 0.5, min_significance: float = 0.0, line_search_evals: int = 8,
                 max_draws: int = 10, eval_elements: int = EVAL_ELEMENTS, fold: bool = True,
                 freeze_old: bool = False):
        super().__init__(max_layers=max_layers, max_depth=max_depth, max_params=max_params,
                         kernel_size=kernel_size, eps_target_decrease=eps_target_decrease,
                         max_preactivation=max_preactivation, ratio_min=ratio_min,
                         min_significance=min_significance, line_search_evals=line_search_evals,
                         eval_elements=eval_elements, fold=fold, freeze_old=freeze_old)
        if max_draws < 1:
            raise ValueError(f"max_draws must be ≥ 1, got {max_draws}")
        self.max_draws = int(max_draws)

    def when(self, ctx: GrowthContext) -> bool:
        s = ctx.state
        return s.plateau or s.phase_epoch >= s.max_phase_epochs

    def end_reason(self, ctx: GrowthContext) -> str:
        budget = self._budget_end(ctx)
        return budget if budget is not None else f"no admissible block in {self.max_draws} draws"

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        if not self._budget_left(ctx):
            return None
        t0, c0 = time.perf_counter(), time.process_time()
        model = ctx.model
        batches = large_batches(ctx, self.eval_elements)
        w = model.stream_width
        fan_in = w * self.kernel_size**model.spatial_dims if model.is_conv else w
        passes: dict[int, tuple[Any, float]] = {}  # depth → (states, costates), J (one pass per depth)
        rejected: list[dict[str, Any]] = []
        for draw in range(self.max_draws):
            t = int(torch.randint(0, model.depth + 1, (1,), generator=ctx.generator))
            rows = random_rows(w, fan_in, ctx.generator)
            if t not in passes:
                ops, j = model_depth_operators(ctx, mode="features", kernel_size=self.kernel_size,
                                               batches=batches, depths=[t])
                passes[t] = (ops[0].features, j)
            features, j0 = passes[t]
            block = admissible_block(model, rows, 0.0, self.kernel_size)
            search = self._search(ctx, block, t, batches, features, j0)
            ok = (search.choice is not None and search.choice.eps != 0.0
                  and search.significance >= self.min_significance)
            if not ok:
                rejected.append({"depth": t, "coefficient": search.coefficient,
                                 "significance": search.significance,
                                 "eps": None if search.choice is None else search.choice.eps})
                continue
            if self.fold:
                fold_scale(block)
            info: dict[str, Any] = {"depth": t, "draws": draw + 1, "rejected": rejected,
                                    **search_info(search),
                                    "proposal_s": round(time.perf_counter() - t0, 4),
                                    "proposal_cpu_s": round(time.process_time() - c0, 4)}
            return GrowthProposal("insert", depth=t, block=block, predicted_change=search.choice.predicted,
                                  info=info)
        return None

"""The scale ε of an inserted admissible block, chosen from the stored states of the derivative pass.

For the block σ(ε(W x + b)) at depth t (Krishnanunni, Bui-Thanh, Dawson, arXiv 2502.06885;
``docs/growth.md``) the second-order change of the training loss is −(ε²/2)·C with
C = Σ_s c_s, c_s = σ″(0) Σ_r λ_{s,r} z_{s,r}², z = W x̃_t; :func:`search_block_epsilon` computes C
and its significance from the stored states and costates of the pass, bounds ε so that every
pre-activation stays where σ is near its quadratic term, and chooses ε by
:func:`~pdegrow.growth.line_search.choose_epsilon` with each loss evaluated from the stored x_t
(:mod:`pdegrow.growth.stored_states`); with several processes every sum is all-reduced.
Used by topological and random insertion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pdegrow.growth.base import GrowthContext
from pdegrow.growth.stored_states import loss_from_states, split_rows
from pdegrow.growth.topological import (
    EpsilonChoice,
    choose_epsilon,
    contribution_statistics,
    epsilon_bound,
    second_order_contributions,
    statistics_from_sums,
)

if TYPE_CHECKING:
    from pdegrow.training.collective import Collective

__all__ = ["BlockSearch", "block_preactivations", "search_block_epsilon", "search_info"]


def block_preactivations(block: nn.Module, x: Tensor) -> Tensor:
    """z = W x̃ of the block's layer at scale 1 (vectors (S, n), fields (S, C, H, W))."""
    with torch.no_grad():
        return block.last_layer()(x)  # type: ignore[operator]


@dataclass
class BlockSearch:
    """A block's second-order coefficient, its significance and the ε chosen for it at one depth."""

    coefficient: float
    standard_error: float
    significance: float
    choice: EpsilonChoice | None      # None when the coefficient is not positive


def search_block_epsilon(
    ctx: GrowthContext, block: nn.Module, depth: int, batches: list[Any], features: tuple[Tensor, Tensor], *,
    loss0: float, target_decrease: float, max_preactivation: float, ratio_min: float, max_evals: int,
    collective: Collective | None = None,
) -> BlockSearch:
    """C = Σ_s c_s of ``block``'s rows at ``depth`` from the stored (x_t, λ_t), and ε by
    :func:`~pdegrow.growth.topological.choose_epsilon`, each loss evaluated from the stored x_t.

    With ``collective`` (several processes) ``batches`` and ``features`` are this process's share:
    C, its standard error, the bound on ε and every loss are those of the whole training set
    (sums all-reduced, max |z| gathered), so every process chooses the same ε.
    On return the block holds the chosen ε (0 when none decreases the loss or C ≤ 0).
    """
    x, lam = features
    z = block_preactivations(block, x)
    contributions = second_order_contributions(z, lam)
    reduce = None if collective is None else collective.all_reduce_tensors
    if reduce is None:
        coef, se, t = contribution_statistics(contributions)
    else:
        sums = torch.stack([contributions.sum(), contributions.pow(2).sum(),
                            torch.tensor(float(contributions.numel()), dtype=torch.float64)])
        reduce([sums])
        coef, se, t = statistics_from_sums(float(sums[0]), float(sums[1]), int(round(float(sums[2]))))
    choice = None
    if coef > 0 and math.isfinite(coef):
        states = split_rows(x, batches)
        if collective is None:
            eps_max = epsilon_bound(z, max_preactivation)
        else:
            zmax = max(collective.gather(float(z.abs().max()) if z.numel() else 0.0))
            eps_max = math.inf if zmax == 0.0 else float(max_preactivation) / zmax

        def loss_at(eps: float) -> float:
            block.scale.fill_(eps)  # type: ignore[union-attr]
            return loss_from_states(ctx, depth, batches, states, block, reduce=reduce)

        choice = choose_epsilon(loss_at, coef, loss0=loss0, target_decrease=target_decrease, eps_max=eps_max,
                                ratio_min=ratio_min, max_evals=max_evals)
    with torch.no_grad():
        block.scale.fill_(choice.eps if choice is not None else 0.0)  # type: ignore[union-attr]
    return BlockSearch(coef, se, t, choice)


def search_info(search: BlockSearch) -> dict[str, Any]:
    """The ``info`` entries of an insertion: which change is predicted, which realised, and how sure."""
    c = search.choice
    out: dict[str, Any] = {"coefficient": search.coefficient, "coefficient_se": search.standard_error,
                           "significance": search.significance}
    if c is not None:
        out.update({
            "eps": c.eps, "eps_start": c.eps_start, "eps_max": c.eps_max,
            "predicted_change": c.predicted,            # −(ε²/2)·C at the chosen ε (second order)
            "realised_change_at_eps": c.realised,       # J(Ω_ε) − J(Ω₀) at the chosen ε
            "line_search_change": c.realised,
            "ratio": c.ratio, "quadratic_valid": c.valid,
            "line_search_evals": len(c.evaluations),
            "eps_trials": [[e, d] for e, d in c.evaluations],
        })
    return out

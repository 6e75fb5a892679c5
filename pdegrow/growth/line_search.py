"""Choosing the scale ε of a new block or neuron: the second-order model, its trust region, a line search.

Growth methods that add parameters along a direction (an inserted block σ(ε(Wx + b)), new
neurons of amplitude ε) predict the loss change by a second-order model
J(ε) − J(0) ≈ −(ε²/2)·C (:func:`predicted_change`; ``docs/growth.md``). :func:`choose_epsilon`
starts where that model predicts a set decrease and :func:`trust_region_scale` grows or shrinks
ε while the realised change agrees with the model; :func:`line_search_epsilon` minimises
ε ↦ J(ε) directly (bracketing + golden section). Pure functions of a loss callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

__all__ = ["EpsilonChoice", "LineSearchResult", "choose_epsilon", "epsilon_bound", "line_search_epsilon",
           "predicted_change", "trust_region_scale"]


def predicted_change(eps: float, coefficient: float) -> float:
    """Second-order prediction J(Ω_ε) − J(Ω₀) ≈ −(ε²/2)·Σ_r λ_r."""
    return -0.5 * eps * eps * coefficient


def epsilon_bound(z: Tensor, max_preactivation: float) -> float:
    """Largest |ε| with |ε z_{s,r}| ≤ ``max_preactivation`` for every sample, unit and position.

    σ(u) = u²/2 + u³/3 − u⁴/24 + … for σ = 2·SiLU − tanh: the second-order model
    is accurate while |u| = |ε z| is small (the cubic term is 1/3 of the
    quadratic one at |u| = 0.5 and 2/3 at |u| = 1); the bound keeps ε where that
    model can be trusted (inf when z ≡ 0).
    """
    zmax = float(z.detach().abs().max()) if z.numel() else 0.0
    return math.inf if zmax == 0.0 else float(max_preactivation) / zmax


@dataclass
class EpsilonChoice:
    """ε chosen from the second-order model and checked against the realised change.

    ``predicted`` = −(ε²/2)·C and ``realised`` = J(Ω_ε) − J(Ω₀) at the chosen ε,
    ``ratio`` = realised/predicted there, ``valid``: the ratio lies in
    [ratio_min, 1/ratio_min] (the second-order model holds at ε);
    ``evaluations`` every (ε, J(Ω_ε) − J(Ω₀)) tried; ε = 0 when no ε decreased the loss.
    """

    eps: float
    predicted: float
    realised: float
    ratio: float
    valid: bool
    eps_start: float
    eps_max: float
    evaluations: list[tuple[float, float]]


def choose_epsilon(
    loss_at: Callable[[float], float],
    coefficient: float,
    *,
    loss0: float,
    target_decrease: float,
    eps_max: float = math.inf,
    ratio_min: float = 0.5,
    growth: float = 2.0,
    max_evals: int = 8,
) -> EpsilonChoice:
    """ε of an inserted block from the second-order model J(Ω_ε) − J(Ω₀) ≈ −(ε²/2)·C, checked.

    Start where the model predicts a decrease of ``target_decrease``·|J₀|:
    ε₀ = min(√(2·target·|J₀|/C), ε_max); try both signs (the second-order term
    is even in ε, the cubic one is not) and keep the better one; then
    :func:`trust_region_scale`.
    """
    if not (coefficient > 0 and math.isfinite(coefficient)):
        raise ValueError(f"the second-order coefficient must be positive and finite, got {coefficient}")
    start = math.sqrt(2.0 * target_decrease * max(abs(loss0), 1e-30) / coefficient)
    return trust_region_scale(loss_at, lambda e: predicted_change(e, coefficient), loss0=loss0, start=start,
                              scale_max=eps_max, ratio_min=ratio_min, growth=growth, max_evals=max_evals,
                              both_signs=True)


def trust_region_scale(
    loss_at: Callable[[float], float],
    predicted_at: Callable[[float], float],
    *,
    loss0: float,
    start: float,
    scale_max: float = math.inf,
    ratio_min: float = 0.5,
    growth: float = 2.0,
    max_evals: int = 8,
    both_signs: bool = False,
) -> EpsilonChoice:
    """The scale s of a growth step from a local model ``predicted_at(s)`` ≈ J(s) − J(0) < 0, checked.

    From s₀ = min(``start``, ``scale_max``) (and −s₀ with ``both_signs``, keeping
    the better sign), a trust region on the ratio ρ = realised/predicted:
    while ρ ∈ [ρ_min, 1/ρ_min] and the loss still decreases, grow s by
    ``growth`` (never beyond ``scale_max``); while ρ is outside, shrink s by
    ``growth``.  The chosen s has the lowest loss among the evaluations where
    the model held (else among those that decreased the loss at all, flagged
    ``valid = False``; else s = 0).  ≤ ``max_evals`` evaluations of ``loss_at``
    (s = 0 is ``loss0``, not evaluated).  Unlike a line search for the minimum of
    the training loss, the step stays where the model that proposed it holds.
    """
    if not 0.0 < ratio_min < 1.0:
        raise ValueError(f"ratio_min must be in (0, 1), got {ratio_min}")
    if not (scale_max > 0):
        raise ValueError(f"the scale bound must be positive, got {scale_max}")
    if not (start > 0 and math.isfinite(start)):
        raise ValueError(f"the start scale must be positive and finite, got {start}")
    s0 = min(start, scale_max)
    evals: list[tuple[float, float]] = []

    def realised(e: float) -> float:
        v = float(loss_at(e))
        d = v - loss0 if math.isfinite(v) else math.inf
        evals.append((e, d))
        return d

    def ok(e: float, d: float) -> bool:
        pred = predicted_at(e)
        if not pred < 0:
            return False
        r = d / pred
        return ratio_min <= r <= 1.0 / ratio_min

    budget = max(2 if both_signs else 1, int(max_evals))
    d = realised(s0)
    sign = 1.0
    if both_signs:
        d_neg = realised(-s0)
        if d_neg < d:
            sign, d = -1.0, d_neg
    e = s0
    budget -= 2 if both_signs else 1
    if ok(sign * e, d):
        while budget > 0 and e < scale_max:
            e2 = min(e * growth, scale_max)
            d2 = realised(sign * e2)
            budget -= 1
            if not (d2 < d and ok(sign * e2, d2)):
                break
            e, d = e2, d2
    else:
        while budget > 0 and not ok(sign * e, d):
            e = e / growth
            d = realised(sign * e)
            budget -= 1
    valid = [(x, v) for x, v in evals if v < 0 and ok(x, v)]
    decreasing = [(x, v) for x, v in evals if v < 0]
    pool = valid or decreasing
    if not pool:
        return EpsilonChoice(0.0, 0.0, 0.0, math.nan, False, s0, scale_max, evals)
    best_e, best_d = min(pool, key=lambda p: p[1])
    pred = predicted_at(best_e)
    return EpsilonChoice(best_e, pred, best_d, best_d / pred, bool(valid), s0, scale_max, evals)


@dataclass
class LineSearchResult:
    """Chosen ε, loss there, the loss at ε = 0 and every (ε, loss) evaluated."""

    eps: float
    loss: float
    loss0: float
    evaluations: list[tuple[float, float]]


def line_search_epsilon(
    loss_at: Callable[[float], float],
    *,
    eps_init: float,
    growth: float = 2.0,
    max_evals: int = 24,
    both_signs: bool = True,
    refine_steps: int = 6,
) -> LineSearchResult:
    """Minimise ε ↦ J(Ω_ε) along the proposed direction by bracketing and golden-section refinement.

    From ``eps_init`` the step grows by ``growth`` while the loss decreases (or
    shrinks while it does not improve on J(Ω₀)); both signs of ε are tried
    (the second-order term is even in ε, higher orders are not).  The bracket
    [ε/growth, ε·growth] of the best point is refined by golden section.  If
    nothing beats ε = 0 the result is ε = 0.  Costs ≤ ``max_evals`` + 2·``refine_steps`` loss evaluations.
    """
    if not (eps_init > 0 and math.isfinite(eps_init)):
        raise ValueError(f"eps_init must be positive and finite, got {eps_init}")
    if growth <= 1.0:
        raise ValueError(f"growth must be > 1, got {growth}")
    loss0 = float(loss_at(0.0))
    evals: list[tuple[float, float]] = [(0.0, loss0)]

    def f(e: float) -> float:
        v = float(loss_at(e))
        if not math.isfinite(v):
            v = math.inf
        evals.append((e, v))
        return v

    best_e, best_v = 0.0, loss0
    budget = max_evals
    for sign in (1.0, -1.0) if both_signs else (1.0,):
        e = sign * eps_init
        v = f(e)
        budget -= 1
        if v < loss0:
            while budget > 0:
                e2 = e * growth
                v2 = f(e2)
                budget -= 1
                if v2 >= v:
                    break
                e, v = e2, v2
        else:
            while budget > 0 and v >= loss0:
                e = e / growth
                v = f(e)
                budget -= 1
                if abs(e) < 1e-12 * eps_init:
                    break
        if v < best_v:
            best_e, best_v = e, v
    if best_e != 0.0 and refine_steps > 0:
        a, b = best_e / growth, best_e * growth
        gr = (math.sqrt(5.0) - 1.0) / 2.0
        c, d = b - gr * (b - a), a + gr * (b - a)
        fc, fd = f(c), f(d)
        for _ in range(refine_steps):
            if fc < fd:
                b, d, fd = d, c, fc
                c = b - gr * (b - a)
                fc = f(c)
            else:
                a, c, fc = c, d, fd
                d = a + gr * (b - a)
                fd = f(d)
        for e, v in ((c, fc), (d, fd)):
            if v < best_v:
                best_e, best_v = e, v
    return LineSearchResult(best_e, best_v, loss0, evals)

"""Topological derivative for inserting a residual block (Approach II).

Krishnanunni, Bui-Thanh, Dawson, "Topological derivative approach for deep
neural network architecture adaptation", arXiv 2502.06885; ``docs/growth.md``.

Setting.  A residual network x_{t+1} = x_t + g_{t+1}(x_t), t = 0…L−1, output
head(x_L), training loss J averaged over the S training samples.  Inserting
at depth t (between x_t and g_{t+1}) the block

    g(x; ε, W, b) = σ(ε(W x + b)),     σ(0) = σ′(0) = 0, σ″(0) = 1,

(here σ(z) = 2·SiLU(z) − tanh(z)) changes x_t by σ(ε z) = (ε²/2) σ″(0) z² + O(ε³),
z = W x_t + b = W̃ x̃_t with x̃ = [x; 1].  With the costate
λ_s = −∂J/∂x_{t,s} (J including its 1/S average),

    J(Ω_ε) − J(Ω₀) = −(ε²/2) Σ_r w̃_rᵀ A_r w̃_r + O(ε³),
    A_r = σ″(0) Σ_s λ_{s,r} x̃_s x̃_sᵀ     (one (n+1)×(n+1) block per output unit r).

The topological derivative at depth t is the largest algebraic eigenvalue over
all blocks, the insertion depth t* = argmax_t, and the new block's rows are
the top eigenvectors w̃_r of the blocks whose top eigenvalue exceeds a
fraction of the largest (unit norm; the other rows are zero); then the
predicted change is −(ε²/2) Σ_{r selected} λ_r and ε comes from a line
search on the loss.

Convolutional blocks σ(ε(conv(x; W) + b)) with 'same' padding: the same with
x̃ the unfolded k×k patches (C·k² + 1 entries) and the sum over samples and
positions.  The matrix-free product for all r at once is a convolution and
a weight-gradient convolution, so patches are never unfolded there.

This module holds pure functions on tensors and small modules; the growth
strategy that drives a model lives elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pdegrow.growth.capture import leaf as _leaf
from pdegrow.growth.eigensolvers import TopEigenpairs
from pdegrow.growth.line_search import (  # noqa: F401  (re-exported: moved there)
    EpsilonChoice,
    LineSearchResult,
    choose_epsilon,
    epsilon_bound,
    line_search_epsilon,
    predicted_change,
    trust_region_scale,
)
from pdegrow.growth.topological_operators import (  # noqa: F401  (re-exported: moved there)
    SIGMA_SECOND_DERIVATIVE,
    BlockOperator,
    ConvFeatureOperator,
    DenseFeatureOperator,
    DepthOperator,
    Reduce,
    accumulate_operators,
    augment,
    choose_method,
    conv_patches,
    form_blocks,
    top_eigenpairs,
)
from pdegrow.models.activations import SiLUTanh, silu_tanh

__all__ = [
    "SIGMA_SECOND_DERIVATIVE",
    "AdmissibleActivation",
    "BlockOperator",
    "ConvFeatureOperator",
    "DenseFeatureOperator",
    "DepthOperator",
    "EpsilonChoice",
    "LineSearchResult",
    "ProposedRows",
    "accumulate_depth_operators",
    "admissible_activation",
    "augment",
    "choose_epsilon",
    "choose_method",
    "collect_depth_operators",
    "contribution_statistics",
    "conv_patches",
    "epsilon_bound",
    "form_blocks",
    "line_search_epsilon",
    "predicted_change",
    "rows_from_eigenpairs",
    "second_order_contributions",
    "states_and_costates",
    "statistics_from_sums",
    "top_eigenpairs",
    "topological_derivatives",
    "trust_region_scale",
]



# --------------------------------------------------------------------------- activation


admissible_activation = silu_tanh
"""σ(z) = 2·SiLU(z) − tanh(z) (:func:`pdegrow.models.activations.silu_tanh`): σ(0) = σ′(0) = 0, σ″(0) = 1."""
AdmissibleActivation = SiLUTanh


# --------------------------------------------------------------------------- states and costates

StatesFn = Callable[[Tensor], tuple[Sequence[Tensor], Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]


def states_and_costates(
    states_fn: StatesFn,
    loss_fn: LossFn,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    depths: Sequence[int] | None = None,
) -> tuple[list[Tensor], list[Tensor], float]:
    """States x_t and costates λ_t = −∂J/∂x_t of every sample, one forward + backward per batch.

    ``states_fn(inputs)`` returns (states [x_0 … x_L], output) with every state
    a node of the autograd graph from which the rest of the network is
    computed (so ∂/∂x_t is the derivative of J through everything downstream
    of depth t).  ``loss_fn(output, target)`` is the batch *mean* of the
    per-sample loss, so J = (1/S) Σ_batches B·loss_batch; λ carries that 1/S.
    Returns (states per depth (S, …), costates per depth (S, …), J).
    Memory O(S·n) per depth; see :func:`collect_depth_operators` for the
    accumulated (n, d, d) alternative.
    """
    xs: list[list[Tensor]] = []
    ls: list[list[Tensor]] = []
    total = 0
    loss_sum = 0.0
    for inputs, target in batches:
        with torch.enable_grad():
            states, output = states_fn(_leaf(inputs))
            sel = list(range(len(states))) if depths is None else list(depths)
            chosen = [states[t] for t in sel]
            loss = loss_fn(output, target)
            b = inputs.shape[0]
            grads = torch.autograd.grad(loss * b, chosen, allow_unused=True)
        if not xs:
            xs = [[] for _ in sel]
            ls = [[] for _ in sel]
        for i, (x, g) in enumerate(zip(chosen, grads, strict=True)):
            xs[i].append(x.detach())
            ls[i].append(torch.zeros_like(x).detach() if g is None else -g.detach())
        total += b
        loss_sum += float(loss.detach()) * b
    if total == 0:
        raise ValueError("no training data: the batch iterable was empty")
    states_out = [torch.cat(x) for x in xs]
    costates = [torch.cat(g) / total for g in ls]
    return states_out, costates, loss_sum / total


def collect_depth_operators(
    states_fn: StatesFn,
    loss_fn: LossFn,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    mode: str = "auto",
    kernel_size: int = 3,
    padding_mode: str = "zeros",
    depths: Sequence[int] | None = None,
    sigma2: float = SIGMA_SECOND_DERIVATIVE,
) -> tuple[list[DepthOperator], float]:
    """The operator {A_r} at every candidate depth from one pass over the data.

    ``states_fn(inputs)`` → (states [x_0 … x_L], output), ``loss_fn(output, target)``
    the batch mean, as in :func:`states_and_costates`.  See
    :func:`accumulate_depth_operators` for ``mode`` and the result.
    """

    def passes() -> Iterator[tuple[Sequence[Tensor], Tensor, int]]:
        for inputs, target in batches:
            with torch.enable_grad():
                states, output = states_fn(_leaf(inputs))
                loss = loss_fn(output, target)
            yield states, loss, int(inputs.shape[0])

    return accumulate_depth_operators(
        passes(), mode=mode, kernel_size=kernel_size, padding_mode=padding_mode, depths=depths, sigma2=sigma2
    )


def accumulate_depth_operators(
    passes: Iterable[tuple[Sequence[Tensor], Tensor, int]],
    *,
    mode: str = "auto",
    kernel_size: int = 3,
    padding_mode: str = "zeros",
    depths: Sequence[int] | None = None,
    sigma2: float = SIGMA_SECOND_DERIVATIVE,
    keep_features: bool = False,
    reduce: Reduce | None = None,
) -> tuple[list[DepthOperator], float]:
    """Accumulate {A_r} per depth from per-batch (states, batch-mean loss, batch size).

    Each item of ``passes`` is a forward pass still holding its graph: the
    states x_0 … x_L (graph nodes) and the batch's mean loss; λ_t = −∂J/∂x_t
    with J = (1/S) Σ_batches B·loss_batch comes from one backward per batch.

    Vector states (B, n): ``mode`` "blocks" accumulates A_t (n, n+1, n+1) batch
    by batch (GEMM, memory n·d² per depth); "features" keeps X̃_t and Λ_t
    (memory S·n per depth) for the matrix-free solver; "auto" picks by
    :func:`choose_method`.  Field states (B, C, H, W) always keep the features
    (conv operator with ``kernel_size``/``padding_mode`` of the inserted
    block); solve them with either method.  ``keep_features`` also keeps the
    per-sample states and costates of "blocks" depths in ``op.features`` (the
    feature operators hold them anyway).  ``reduce``: the passes are this process's share of
    the samples, summed over processes (:func:`~pdegrow.growth.topological_operators.accumulate_operators`).
    Returns (operators per depth, J).
    """
    if mode not in ("auto", "blocks", "features"):
        raise ValueError(f"unknown mode {mode!r}: expected 'auto', 'blocks' or 'features'")
    def pick_mode(x: Tensor) -> str:
        if x.ndim == 2 and mode != "features":
            n = x.shape[1]
            dense = choose_method(n, n + 1, itemsize=x.element_size()) == "dense"
            return mode if mode == "blocks" else ("blocks" if dense else "features")
        return "features"

    def feature_operator(x: Tensor, lam: Tensor) -> DepthOperator:
        if x.ndim == 2:
            return DenseFeatureOperator(x, lam, sigma2=sigma2)
        if x.ndim == 4:
            return ConvFeatureOperator(x, lam, kernel_size, padding_mode=padding_mode, sigma2=sigma2)
        if x.ndim == 5:  # volumes: 3-D conv blocks
            from pdegrow.growth.topological_conv3d import Conv3dFeatureOperator

            return Conv3dFeatureOperator(x, lam, kernel_size, padding_mode=padding_mode, sigma2=sigma2)
        raise ValueError(f"states must be (B, n), (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")

    return accumulate_operators(
        passes, pick_mode=pick_mode, rows=lambda x: x, feature_operator=feature_operator,
        depths=depths, sigma2=sigma2, keep_features=keep_features, reduce=reduce,
    )


def topological_derivatives(
    ops: Sequence[DepthOperator], *, method: str = "auto", **solver_kw: object
) -> tuple[Tensor, list[TopEigenpairs]]:
    """Topological derivative per depth (max_r top eigenvalue of A_r) and the eigenpairs per depth."""
    results = [top_eigenpairs(op, method=method, **solver_kw) for op in ops]  # type: ignore[arg-type]
    derivs = torch.stack([r.values.max().to(torch.float64).cpu() for r in results])
    return derivs, results


# --------------------------------------------------------------------------- the new block


@dataclass
class ProposedRows:
    """Rows of the inserted block from the top eigenvectors.

    weight (n, d−1) — for conv reshape to (n, C, k, k) —, bias (n,), mask (n,)
    of contributing units, coefficient = Σ_{r selected} λ_r, so that the
    predicted change at scale ε is −(ε²/2)·coefficient.
    """

    weight: Tensor
    bias: Tensor
    mask: Tensor
    coefficient: float
    eigenvalues: Tensor = field(repr=False)


def rows_from_eigenpairs(
    pairs: TopEigenpairs, *, fraction: float = 0.5, top_only: bool = False
) -> ProposedRows:
    """Units r with λ_r ≥ fraction·max λ (and λ_r > 0) contribute their unit eigenvector w̃_r = [W_r, b_r].

    ``top_only`` keeps only the unit of the largest eigenvalue.  If no
    eigenvalue is positive no row is selected (coefficient 0): no inserted
    block decreases the loss at second order.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    vals = pairs.values
    vmax = vals.max()
    if top_only:
        mask = torch.zeros_like(vals, dtype=torch.bool)
        mask[vals.argmax()] = True
    else:
        mask = vals >= fraction * vmax
    mask = mask & (vals > 0)
    rows = pairs.vectors * mask[:, None].to(pairs.vectors.dtype)
    coef = float(vals[mask].sum()) if bool(mask.any()) else 0.0
    return ProposedRows(rows[:, :-1].clone(), rows[:, -1].clone(), mask, coef, vals)


def second_order_contributions(z: Tensor, lam: Tensor, *, sigma2: float = SIGMA_SECOND_DERIVATIVE) -> Tensor:
    """Per-sample terms c_s of the second-order coefficient C = Σ_r w̃_rᵀ A_r w̃_r = Σ_s c_s.

    With z_s = W̃ x̃_s the inserted block's pre-activation at ε = 1 and λ_s the
    costate (carrying J's 1/S): c_s = σ″(0) Σ_r λ_{s,r} z_{s,r}², summed over
    positions too for conv blocks ((S, n, H, W) arrays).  Since A_r = σ″(0) Σ_s
    λ_{s,r} x̃_s x̃_sᵀ, Σ_s c_s is exactly the coefficient of the predicted
    change −(ε²/2)·C.  Returns (S,) in float64.
    """
    if z.shape != lam.shape:
        raise ValueError(f"pre-activations {tuple(z.shape)} and costates {tuple(lam.shape)} differ in shape")
    terms = lam.double() * z.double().pow(2)
    return terms.reshape(terms.shape[0], -1).sum(1) * sigma2


def contribution_statistics(contributions: Tensor) -> tuple[float, float, float]:
    """(C, its standard error, t = C / SE) from the per-sample terms c_s of C = Σ_s c_s.

    C = mean_s u_s with u_s = S·c_s, so its sampling standard error is
    std(u, ddof = 1)/√S = √S·std(c).  t ≥ 2 says that the predicted decrease is
    larger than two standard errors of the sampling noise (t = inf when every
    sample contributes the same, 0 when C = 0).  The block's rows are chosen
    on the same samples, so t is optimistic.
    """
    c = contributions.double().reshape(-1)
    s = c.numel()
    total = float(c.sum())
    if s < 2:
        return total, math.inf, math.inf if total > 0 else 0.0
    se = math.sqrt(s) * float(c.std())
    if se == 0.0:
        return total, 0.0, math.inf if total > 0 else (0.0 if total == 0 else -math.inf)
    return total, se, total / se


def statistics_from_sums(total: float, sum_squares: float, count: int) -> tuple[float, float, float]:
    """(C, SE, t) of :func:`contribution_statistics` from Σ_s c_s, Σ_s c_s² and S alone.

    std(c, ddof = 1)² = (Σ c² − (Σ c)²/S)/(S − 1), SE = √S·std(c): what processes that each hold
    a share of the samples need to all-reduce (three numbers) to get the statistics of the whole set.
    """
    if count < 2:
        return total, math.inf, math.inf if total > 0 else 0.0
    var = max(0.0, (sum_squares - total * total / count) / (count - 1))
    se = math.sqrt(count * var)
    if se == 0.0:
        return total, 0.0, math.inf if total > 0 else (0.0 if total == 0 else -math.inf)
    return total, se, total / se

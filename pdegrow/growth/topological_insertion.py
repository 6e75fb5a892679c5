"""Approach II as a growth strategy: insert the block the topological derivative asks for.

Krishnanunni, Bui-Thanh, Dawson, arXiv 2502.06885; the mathematics is in
:mod:`pdegrow.growth.topological` (DESIGN §5).

* **when** — ``trigger``: ``"plateau"`` (the trainer's plateau test of the
  current phase, as every strategy), ``"threshold"`` (every
  ``check_every`` epochs compute the derivative; grow when its maximum over
  depths reaches ``threshold`` × current training loss), or ``"either"``;
* **where** — t* = argmax_t of the topological derivative (largest eigenvalue
  of the blocks A_r at depth t), over every depth 0 … L;
* **how** — an admissible perceptron block σ(ε(W x + b)), σ = ``silu_tanh``,
  whose rows are the top eigenvectors of the units whose eigenvalue is at
  least ``fraction`` × the largest (others zero); ε from a line search on
  the training loss; then ε is folded into W, b (``fold_scale``) so training
  sees ordinary weights;
* **stop** — ``max_layers`` insertions, ``max_depth`` blocks, ``max_params``
  parameters, or a derivative ≤ ``min_derivative`` (no insertion decreases the
  loss at second order).

Each proposal carries the predicted change −(ε²/2)·Σ_r λ_r; its ``info``
holds the derivative per depth, t*, ε, the line-search change, the eigen-solver
used and the proposal's wall time — the trainer logs them with the realised
change into ``events.jsonl`` (see :func:`pdegrow.growth.topological_report.plot_topological_history`).

The states/costates come from the trainer's own ``batch_loss`` (forward
pre-hooks on the blocks and the head capture x_0 … x_L), so the derivative
is that of exactly the loss being trained.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pdegrow.growth.base import GrowthContext, GrowthProposal, GrowthStrategy, register_strategy
from pdegrow.growth.topological import (
    DepthOperator,
    LineSearchResult,
    ProposedRows,
    accumulate_depth_operators,
    line_search_epsilon,
    predicted_change,
    rows_from_eigenpairs,
    topological_derivatives,
)

TRIGGERS = ("plateau", "threshold", "either")


def model_passes(
    model: nn.Module, batches: Iterator[Any], batch_loss: Any
) -> Iterator[tuple[list[Tensor], Tensor, int]]:
    """Per batch: (states x_0 … x_L of a GrowableResNet, the batch's mean loss, batch size).

    The states are captured by forward pre-hooks on every block and on the
    head (the input of block t is x_t, the head's is x_L), so ``batch_loss`` —
    the trainer's own loss — needs no change.  Inputs are made to require
    grad, so x_0 is in the graph even when the lift is frozen.
    """
    for batch in batches:
        captured: list[Tensor] = []

        def hook(_module: nn.Module, args: tuple[Any, ...], captured: list[Tensor] = captured) -> None:
            captured.append(args[0])

        handles = [blk.register_forward_pre_hook(hook) for blk in model.blocks]  # type: ignore[attr-defined]
        handles.append(model.head.register_forward_pre_hook(hook))  # type: ignore[attr-defined]
        try:
            inputs = batch.inputs
            if inputs.is_floating_point() and not inputs.requires_grad:
                batch = dataclasses.replace(batch, inputs=inputs.detach().requires_grad_(True))
            with torch.enable_grad():
                loss = batch_loss(batch)
        finally:
            for h in handles:
                h.remove()
        depth = len(model.blocks)  # type: ignore[arg-type]
        if len(captured) != depth + 1:
            raise RuntimeError(f"captured {len(captured)} states for a network of depth {depth}")
        yield captured, loss, len(batch)


def model_depth_operators(
    ctx: GrowthContext, *, mode: str = "auto", kernel_size: int = 3
) -> tuple[list[DepthOperator], float]:
    """{A_r} at every depth 0 … L of ``ctx.model`` from one forward + backward over the training set."""
    model = ctx.model
    padding_mode = getattr(model.lift, "padding_mode", "zeros")
    return accumulate_depth_operators(
        model_passes(model, ctx.train_batches(), ctx.batch_loss),
        mode=mode,
        kernel_size=kernel_size,
        padding_mode=padding_mode,
    )


def admissible_block(model: nn.Module, rows: ProposedRows, eps: float, kernel_size: int = 3) -> nn.Module:
    """The model's own perceptron block σ(ε(W x + b)) (σ = silu_tanh) holding ``rows``, scale ε."""
    kind = "conv_perceptron" if model.is_conv else "perceptron"  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = {"activation": "silu_tanh", "zero_init": True}
    if kind == "conv_perceptron":
        kwargs.update(kernel_size=kernel_size, padding_mode=getattr(model.lift, "padding_mode", "zeros"))
    block = model.new_block(kind, **kwargs)  # type: ignore[operator]
    layer = block.last_layer()
    with torch.no_grad():
        layer.weight.copy_(rows.weight.reshape(layer.weight.shape))
        layer.bias.copy_(rows.bias)
        block.scale.fill_(eps)
    return block


def fold_scale(block: nn.Module) -> None:
    """W ← sW, b ← sb, s ← 1: the same function, ε absorbed into the trainable weights."""
    layer = block.last_layer()  # type: ignore[operator]
    with torch.no_grad():
        s = float(block.scale)  # type: ignore[arg-type]
        layer.weight.mul_(s)
        layer.bias.mul_(s)
        block.scale.fill_(1.0)  # type: ignore[union-attr]


def search_block_scale(ctx: GrowthContext, block: nn.Module, depth: int, eps_init: float,
                       max_evals: int, refine_steps: int) -> LineSearchResult:
    """Line search on the training loss over the scale ε of ``block`` inserted at ``depth``.

    The block is inserted only while the loss is evaluated; on return it holds the found ε.
    """
    model = ctx.model
    model.insert_block(depth, block)
    try:
        def loss_at(eps: float) -> float:
            block.scale.fill_(eps)  # type: ignore[union-attr]
            return float(ctx.train_loss())

        ls = line_search_epsilon(loss_at, eps_init=eps_init, max_evals=max_evals, refine_steps=refine_steps)
    finally:
        del model.blocks[depth]
    with torch.no_grad():
        block.scale.fill_(ls.eps)  # type: ignore[union-attr]
    return ls


@register_strategy
class TopologicalInsertion(GrowthStrategy):
    """Approach II (see the module docstring)."""

    name = "topological_insertion"

    def __init__(
        self,
        trigger: str = "plateau",
        threshold: float = 0.0,
        check_every: int = 5,
        max_layers: int = 10,
        max_depth: int | None = None,
        max_params: int | None = None,
        min_derivative: float = 0.0,
        fraction: float = 0.5,
        top_only: bool = False,
        method: str = "auto",
        mode: str = "auto",
        tol: float | None = None,
        kernel_size: int = 3,
        eps_target_decrease: float = 0.01,
        line_search_evals: int = 16,
        refine_steps: int = 4,
        fold: bool = True,
        freeze_old: bool = False,
    ):
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}, got {trigger!r}")
        if method not in ("auto", "dense", "lanczos"):
            raise ValueError(f"method must be 'auto', 'dense' or 'lanczos', got {method!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.trigger, self.threshold, self.check_every = trigger, float(threshold), int(check_every)
        self.max_layers, self.max_depth, self.max_params = int(max_layers), max_depth, max_params
        self.min_derivative, self.fraction, self.top_only = float(min_derivative), float(fraction), top_only
        self.method, self.mode, self.tol, self.kernel_size = method, mode, tol, int(kernel_size)
        self.eps_target_decrease = float(eps_target_decrease)
        self.line_search_evals, self.refine_steps = int(line_search_evals), int(refine_steps)
        self.fold, self.freeze_old = bool(fold), bool(freeze_old)
        self.inserted = 0
        self.history: list[dict[str, Any]] = []  # derivative per depth at every evaluation
        self._last_check_epoch = -1

    # ------------------------------------------------------------------ when

    def _budget_left(self, ctx: GrowthContext) -> bool:
        model = ctx.model
        if self.inserted >= self.max_layers:
            return False
        if self.max_depth is not None and model.depth >= self.max_depth:
            return False
        if self.max_params is not None:
            w = model.stream_width
            extra = (w * w * self.kernel_size**2 + w) if model.is_conv else (w * w + w)
            if model.n_parameters() + extra > self.max_params:
                return False
        return True

    def when(self, ctx: GrowthContext) -> bool:
        plateau = super().when(ctx)
        if self.trigger == "plateau":
            return plateau
        if plateau and self.trigger == "either":
            return True
        s = ctx.state
        if s.phase_epoch == 0 or s.phase_epoch % max(1, self.check_every) != 0 or not self._budget_left(ctx):
            return plateau if self.trigger == "either" else s.phase_epoch >= s.max_phase_epochs
        derivs, _, _, j0 = self._derivatives(ctx)
        self._record(ctx, derivs, j0, grew=False)
        return float(derivs.max()) >= self.threshold * abs(j0) or s.phase_epoch >= s.max_phase_epochs

    # ------------------------------------------------------------------ where and how

    def _derivatives(self, ctx: GrowthContext) -> tuple[Tensor, list[Any], list[DepthOperator], float]:
        ops, j0 = model_depth_operators(ctx, mode=self.mode, kernel_size=self.kernel_size)
        derivs, pairs = topological_derivatives(ops, method=self.method, tol=self.tol)
        return derivs, pairs, ops, j0

    def _record(self, ctx: GrowthContext, derivs: Tensor, j0: float, grew: bool) -> None:
        self.history.append({"epoch": ctx.state.epoch, "phase": ctx.state.phase, "train_loss": j0,
                             "derivative": [float(d) for d in derivs], "grew": grew})

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        if not self._budget_left(ctx):
            return None
        t0 = time.perf_counter()
        model = ctx.model
        derivs, pairs, _ops, j0 = self._derivatives(ctx)
        t_star = int(derivs.argmax())
        lam_max = float(derivs[t_star])
        if not lam_max > self.min_derivative:
            self._record(ctx, derivs, j0, grew=False)
            return None
        rows = rows_from_eigenpairs(pairs[t_star], fraction=self.fraction, top_only=self.top_only)
        t_solve = time.perf_counter() - t0
        block = admissible_block(model, rows, 0.0, self.kernel_size)
        eps0 = math.sqrt(2.0 * self.eps_target_decrease * max(abs(j0), 1e-30) / rows.coefficient)
        ls = search_block_scale(ctx, block, t_star, eps0, self.line_search_evals, self.refine_steps)
        if ls.eps == 0.0:
            self._record(ctx, derivs, j0, grew=False)
            return None
        if self.fold:
            fold_scale(block)
        self._record(ctx, derivs, j0, grew=True)
        pred = predicted_change(ls.eps, rows.coefficient)
        info = {
            "derivative": [float(d) for d in derivs],
            "t_star": t_star,
            "lambda_max": lam_max,
            "coefficient": rows.coefficient,
            "n_rows": int(rows.mask.sum()),
            "eps": ls.eps,
            "predicted_change": pred,
            "line_search_change": ls.loss - ls.loss0,
            "line_search_evals": len(ls.evaluations),
            "eigen_method": pairs[t_star].method,
            "eigen_iterations": [int(p.iterations) for p in pairs],
            "solve_s": round(t_solve, 4),
            "proposal_s": round(time.perf_counter() - t0, 4),
        }
        return GrowthProposal("insert", depth=t_star, block=block, predicted_change=pred, info=info)

    def after_growth(self, ctx: GrowthContext, event: Any) -> None:
        self.inserted += 1
        if self.freeze_old:
            new = event.where.get("depth")
            ctx.model.freeze([i for i in range(ctx.model.depth) if i != new])

    def state_dict(self) -> dict[str, Any]:
        return {"inserted": self.inserted, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inserted = int(state.get("inserted", 0))
        self.history = list(state.get("history", []))


def derivative_history(strategy: TopologicalInsertion) -> Sequence[dict[str, Any]]:
    """The derivative per depth at every evaluation (for reports)."""
    return strategy.history

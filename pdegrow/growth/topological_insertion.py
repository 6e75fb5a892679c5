"""Approach II as a growth strategy: insert the block the topological derivative asks for.

Krishnanunni, Bui-Thanh, Dawson, arXiv 2502.06885; the mathematics is in
:mod:`pdegrow.growth.topological` and ``docs/growth.md``.

* **when** — ``trigger``: ``"plateau"`` (the trainer's plateau test of the
  current phase, as every strategy), ``"threshold"`` (every
  ``check_every`` epochs compute the derivative; grow when its maximum over
  depths reaches ``threshold`` × current training loss), or ``"either"``;
* **where** — t* = argmax_t of the topological derivative (largest eigenvalue
  of the blocks A_r at depth t), over every depth 0 … L; with ``prune_depths``
  the eigen-solve is skipped at depths whose upper bound min(tr A_r⁺, ‖A_r⁺‖_F)
  is below the derivative of a depth already solved
  (:mod:`pdegrow.growth.topological_bounds`): the same t* and rows; a skipped
  depth's derivative is not known and is logged as null, beside the bound that
  ruled it out (``derivative_bound``);
* **how** — an admissible perceptron block σ(ε(W x + b)), σ = ``silu_tanh``,
  whose rows are the top eigenvectors of the units whose eigenvalue is at
  least ``fraction`` × the largest (others zero); then ε is folded into W, b
  (``fold_scale``) so training sees ordinary weights. A zero row stays zero for
  good (σ′(0) = 0 gives it no gradient), hence the default ``fraction = 0``:
  every unit with a positive eigenvalue gets its row;
* **ε** — from the second-order model ΔJ ≈ −(ε²/2)·C, C = Σ_r λ_r
  (:func:`~pdegrow.growth.topological.choose_epsilon`): start where it
  predicts a decrease of ``eps_target_decrease``·J, bound |ε| so that every
  pre-activation |ε z| ≤ ``max_preactivation`` (where σ is close to its
  quadratic term), and grow/shrink ε while the realised/predicted ratio stays
  in [``ratio_min``, 1/``ratio_min``]; at most ``line_search_evals`` loss
  evaluations, each from the stored states x_t* in large batches
  (:mod:`pdegrow.growth.stored_states`) — the whole proposal costs one
  forward + backward pass and a few partial forwards, less than an epoch;
* **significance** — C = Σ_s c_s is a sum of per-sample terms; the block is
  inserted only if C ≥ ``min_significance`` standard errors of that sum
  (:func:`~pdegrow.growth.topological.contribution_statistics`);
* **cost** — ``sample_every`` = k > 1 computes the derivative, the rows, the
  significance and ε from every k-th training batch only (an estimate: J, the
  costates and C are means over that subset; it can change the decision, so it
  is off by default), which divides the pass, the products of the eigen-solve
  and the ε search by ≈ k;
* **stop** — ``max_layers`` insertions, ``max_depth`` blocks, ``max_params``
  parameters, a derivative ≤ ``min_derivative`` (no insertion decreases the
  loss at second order), a decrease that is not significant, or no ε that
  decreases the loss (a block with ε = 0 would never train: σ′(0) = 0).

Each proposal's ``predicted_change`` is the second-order prediction −(ε²/2)·C
at the chosen ε; its ``info`` holds beside it the realised change at that ε
(``realised_change_at_eps``), their ratio and whether it lies in the trusted
band (``quadratic_valid``), the bound ``eps_max``, the significance ``t`` with
the standard error, the derivative per depth, t*, the eigen-solver used and
the proposal's wall and CPU time — the trainer logs them with the realised
change into ``events.jsonl`` (see :func:`pdegrow.growth.topological_report.plot_topological_history`).

The states/costates come from the trainer's own ``batch_loss`` (forward
pre-hooks on the blocks and the head capture x_0 … x_L), so the derivative
is that of exactly the loss being trained.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pdegrow.growth.base import GrowthContext, GrowthProposal, GrowthStrategy, register_strategy
from pdegrow.growth.capture import captured_inputs, with_grad_inputs
from pdegrow.growth.stored_states import EVAL_ELEMENTS, large_batches
from pdegrow.growth.topological import (
    DepthOperator,
    ProposedRows,
    accumulate_depth_operators,
    rows_from_eigenpairs,
    topological_derivatives,
)
from pdegrow.growth.topological_bounds import logged_derivatives, pruned_derivatives
from pdegrow.growth.topological_operators import Reduce, ShardedOperator
from pdegrow.growth.topological_search import (  # noqa: F401  (block_preactivations re-exported: moved there)
    BlockSearch,
    block_preactivations,
    search_block_epsilon,
    search_info,
)
from pdegrow.growth.topological_vit import accumulate_token_operators
from pdegrow.models.vit import is_vit

if TYPE_CHECKING:
    from pdegrow.training.collective import Collective

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
        with captured_inputs([*model.blocks, model.head]) as captured, torch.enable_grad():  # type: ignore
            batch = with_grad_inputs(batch)
            loss = batch_loss(batch)
        depth = len(model.blocks)  # type: ignore[arg-type]
        if len(captured) != depth + 1:
            raise RuntimeError(f"captured {len(captured)} states for a network of depth {depth}")
        yield captured, loss, len(batch)


def model_depth_operators(
    ctx: GrowthContext, *, mode: str = "auto", kernel_size: int = 3, batches: list[Any] | None = None,
    depths: Sequence[int] | None = None, keep_features: bool = False, reduce: Reduce | None = None,
) -> tuple[list[DepthOperator], float]:
    """{A_r} at every depth 0 … L (or ``depths``) of ``ctx.model`` from one forward + backward pass.

    ``batches`` (default: the trainer's training batches) may be merged large
    batches (:func:`~pdegrow.growth.stored_states.large_batches`): J and the
    costates are the same.  ``keep_features`` keeps every depth's per-sample
    states and costates in ``op.features``.  ``reduce`` (several processes): ``batches`` are
    this process's share, and the operators and J are summed over processes (see
    :func:`~pdegrow.growth.topological_operators.accumulate_operators`).
    """
    model = ctx.model
    passes = model_passes(model, iter(ctx.train_batches() if batches is None else batches), ctx.batch_loss)
    if is_vit(model):  # token states (B, N, n): the sum runs over samples and tokens
        return accumulate_token_operators(passes, mode=mode, depths=depths, keep_features=keep_features,
                                          reduce=reduce)
    padding_mode = getattr(model.lift, "padding_mode", "zeros")
    return accumulate_depth_operators(
        passes,
        mode=mode,
        kernel_size=kernel_size,
        padding_mode=padding_mode,
        depths=depths,
        keep_features=keep_features,
        reduce=reduce,
    )


def sharing(ctx: GrowthContext) -> tuple[Any, Collective | None]:
    """This process's training batches and the collective over which sums over samples are all-reduced:
    ``(ctx.train_batches(), None)`` in a serial run (nothing reduced, the serial code path)."""
    c = getattr(ctx, "collective", None)
    if c is None or c.world == 1 or ctx.shard_batches is None:
        return ctx.train_batches(), None
    return ctx.shard_batches(), c


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


def weights_fingerprint(ctx: GrowthContext) -> tuple[Any, ...]:
    """Changes whenever a parameter or buffer of the model is modified in place or replaced, the
    architecture changes, or the training state moves to another epoch or phase."""
    model = ctx.model
    tensors = [*model.parameters(), *model.buffers()]
    return (tuple((id(t), t._version, tuple(t.shape)) for t in tensors), ctx.state.epoch, ctx.state.phase)


@dataclass
class DerivativePass:
    """One derivative pass: the merged batches, derivative and eigenpairs per depth, the operators
    (with their states and costates), J and the CPU time of the pass and of the eigen-solves."""

    fingerprint: tuple[Any, ...]
    batches: list[Any]
    derivatives: Tensor
    pairs: list[Any]
    ops: list[DepthOperator]
    loss: float
    cpu: dict[str, float]
    collective: Collective | None = None   # None: serial; else the operators are sums over processes
    bounds: Tensor | None = None           # upper bound of the derivative per depth (``prune_depths``)


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
        fraction: float = 0.0,
        top_only: bool = False,
        method: str = "auto",
        mode: str = "auto",
        tol: float | None = None,
        kernel_size: int = 3,
        eps_target_decrease: float = 0.01,
        max_preactivation: float = 1.0,
        ratio_min: float = 0.5,
        min_significance: float = 2.0,
        line_search_evals: int = 8,
        eval_elements: int = EVAL_ELEMENTS,
        fold: bool = True,
        freeze_old: bool = False,
        prune_depths: bool = False,
        sample_every: int = 1,
    ):
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}, got {trigger!r}")
        if method not in ("auto", "dense", "lanczos"):
            raise ValueError(f"method must be 'auto', 'dense' or 'lanczos', got {method!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        if not 0.0 < ratio_min < 1.0:
            raise ValueError(f"ratio_min must be in (0, 1), got {ratio_min}")
        if not (eps_target_decrease > 0 and max_preactivation > 0 and line_search_evals >= 2):
            raise ValueError("eps_target_decrease and max_preactivation must be positive, "
                             "line_search_evals ≥ 2")
        self.trigger, self.threshold, self.check_every = trigger, float(threshold), int(check_every)
        self.max_layers, self.max_depth, self.max_params = int(max_layers), max_depth, max_params
        self.min_derivative, self.fraction, self.top_only = float(min_derivative), float(fraction), top_only
        self.method, self.mode, self.tol, self.kernel_size = method, mode, tol, int(kernel_size)
        self.eps_target_decrease = float(eps_target_decrease)
        self.max_preactivation = float(max_preactivation)
        self.ratio_min, self.min_significance = float(ratio_min), float(min_significance)
        self.line_search_evals, self.eval_elements = int(line_search_evals), int(eval_elements)
        self.fold, self.freeze_old = bool(fold), bool(freeze_old)
        self.prune_depths = bool(prune_depths)
        if int(sample_every) < 1:
            raise ValueError(f"sample_every must be ≥ 1, got {sample_every}")
        self.sample_every = int(sample_every)
        self.inserted = 0
        self.history: list[dict[str, Any]] = []  # derivative per depth at every evaluation
        self._cache: DerivativePass | None = None

    # ------------------------------------------------------------------ when

    def _budget_left(self, ctx: GrowthContext) -> bool:
        return self._budget_end(ctx) is None

    def _budget_end(self, ctx: GrowthContext) -> str | None:
        """Which limit (``max_layers``, ``max_depth``, ``max_params``) forbids another block, or None."""
        model = ctx.model
        if self.inserted >= self.max_layers:
            return f"max_layers = {self.max_layers} insertions made"
        if self.max_depth is not None and model.depth >= self.max_depth:
            return f"max_depth = {self.max_depth} blocks reached"
        if self.max_params is not None:
            w = model.stream_width
            extra = (w * w * self.kernel_size**model.spatial_dims + w) if model.is_conv else (w * w + w)
            if model.n_parameters() + extra > self.max_params:
                return f"another block would exceed max_params = {self.max_params}"
        return None

    def end_reason(self, ctx: GrowthContext) -> str:
        budget = self._budget_end(ctx)
        if budget is not None:
            return budget
        last = self.history[-1] if self.history else {}
        return f"no block inserted ({last.get('reason', 'none proposed')})"

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
        grow = self._best(derivs)[1] >= self.threshold * abs(j0) or s.phase_epoch >= s.max_phase_epochs
        if not grow:
            self._cache = None   # training goes on: the pass is stale at the next step
        return grow

    # ------------------------------------------------------------------ where and how

    def _pass(self, ctx: GrowthContext) -> DerivativePass:
        """The derivative at every depth with the states/costates kept, computed once per weight state
        (the threshold trigger's check and the proposal that follows it share one pass)."""
        fp = weights_fingerprint(ctx)
        if self._cache is not None and self._cache.fingerprint == fp:
            return self._cache
        self._cache = None
        mine, collective = sharing(ctx)   # serial: every batch; else this process's share
        if self.sample_every > 1:         # an estimate from every k-th training batch
            mine = itertools.islice(mine, 0, None, self.sample_every)
        batches = large_batches(ctx, self.eval_elements, mine)
        c0 = time.process_time()
        ops, j0 = model_depth_operators(ctx, mode=self.mode, kernel_size=self.kernel_size, batches=batches,
                                        keep_features=True,
                                        reduce=None if collective is None else collective.all_reduce_tensors)
        c1 = time.process_time()
        for op in ops:   # several processes: the Lanczos solves split the units over them
            if isinstance(op, ShardedOperator):
                op.collective = collective
        if self.prune_depths:   # only the depths whose upper bound can beat the best solved one
            derivs, pairs, bounds = pruned_derivatives(ops, method=self.method, tol=self.tol)
        else:
            derivs, pairs = topological_derivatives(ops, method=self.method, tol=self.tol)
            bounds = None
        cpu = {"pass_cpu_s": round(c1 - c0, 4), "solve_cpu_s": round(time.process_time() - c1, 4)}
        self._cache = DerivativePass(fp, batches, derivs, pairs, ops, j0, cpu, collective, bounds)
        return self._cache

    def _derivatives(self, ctx: GrowthContext) -> tuple[Tensor, list[Any], list[DepthOperator], float]:
        d = self._pass(ctx)
        return d.derivatives, d.pairs, d.ops, d.loss

    @staticmethod
    def _best(derivs: Tensor) -> tuple[int, float]:
        """(t*, D_t*): the argmax over the depths that were solved (a skipped depth is NaN in ``derivs``)."""
        solved = torch.nan_to_num(derivs, nan=-math.inf)
        t = int(solved.argmax())
        return t, float(solved[t])

    def _record(self, ctx: GrowthContext, derivs: Tensor, j0: float, grew: bool, **extra: Any) -> None:
        self.history.append({"epoch": ctx.state.epoch, "phase": ctx.state.phase, "train_loss": j0,
                             "derivative": logged_derivatives(derivs), "grew": grew, **extra})

    def _search(self, ctx: GrowthContext, block: nn.Module, depth: int, batches: list[Any],
                features: tuple[Tensor, Tensor], j0: float,
                collective: Collective | None = None) -> BlockSearch:
        return search_block_epsilon(ctx, block, depth, batches, features, loss0=j0,
                                    target_decrease=self.eps_target_decrease,
                                    max_preactivation=self.max_preactivation, ratio_min=self.ratio_min,
                                    max_evals=self.line_search_evals, collective=collective)

    def propose(self, ctx: GrowthContext) -> GrowthProposal | None:
        if not self._budget_left(ctx):
            return None
        t0, c0 = time.perf_counter(), time.process_time()
        model = ctx.model
        d = self._pass(ctx)
        batches, derivs, pairs, ops, j0 = d.batches, d.derivatives, d.pairs, d.ops, d.loss
        t_star, lam_max = self._best(derivs)
        if not lam_max > self.min_derivative:
            self._record(ctx, derivs, j0, grew=False, reason="derivative")
            return None
        rows = rows_from_eigenpairs(pairs[t_star], fraction=self.fraction, top_only=self.top_only)
        t_solve = time.perf_counter() - t0
        block = admissible_block(model, rows, 0.0, self.kernel_size)
        features = ops[t_star].features
        if features is None:
            raise RuntimeError("the derivative pass kept no states at the chosen depth")
        c_search = time.process_time()
        search = self._search(ctx, block, t_star, batches, features, j0, d.collective)
        search_cpu = round(time.process_time() - c_search, 4)
        info: dict[str, Any] = {
            "derivative": logged_derivatives(derivs),
            "t_star": t_star,
            "lambda_max": lam_max,
            "eigenvalue_sum": rows.coefficient,
            "n_rows": int(rows.mask.sum()),
            **search_info(search),
            "eigen_method": pairs[t_star].method,
            "eigen_iterations": [0 if p is None else int(p.iterations) for p in pairs],
            "solve_s": round(t_solve, 4),
            **d.cpu,                         # CPU s of the forward + backward pass, of the eigen-solves
            "search_cpu_s": search_cpu,      # CPU s of the ε choice from the stored states
        }
        if d.bounds is not None:             # depths skipped: their bound is below the derivative at t*
            info["derivative_bound"] = logged_derivatives(d.bounds)   # null: no bound (always solved)
        if search.significance < self.min_significance:
            self._record(ctx, derivs, j0, grew=False, reason="not significant",
                         significance=search.significance)
            return None
        if search.choice is None or search.choice.eps == 0.0:
            self._record(ctx, derivs, j0, grew=False, reason="no decreasing epsilon")
            return None
        if self.fold:
            fold_scale(block)
        self._record(ctx, derivs, j0, grew=True, significance=search.significance)
        info["proposal_s"] = round(time.perf_counter() - t0, 4)
        info["proposal_cpu_s"] = round(time.process_time() - c0, 4)
        return GrowthProposal("insert", depth=t_star, block=block, predicted_change=search.choice.predicted,
                              info=info)

    def after_growth(self, ctx: GrowthContext, event: Any) -> None:
        self._cache = None
        self.inserted += 1
        if self.freeze_old:
            new = event.where.get("depth")
            ctx.model.freeze([i for i in range(ctx.model.depth) if i != new])

    def state_dict(self) -> dict[str, Any]:
        return {"inserted": self.inserted, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inserted = int(state.get("inserted", 0))
        self.history = list(state.get("history", []))

"""Evaluate the training loss from stored states x_t, in large batches (for insertion searches).

Choosing the scale ε of a block inserted at depth t needs J(Ω_ε) for a few ε.
Below depth t nothing changes, so the states x_t of every training sample are
computed once (they come with the topological-derivative pass) and each
evaluation runs only the inserted block, the blocks t … L−1 and the head —
in batches of many training batches at once (:func:`merge_batches`), which
removes the per-batch overhead that dominates small networks.

:func:`started_at` makes a :class:`~pdegrow.models.resnet.GrowableResNet`
start from a given state (its lift is replaced by a module that returns the
stored x_t, its blocks by the inserted block followed by blocks t … L−1) for
the duration of a ``with``; the correctors still read the batch inputs.  So
``ctx.batch_loss`` — the trainer's own loss — is evaluated unchanged: the
loss of exactly the objective being trained, at a fraction of the cost.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

#: Default number of state entries (batch rows × per-sample state size) of one merged batch.
EVAL_ELEMENTS = 1 << 22


def _concat(values: Sequence[Any]) -> Any:
    first = values[0]
    if isinstance(first, Tensor):
        return torch.cat(list(values))
    if isinstance(first, dict):
        return {k: _concat([v[k] for v in values]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_concat([v[i] for v in values]) for i in range(len(first)))
    return first


def concat_batches(batches: Sequence[Any]) -> Any:
    """One batch from several: every tensor (also inside dicts, tuples, dataclass fields) concatenated
    along the sample axis; other values are taken from the first batch."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        fields = {f.name: _concat([getattr(b, f.name) for b in batches]) for f in dataclasses.fields(first)}
        return dataclasses.replace(first, **fields)
    return _concat(batches)


def batch_rows(batch: Any) -> int:
    """Number of samples of a batch (``len``; else the first axis of its inputs)."""
    try:
        return len(batch)
    except TypeError:
        return int(batch.inputs.shape[0])


def merge_batches(batches: Iterable[Any], min_rows: int) -> list[Any]:
    """Consecutive batches concatenated into batches of ≥ ``min_rows`` samples (same order).

    For a loss that is a mean over samples of per-sample terms (all of the
    trainer's data losses), Σ_batches B·loss_batch / S is unchanged.
    """
    out: list[Any] = []
    pending: list[Any] = []
    rows = 0
    for b in batches:
        pending.append(b)
        rows += batch_rows(b)
        if rows >= min_rows:
            out.append(concat_batches(pending))
            pending, rows = [], 0
    if pending:
        out.append(concat_batches(pending))
    return out


def eval_rows(model: nn.Module, sample_input: Tensor, eval_elements: int = EVAL_ELEMENTS) -> int:
    """Rows of a merged batch: ``eval_elements`` state entries, a state being width × spatial size
    (× the tokens of a ViT)."""
    spatial = math.prod(sample_input.shape[2:]) if getattr(model, "is_conv", False) else 1
    spatial *= int(getattr(getattr(model, "lift", None), "n_tokens", 1))
    per_sample = int(getattr(model, "stream_width", 1)) * max(1, spatial)
    return max(1, int(eval_elements) // max(1, per_sample))


def large_batches(
    ctx: Any, eval_elements: int = EVAL_ELEMENTS, batches: Iterable[Any] | None = None
) -> list[Any]:
    """The training set of ``ctx`` (fixed order; or ``batches``, e.g. this process's share of it) merged
    into batches of ≈ ``eval_elements`` state entries."""
    it = iter(ctx.train_batches() if batches is None else batches)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("no training data: the batch iterable was empty") from None

    def chain() -> Iterator[Any]:
        yield first
        yield from it

    return merge_batches(chain(), eval_rows(ctx.model, first.inputs, eval_elements))


class _Replay(nn.Module):
    """A lift that ignores its input and returns the stored state of the current batch."""

    def __init__(self) -> None:
        super().__init__()
        self.state: Tensor | None = None

    def forward(self, _inputs: Tensor) -> Tensor:
        if self.state is None:
            raise RuntimeError("no stored state set for this batch")
        return self.state


@contextmanager
def started_at(model: nn.Module, depth: int, block: nn.Module | None = None) -> Iterator[_Replay]:
    """Within the ``with``, ``model`` computes head(x_L) (+ correctors of the inputs) from a stored x_depth.

    Yields the replay lift: set ``replay.state`` to the states of a batch before
    evaluating the model on that batch.  ``block`` (optional) is applied first,
    as if inserted at ``depth``.  The model's own lift and blocks are restored
    on exit, whatever happens.
    """
    blocks = model.blocks  # type: ignore[union-attr]
    if not 0 <= depth <= len(blocks):  # type: ignore[arg-type]
        raise ValueError(f"depth {depth} outside 0..{len(blocks)}")  # type: ignore[arg-type]
    lift = model.lift  # type: ignore[union-attr]
    tail = list(blocks[depth:])  # type: ignore[index]
    if block is not None:
        tail.insert(0, block)
    replay = _Replay()
    model.lift = replay  # type: ignore[union-attr]
    model.blocks = nn.ModuleList(tail)  # type: ignore[union-attr]
    try:
        yield replay
    finally:
        model.lift = lift  # type: ignore[union-attr]
        model.blocks = blocks  # type: ignore[union-attr]


@torch.no_grad()
def loss_from_states(ctx: Any, depth: int, batches: Sequence[Any], states: Sequence[Tensor],
                     block: nn.Module | None = None, reduce: Any = None) -> float:
    """Mean training loss Σ_b B·batch_loss(b) / S with the model started at x_depth = ``states[b]``
    (and ``block`` inserted there), for batches aligned with ``states``; with ``reduce`` (the
    in-place sum over processes of a list of tensors) Σ B·loss and S are summed over processes,
    each holding its share of the batches."""
    total, n = 0.0, 0
    with started_at(ctx.model, depth, block) as replay:
        for batch, x in zip(batches, states, strict=True):
            replay.state = x
            b = batch_rows(batch)
            total += float(ctx.batch_loss(batch)) * b
            n += b
    if reduce is not None:
        sums = torch.tensor([total, float(n)], dtype=torch.float64)
        reduce([sums])
        total, n = float(sums[0]), int(round(float(sums[1])))
    return total / max(n, 1)


def split_rows(x: Tensor, batches: Sequence[Any]) -> list[Tensor]:
    """``x`` (S, …) cut into the row blocks of ``batches`` (same order)."""
    sizes = [batch_rows(b) for b in batches]
    if sum(sizes) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} stored rows for {sum(sizes)} samples")
    return list(torch.split(x, sizes))


__all__ = ["EVAL_ELEMENTS", "batch_rows", "concat_batches", "eval_rows", "large_batches", "loss_from_states",
           "merge_batches", "split_rows", "started_at"]

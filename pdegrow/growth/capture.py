"""One way to see inside a forward pass: inputs that require grad, and hooks that record what
modules receive and return, removed however the pass ends.

Growth statistics (second moments of hidden layers), the states x_t and costates of the
topological derivative and the stored states of the insertion search all run the trainer's own
loss on a batch and read intermediate tensors from it; they share these helpers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn


def leaf(inputs: Tensor) -> Tensor:
    """``inputs`` as a tensor that requires grad (floating point only), so that x_0 = lift(y) is in
    the autograd graph even when the lift is frozen or has no parameters."""
    if inputs.is_floating_point() and not inputs.requires_grad:
        return inputs.detach().requires_grad_(True)
    return inputs


def with_grad_inputs(batch: Any) -> Any:
    """A batch (a dataclass with ``inputs``) whose inputs require grad (:func:`leaf`)."""
    inputs = batch.inputs
    if dataclasses.is_dataclass(batch) and leaf(inputs) is not inputs:
        return dataclasses.replace(batch, inputs=leaf(inputs))
    return batch


@contextmanager
def _hooked(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def captured_inputs(modules: Iterable[nn.Module]) -> Iterator[list[Tensor]]:
    """The first positional input of every call of ``modules``, in call order (forward pre-hooks)."""
    seen: list[Tensor] = []
    with _hooked([m.register_forward_pre_hook(lambda _m, args: seen.append(args[0])) for m in modules]):
        yield seen


@contextmanager
def captured_io(modules: Iterable[nn.Module]) -> Iterator[dict[int, tuple[Tensor, Tensor]]]:
    """{id(module): (its first input, its output)} of the last call of each of ``modules``."""
    seen: dict[int, tuple[Tensor, Tensor]] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
        seen[id(module)] = (args[0], out)

    with _hooked([m.register_forward_hook(hook) for m in modules]):
        yield seen


__all__ = ["captured_inputs", "captured_io", "leaf", "with_grad_inputs"]

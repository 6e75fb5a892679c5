"""Widening: k new units between two linear/convolutional layers, the function kept.

The new units' fan-out is zero by default, so the network's function is unchanged and the new units
still receive gradient; old parameters stay the leading slice of the new ones and keep their
``Parameter`` objects (the optimizer's state keys), see :func:`widen_pair`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _set_param(param: nn.Parameter, value: torch.Tensor) -> None:
    """Give ``param`` a new (larger) tensor, keeping the Parameter object (the optimizer's state key).

    Uses ``torch.utils.swap_tensors`` (also fixes autograd's cached metadata);
    falls back to ``.data`` assignment when the tensor is still referenced by a
    live autograd graph — do not backpropagate through graphs built before a
    widening. Any stale ``.grad`` is dropped.
    """
    value = value.to(device=param.device, dtype=param.dtype).contiguous()
    param.grad = None
    try:
        torch.utils.swap_tensors(param, nn.Parameter(value, requires_grad=param.requires_grad))
    except RuntimeError:
        param.data = value


def _fresh_rows(shape: tuple[int, ...], fan_in: int, like: torch.Tensor) -> torch.Tensor:
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return torch.empty(shape, device=like.device, dtype=like.dtype).uniform_(-bound, bound)


def widen_pair(first: nn.Module, second: nn.Module, k: int, fan_in: torch.Tensor | None,
               bias: torch.Tensor | None, fan_out: torch.Tensor | None) -> None:
    """Add ``k`` units between two linear/conv layers: k new output rows of ``first``
    (``fan_in``, ``bias``) and k new input columns of ``second`` (``fan_out``).

    Defaults: ``fan_in`` uniform(±1/√fan_in) like PyTorch's init, ``bias`` 0,
    ``fan_out`` 0 — so the function is unchanged and the new units receive
    gradient. New entries are appended after the old ones, so the old
    parameters are the leading slice of the new ones.
    """
    w1 = first.weight
    rows_shape = (k, *w1.shape[1:])
    if fan_in is None:
        fan_in = _fresh_rows(rows_shape, int(w1[0].numel()), w1)
    if tuple(fan_in.shape) != rows_shape:
        raise ValueError(f"fan_in has shape {tuple(fan_in.shape)}, expected {rows_shape}")
    _set_param(w1, torch.cat([w1.data, fan_in.to(w1)], 0))
    if first.bias is not None:
        b = torch.zeros(k, device=w1.device, dtype=w1.dtype) if bias is None else bias.to(w1)
        _set_param(first.bias, torch.cat([first.bias.data, b], 0))
    w2 = second.weight
    cols_shape = (w2.shape[0], k, *w2.shape[2:])
    if fan_out is None:
        fan_out = torch.zeros(cols_shape, device=w2.device, dtype=w2.dtype)
    if tuple(fan_out.shape) != cols_shape:
        raise ValueError(f"fan_out has shape {tuple(fan_out.shape)}, expected {cols_shape}")
    _set_param(w2, torch.cat([w2.data, fan_out.to(w2)], 1))
    for attr in ("out_features", "out_channels"):
        if hasattr(first, attr):
            setattr(first, attr, getattr(first, attr) + k)
    if hasattr(second, "in_features"):
        second.in_features += k
    if hasattr(second, "in_channels"):
        second.in_channels += k


__all__ = ["widen_pair"]

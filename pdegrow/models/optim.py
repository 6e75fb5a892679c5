"""Optimizers that survive growth: carry state over, pad it for widened tensors.

Growth operations in :mod:`pdegrow.models.resnet` keep every existing
``nn.Parameter`` object (widening replaces ``.data`` in place, appending new
entries after the old ones), so the optimizer's per-parameter state (Adam's
moments, momentum buffers, step counts) is still keyed correctly.
:func:`sync_optimizer` points the optimizer at the model's current
parameters, keeps the state of parameters that survived, zero-pads state
tensors whose parameter grew (the old entries are the leading slice) and
drops the state of parameters that left the model. The optimizer object
stays the same, so learning-rate schedulers bound to it keep working.
Frozen parameters stay in the optimizer (their state is kept, untouched:
they get no gradient, so torch optimizers skip them).
"""

from __future__ import annotations

import torch
from torch import nn

from pdegrow.errors import PdegrowError

OPTIMIZERS = ("adam", "adamw", "sgd")


def make_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """One param group over ``model.parameters()`` in model order (the order a checkpoint assumes)."""
    params = list(model.parameters())
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=betas)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise PdegrowError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")


def pad_state_tensor(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Zeros of ``shape`` with ``value`` in the leading corner (state of a widened parameter)."""
    out = torch.zeros(shape, dtype=value.dtype, device=value.device)
    out[tuple(slice(0, s) for s in value.shape)] = value
    return out


def sync_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, int]:
    """Make ``optimizer`` (one param group) optimise ``model.parameters()``, keeping surviving state.

    Returns counts ``{"kept", "padded", "added", "dropped"}`` of parameters.
    """
    if len(optimizer.param_groups) != 1:
        raise ValueError("sync_optimizer expects an optimizer with one param group")
    params = list(model.parameters())
    old = optimizer.param_groups[0]["params"]
    old_ids = {id(p) for p in old}
    new_ids = {id(p) for p in params}
    counts = {"kept": 0, "padded": 0, "added": 0, "dropped": 0}
    for p in list(optimizer.state.keys()):
        if id(p) not in new_ids:
            del optimizer.state[p]
            counts["dropped"] += 1
    for p in params:
        if id(p) not in old_ids:
            counts["added"] += 1
            continue
        state = optimizer.state.get(p)
        grown = False
        if state:
            for key, value in list(state.items()):
                if (isinstance(value, torch.Tensor) and value.dim() == p.dim() and value.dim() > 0
                        and value.shape != p.shape):
                    state[key] = pad_state_tensor(value, p.shape)
                    grown = True
        counts["padded" if grown else "kept"] += 1
    optimizer.param_groups[0]["params"] = params
    return counts

"""Sparsity Φ_s = Σ |w| over a block's parameters, and pruning after it is trained
(Krishnanunni & Bui-Thanh, arXiv 2211.06860: ℓ¹ on the new layer, then |w| < tol → 0)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from pdegrow.regularizers.terms import Forward, LossTerm


def l1_penalty(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Φ_s = Σ_p Σ |p|."""
    params = list(params)
    if not params:
        return torch.zeros(())
    return torch.stack([p.abs().sum() for p in params]).sum()


def _weights(module: nn.Module, include_bias: bool) -> list[nn.Parameter]:
    return [p for name, p in module.named_parameters() if include_bias or not name.endswith("bias")]


@torch.no_grad()
def prune_small_weights(module: nn.Module, tol: float, include_bias: bool = False) -> int:
    """Set every weight with |w| < tol to 0; returns how many were pruned."""
    n = 0
    for p in _weights(module, include_bias):
        mask = p.abs() < tol
        n += int((mask & (p != 0)).sum())
        p[mask] = 0.0
    return n


class SparsityTerm(LossTerm):
    """Φ_s on the parameters of ``module`` (weights only unless ``include_bias``)."""

    name = "sparsity"

    def __init__(self, weight: float, module: nn.Module, include_bias: bool = False):
        super().__init__(weight)
        self._params = _weights(module, include_bias)

    def value(self, batch: Any, fwd: Forward) -> torch.Tensor:
        return l1_penalty(p for p in self._params)

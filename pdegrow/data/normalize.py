"""Standardisation with statistics from the training split only."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

Mode = Literal["feature", "scalar", "none"]


def input_transform(x: Any, kind: str) -> Any:
    """A fixed elementwise map applied to raw inputs before standardisation.

    ``none``: x; ``log``: log |x| (for positive observations such as temperatures,
    where T ∝ 1/κ makes log T close to linear in the log-conductivity).
    Works on numpy arrays and torch tensors.
    """
    if kind == "none":
        return x
    if kind == "log":
        if isinstance(x, torch.Tensor):
            return torch.log(x.abs().clamp_min(1e-30))
        return np.log(np.maximum(np.abs(x), 1e-30))
    raise ValueError(f"unknown input transform {kind!r} (none, log)")


def inverse_input_transform(z: torch.Tensor, kind: str) -> torch.Tensor:
    """The raw input from its transformed value: ``none``: z; ``log``: e^z (the sign of a negative
    raw input is lost by ``log``; the heat observations it is meant for are positive)."""
    if kind == "none":
        return z
    if kind == "log":
        return torch.exp(z)
    raise ValueError(f"unknown input transform {kind!r} (none, log)")


class Standardizer:
    """x ↦ (x − μ)/σ; ``feature``: μ, σ per entry of a sample; ``scalar``: one μ, σ; ``none``: identity."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, mode: Mode = "feature"):
        self.mean, self.std, self.mode = mean, std, mode

    @classmethod
    def fit(cls, x: torch.Tensor, mode: Mode = "feature", eps: float = 1e-8) -> Standardizer:
        """Statistics over the first (sample) axis of ``x``."""
        if mode == "none":
            return cls(torch.zeros(()), torch.ones(()), mode)
        if mode == "scalar":
            return cls(x.mean(), x.std(unbiased=False).clamp_min(eps), mode)
        return cls(x.mean(0), x.std(0, unbiased=False).clamp_min(eps), mode)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z) + self.mean.to(z)

    def state_dict(self) -> dict[str, object]:
        return {"mean": self.mean.cpu(), "std": self.std.cpu(), "mode": self.mode}

    @classmethod
    def from_state_dict(cls, state: dict[str, object]) -> Standardizer:
        return cls(state["mean"], state["std"], state["mode"])  # type: ignore[arg-type]

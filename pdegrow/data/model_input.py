"""The one map from stored observations to the network's input, and back.

For raw observations y (n, …) of a data set, the network reads

    x = (t(y) − μ) / σ,        t = ``[data] input_transform`` (``none``: y; ``log``: log |y|),

computed in float64, then cast to the model's dtype, with a channel axis added to 2-D fields
(n, H, W) → (n, 1, H, W) (inputs of any other rank are used as they are), μ and σ the input
:class:`~pdegrow.data.normalize.Standardizer` fitted on the transformed training inputs.
Coordinate channels (``[model] coordinates``) are not part of it: the network's lift adds them
(:class:`pdegrow.models.blocks.ConvLift`), so every caller gets them the same way.

Training (the in-memory and lazy splits and the simulated samples of
:mod:`pdegrow.data.bundle`), ``evaluate`` (:mod:`pdegrow.training.evaluate`), inference and the
Python API (:mod:`pdegrow.inference`) and the exported graph (:mod:`pdegrow.export`) all call
:func:`model_inputs`, so one observation gives the same model input bit for bit on each of the
array paths (the exported graph applies the same functions to tensors inside the graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pdegrow.data.normalize import Standardizer, input_transform, inverse_input_transform


def transformed_inputs(raw: Any, transform: str, dtype: torch.dtype,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """t(y) in ``dtype`` on ``device``, with a channel axis for 2-D fields: what the input
    normaliser is fitted on. ``raw`` (n, …): a numpy array (any numeric dtype, read as float64) or a
    tensor (used in its own dtype, as inside an exported graph)."""
    if isinstance(raw, torch.Tensor):   # .to, not as_tensor: a traced graph must keep the op
        x = input_transform(raw, transform).to(dtype=dtype, device=device)
    else:
        x = torch.as_tensor(input_transform(np.asarray(raw, dtype=np.float64), transform), dtype=dtype,
                            device=device)
    return x.unsqueeze(1) if x.ndim == 3 else x


def model_inputs(raw: Any, transform: str, norm: Standardizer, dtype: torch.dtype,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """The network's input (t(y) − μ)/σ for raw observations ``raw`` (see the module docstring)."""
    return norm.transform(transformed_inputs(raw, transform, dtype, device))


def physical_inputs(z: torch.Tensor, transform: str, norm: Standardizer) -> torch.Tensor:
    """The raw observations y from the network's input z: t⁻¹(σ z + μ) (the channel axis stays; the
    sign of a negative raw input is lost by ``log``)."""
    return inverse_input_transform(norm.inverse(z), transform)


__all__ = ["model_inputs", "physical_inputs", "transformed_inputs"]

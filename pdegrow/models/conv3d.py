"""Three-dimensional convolutions for the growable conv network: volumes (B, C, D, H, W).

The conv blocks, lift, head and corrector of :mod:`pdegrow.models.blocks` take ``spatial_dims = 3``
and then hold ``nn.Conv3d`` layers ("same" padding, odd kernel) instead of ``nn.Conv2d``; every
growth operation (identity insertion, widening, the admissible block of Approach II) works
unchanged, since a 3-D convolution is a linear map of the k×k×k patches exactly as a 2-D one is of
the k×k patches.

A field problem whose input is a horizontal image and whose target is a volume (wind: the mast
image (K·c + 1, n_y, n_x) → u on the terrain-following grid (3, n_z, n_y, n_x)) is read by
*extruding* the image over the ``levels`` = n_z grid levels (:func:`extrude`): every level sees the
whole image plus one channel holding its level coordinate k/(n_z − 1), so the network can give each
height its own profile while the convolutions spread the masts' information in all three
directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from pdegrow.models.resnet import GrowableResNet

__all__ = ["CONV3D_STRATEGIES", "check_conv3d_model", "conv3d_for_data", "conv_layer", "extrude",
           "level_coordinate"]


def conv_layer(cin: int, cout: int, kernel_size: int, padding_mode: str, spatial_dims: int = 2) -> nn.Module:
    """A ``cin → cout`` convolution with "same" padding (odd ``kernel_size``) in 2 or 3 dimensions."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    cls = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    return cls(cin, cout, kernel_size, padding=kernel_size // 2, padding_mode=padding_mode)


def level_coordinate(levels: int, height: int, width: int, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """(1, D, H, W) channel holding k/(D − 1) on level k (0 on the first level, 1 on the last; 0 if D = 1)."""
    k = torch.arange(levels, dtype=dtype, device=device) / max(levels - 1, 1)
    return k[None, :, None, None].expand(1, levels, height, width)


def extrude(y: torch.Tensor, levels: int) -> torch.Tensor:
    """Image (B, C, H, W) → volume (B, C + 1, D, H, W), D = ``levels``: the image repeated on every level
    plus the :func:`level_coordinate` channel.  Linear in y, so a zero-initialised network on it is still
    the identity step it would be on y."""
    if y.ndim != 4:
        raise ValueError(f"extrude takes images (B, C, H, W), got shape {tuple(y.shape)}")
    b, _, h, w = y.shape
    vol = y[:, :, None].expand(b, y.shape[1], levels, h, w)
    coord = level_coordinate(levels, h, w, y.dtype, y.device).expand(b, 1, levels, h, w)
    return torch.cat([vol, coord], dim=1)


#: The growth strategies that grow a 3-D conv network (the others refuse ``model.kind = "conv3d"``).
CONV3D_STRATEGIES = ("fixed", "layerwise", "random_insertion", "topological_insertion", "net2deeper")


def check_conv3d_model(strategy: str, coordinates: bool = False) -> None:
    """Refuse (one line) a growth strategy that does not grow 3-D conv networks, and periodic coordinates."""
    from pdegrow.errors import PdegrowError

    if strategy not in CONV3D_STRATEGIES:
        raise PdegrowError(f"growth strategy {strategy!r} does not support model kind 'conv3d' "
                           f"(supported: {', '.join(CONV3D_STRATEGIES)})")
    if coordinates:
        raise PdegrowError("[model] coordinates (periodic coordinate channels) is for kind = 'conv', "
                           "not 'conv3d'")


def conv3d_for_data(m: Any, input_shape: Sequence[int], target_shape: Sequence[int]) -> GrowableResNet:
    """The 3-D conv network of a ``[model]`` section (``kind = "conv3d"``) for the data's shapes.

    Targets are volumes (C_out, D, H, W); inputs either volumes (C_in, D, H, W) of the same grid or
    images (C_in, H, W) of its horizontal plane, extruded over the D levels (:func:`extrude`).
    ``width``, ``depth``, ``block`` (``perceptron``/``conv_perceptron`` or ``mlp``/``conv``), ``hidden``,
    ``activation``, ``kernel_size`` and ``padding_mode`` as for ``kind = "conv"``."""
    from pdegrow.errors import PdegrowError
    from pdegrow.models.resnet import GrowableResNet

    tin, tout = tuple(input_shape), tuple(target_shape)
    if len(tout) != 4:
        raise PdegrowError(f"[model] kind = 'conv3d' needs volume targets (C, D, H, W); the data's target "
                           f"shape is {tout}")
    if len(tin) == 4 and tin[1:] == tout[1:]:
        levels = 0
    elif len(tin) == 3 and tin[1:] == tout[2:]:
        levels = tout[1]
    else:
        raise PdegrowError(f"[model] kind = 'conv3d' needs inputs on the target's grid (C, {tout[1]}, "
                           f"{tout[2]}, {tout[3]}) or its horizontal plane (C, {tout[2]}, {tout[3]}); "
                           f"the data's input shape is {tin}")
    if m.kernel_size % 2 != 1:
        raise PdegrowError(f"[model] kernel_size must be odd for 'same' convolutions, got {m.kernel_size}")
    block = {"perceptron": "conv_perceptron", "mlp": "conv"}.get(m.block, m.block)
    if block not in ("conv_perceptron", "conv"):
        raise PdegrowError(f"[model] block = {m.block!r} is not a conv block (kind = 'conv3d' takes "
                           f"'perceptron' or 'mlp')")
    return GrowableResNet.conv(tin[0], tout[0], m.width, m.depth, block=block, activation=m.activation,
                               kernel_size=m.kernel_size, padding_mode=m.padding_mode, hidden=m.hidden,
                               spatial_dims=3, levels=levels)

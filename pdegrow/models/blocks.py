"""The building blocks of a growable residual network, each serialisable.

Every module here has a class attribute ``kind`` and a :meth:`spec` that
returns ``{"kind": …, **constructor kwargs}``; :func:`build_module` rebuilds
an (untrained) module from a spec, so an architecture is plain JSON and a
checkpoint can restore a grown network exactly. New block types (e.g. from a
growth strategy) join with the :func:`register_block` decorator (both in
:mod:`pdegrow.models.spec`; widening two layers in :mod:`pdegrow.models.widen`;
the names are re-exported here).

Residual branches g (the network applies x_{t+1} = x_t + g(x_t)):

* :class:`PerceptronBlock`  g(x) = σ(s·(W x + b))           (vectors)
* :class:`MLPBlock`         g(x) = L_k σ(… σ(L_1 x))         (vectors, widenable)
* :class:`ConvPerceptronBlock` g(x) = σ(s·(K * x + b))      (fields, "same" padding)
* :class:`ConvBlock`        g(x) = C_k σ(… σ(C_1 x))         (fields, widenable)

With W = b = 0 (``zero_init``) and σ(0) = 0 a perceptron block is the
identity map of the residual stream (Approach I; Net2DeeperNet); with
σ = ``silu_tanh`` and s = ε it is the admissible block of Approach II.
Lifts (input → x₀), heads (x_L → output) and SRL correctors live here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pdegrow.errors import PdegrowError
from pdegrow.models.activations import make_activation
from pdegrow.models.conv3d import conv_layer, extrude
from pdegrow.models.spec import BLOCK_REGISTRY, SpecModule, block_options, build_module, register_block
from pdegrow.models.widen import widen_pair


class _Stack(SpecModule):
    """Shared code of the widenable multi-layer blocks: ``self.layers`` with σ between."""

    layers: nn.ModuleList
    hidden: list[int]

    def _run(self, x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n - 1:
                x = act(x)
        return x

    def zero_init(self) -> None:
        nn.init.zeros_(self.layers[-1].weight)
        if self.layers[-1].bias is not None:
            nn.init.zeros_(self.layers[-1].bias)

    def widen(self, layer: int, k: int, fan_in: torch.Tensor | None = None,
              bias: torch.Tensor | None = None, fan_out: torch.Tensor | None = None) -> None:
        """Add ``k`` units to hidden layer ``layer`` (0-based); see :func:`widen_pair`."""
        if not 0 <= layer < len(self.hidden):
            raise ValueError(
                f"{type(self).__name__} has hidden layers 0..{len(self.hidden) - 1}, not {layer}")
        if k < 1:
            raise ValueError("widen by k >= 1 units")
        widen_pair(self.layers[layer], self.layers[layer + 1], k, fan_in, bias, fan_out)
        self.hidden[layer] += k

    def last_layer(self) -> nn.Module:
        return self.layers[-1]


@register_block
class PerceptronBlock(SpecModule):
    """g(x) = σ(s·(W x + b)), W ∈ R^{n×n}: the one-layer residual branch.

    ``scale`` s is a fixed (non-trained) buffer: ε of Approach II, 1 otherwise.
    """

    kind = "perceptron"

    def __init__(self, width: int, activation: str = "tanh", scale: float = 1.0, bias: bool = True):
        super().__init__()
        self.width, self.activation_name, self.use_bias = int(width), activation, bias
        self.linear = nn.Linear(width, width, bias=bias)
        self.act = make_activation(activation)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.scale * self.linear(x))

    def zero_init(self) -> None:
        nn.init.zeros_(self.linear.weight)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def last_layer(self) -> nn.Module:
        return self.linear

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "activation": self.activation_name,
                "scale": float(self.scale), "bias": self.use_bias}


@register_block
class MLPBlock(_Stack):
    """g(x) = L_k σ(… σ(L_1 x)), widths n → hidden[0] → … → hidden[-1] → n."""

    kind = "mlp"

    def __init__(self, width: int, hidden: list[int] | tuple[int, ...] = (64,), activation: str = "tanh"):
        super().__init__()
        self.width, self.hidden, self.activation_name = int(width), [int(h) for h in hidden], activation
        sizes = [self.width, *self.hidden, self.width]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.act)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "hidden": list(self.hidden),
                "activation": self.activation_name}


def _conv(cin: int, cout: int, kernel_size: int, padding_mode: str, spatial_dims: int = 2) -> nn.Module:
    return conv_layer(cin, cout, kernel_size, padding_mode, spatial_dims)


def _dims_spec(spatial_dims: int) -> dict[str, Any]:
    """``spatial_dims`` in a spec only when 3: 2-D specs (and model files holding them) stay as they were."""
    return {"spatial_dims": 3} if spatial_dims == 3 else {}


@register_block
class ConvPerceptronBlock(SpecModule):
    """g(x) = σ(s·(K * x + b)), a ``channels → channels`` convolution with "same" padding
    (``spatial_dims`` 2: fields (B, C, H, W); 3: volumes (B, C, D, H, W))."""

    kind = "conv_perceptron"

    def __init__(self, channels: int, kernel_size: int = 3, activation: str = "tanh", scale: float = 1.0,
                 padding_mode: str = "zeros", spatial_dims: int = 2):
        super().__init__()
        self.channels, self.kernel_size = int(channels), int(kernel_size)
        self.activation_name, self.padding_mode = activation, padding_mode
        self.spatial_dims = int(spatial_dims)
        self.conv = _conv(channels, channels, kernel_size, padding_mode, self.spatial_dims)
        self.act = make_activation(activation)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.scale * self.conv(x))

    def zero_init(self) -> None:
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def last_layer(self) -> nn.Module:
        return self.conv

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "kernel_size": self.kernel_size,
                "activation": self.activation_name, "scale": float(self.scale),
                "padding_mode": self.padding_mode, **_dims_spec(self.spatial_dims)}


@register_block
class ConvBlock(_Stack):
    """g(x) = C_k σ(… σ(C_1 x)), channels c → hidden[0] → … → c, "same" padding (2-D or 3-D)."""

    kind = "conv"

    def __init__(self, channels: int, hidden: list[int] | tuple[int, ...] = (32,), kernel_size: int = 3,
                 activation: str = "gelu", padding_mode: str = "zeros", spatial_dims: int = 2):
        super().__init__()
        self.channels, self.hidden = int(channels), [int(h) for h in hidden]
        self.kernel_size, self.activation_name, self.padding_mode = int(kernel_size), activation, padding_mode
        self.spatial_dims = int(spatial_dims)
        sizes = [self.channels, *self.hidden, self.channels]
        self.layers = nn.ModuleList(_conv(a, b, kernel_size, padding_mode, self.spatial_dims)
                                    for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.act)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "hidden": list(self.hidden),
                "kernel_size": self.kernel_size, "activation": self.activation_name,
                "padding_mode": self.padding_mode, **_dims_spec(self.spatial_dims)}


# ---------------------------------------------------------------- lifts and heads


@register_block
class LinearLift(SpecModule):
    """x₀ = σ(W y + b) for a vector input y (any trailing shape is flattened)."""

    kind = "linear_lift"

    def __init__(self, in_features: int, width: int, activation: str = "tanh"):
        super().__init__()
        self.in_features, self.width, self.activation_name = int(in_features), int(width), activation
        self.linear = nn.Linear(self.in_features, self.width)
        self.act = make_activation(activation)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(y.flatten(1)))

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_features": self.in_features, "width": self.width,
                "activation": self.activation_name}


@register_block
class LinearHead(SpecModule):
    """output = W x_L + b, reshaped to ``out_shape``."""

    kind = "linear_head"

    def __init__(self, width: int, out_shape: list[int] | tuple[int, ...]):
        super().__init__()
        self.width, self.out_shape = int(width), [int(s) for s in out_shape]
        self.linear = nn.Linear(self.width, math.prod(self.out_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).reshape(x.shape[0], *self.out_shape)

    def zero_init(self) -> None:
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "out_shape": list(self.out_shape)}


def periodic_coordinates(height: int, width: int, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """(4, H, W) channels sin 2πx, cos 2πx, sin 2πy, cos 2πy at x = i/W, y = j/H (axis 0 = y).

    Appended to a field input (CoordConv, Liu et al., NeurIPS 2018, with periodic coordinates for
    the torus) they let convolutions, which are translation-equivariant, represent operators that
    depend on position, e.g. the flow of a fixed forcing pattern; periodic, so circular padding
    sees no seam."""
    x = 2.0 * math.pi * torch.arange(width, dtype=dtype, device=device) / width
    y = 2.0 * math.pi * torch.arange(height, dtype=dtype, device=device) / height
    gy, gx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([gx.sin(), gx.cos(), gy.sin(), gy.cos()])


@register_block
class ConvLift(SpecModule):
    """x₀ = σ(K * y + b): fields (B, C_in, H, W) → (B, width, H, W).

    ``coordinates``: the convolution reads [y, :func:`periodic_coordinates`] (C_in + 4 channels).
    ``spatial_dims = 3``: volumes (B, C_in, D, H, W) → (B, width, D, H, W); with ``levels`` = D > 0 the
    input is an image (B, C_in, H, W) that :func:`~pdegrow.models.conv3d.extrude` turns into a volume of
    D levels (C_in + 1 channels: the level coordinate)."""

    kind = "conv_lift"

    def __init__(self, in_channels: int, width: int, kernel_size: int = 3, activation: str = "gelu",
                 padding_mode: str = "zeros", coordinates: bool = False, spatial_dims: int = 2,
                 levels: int = 0):
        super().__init__()
        self.in_channels, self.width, self.kernel_size = int(in_channels), int(width), int(kernel_size)
        self.activation_name, self.padding_mode = activation, padding_mode
        self.coordinates = bool(coordinates)
        self.spatial_dims, self.levels = int(spatial_dims), int(levels)
        if self.spatial_dims == 3 and self.coordinates:
            raise PdegrowError("conv lift: periodic coordinate channels are for 2-D fields "
                               "(coordinates = false with spatial_dims = 3)")
        if self.levels and self.spatial_dims != 3:
            raise PdegrowError("conv lift: levels (extruding an image) needs spatial_dims = 3")
        cin = self.in_channels + 4 * self.coordinates + (1 if self.levels else 0)
        self.conv = _conv(cin, self.width, self.kernel_size, padding_mode, self.spatial_dims)
        self.act = make_activation(activation)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.levels:
            y = extrude(y, self.levels)
        if self.coordinates:
            c = periodic_coordinates(y.shape[-2], y.shape[-1], y.dtype, y.device)
            y = torch.cat([y, c.expand(y.shape[0], -1, -1, -1)], dim=1)
        return self.act(self.conv(y))

    def spec(self) -> dict[str, Any]:
        extra = {"coordinates": True} if self.coordinates else {}
        if self.levels:
            extra["levels"] = self.levels
        return {"kind": self.kind, "in_channels": self.in_channels, "width": self.width,
                "kernel_size": self.kernel_size, "activation": self.activation_name,
                "padding_mode": self.padding_mode, **extra, **_dims_spec(self.spatial_dims)}


@register_block
class ConvHead(SpecModule):
    """output = K * x_L + b with a ``kernel_size`` convolution: (B, width, H, W) → (B, C_out, H, W)
    (or (B, width, D, H, W) → (B, C_out, D, H, W) with ``spatial_dims = 3``)."""

    kind = "conv_head"

    def __init__(self, width: int, out_channels: int, kernel_size: int = 1, padding_mode: str = "zeros",
                 spatial_dims: int = 2):
        super().__init__()
        self.width, self.out_channels, self.kernel_size = int(width), int(out_channels), int(kernel_size)
        self.padding_mode, self.spatial_dims = padding_mode, int(spatial_dims)
        self.conv = _conv(self.width, self.out_channels, self.kernel_size, padding_mode, self.spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def zero_init(self) -> None:
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "padding_mode": self.padding_mode,
                **_dims_spec(self.spatial_dims)}


# ---------------------------------------------------------------- SRL correctors


@register_block
class MLPCorrector(_Stack):
    """Q(y) = s · L_k σ(… σ(L_1 y)): a small network on the *input* y, added to the output.

    Used by sequential residual learning; ``scale`` s (a buffer) is the RMS of the
    residual it is fitted to, so the network itself fits an O(1) target.
    ``zero_init`` makes Q ≡ 0, so appending a corrector keeps the function.
    """

    kind = "mlp_corrector"

    def __init__(self, in_features: int, out_shape: list[int] | tuple[int, ...],
                 hidden: list[int] | tuple[int, ...] = (32, 32), activation: str = "tanh",
                 scale: float = 1.0):
        super().__init__()
        self.in_features, self.out_shape = int(in_features), [int(s) for s in out_shape]
        self.hidden, self.activation_name = [int(h) for h in hidden], activation
        sizes = [self.in_features, *self.hidden, math.prod(self.out_shape)]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.act = make_activation(activation)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return (self.scale * self._run(y.flatten(1), self.act)).reshape(y.shape[0], *self.out_shape)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_features": self.in_features, "out_shape": list(self.out_shape),
                "hidden": list(self.hidden), "activation": self.activation_name, "scale": float(self.scale)}


@register_block
class ConvCorrector(_Stack):
    """Q(y) = s · C_k σ(… σ(C_1 y)) on input fields (B, C_in, H, W) → (B, C_out, H, W); SRL for fields.

    ``spatial_dims = 3``: 3-D convolutions on volumes; ``levels`` > 0 extrudes an input image over that
    many levels first (as :class:`ConvLift` does)."""

    kind = "conv_corrector"

    def __init__(self, in_channels: int, out_channels: int, hidden: list[int] | tuple[int, ...] = (16, 16),
                 kernel_size: int = 3, activation: str = "gelu", scale: float = 1.0,
                 padding_mode: str = "zeros", spatial_dims: int = 2, levels: int = 0):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.hidden, self.kernel_size = [int(h) for h in hidden], int(kernel_size)
        self.activation_name, self.padding_mode = activation, padding_mode
        self.spatial_dims, self.levels = int(spatial_dims), int(levels)
        if self.levels and self.spatial_dims != 3:
            raise PdegrowError("conv corrector: levels (extruding an image) needs spatial_dims = 3")
        sizes = [self.in_channels + (1 if self.levels else 0), *self.hidden, self.out_channels]
        self.layers = nn.ModuleList(_conv(a, b, self.kernel_size, padding_mode, self.spatial_dims)
                                    for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.act = make_activation(activation)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.levels:
            y = extrude(y, self.levels)
        return self.scale * self._run(y, self.act)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "hidden": list(self.hidden), "kernel_size": self.kernel_size,
                "activation": self.activation_name, "scale": float(self.scale),
                "padding_mode": self.padding_mode, **({"levels": self.levels} if self.levels else {}),
                **_dims_spec(self.spatial_dims)}


__all__ = ["BLOCK_REGISTRY", "ConvBlock", "ConvCorrector", "ConvHead", "ConvLift", "ConvPerceptronBlock",
           "LinearHead", "LinearLift", "MLPBlock", "MLPCorrector", "PerceptronBlock", "SpecModule",
           "block_options", "build_module", "periodic_coordinates", "register_block", "widen_pair"]

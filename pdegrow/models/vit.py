"""A growable vision transformer: the residual network of :mod:`pdegrow.models.resnet` on tokens.

    x₀ = PatchEmbedding(y)                       (B, N, D): N = (H/p)·(W/p) tokens of width D
    x_{t+1} = x_t + g_{t+1}(x_t)                 pre-norm residual sub-layers
    output = head(x_L)                           un-patchify to a field, or pool to a vector

A transformer block (Dosovitskiy et al., "An image is worth 16×16 words", ICLR 2021) is two
residual sub-layers, and each is one block of the :class:`~pdegrow.models.resnet.GrowableResNet`:

* :class:`AttentionSublayer`   g(x) = s · W_O MHSA(LN(x))      (multi-head self-attention)
* :class:`TokenMLPSublayer`    g(x) = L₂ σ(L₁ LN(x))           (token-wise MLP, widenable)

so a ViT of ``depth`` transformer blocks has ``2·depth`` residual blocks, and every growth
operation of the residual network — insert a block between x_t and x_{t+1}, widen a hidden
layer, freeze, save/restore by spec — works on it unchanged.  A token-wise block
(e.g. :class:`~pdegrow.models.blocks.PerceptronBlock`, which applies its linear map to the last
axis) acts on every token alike: the admissible block σ(ε(W x + b)) of Approach II inserted
into a ViT is the dense block applied per token (``docs/growth.md``, "Vision transformers").

Positions: ``"learned"`` (a trained (N, D) table, initialised N(0, 0.02²)) or
``"sinusoidal"`` (fixed 2-D sine/cosine table: half the channels encode the row, half the
column, each with frequencies 1/10000^(2k/(D/2))).  Inputs are fields (B, C, H, W) or flat
vectors (B, C·H·W) reshaped to ``image_size`` (e.g. the 8×8 digits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pdegrow.errors import PdegrowError
from pdegrow.models.activations import make_activation
from pdegrow.models.blocks import SpecModule, _Stack, register_block
from pdegrow.models.resnet import GrowableResNet

POSITIONS = ("learned", "sinusoidal")

#: Strategies that support ``model.kind = "vit"`` (they insert token-wise blocks or never grow).
VIT_STRATEGIES = ("fixed", "forward_thinking", "layerwise", "net2deeper", "random_insertion",
                  "topological_insertion")


def sinusoidal_positions(grid: tuple[int, int], width: int) -> torch.Tensor:
    """The fixed 2-D sine/cosine position table (N, D), N = h·w tokens in row-major order.

    Channels [0, D/2) encode the row i, [D/2, D) the column j; within each half the pairs
    (sin(i ω_k), cos(i ω_k)), ω_k = 10000^(−k/(D/4)), k = 0 … D/4 − 1.  Needs D divisible by 4.
    """
    if width % 4 != 0:
        raise PdegrowError(f"sinusoidal positions need a width divisible by 4, got {width}")
    h, w = grid
    quarter = width // 4
    omega = 10000.0 ** (-torch.arange(quarter, dtype=torch.float64) / max(quarter, 1))
    rows = torch.arange(h, dtype=torch.float64)[:, None] * omega[None, :]   # (h, D/4)
    cols = torch.arange(w, dtype=torch.float64)[:, None] * omega[None, :]   # (w, D/4)
    row_emb = torch.cat([rows.sin(), rows.cos()], dim=1)                     # (h, D/2)
    col_emb = torch.cat([cols.sin(), cols.cos()], dim=1)                     # (w, D/2)
    table = torch.cat([row_emb[:, None, :].expand(h, w, width // 2),
                       col_emb[None, :, :].expand(h, w, width // 2)], dim=2)
    return table.reshape(h * w, width).float()


def _grid(image_size: Sequence[int], patch_size: int) -> tuple[int, int]:
    h, w = (int(s) for s in image_size)
    if patch_size < 1 or h % patch_size or w % patch_size:
        raise PdegrowError(f"[model] patch_size = {patch_size} must divide the image size {h}×{w}")
    return h // patch_size, w // patch_size


@register_block
class PatchEmbedding(SpecModule):
    """x₀ = (patches of y) · E + positions: (B, C, H, W) or (B, C·H·W) → (B, N, D).

    The patch projection is a p×p convolution with stride p (one linear map per patch).
    """

    kind = "vit_patch"

    def __init__(self, in_channels: int, image_size: Sequence[int], patch_size: int, width: int,
                 position: str = "learned", flat_input: bool = False):
        super().__init__()
        if position not in POSITIONS:
            raise PdegrowError(f"[model] position = {position!r} must be one of {', '.join(POSITIONS)}")
        self.in_channels, self.patch_size, self.width = int(in_channels), int(patch_size), int(width)
        self.image_size = [int(s) for s in image_size]
        self.position, self.flat_input = position, bool(flat_input)
        self.grid = _grid(self.image_size, self.patch_size)
        self.n_tokens = self.grid[0] * self.grid[1]
        self.proj = nn.Conv2d(self.in_channels, self.width, self.patch_size, stride=self.patch_size)
        if position == "learned":
            self.pos = nn.Parameter(0.02 * torch.randn(self.n_tokens, self.width))
        else:
            self.register_buffer("pos", sinusoidal_positions(self.grid, self.width))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.flat_input:
            y = y.reshape(y.shape[0], self.in_channels, *self.image_size)
        return self.proj(y).flatten(2).transpose(1, 2) + self.pos

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_channels": self.in_channels, "image_size": list(self.image_size),
                "patch_size": self.patch_size, "width": self.width, "position": self.position,
                "flat_input": self.flat_input}


@register_block
class AttentionSublayer(SpecModule):
    """g(x) = s · W_O MHSA(LN(x)) + s·b_O: pre-norm multi-head self-attention, (B, N, D) → (B, N, D).

    MHSA(h) = concat_k softmax(Q_k K_kᵀ/√d_k) V_k with [Q, K, V] = h W_QKVᵀ + b, d_k = D/heads.
    ``zero_init`` zeros the output projection (the exact identity step x + g(x) = x).
    """

    kind = "vit_attention"

    def __init__(self, width: int, heads: int = 2, scale: float = 1.0):
        super().__init__()
        if heads < 1 or width % heads:
            raise PdegrowError(f"[model] heads = {heads} must divide the width {width}")
        self.width, self.heads = int(width), int(heads)
        self.norm = nn.LayerNorm(self.width)
        self.qkv = nn.Linear(self.width, 3 * self.width)
        self.out = nn.Linear(self.width, self.width)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])        # (B, heads, N, d_k)
        return self.scale * self.out(a.transpose(1, 2).reshape(b, n, d))

    def zero_init(self) -> None:
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def last_layer(self) -> nn.Module:
        return self.out

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "heads": self.heads, "scale": float(self.scale)}


@register_block
class TokenMLPSublayer(_Stack):
    """g(x) = L_k σ(… σ(L_1 LN(x))) on every token: widths D → hidden… → D (pre-norm, widenable)."""

    kind = "vit_mlp"

    def __init__(self, width: int, hidden: list[int] | tuple[int, ...] = (64,), activation: str = "gelu"):
        super().__init__()
        self.width, self.hidden, self.activation_name = int(width), [int(h) for h in hidden], activation
        self.norm = nn.LayerNorm(self.width)
        sizes = [self.width, *self.hidden, self.width]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.norm(x), self.act)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "hidden": list(self.hidden),
                "activation": self.activation_name}


@register_block
class FieldHead(SpecModule):
    """Un-patchify: LN, a linear map of every token to its p×p patch of C_out channels, (B, N, D) →
    (B, C_out, H, W)."""

    kind = "vit_field_head"

    def __init__(self, width: int, out_channels: int, image_size: Sequence[int], patch_size: int):
        super().__init__()
        self.width, self.out_channels, self.patch_size = int(width), int(out_channels), int(patch_size)
        self.image_size = [int(s) for s in image_size]
        self.grid = _grid(self.image_size, self.patch_size)
        self.norm = nn.LayerNorm(self.width)
        self.linear = nn.Linear(self.width, self.out_channels * self.patch_size**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        (h, w), p, c = self.grid, self.patch_size, self.out_channels
        z = self.linear(self.norm(x)).reshape(b, h, w, c, p, p)
        return z.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h * p, w * p)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "out_channels": self.out_channels,
                "image_size": list(self.image_size), "patch_size": self.patch_size}


@register_block
class PooledHead(SpecModule):
    """A vector output: LN, mean over tokens, linear map: (B, N, D) → (B, *out_shape)."""

    kind = "vit_pooled_head"

    def __init__(self, width: int, out_shape: Sequence[int]):
        super().__init__()
        self.width, self.out_shape = int(width), [int(s) for s in out_shape]
        self.norm = nn.LayerNorm(self.width)
        self.linear = nn.Linear(self.width, math.prod(self.out_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x).mean(dim=1)).reshape(x.shape[0], *self.out_shape)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "out_shape": list(self.out_shape)}


def build_vit(in_shape: Sequence[int], out_shape: Sequence[int], width: int, depth: int = 1, *,
              heads: int = 2, patch_size: int = 4, hidden: Sequence[int] = (64,), activation: str = "gelu",
              position: str = "learned", image_size: Sequence[int] | None = None,
              zero_init: bool = False) -> GrowableResNet:
    """A ViT as a :class:`~pdegrow.models.resnet.GrowableResNet`: ``depth`` transformer blocks
    (attention + MLP sub-layers, 2·``depth`` residual blocks).

    ``in_shape`` (C, H, W) for fields, (n,) for vectors (then ``image_size`` (H, W) with
    n = C·H·W).  ``out_shape`` (C_out, H, W) on the input's grid → un-patchifying head; any
    other shape → pooled vector head.
    """
    in_shape = [int(s) for s in in_shape]
    out_shape = [int(s) for s in out_shape]
    if len(in_shape) == 3:
        channels, size, flat = in_shape[0], in_shape[1:], False
    elif len(in_shape) == 1:
        if image_size is None or len(image_size) != 2:
            raise PdegrowError(f"[model] kind = 'vit' on vector inputs of size {in_shape[0]} needs an image "
                               f"size (H, W)")
        size = [int(s) for s in image_size]
        if in_shape[0] % (size[0] * size[1]):
            raise PdegrowError(f"[model] vector inputs of size {in_shape[0]} are not images of "
                               f"{size[0]}×{size[1]}")
        channels, flat = in_shape[0] // (size[0] * size[1]), True
    else:
        raise PdegrowError(f"[model] kind = 'vit' needs field (C, H, W) or vector inputs, "
                           f"got shape {in_shape}")
    lift = PatchEmbedding(channels, size, patch_size, width, position, flat)
    if len(out_shape) == 3 and out_shape[1:] == list(size):
        head: nn.Module = FieldHead(width, out_shape[0], size, patch_size)
    else:
        head = PooledHead(width, out_shape)
    model = GrowableResNet(lift, head)
    for _ in range(depth):
        for block in (AttentionSublayer(width, heads), TokenMLPSublayer(width, list(hidden), activation)):
            if zero_init:
                block.zero_init()
            model.insert_block(model.depth, block)
    return model


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a token network (its lift is a :class:`PatchEmbedding`)."""
    return isinstance(getattr(model, "lift", None), PatchEmbedding)


def check_vit_strategy(strategy: str) -> None:
    """Refuse (one line) a growth strategy that does not support ``model.kind = "vit"``."""
    if strategy not in VIT_STRATEGIES:
        raise PdegrowError(f"growth strategy {strategy!r} does not support model kind 'vit' "
                           f"(supported: {', '.join(VIT_STRATEGIES)})")


def vit_for_data(m: Any, input_shape: Sequence[int], target_shape: Sequence[int],
                 geometry: dict[str, Any] | None = None) -> GrowableResNet:
    """The ViT of a ``[model]`` section (``kind = "vit"``) for the data's shapes.

    ``depth`` transformer blocks, ``hidden`` the token-MLP widths, ``heads``, ``patch_size``,
    ``position``, ``activation`` of the token MLP (``block``, ``kernel_size`` and ``padding_mode``
    do not apply).  Vector inputs take their image size from the file's ``geometry/image_shape`` (the digits)
    or, failing that, are square single-channel images.
    """
    image_size = None
    if len(input_shape) == 1:
        shape = (geometry or {}).get("image_shape")
        if shape is not None:
            image_size = [int(s) for s in shape][-2:]
        else:
            side = math.isqrt(int(input_shape[0]))
            if side * side != int(input_shape[0]):
                raise PdegrowError(f"[model] kind = 'vit': vector inputs of size {input_shape[0]} are not a "
                                   f"square image and the file has no geometry/image_shape")
            image_size = [side, side]
    return build_vit(input_shape, target_shape, m.width, m.depth, heads=m.heads, patch_size=m.patch_size,
                     hidden=list(m.hidden), activation=m.activation, position=m.position,
                     image_size=image_size)


__all__ = ["POSITIONS", "VIT_STRATEGIES", "AttentionSublayer", "FieldHead", "PatchEmbedding", "PooledHead",
           "TokenMLPSublayer", "build_vit", "check_vit_strategy", "is_vit", "sinusoidal_positions",
           "vit_for_data"]

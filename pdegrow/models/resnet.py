"""The growable residual network (``docs/architecture.md``).

    x₀ = lift(y),   x_{t+1} = x_t + g_{t+1}(x_t)  (t = 0 … L−1),
    output = head(x_L) [+ S(y)] + Σ_j Q_j(y)

``g_t`` are residual branches (:mod:`pdegrow.models.blocks`), ``Q_j`` the
optional correctors of sequential residual learning (none unless SRL ran),
``S`` an optional linear skip path (:mod:`pdegrow.models.linear_skip`; none unless
``[model] linear_skip`` asks for one).

Stable interface (growth strategies build on it):

* ``model(y)`` → output; ``model(y, return_states=True)`` → ``(output, [x_0, …, x_L])``
  (the states are the graph's own tensors, so ``torch.autograd.grad(J, states)``
  gives −λ_t, the costates of the topological derivative);
* ``run_blocks(x, start, stop)`` applies blocks ``start … stop−1`` to a state;
* ``insert_block(t, block)`` puts ``block`` between x_t and x_{t+1} (t = 0 … L;
  t = L appends); ``new_block(...)`` makes a block that fits the stream
  (zero-initialised by default, i.e. the exact identity);
* ``widen(t, layer, k, fan_in, bias, fan_out)`` adds k units to a hidden layer of block t;
* ``freeze(...)``/``unfreeze(...)``; ``add_corrector(Q)``; ``set_skip(S)``;
* ``spec()`` / :meth:`GrowableResNet.from_spec`: the architecture as JSON
  (weights go through ``state_dict`` as usual).

Every growth operation keeps existing ``nn.Parameter`` objects (widening
replaces their ``.data`` in place, appending the new entries), so
:func:`pdegrow.models.optim.sync_optimizer` can carry the optimizer state over.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from pdegrow.models.blocks import (
    ConvHead,
    ConvLift,
    LinearHead,
    LinearLift,
    SpecModule,
    build_module,
)

PARTS = ("lift", "blocks", "head", "correctors", "skip")



def _taken(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` that the block ``kind`` takes: the shared model options (e.g. ``hidden``, which
    only the ``mlp``/``conv`` kinds have) apply to the blocks that have them."""
    from pdegrow.models.blocks import block_options

    accepted = block_options(kind)
    return {k: v for k, v in options.items() if k in accepted}

class GrowableResNet(nn.Module):
    """x₀ = lift(y), x_{t+1} = x_t + g_{t+1}(x_t), output = head(x_L) [+ S(y)] + Σ_j Q_j(y)."""

    def __init__(self, lift: nn.Module, head: nn.Module, blocks: Iterable[nn.Module] = (),
                 correctors: Iterable[nn.Module] = (), skip: nn.Module | None = None):
        super().__init__()
        self.lift = lift
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.correctors = nn.ModuleList(correctors)
        self.skip = skip

    # ------------------------------------------------------------------ construction

    @classmethod
    def mlp(cls, in_features: int, out_shape: list[int] | tuple[int, ...], width: int, depth: int = 0,
            block: str = "perceptron", activation: str = "tanh", zero_init: bool = False,
            **block_kwargs: Any) -> GrowableResNet:
        """A vector network: LinearLift → ``depth`` blocks of ``block`` kind → LinearHead."""
        model = cls(LinearLift(in_features, width, activation), LinearHead(width, list(out_shape)))
        block_kwargs = _taken(block, block_kwargs)
        for _ in range(depth):
            model.insert_block(model.depth, model.new_block(block, zero_init=zero_init,
                                                            activation=activation, **block_kwargs))
        return model

    @classmethod
    def conv(cls, in_channels: int, out_channels: int, width: int, depth: int = 0, block: str = "conv",
             activation: str = "gelu", kernel_size: int = 3, padding_mode: str = "zeros",
             zero_init: bool = False, coordinates: bool = False, spatial_dims: int = 2, levels: int = 0,
             **block_kwargs: Any) -> GrowableResNet:
        """A field network on (B, C, H, W): ConvLift → ``depth`` conv blocks → 1×1 ConvHead
        (``coordinates``: the lift also reads periodic coordinate channels).  ``spatial_dims = 3``:
        the same on volumes (B, C, D, H, W) with 3-D convolutions; ``levels`` = D > 0 lets it read an
        image (B, C, H, W) extruded over D levels (:func:`pdegrow.models.conv3d.extrude`)."""
        model = cls(ConvLift(in_channels, width, kernel_size, activation, padding_mode, coordinates,
                             spatial_dims, levels),
                    ConvHead(width, out_channels, 1, padding_mode, spatial_dims))
        block_kwargs = _taken(block, block_kwargs)
        for _ in range(depth):
            model.insert_block(model.depth, model.new_block(
                block, zero_init=zero_init, activation=activation, kernel_size=kernel_size,
                spatial_dims=spatial_dims,
                padding_mode=padding_mode, **block_kwargs))
        return model

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> GrowableResNet:
        """Rebuild the architecture (and frozen flags) of :meth:`spec`; weights are fresh."""
        model = cls(build_module(spec["lift"]), build_module(spec["head"]),
                    [build_module(s) for s in spec.get("blocks", [])],
                    [build_module(s) for s in spec.get("correctors", [])],
                    build_module(spec["skip"]) if spec.get("skip") else None)
        frozen = spec.get("frozen", {})
        if frozen.get("skip"):
            model.freeze("skip")
        if frozen.get("lift"):
            model.freeze("lift")
        if frozen.get("head"):
            model.freeze("head")
        model.freeze([i for i, f in enumerate(frozen.get("blocks", [])) if f])
        for j, f in enumerate(frozen.get("correctors", [])):
            if f:
                _set_trainable(model.correctors[j], False)
        return model

    def spec(self) -> dict[str, Any]:
        """The architecture as JSON: every part's spec and which parts are frozen (``skip`` only
        when the model has one, so the specs of models without it are unchanged)."""
        out = {
            "lift": _spec(self.lift), "head": _spec(self.head),
            "blocks": [_spec(b) for b in self.blocks],
            "correctors": [_spec(q) for q in self.correctors],
            "frozen": {
                "lift": _is_frozen(self.lift), "head": _is_frozen(self.head),
                "blocks": [_is_frozen(b) for b in self.blocks],
                "correctors": [_is_frozen(q) for q in self.correctors],
            },
        }
        if self.skip is not None:
            out["skip"] = _spec(self.skip)
            out["frozen"]["skip"] = _is_frozen(self.skip)
        return out

    # ------------------------------------------------------------------ evaluation

    @property
    def depth(self) -> int:
        """L, the number of residual blocks."""
        return len(self.blocks)

    @property
    def is_conv(self) -> bool:
        return isinstance(self.lift, ConvLift) or isinstance(self.head, ConvHead)

    @property
    def spatial_dims(self) -> int:
        """2 for fields (B, C, H, W), 3 for volumes (B, C, D, H, W) (conv networks; 2 otherwise)."""
        return int(getattr(self.lift, "spatial_dims", 2))

    @property
    def stream_width(self) -> int:
        """The dimension (vectors) or channel count (fields) of the states x_t."""
        return int(self.lift.width)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """x_stop from x_start: apply blocks ``start … stop−1``."""
        for block in self.blocks[start:stop]:
            x = x + block(x)
        return x

    def forward(self, y: torch.Tensor, return_states: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.lift(y)
        states = [x]
        for block in self.blocks:
            x = x + block(x)
            states.append(x)
        out = self.head(x)
        if self.skip is not None:
            out = out + self.skip(y)
        for q in self.correctors:
            out = out + q(y)
        return (out, states) if return_states else out

    def states(self, y: torch.Tensor) -> list[torch.Tensor]:
        """[x_0, …, x_L] for a batch of inputs."""
        return self(y, return_states=True)[1]  # type: ignore[index]

    def n_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def architecture(self) -> dict[str, Any]:
        """A short summary for logs and plots: depth, widths, parameter counts (``n_params`` counts
        a frozen linear skip's buffers out; ``skip_entries`` gives its size when there is one)."""
        out = {
            "depth": self.depth,
            "stream_width": self.stream_width,
            "block_kinds": [getattr(b, "kind", type(b).__name__) for b in self.blocks],
            "hidden": [list(getattr(b, "hidden", [])) for b in self.blocks],
            "n_correctors": len(self.correctors),
            "n_params": self.n_parameters(),
            "n_trainable": self.n_parameters(trainable_only=True),
        }
        if self.skip is not None:
            out["skip_entries"] = int(sum(t.numel() for t in (self.skip.weight, self.skip.bias)))
        return out

    # ------------------------------------------------------------------ growth

    def new_block(self, kind: str = "perceptron", zero_init: bool = True, **kwargs: Any) -> nn.Module:
        """A block of registered ``kind`` sized for the stream (``width``/``channels`` filled in),
        on the model's device and dtype; ``zero_init`` makes it output 0 (exact identity step).
        A keyword the block does not take is an error (:func:`~pdegrow.models.blocks.block_options`)."""
        from pdegrow.errors import PdegrowError
        from pdegrow.models.blocks import BLOCK_REGISTRY, block_options

        accepted = block_options(kind)
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise PdegrowError(f"block kind {kind!r} takes no option(s) {', '.join(unknown)} "
                               f"(it takes: {', '.join(sorted(accepted))})")
        defaults = {"channels" if "conv" in kind else "width": self.stream_width,
                    # conv blocks follow the lift's padding and kernel unless told otherwise
                    "padding_mode": getattr(self.lift, "padding_mode", "zeros"),
                    "kernel_size": getattr(self.lift, "kernel_size", 3),
                    "spatial_dims": self.spatial_dims}
        for key, value in defaults.items():
            if key in accepted and ("conv" in kind or key in ("width", "channels")):
                kwargs.setdefault(key, value)
        block = BLOCK_REGISTRY[kind](**kwargs)
        if zero_init:
            block.zero_init()
        return self._to_model(block)

    def insert_block(self, t: int, block: nn.Module) -> nn.Module:
        """Insert ``block`` between x_t and x_{t+1} (0 ≤ t ≤ L; t = L appends). Returns it.

        The function is unchanged iff ``block`` outputs 0 (e.g. :meth:`new_block` with
        ``zero_init``, or an ε = 0 block of Approach II)."""
        if not 0 <= t <= self.depth:
            raise ValueError(f"insertion depth {t} outside 0..{self.depth}")
        block = self._to_model(block)
        self.blocks.insert(t, block)
        return block

    def widen(self, t: int, layer: int, k: int, fan_in: torch.Tensor | None = None,
              bias: torch.Tensor | None = None, fan_out: torch.Tensor | None = None) -> None:
        """Add ``k`` units to hidden layer ``layer`` of block ``t`` (an MLP/conv block).

        Default new fan-out is zero, so the function is unchanged."""
        block = self.blocks[t]
        if not hasattr(block, "widen"):
            raise ValueError(f"block {t} ({type(block).__name__}) has no hidden layer to widen")
        block.widen(layer, k, fan_in=fan_in, bias=bias, fan_out=fan_out)

    def add_corrector(self, corrector: nn.Module) -> nn.Module:
        """Append an SRL corrector Q (added to the output); zero-initialise it to keep the function."""
        corrector = self._to_model(corrector)
        self.correctors.append(corrector)
        return corrector

    def set_skip(self, skip: nn.Module | None) -> nn.Module | None:
        """Set (or remove, ``None``) the linear skip path S added to the output; returns it."""
        self.skip = None if skip is None else self._to_model(skip)
        return self.skip

    def freeze(self, which: str | Iterable[int] = "all") -> None:
        """Stop training parts: ``"all"``, ``"lift"``, ``"head"``, ``"blocks"``,
        ``"correctors"``, ``"skip"``, or an iterable of block indices."""
        for module in self._select(which):
            _set_trainable(module, False)

    def unfreeze(self, which: str | Iterable[int] = "all") -> None:
        """Resume training parts (same selectors as :meth:`freeze`)."""
        for module in self._select(which):
            _set_trainable(module, True)

    def _select(self, which: str | Iterable[int]) -> Iterator[nn.Module]:
        if which == "all":
            yield self
        elif which in ("lift", "head"):
            yield getattr(self, which)
        elif which == "skip":
            if self.skip is not None:
                yield self.skip
        elif which in ("blocks", "correctors"):
            yield from getattr(self, which)
        elif isinstance(which, str):
            raise ValueError(f"unknown part {which!r}")
        else:
            for i in which:
                yield self.blocks[i]

    def _to_model(self, module: nn.Module) -> nn.Module:
        ref = next(self.parameters(), None)
        if ref is not None:
            module = module.to(device=ref.device, dtype=ref.dtype)
        return module


def _spec(module: nn.Module) -> dict[str, Any]:
    if not isinstance(module, SpecModule):
        raise TypeError(f"{type(module).__name__} is not a registered SpecModule; it cannot be saved")
    return module.spec()


def _is_frozen(module: nn.Module) -> bool:
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def _set_trainable(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)

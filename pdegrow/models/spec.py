"""Modules that describe themselves as JSON, and the registry that rebuilds them.

Every module of a growable network has a class attribute ``kind`` and a :meth:`SpecModule.spec`
that returns ``{"kind": …, **constructor kwargs}``; :func:`build_module` rebuilds an (untrained)
module from a spec, so an architecture is plain JSON and a checkpoint restores a grown network
exactly. Block types join with the :func:`register_block` decorator
(:mod:`pdegrow.models.blocks`, :mod:`pdegrow.models.vit`, growth strategies' own blocks).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from pdegrow.errors import PdegrowError

BLOCK_REGISTRY: dict[str, type[SpecModule]] = {}


def register_block[M: type[nn.Module]](cls: M) -> M:
    """Class decorator: make ``cls`` (a :class:`SpecModule` with a unique ``kind``) rebuildable."""
    kind = cls.kind  # type: ignore[attr-defined]
    if kind in BLOCK_REGISTRY and BLOCK_REGISTRY[kind] is not cls:
        raise ValueError(f"block kind {kind!r} registered twice")
    BLOCK_REGISTRY[kind] = cls  # type: ignore[assignment]
    return cls


def block_options(kind: str) -> frozenset[str]:
    """The keyword arguments the block of registered ``kind`` takes (its constructor's)."""
    import inspect

    cls = BLOCK_REGISTRY.get(kind)
    if cls is None:
        raise PdegrowError(f"unknown block kind {kind!r} (known: {', '.join(sorted(BLOCK_REGISTRY))})")
    return frozenset(p for p in inspect.signature(cls.__init__).parameters if p != "self")


def build_module(spec: dict[str, Any]) -> nn.Module:
    """Instantiate a registered module from its :meth:`SpecModule.spec` (weights not included)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in BLOCK_REGISTRY:
        raise PdegrowError(f"unknown block kind {kind!r} (known: {', '.join(sorted(BLOCK_REGISTRY))})")
    return BLOCK_REGISTRY[kind](**spec)


class SpecModule(nn.Module):
    """A module that can describe itself as JSON: ``kind`` + constructor kwargs."""

    kind: ClassVar[str] = "abstract"

    def spec(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def zero_init(self) -> None:
        """Make the module's output identically zero (where it can be)."""
        raise NotImplementedError(f"{type(self).__name__} has no zero initialisation")


__all__ = ["BLOCK_REGISTRY", "SpecModule", "block_options", "build_module", "register_block"]

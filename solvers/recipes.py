"""Data-set recipes: presets in ``datasets/<problem>-<preset>.toml`` or a user's file."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pdegrow.config import build_dataclass, read_toml
from pdegrow.errors import PdegrowError

DATASETS_DIR = Path(__file__).resolve().parents[1] / "datasets"


def available_presets(slug: str) -> list[str]:
    return sorted(p.stem.removeprefix(f"{slug}-") for p in DATASETS_DIR.glob(f"{slug}-*.toml"))


def load_recipe[T](
    cls: type[T], slug: str, preset: str | None, config_file: str | None, overrides: dict[str, Any]
) -> T:
    """Build a recipe dataclass from a preset (or a file) plus ``--set`` overrides.

    ``slug`` is the problem's file prefix (``heat``, ``navier-stokes``).
    """
    if config_file is not None:
        values, source = read_toml(config_file), str(config_file)
    else:
        path = DATASETS_DIR / f"{slug}-{preset}.toml"
        if not path.is_file():
            known = ", ".join(available_presets(slug)) or "none"
            raise PdegrowError(f"unknown {slug} preset {preset!r} (available: {known})")
        values, source = read_toml(path), f"preset {preset!r} ({path.name})"
    declared = values.pop("problem", None)
    if declared is not None and declared.replace("_", "-") != slug:
        raise PdegrowError(f"{source} is a recipe for the {declared!r} problem, not {slug!r}")
    recipe = build_dataclass(cls, values, source)
    if overrides:
        merged = {**values, **overrides}
        recipe = build_dataclass(cls, merged, "--set")
    return recipe


def require_finite(recipe: Any, label: str) -> None:
    """Refuse a recipe with a NaN or infinite float in any field (lists included).

    Called first in every recipe's ``__post_init__``, so that the range checks after
    it compare real numbers (``nan < 0`` is False and would let NaN through).
    """
    for f in dataclasses.fields(recipe):
        for name, value in _floats(f.name, getattr(recipe, f.name)):
            if not math.isfinite(value):
                raise PdegrowError(f"{label}: {name} = {value} is not a finite number")


def _floats(name: str, value: Any) -> Iterator[tuple[str, float]]:
    if isinstance(value, float):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _floats(f"{name}[{i}]", item)

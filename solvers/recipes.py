"""Data-set recipes: presets in ``datasets/<problem>-<preset>.toml`` or a user's file."""

from __future__ import annotations

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

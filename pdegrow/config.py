"""Config files (TOML) → typed dataclasses, with one clear error per bad key.

Shared by the data-set recipes (``datasets/*.toml``) and the training
configs (``experiments/*.toml``). No torch, no dolfinx.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pdegrow.errors import PdegrowError


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a :class:`PdegrowError`."""
    path = Path(path)
    if path.is_dir():
        raise PdegrowError(f"config file {path} is a directory, not a TOML file")
    if not path.is_file():
        raise PdegrowError(f"config file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise PdegrowError(f"config file {path} is not UTF-8 text (byte {exc.start}, line {line}); "
                           f"TOML files are UTF-8") from None
    except OSError as exc:
        raise PdegrowError(f"config file {path} cannot be read ({exc.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PdegrowError(f"config file {path} is not valid TOML: {exc}") from None


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", …]`` from ``--set`` flags, each value read as a TOML value."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PdegrowError(f"--set expects key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        result[key.strip()] = value
    return result


def _check_type(name: str, value: Any, hint: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(name, value, arg, source)
            except PdegrowError:
                continue
        raise PdegrowError(f"{source}: {name} = {value!r} has the wrong type (expected {hint})")
    if origin is typing.Literal:
        if value not in args:
            raise PdegrowError(
                f"{source}: {name} = {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise PdegrowError(f"{source}: {name} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return [_check_type(f"{name}[{i}]", v, inner, source) for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        raise PdegrowError(
            f"{source}: {name} = {value!r} has the wrong type (expected {hint.__name__})")
    return value


def build_dataclass[T](cls: type[T], values: dict[str, Any], source: str) -> T:
    """Instantiate ``cls`` from ``values``, rejecting unknown keys and wrong types.

    Missing keys keep the dataclass default. ``source`` names where the values
    came from in error messages (a file path, ``--set``, a preset).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise PdegrowError(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(valid keys: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    checked = {k: _check_type(k, v, hints[k], source) for k, v in values.items()}
    return cls(**checked)

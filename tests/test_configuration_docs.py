"""docs/configuration.md agrees with the code: every key of every config section and every option of
every growth strategy is documented with its default, and nothing the code does not accept."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import tomllib
from typing import Any

import pytest
from conftest import ROOT

import pdegrow.growth
from pdegrow.growth.base import BUILTIN_STRATEGIES, STRATEGIES, strategy_options
from pdegrow.training.config import SECTIONS

DOC = ROOT / "docs" / "configuration.md"


def _tables() -> dict[str, dict[str, str]]:
    """heading → {key: default cell} of the table that follows it (``[run]``, …, ``strategy name``)."""
    tables: dict[str, dict[str, str]] = {}
    current: str | None = None
    for line in DOC.read_text().splitlines():
        if m := re.match(r"^## \[(\w+)\]$", line):
            current = m.group(1)
            tables[current] = {}
        elif m := re.match(r"^### `(\w+)`$", line):
            current = f"strategy {m.group(1)}"
            tables[current] = {}
        elif line.startswith("#"):
            current = None
        elif current and line.startswith("| `"):
            cells = [c.strip() for c in line.replace("\\|", "\0").split("|")[1:-1]]
            tables[current][cells[0].strip("`")] = cells[2].replace("\0", "|")
    return tables


def _parse_default(cell: str) -> Any:
    if cell == "—":
        return None
    assert cell.startswith("`") and cell.endswith("`"), cell
    return tomllib.loads(f"v = {cell[1:-1]}")["v"]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _all_strategies() -> dict[str, type]:
    """Every strategy pdegrow ships (not those other tests register for themselves); each one
    a module of pdegrow.growth registers is listed in BUILTIN_STRATEGIES."""
    for info in pkgutil.iter_modules(pdegrow.growth.__path__):
        importlib.import_module(f"pdegrow.growth.{info.name}")
    shipped = {name: cls for name, cls in STRATEGIES.items() if cls.__module__.startswith("pdegrow.")}
    assert sorted(shipped) == sorted(BUILTIN_STRATEGIES)
    return shipped


def _check(table: dict[str, str], fields: tuple[dataclasses.Field, ...], where: str) -> None:
    code = {f.name: _default(f) for f in fields}
    assert sorted(table) == sorted(code), f"{where}: documented {sorted(table)} vs accepted {sorted(code)}"
    for key, value in code.items():
        documented = _parse_default(table[key])
        assert documented == value, f"{where} {key}: documented default {documented!r}, the code's {value!r}"


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_section_key_is_documented_with_its_default(section):
    tables = _tables()
    assert section in tables, f"docs/configuration.md has no '## [{section}]' table"
    _check(tables[section], dataclasses.fields(SECTIONS[section]), f"[{section}]")


def test_every_strategy_option_is_documented_with_its_default():
    tables = _tables()
    strategies = _all_strategies()
    documented = sorted(k.split(" ", 1)[1] for k in tables if k.startswith("strategy "))
    assert documented == sorted(strategies)
    for name, cls in strategies.items():
        _check(tables[f"strategy {name}"], dataclasses.fields(strategy_options(cls)), f"[growth] {name}")
    growth = tables["growth"]
    assert list(growth) == ["strategy"] and _parse_default(growth["strategy"]) == "fixed"
    row = next(line for line in DOC.read_text().splitlines() if line.startswith("| `strategy` |"))
    assert all(f"`{name}`" in row for name in strategies)


def test_the_parser_sees_the_tables():
    """The check above cannot pass vacuously: the tables are found and their cells parsed."""
    tables = _tables()
    assert _parse_default(tables["optim"]["lr"]) == 1e-3
    assert _parse_default(tables["data"]["aux"]) == ["targets/temperature", "targets/log_conductivity"]
    assert _parse_default(tables["strategy tiny"]["max_width"]) is None
    assert len(tables["strategy topological_insertion"]) > 15

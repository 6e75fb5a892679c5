"""Structure the code promises: an explicit strategy registry, strict block options, one σ, and
no import cycle in the comparison package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from pdegrow.errors import PdegrowError
from pdegrow.growth.base import BUILTIN_STRATEGIES, build_strategy, strategy_class
from pdegrow.models.resnet import GrowableResNet

PKG = Path(__file__).resolve().parents[1] / "pdegrow"


def _registered_names(path: Path) -> list[str]:
    """``name`` of every ``@register_strategy`` class in ``path``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "register_strategy" for d in node.decorator_list):
            for stmt in node.body:
                if (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                        and any(isinstance(t, ast.Name) and t.id == "name" for t in stmt.targets)):
                    names.append(stmt.value.value)
    return names


def test_builtin_strategy_table_is_complete_and_right() -> None:
    found = {name: f"pdegrow.growth.{p.stem}" for p in sorted((PKG / "growth").glob("*.py"))
             for name in _registered_names(p)}
    assert found == BUILTIN_STRATEGIES
    for name, module in BUILTIN_STRATEGIES.items():
        assert strategy_class(name).__module__ == module
    with pytest.raises(PdegrowError, match="unknown growth strategy 'topological'.*layerwise"):
        build_strategy("topological", {})  # a module name is not a strategy name


def test_new_block_rejects_unknown_options() -> None:
    model = GrowableResNet.mlp(3, [2], 4, depth=0)
    with pytest.raises(PdegrowError, match="takes no option.*hidden"):
        model.new_block("perceptron", hidden=[4])
    assert model.new_block("mlp", hidden=[5]).hidden == [5]
    conv = GrowableResNet.conv(1, 1, 3, depth=1, block="conv", padding_mode="circular")
    assert conv.new_block("conv_perceptron").padding_mode == "circular"   # the lift's, by default
    with pytest.raises(PdegrowError, match="\\[growth\\] hidden"):
        build_strategy("layerwise", {"hidden": [4]})                      # perceptron blocks: no hidden


def test_one_admissible_activation() -> None:
    from pdegrow.growth.topological import admissible_activation
    from pdegrow.models.activations import silu_tanh

    assert admissible_activation is silu_tanh
    z = torch.linspace(-2, 2, 9, dtype=torch.float64)
    torch.testing.assert_close(silu_tanh(z), 2 * torch.nn.functional.silu(z) - torch.tanh(z))


def _imports(path: Path, package: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith(package)}
    return out


def test_comparison_package_has_no_import_cycle() -> None:
    package = "pdegrow.comparison"
    graph = {f"{package}.{p.stem}": _imports(p, package) - {package}
             for p in (PKG / "comparison").glob("*.py") if p.stem != "__init__"}

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())
        return seen

    assert all(m not in reach(m) for m in graph), graph

"""The package's plan holds: no import circle between its modules, and every module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dualrec"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """The project's modules that `name` imports anywhere (in functions too), with the packages they sit in; a
    module's own packages are left out (Python runs them first whoever imports the module)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & MODULES.keys()
    own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return found - own_packages - {name}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph as a path that comes back to its start, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], path[len(path) :] = "open", [node]
        for successor in sorted(graph[node]):
            if state.get(successor) == "open":
                return path[path.index(successor) :] + [successor]
            if successor not in state and (circle := visit(successor)):
                return circle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def test_the_circle_finder_finds_a_circle():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_between_the_packages_modules():
    graph = {name: imported_modules(name) for name in MODULES}
    assert find_circle(graph) is None


LAYERS = {  # a layer and the layers above it that it must not import
    "dualrec.data": ("dualrec.ranking", "dualrec.llm", "dualrec.evaluation", "dualrec.app", "dualrec.commands"),
    "dualrec.llm": ("dualrec.finetune", "dualrec.grounding", "dualrec.evaluation", "dualrec.app", "dualrec.commands"),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_layer_imports_nothing_from_the_layers_above_it(layer):
    below = [name for name in MODULES if name == layer or name.startswith(f"{layer}.")]
    wrong = {name: sorted(t for t in imported_modules(name) if t.startswith(LAYERS[layer])) for name in below}
    assert below and not {name: targets for name, targets in wrong.items() if targets}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(MODULES) - {"dualrec.__main__"}))  # __main__ runs the CLI
def test_every_module_imports_on_its_own(name):
    if name.endswith("recbole_models"):
        pytest.importorskip("recbole")
    run = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]

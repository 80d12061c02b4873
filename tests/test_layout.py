"""The package map is a DAG in the order data flows, and only wiring/ touches doit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
# The order data flows: a package may import only from packages before it (and the foundation).
ORDER = ("talos", "sops", "state", "promote", "guard", "keys", "review", "wiring")
FOUNDATION = ("errors", "layout", "redact", "lazyre")
# Thin entry points kept for hooks installed by earlier versions (`python -m pipeline.cli`).
SHIMS = ("pipeline.cli",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (inside functions too), but not under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {target for target in _imports(path) if target in modules and target != name}
            for name, path in modules.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            # A package's __init__ is imported on the way to its modules: not an edge of its own.
            if target in trail:
                pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(target):], target]))
            if state.get(target) != 2:
                visit(target, [*trail, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_packages_import_only_what_comes_before_them() -> None:
    wrong = []
    for module, targets in _graph().items():
        here = _package(module)
        for target in targets:
            there = _package(target)
            if there in FOUNDATION or there == here or not there:
                continue
            if module in SHIMS and there != "wiring":
                continue
            if here in FOUNDATION or here not in ORDER or (there in ORDER and ORDER.index(there) > ORDER.index(here)):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the flow of data:\n" + "\n".join(sorted(wrong))


def test_only_wiring_imports_doit() -> None:
    offenders = sorted(_module_name(path) for path in PACKAGE.rglob("*.py")
                       if _package(_module_name(path)) != "wiring"
                       and any(name == "doit" or name.startswith("doit.") for name in _imports(path)))
    assert offenders == [], f"doit imported outside pipeline/wiring/: {offenders}"


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    # The checks above must be able to fail: feed _imports two modules that import each other.
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from pipeline.wiring import tasks\n")
    b.write_text("if TYPE_CHECKING:\n    import doit\nimport doit.tools\n")
    assert "pipeline.wiring.tasks" in _imports(a)
    assert _imports(b) == {"doit.tools"}

"""The package is built in floors: each folder imports only from the floors beneath it (or its own).

Read from the source with ``ast``, so an import inside a function (the usual way round a cycle) counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cxrdistill

PACKAGE = Path(cxrdistill.__file__).parent

FLOORS: list[set[str]] = [
    # "" is the package's own __init__
    {"", "errors", "files", "figures", "registry", "provenance", "config", "exports"},
    {"data"},
    {"models"},
    {"runtime"},
    {"evaluation"},
    {"training"},
    {"distillation"},
    {"deployment"},
    {"experiments"},
    {"paper"},  # the study beside the library: the paper's tables, the reproduction and its report
    {"api", "cli", "__main__"},  # the package's __init__ reaches api lazily (exports), never by an import
]
"""Lowest first."""


def floor_of(part: str) -> int:
    return next(number for number, parts in enumerate(FLOORS) if part in parts)


def top_part(module: str) -> str:
    """``cxrdistill.data.io`` -> ``data``; ``cxrdistill`` -> ``""``."""
    names = module.split(".")
    return names[1] if len(names) > 1 else ""


def imported_modules(source: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return {module for module in modules if module == "cxrdistill" or module.startswith("cxrdistill.")}


def module_name(source: Path) -> str:
    parts = source.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_sits_on_a_known_floor() -> None:
    parts = {top_part(module_name(source)) for source in PACKAGE.rglob("*.py")}
    unknown = parts - set().union(*FLOORS)
    assert not unknown, f"place these in FLOORS: {sorted(unknown)}"


def test_no_module_imports_from_a_floor_above_it() -> None:
    upward = []
    for source in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(source)
        for imported in imported_modules(source):
            if floor_of(top_part(imported)) > floor_of(top_part(importer)):
                upward.append(f"{importer} imports {imported}")
    assert not upward, "imports from a higher floor:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "lower.py"
    source.write_text("def f():\n    from cxrdistill.experiments.run import run_experiment\n")
    assert imported_modules(source) == {"cxrdistill.experiments.run"}
    assert floor_of(top_part("cxrdistill.experiments.run")) > floor_of(top_part("cxrdistill.training.trainer"))

"""The package's folders are its layers: a module imports only from its own layer or a lower
one (function-level imports included), commands never import each other, and docs/design.md
describes every package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bertgpt_cli"

# Lowest first. The foundation (errors, options: typed option declarations) is below everything.
LAYERS = ("foundation", "io", "models", "inference", "training", "serving", "api", "cli")
FOUNDATION = {"bertgpt_cli", "bertgpt_cli.errors", "bertgpt_cli.options"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    top = module.split(".")[1]
    if top == "__main__":
        return "cli"
    assert top in LAYERS, f"{module} is in no layer: add its folder to LAYERS (and to docs/design.md)"
    return top


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every bertgpt_cli import in the file, at any depth."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("bertgpt_cli"):
                continue
            for alias in node.names:  # `from . import x` may name a module
                candidate = f"{target}.{alias.name}"
                is_module = (ROOT / candidate.replace(".", "/")).with_suffix(".py").is_file() or (
                    ROOT / candidate.replace(".", "/")
                ).is_dir()
                found.append((node.lineno, candidate if is_module else target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("bertgpt_cli")]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_no_module_imports_from_a_higher_layer():
    wrong = []
    for path in SOURCES:
        source = layer_of(module_name(path))
        for line, target in imported_modules(path):
            if LAYERS.index(layer_of(target)) > LAYERS.index(source):
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target}")
    assert not wrong, "imports from a higher layer:\n" + "\n".join(wrong)


def test_commands_never_import_each_other():
    commands = PACKAGE / "cli" / "commands"
    wrong = []
    for path in sorted(commands.glob("*.py")):
        for line, target in imported_modules(path):
            if target.startswith("bertgpt_cli.cli.commands.") and target != module_name(path):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_only_the_cli_imports_typer():
    wrong = []
    for path in SOURCES:
        if layer_of(module_name(path)) == "cli":
            continue
        text = path.read_text()
        if re.search(r"^\s*(import typer|from typer)", text, re.M):
            wrong.append(str(path.relative_to(ROOT)))
    assert not wrong, f"Typer outside cli/: {wrong}"


def test_the_import_graph_has_no_cycles():
    graph = {module_name(p): {t for _, t in imported_modules(p)} for p in SOURCES}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    # Only module-level imports can form a cycle that fails at import time; function-level
    # ones still make the layers hard to read, so they count too.
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_design_md_describes_every_package_and_module_folder():
    design = (ROOT / "docs" / "design.md").read_text()
    packages = sorted(
        p.parent.relative_to(PACKAGE).as_posix() + "/"
        for p in PACKAGE.rglob("__init__.py")
        if p.parent != PACKAGE and "metrics/" not in p.parent.relative_to(PACKAGE).as_posix() + "/x"
    )
    missing = [p for p in packages if f"{p}" not in design]
    assert not missing, f"docs/design.md does not describe {missing}"
    # Every module by name; command modules are covered by the "one module per command" line,
    # the metric scripts by metrics/.
    modules = [p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"]
    covered = ("cli/commands/", "training/metrics/")
    undescribed = sorted(
        m.as_posix()
        for m in modules
        if not m.as_posix().startswith(covered) and not re.search(rf"\b{re.escape(m.stem)}\b", design)
    )
    assert not undescribed, f"docs/design.md's module map misses {undescribed}"

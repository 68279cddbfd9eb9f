"""The code keeps its shape: one-way imports between the layers (DESIGN "Processes and packages").

Static checks over the source, no imports run: core never reaches a front, and the command line's
modules share only ``quanyi.cli._common`` (no import circle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "quanyi"
FRONT_LIBRARIES = ("aiogram", "quart", "hypercorn", "werkzeug")
FRONTS = ("quanyi.bot", "quanyi.webhooks", "quanyi.cli", "quanyi.app")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _reaches(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_core_imports_no_front_and_no_web_or_chat_framework():
    offenders = {}
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        bad = _reaches(imported_modules(path), FRONTS + FRONT_LIBRARIES)
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = bad
    assert offenders == {}


def test_each_command_group_imports_only_the_shared_cli_helpers():
    modules = sorted((PACKAGE / "cli").glob("*.py"))
    assert len(modules) > 10  # the package exists, one module per command group
    offenders = {}
    for path in modules:
        if path.name == "__init__.py":
            continue
        cli_imports = _reaches(imported_modules(path), ("quanyi.cli",))
        bad = [m for m in cli_imports if not m.startswith("quanyi.cli._common")]
        if path.name == "_common.py":
            bad = cli_imports  # the shared helpers import no command module
        if bad:
            offenders[path.name] = bad
    assert offenders == {}

"""The code keeps its shape: one-way imports between the layers (DESIGN "Processes and packages").

Static checks over the source, no imports run: core never reaches a front, and the command line's
modules share only ``quanyi.cli._common`` (no import circle)."""

from __future__ import annotations

import ast
import re
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


DOORS = ("bot", "webhooks", "cli")
PERSISTENCE = ("sqlalchemy", "quanyi.core.models")
# A transaction, a session, or the database or keyring handed to a core function behind the services.
TRANSACTION = re.compile(r"\bdb\.(transaction|read|run_write)\(|\bAsyncSession\b|\bcore(\(\))?\.(db|keyring)\b")


def door_modules() -> list[Path]:
    return sorted(p for door in DOORS for p in (PACKAGE / door).rglob("*.py")) + [PACKAGE / "app.py"]


def test_doors_import_no_sqlalchemy_and_no_models_and_open_no_transaction():
    """A door translates: parse, call one service, render (docs/architecture.md)."""
    offenders = {}
    for path in door_modules():
        bad = _reaches(imported_modules(path), PERSISTENCE)
        bad += [f"line {n}: {line.strip()}" for n, line in _lines(path) if TRANSACTION.search(line)]
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = bad
    assert offenders == {}


def test_no_door_passes_the_settings_into_a_service_call():
    """Services are built with their settings; a door reading ``core.settings`` for a call is a rule
    leaking out of core."""
    offenders = []
    for path in door_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and _is_service_call(node.func)):
                continue
            arguments = [*node.args, *(k.value for k in node.keywords)]
            if any("settings" in ast.unparse(a).split(".") for a in arguments):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert offenders == []


def test_no_core_module_imports_the_composition_root():
    offenders = sorted(
        str(path.relative_to(PACKAGE))
        for path in (PACKAGE / "core").rglob("*.py")
        if path.name != "services.py" and "quanyi.core.services" in imported_modules(path)
    )
    assert offenders == []


def _lines(path: Path) -> list[tuple[int, str]]:
    return list(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))


def _is_service_call(func: ast.expr) -> bool:
    """``core.<service>.<use case>(...)``: the only calls a door makes into the core's services."""
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Attribute)
        and isinstance(func.value.value, ast.Name)
        and func.value.value.id == "core"
    )

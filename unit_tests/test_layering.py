"""The engine never reaches back into the facade (docs/architecture.md, "The layering rule"): no module
under relaybus/engine imports relaybus.bus or relaybus.sync, not even for type hints."""

from __future__ import annotations

import ast
from pathlib import Path

import relaybus

ENGINE = Path(relaybus.__file__).parent / "engine"
FACADE = {"relaybus.bus", "relaybus.sync", "relaybus"}


def imported(path: Path) -> set[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    package = "relaybus.engine"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def test_the_engine_modules_exist() -> None:
    assert {p.stem for p in ENGINE.glob("*.py")} >= {
        "context",
        "reader",
        "settlement",
        "runners",
        "publisher",
        "scripts",
        "doorbell",
        "consumer",
    }


def test_no_engine_module_imports_the_facade() -> None:
    offenders = {
        path.name: sorted(imported(path) & FACADE) for path in ENGINE.glob("*.py") if imported(path) & FACADE
    }
    assert offenders == {}


def test_the_check_sees_a_relative_import_of_the_facade(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from ..bus import Bus\nfrom .. import sync\n")
    assert {"relaybus.bus", "relaybus.sync"} <= imported(module)

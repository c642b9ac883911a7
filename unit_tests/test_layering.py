"""The layering rule, both ways (docs/architecture.md, "The layering rule").

Inwards: no module under relaybus/engine imports the facade (relaybus.bus, relaybus.sync,
relaybus), not even for type hints.

Outwards: what sits on the facade - the CLI, the dashboard, the SSE helper, the adapters,
the demo, the testing kit and the built-in plugins - uses the public API only: no import of
the engine or of the private modules the facade is built from, no private attribute of
anything but its own `self`/`cls`, and never the engine objects `Bus` once exposed
(`bus.redis`, `bus.groups`, `bus.publisher`, `bus.settlement`) - there, in the docs, or in
their examples. What such a caller needs that the public API lacks is added to the API.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import relaybus
import relaybus_plugins

SRC = Path(relaybus.__file__).parent
PLUGINS = Path(relaybus_plugins.__file__).parent
DOCS = Path(__file__).resolve().parents[1] / "docs"
ENGINE = SRC / "engine"
FACADE = {"relaybus.bus", "relaybus.sync", "relaybus"}

# The core: the facade and what it is built from. Only these may import each other's
# internals; everything else in src/relaybus is checked below.
CORE_INTERNAL = {
    "relaybus.engine": "the engine: reading, settlement, publishing, scripts (the facade's own)",
    "relaybus.connection": "the client factory and connection state the facade wires at connect",
    "relaybus.outbox": "the publisher's durable outbox",
    "relaybus.periodic": "the facade's background jobs",
    "relaybus.plugins": "the plugin manager the facade owns (a caller registers through bus.plugins)",
    "relaybus.hookcaller": "how the core calls hooks",
    "relaybus.settings": "how the core merges plugin-owned settings and subscribe options",
    "relaybus.scripts": "the Lua sources of the engine",
}
# the facade's modules: Bus, SyncBus, and Records (versioned records, on the engine's road)
CORE_FILES = {"bus", "sync", "records", *(m.split(".")[1] for m in CORE_INTERNAL)}  # a module or a package
# Modules of values and checks that the facade's public methods take and return, shared by
# the core and its callers inside the package (the objects they hand out are public).
SHARED = {
    "relaybus": "the public API",
    "relaybus.bus": "defines Bus",
    "relaybus.sync": "defines SyncBus",
    "relaybus.records": "defines Records (the A2A stores are built on it)",
    "relaybus.message": "Message and its codec",
    "relaybus.errors": "the exceptions",
    "relaybus.keys": "topic, group and pattern checks",
    "relaybus.stats": "the models stats() returns",
    "relaybus.config": "BusConfig",
    "relaybus.delivery": "Subscription, FailureDecision",
    "relaybus.options": "the publish keywords",
    "relaybus.arguments": "argument checks",
    "relaybus.hookspecs": "hookimpl",
    "relaybus.redact": "keeping passwords out of text",
    "relaybus.deployment": "what kind of Redis a URL names (the testing kit deletes its keys)",
    "relaybus.embedded": "a private redis-server (demo, testing kit)",
}
# The callers checked: every module of src/relaybus outside the core (the CLI, dashboard,
# sse, adapters, demo, testing...), which may also import each other and the shared modules.
CALLERS = sorted(
    p
    for p in SRC.rglob("*.py")
    if p.relative_to(SRC).parts[0].removesuffix(".py") not in CORE_FILES
    if p.relative_to(SRC).as_posix() not in {"__init__.py", *(f"{m[9:]}.py" for m in SHARED if "." in m)}
)
# The built-in plugins are written as a third-party plugin is: `relaybus` itself only.
PLUGIN_MODULES = sorted(PLUGINS.glob("*.py"))
ENGINE_OBJECTS = {"redis", "groups", "publisher", "settlement"}  # private to Bus since round 3
# Underscore names that are public API of the standard library, not anyone's internals.
STDLIB_PUBLIC = {"_replace", "_asdict", "_fields", "_make"}
# A third-party object's private attribute a caller must read, per module, and why.
THIRD_PARTY_PRIVATE = {
    (
        "relaybus.adapters.a2a",
        "_value",
    ): "a2a-sdk's TaskVersion has no accessor; its own SQL stream reads it so",
}
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def module_name(path: Path) -> str:
    for root, package in ((SRC, "relaybus"), (PLUGINS, "relaybus_plugins")):
        if path.is_relative_to(root):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return path.stem


def package_of(path: Path) -> str:
    """The package relative imports in `path` start from."""
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports(tree: ast.AST, package: str) -> Iterator[tuple[int, str, str | None]]:
    """(line, absolute module, name imported from it or None) for every import of a module
    of `package` (relative imports resolved)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package if node.level else ""
            source = ".".join(p for p in (base, node.module) if p)
            for alias in node.names:
                yield node.lineno, source, alias.name


def imported(path: Path) -> set[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    found = list(imports(ast.parse(path.read_text()), package_of(path)))
    return {f"{m}.{n}" if n else m for _, m, n in found} | {m for _, m, _n in found}


def is_module(name: str) -> bool:
    """Whether a dotted name is a module or package of relaybus (not a name inside one)."""
    path = SRC.joinpath(*name.split(".")[1:])
    ours = name == "relaybus" or name.startswith("relaybus.")
    return ours and (path.with_suffix(".py").is_file() or path.is_dir())


def _within(name: str, modules: set[str] | dict[str, str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def forbidden_imports(source: str, package: str, plugin: bool) -> list[str]:
    """A caller's imports of anything but the public API: the engine and the core's private
    modules; for a plugin, anything of relaybus but `relaybus` itself; a private name."""
    found = []
    for line, source_module, name in imports(ast.parse(source), package):
        if not _within(source_module, {"relaybus"}):
            continue
        full = f"{source_module}.{name}" if name else source_module
        private_name = (
            bool(name) and not is_module(full) and name.startswith("_") and not name.startswith("__")
        )
        if plugin:
            bad = source_module != "relaybus" or private_name
        else:
            bad = _within(full if is_module(full) else source_module, CORE_INTERNAL) or private_name
        if bad:
            found.append(f"line {line}: imports {full}")
    return found


def _names_bus(node: ast.expr) -> bool:
    """`bus`, `self.bus`, `sync_bus.bus`, `self._bus()`: an expression naming a bus."""
    if isinstance(node, ast.Call):
        node = node.func
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return "bus" in name.lower()


def private_uses(source: str, module: str = "") -> list[str]:
    """`x._name` where x is not self or cls, and `<bus>.redis`/`.groups`/`.publisher`/`.settlement`."""
    allowed = STDLIB_PUBLIC | {attr for (where, attr) in THIRD_PARTY_PRIVATE if where == module}
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        attr, owner = node.attr, node.value
        own = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
        private = attr.startswith("_") and not attr.startswith("__") and not own and attr not in allowed
        if private or (attr in ENGINE_OBJECTS and _names_bus(owner)):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def doc_sources() -> Iterator[tuple[str, str]]:
    """Every python block of the docs that parses (a fragment may not), and the examples
    (docs/_hooks.py is the site's build, not something the docs teach)."""
    for page in sorted(DOCS.rglob("*.md")):
        for match in FENCE.finditer(page.read_text()):
            try:
                ast.parse(match[1])
            except SyntaxError:
                continue
            line = page.read_text()[: match.start()].count("\n") + 1
            yield f"docs/{page.relative_to(DOCS).as_posix()}:{line}", match[1]
    for example in sorted((DOCS / "examples").rglob("*.py")):
        yield f"docs/{example.relative_to(DOCS).as_posix()}", example.read_text()


# -- inwards ------------------------------------------------------------------------


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
    names = {f"{m}.{n}" for _, m, n in imports(ast.parse(module.read_text()), "relaybus.engine")}
    assert {"relaybus.bus.Bus", "relaybus.sync"} <= names


# -- outwards -----------------------------------------------------------------------


def test_the_callers_are_the_ones_meant() -> None:
    names = {module_name(p) for p in CALLERS}
    assert {
        "relaybus.cli",
        "relaybus._cli_dlq",
        "relaybus._cli_tail",
        "relaybus._cli_render",
        "relaybus.dashboard.app",
        "relaybus.sse",
        "relaybus.adapters._tools",
        "relaybus.adapters._langchain_callbacks",
        "relaybus.adapters.langchain",
        "relaybus.adapters.mcp",
        "relaybus.demo",
        "relaybus.testing",
    } <= names
    assert not {n for n in names if _within(n, CORE_INTERNAL) or n in {"relaybus.bus", "relaybus.sync"}}
    assert {p.stem for p in PLUGIN_MODULES} >= {"dlq", "dedup", "filters", "retention", "metrics"}


def test_callers_import_no_engine_nor_core_internals() -> None:
    offenders = {
        module_name(p): found
        for p in CALLERS
        if (found := forbidden_imports(p.read_text(), package_of(p), plugin=False))
    }
    assert offenders == {}


def test_the_built_in_plugins_import_only_relaybus_itself() -> None:
    offenders = {
        p.name: found
        for p in PLUGIN_MODULES
        if (found := forbidden_imports(p.read_text(), package_of(p), plugin=True))
    }
    assert offenders == {}


def test_callers_and_plugins_use_no_private_attribute_nor_the_engine_objects() -> None:
    offenders = {
        module_name(p): found
        for p in [*CALLERS, *PLUGIN_MODULES]
        if (found := private_uses(p.read_text(), module_name(p)))
    }
    assert offenders == {}


def test_the_docs_teach_no_private_attribute_nor_the_engine_objects() -> None:
    offenders = {where: found for where, source in doc_sources() if (found := private_uses(source))}
    assert offenders == {}


def test_the_docs_import_no_engine_nor_core_internals() -> None:
    offenders = {
        where: found
        for where, source in doc_sources()
        if (found := forbidden_imports(source, "docs", plugin=False))
    }
    assert offenders == {}


def test_the_checks_see_what_they_forbid() -> None:
    caller = "relaybus.adapters"
    assert forbidden_imports("from ..engine.retained import FOREIGN\n", caller, plugin=False)
    assert forbidden_imports("from ..engine import pull\n", caller, plugin=False)
    assert forbidden_imports("from .. import engine\n", caller, plugin=False)
    assert forbidden_imports("import relaybus.engine.follow\n", caller, plugin=False)
    assert forbidden_imports("from ..connection import UNAVAILABLE\n", caller, plugin=False)
    assert forbidden_imports("from ..bus import _reports_unavailable\n", caller, plugin=False)
    assert not forbidden_imports(
        "from ..bus import Bus\nfrom ..keys import validate_topic\n", caller, plugin=False
    )
    assert not forbidden_imports(
        "from .. import Bus, __version__\nfrom . import _tools\n", caller, plugin=False
    )
    assert forbidden_imports("from relaybus.keys import is_pattern\n", "relaybus_plugins", plugin=True)
    assert not forbidden_imports("from relaybus import Bus, hookimpl\n", "relaybus_plugins", plugin=True)
    for leak in (
        "bus._background.append(t)",
        "bus._engine.redis",
        "self.bus._call(c)",
        "self._bus()._closing",
        "bus.redis.xlen(k)",
        "self.bus.groups.to_message(e)",
        "app.state.bus.publisher.flush()",
        "sync_bus.bus.settlement",
    ):
        assert private_uses(leak), leak
    for fine in (
        "self._x.y",
        "cls._lock",
        "parts._replace(query='')",
        "t.groups",
        "stats.groups",
        "bus.keys",
    ):
        assert not private_uses(fine), fine

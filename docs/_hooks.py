"""mkdocs hooks: reference sections generated from the source at build time, so they cannot drift.

- docs/configuration.md: each `<!-- config-fields: SECTION -->` marker becomes a table of the
  `BusConfig` fields of that section (type, default and bounds, environment variable, the
  field's `description`). Every field must belong to exactly one section of `SECTIONS` and
  every section must have its marker, or the build fails. Each `<!-- plugin-settings: NAME -->`
  marker becomes the same table for the settings model of plugin NAME (`plugin_settings`);
  every installed plugin declaring settings must have exactly one.
- docs/hooks.md: each `<!-- hook: NAME -->` marker becomes the hook's heading
  (`### \\`NAME(params)\\``), its shape, its signature and its docstring, read from
  `relaybus.hookspecs`; the hand-written notes after the marker stay. Every hook must have
  exactly one marker, and every marker must name a hook, or the build fails. The
  `<!-- hook-shapes -->` marker becomes the table of shapes (how a hook is called) and the
  hooks of each.

Registered in mkdocs.yml under `hooks:`; unit_tests/test_hook_docs.py and
unit_tests/test_docs.py call the same functions without mkdocs.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from relaybus import BusConfig, hookspecs, settings

CONFIG_PAGE = "configuration.md"
HOOKS_PAGE = "hooks.md"
CONFIG_MARKER = re.compile(r"^<!-- config-fields: ([\w-]+) -->[ \t]*$", re.MULTILINE)
PLUGIN_MARKER = re.compile(r"^<!-- plugin-settings: (\w+) -->[ \t]*$", re.MULTILINE)
HOOK_MARKER = re.compile(r"^<!-- hook: (\w+) -->[ \t]*$", re.MULTILINE)
SHAPES_MARKER = "<!-- hook-shapes -->"

# Section of docs/configuration.md -> the BusConfig fields documented there, in table order.
SECTIONS: dict[str, tuple[str, ...]] = {
    "connection": (
        "url",
        "username",
        "password",
        "sentinel_username",
        "sentinel_password",
        "allow_insecure",
        "socket_timeout",
        "connect_timeout",
        "max_connections",
        "publish_timeout_s",
        "health_check_interval_s",
        "min_replicas_acked",
        "replica_ack_timeout_ms",
    ),
    "keys-and-consumers": ("prefix", "consumer_name"),
    "delivery": ("claim_idle_ms", "default_ttl", "dead_letter_expired", "max_message_bytes"),
    "retention": ("cleanup_interval_s", "periodic_cleanup", "memory_pressure_ratio"),
    "dedup": ("dedup_window_s",),
    "capacity": ("max_queue_size", "overflow", "outbox_path", "outbox_max_entries", "outbox_max_bytes"),
    "plugins": ("disabled_plugins",),
}


class DocsError(Exception):
    """The generated reference and the source disagree: the build must fail."""


# -- configuration reference ----------------------------------------------------------


def check_sections() -> None:
    """Every BusConfig field in exactly one section, and no section naming a non-field."""
    fields = set(BusConfig.model_fields)
    seen: dict[str, str] = {}
    for section, names in SECTIONS.items():
        for name in names:
            if name not in fields:
                raise DocsError(
                    f"docs/_hooks.py SECTIONS[{section!r}] names {name!r}, which is not a BusConfig field"
                )
            if name in seen:
                raise DocsError(f"BusConfig field {name!r} is in two sections: {seen[name]!r}, {section!r}")
            seen[name] = section
    missing = [name for name in BusConfig.model_fields if name not in seen]
    if missing:
        raise DocsError(
            f"BusConfig fields in no section of docs/configuration.md: {', '.join(missing)}; "
            "add each to one section of SECTIONS in docs/_hooks.py"
        )


def env_var(name: str) -> str:
    return f"{BusConfig.model_config.get('env_prefix', '')}{name}".upper()


def type_name(annotation: Any) -> str:
    """A field's type as a reader writes it: `int | None`, `"reject" | "drop_oldest"`."""
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(_python(v) for v in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def _python(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    return repr(value)


def _size(value: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if value >= 1 << shift and value % (1 << shift) == 0:
            return f"{value >> shift} {unit}"
    return ""


def default_value(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def default_text(name: str, field: FieldInfo) -> str:
    """`1048576` (1 MiB; ≥ 64), `None` (> 0 when set), ..."""
    value = default_value(field)
    notes = []
    if isinstance(value, int) and not isinstance(value, bool) and name.endswith("_bytes") and _size(value):
        notes.append(_size(value))
    bounds = bounds_text(field)
    if bounds:
        notes.append(f"{bounds} when set" if value is None else bounds)
    return f"`{_python(value)}`" + (f" ({'; '.join(notes)})" if notes else "")


def bounds_text(field: FieldInfo) -> str:
    marks = {
        annotated_types.Ge: "≥",
        annotated_types.Gt: ">",
        annotated_types.Le: "≤",
        annotated_types.Lt: "<",
    }
    parts = []
    for meta in field.metadata:
        for kind, sign in marks.items():
            if isinstance(meta, kind):
                parts.append(f"{sign} {getattr(meta, kind.__name__.lower())}")
    return ", ".join(parts)


def type_cell(annotation: Any) -> str:
    """`int` \\| `None`: each alternative in its own code span (a `|` cannot be escaped inside one)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_cell(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " \\| ".join(f"`{_python(v)}`" for v in typing.get_args(annotation))
    return f"`{type_name(annotation)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_table(section: str) -> str:
    return fields_table(BusConfig, SECTIONS[section])


def plugin_settings() -> dict[str, type[BaseModel]]:
    """The settings model of each plugin installed and enabled by default, by plugin name."""
    owners = settings.installed(frozenset(), frozenset(BusConfig.model_fields))
    return {owner.plugin: owner.model for owner in owners.values()}


def fields_table(model: type[BaseModel], names: typing.Iterable[str]) -> str:
    rows = [
        "| field | type | default | env | description |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        field = model.model_fields[name]
        default = default_text(name, field)
        description = field.description or "*(no description in `BusConfig`)*"
        rows.append(
            f"| `{name}` | {type_cell(field.annotation)} | {_cell(default)} | "
            f"`{env_var(name)}` | {_cell(description)} |"
        )
    return "\n".join(rows)


def undescribed_fields() -> list[str]:
    return [name for name, field in BusConfig.model_fields.items() if not field.description]


def check_markers(page: str, found: list[str], known: list[str], what: str, missing: str) -> None:
    """Each known name marked exactly once on `page`, and no marker for anything else;
    `missing` is the error for unmarked names, with `{names}` in it."""
    for name in found:
        if name not in known:
            raise DocsError(f"{page} has a marker for {name!r}, which is not {what}")
        if found.count(name) > 1:
            raise DocsError(f"{page} has the marker for {name!r} twice")
    absent = [n for n in known if n not in found]
    if absent:
        raise DocsError(missing.format(names=", ".join(absent)))


def render_configuration(markdown: str) -> str:
    check_sections()
    check_markers(
        "docs/configuration.md",
        CONFIG_MARKER.findall(markdown),
        list(SECTIONS),
        "a configuration section",
        "docs/configuration.md lacks <!-- config-fields: ... --> for: {names}",
    )
    owned = plugin_settings()
    check_markers(
        "docs/configuration.md",
        PLUGIN_MARKER.findall(markdown),
        list(owned),
        "a plugin declaring settings",
        "docs/configuration.md lacks <!-- plugin-settings: ... --> for: {names}",
    )
    markdown = CONFIG_MARKER.sub(lambda m: config_table(m.group(1)), markdown)
    return PLUGIN_MARKER.sub(
        lambda m: fields_table(owned[m.group(1)], owned[m.group(1)].model_fields), markdown
    )


# -- hook reference -------------------------------------------------------------------


def hook_names() -> list[str]:
    return sorted(
        name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, "relaybus_spec")
    )


def hook_heading(name: str) -> str:
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    return f"### `{name}({params})`"


def hook_signature(name: str) -> str:
    """The `@hookspec` decorator and `def` line(s) exactly as in hookspecs.py, without the body."""
    source = textwrap.dedent(inspect.getsource(getattr(hookspecs, name)))
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.FunctionDef)
    lines = source.splitlines()[: function.body[0].lineno - 1]
    return "\n".join(lines).rstrip().removesuffix(":")


def hook_docstring(name: str) -> str:
    doc = inspect.getdoc(getattr(hookspecs, name))
    if not doc:
        raise DocsError(f"hook {name} has no docstring in hookspecs.py: the reference needs one")
    return doc


def shape_text(shape: str) -> str:
    """What a shape's decorator says of it, on one line."""
    return " ".join((inspect.getdoc(getattr(hookspecs, shape)) or "").split())


def shapes_table() -> str:
    rows = ["| shape | how the bus calls it | hooks |", "|---|---|---|"]
    for shape in hookspecs.SHAPE_NAMES:
        hooks = ", ".join(f"`{n}`" for n in hook_names() if hookspecs.SHAPES[n] == shape)
        rows.append(f"| `@{shape}` | {_cell(shape_text(shape))} | {hooks} |")
    return "\n".join(rows)


def hook_section(name: str) -> str:
    quoted = "\n".join(f"> {line}".rstrip() for line in hook_docstring(name).splitlines())
    shape = f"**Shape:** [`{hookspecs.SHAPES[name]}`](#shapes)"
    return f"{hook_heading(name)}\n\n{shape}\n\n```python\n{hook_signature(name)}\n```\n\n{quoted}\n"


def render_hooks(markdown: str) -> str:
    check_markers(
        "docs/hooks.md",
        HOOK_MARKER.findall(markdown),
        hook_names(),
        "a hook in hookspecs.py",
        "hooks missing from docs/hooks.md (add <!-- hook: NAME --> and notes): {names}",
    )
    if markdown.count(SHAPES_MARKER) != 1:
        raise DocsError(f"docs/hooks.md must have {SHAPES_MARKER} exactly once")
    markdown = markdown.replace(SHAPES_MARKER, shapes_table())
    return HOOK_MARKER.sub(lambda m: hook_section(m.group(1)), markdown)


# -- mkdocs ---------------------------------------------------------------------------

RENDERERS: dict[str, Callable[[str], str]] = {CONFIG_PAGE: render_configuration, HOOKS_PAGE: render_hooks}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    render = RENDERERS.get(page.file.src_uri)
    if render is None:
        return markdown
    try:
        return render(markdown)
    except DocsError as exc:
        from mkdocs.exceptions import PluginError

        raise PluginError(str(exc)) from exc

"""Every parameter of the public API is documented where an editor and mkdocstrings look:
the "Args:" section (Google style, as mkdocs.yml configures mkdocstrings) of its
docstring - a constructor's in its class docstring or its `__init__`'s. Checked for each
public method of Bus and SyncBus and of the other classes `relaybus` exports, and each
hand-written constructor; a name in "Args:" that is no parameter fails too (a renamed
parameter leaves its stale entry behind). Pydantic models and dataclasses document their
fields as fields, not here."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
import pytest

import relaybus
from relaybus import Bus, SyncBus

SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params):\s*$")
ITEM = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?:")


def documented(doc: str | None) -> list[str] | None:
    """The names in the docstring's "Args:" section, stars kept; None if it has none.
    Items are the section's least-indented lines; deeper lines continue an item."""
    lines = inspect.cleandoc(doc or "").splitlines()
    for n, line in enumerate(lines):
        header = SECTION.match(line)
        if header is None:
            continue
        body = []
        for entry in lines[n + 1 :]:
            if entry.strip() and len(entry) - len(entry.lstrip()) <= len(header.group(1)):
                break
            body.append(entry)
        indents = [len(e) - len(e.lstrip()) for e in body if e.strip()]
        items = [e.strip() for e in body if e.strip() and len(e) - len(e.lstrip()) == min(indents)]
        return [m.group(1) for item in items if (m := ITEM.match(item))]
    return None


def parameters(function: Callable[..., Any]) -> list[str]:
    """Its parameters as an "Args:" section names them: `*args`, `**kwargs` with stars."""
    stars = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    params = list(inspect.signature(inspect.unwrap(function)).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return [stars.get(p.kind, "") + p.name for p in params]


def exported_classes() -> list[type]:
    return [obj for name in relaybus.__all__ if inspect.isclass(obj := getattr(relaybus, name))]


def generated_init(cls: type) -> bool:
    """Pydantic models and dataclasses: the constructor takes the fields."""
    return issubclass(cls, pydantic.BaseModel) or dataclasses.is_dataclass(cls)


def api() -> Iterator[tuple[str, Callable[..., Any], str | None]]:
    """(name, function, the docstring holding its Args) for each public callable."""
    for cls in exported_classes():
        for name, member in vars(cls).items():
            if name.startswith("_") or isinstance(member, property):
                continue
            if isinstance(member, (classmethod, staticmethod)):
                member = member.__func__
            if inspect.isfunction(member) and member.__qualname__ == f"{cls.__qualname__}.{name}":
                yield f"{cls.__name__}.{name}", member, member.__doc__
        init = vars(cls).get("__init__")
        if init is not None and not generated_init(cls):
            doc = init.__doc__ if documented(init.__doc__) is not None else cls.__doc__
            yield f"{cls.__name__}()", init, doc


API = sorted(api(), key=lambda item: item[0])


def test_every_public_bus_and_syncbus_method_is_checked() -> None:
    """The walk is not vacuous: it reaches both facades, their constructors, classmethods
    and the methods Bus gains (none may be skipped for lack of a docstring)."""
    checked = {name for name, _, _ in API}
    for cls in (Bus, SyncBus):
        public = {n for n, m in vars(cls).items() if not n.startswith("_") and not isinstance(m, property)}
        assert {f"{cls.__name__}.{n}" for n in public} | {f"{cls.__name__}()"} <= checked


@pytest.mark.parametrize(("name", "function", "doc"), API, ids=[name for name, _, _ in API])
def test_args_section_names_every_parameter(name: str, function: Callable[..., Any], doc: str | None) -> None:
    wanted = parameters(function)
    if not wanted:
        return
    named = documented(doc)
    assert named is not None, f"{name}: docstring has no 'Args:' section for {', '.join(wanted)}"
    assert named == wanted, f"{name}: 'Args:' names {named}, the parameters are {wanted} (same order)"


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        (
            "Summary.\n\nArgs:\n    topic: A name.\n    *ids: Some,\n        continued: not an item.\n",
            ["topic", "*ids"],
        ),
        (
            "Summary.\n\n    Args:\n        limit (int): Most.\n\n    Returns:\n        x: not an arg.\n",
            ["limit"],
        ),
        ("Summary only; `topic: a name` in prose is no section.", None),
    ],
)
def test_the_args_parser(doc: str, names: list[str] | None) -> None:
    assert documented(doc) == names

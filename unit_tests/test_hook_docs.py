"""Every hook is in docs/hooks.md with its exact signature, and has a test (datasette's rule).

The hook reference is generated at build time by docs/_hooks.py from a `<!-- hook: NAME -->`
marker per hook; these tests render the page the way the build does.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType

import pytest

from relaybus import hookspecs

ROOT = Path(__file__).parent.parent
HOOKS = sorted(
    name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, "relaybus_spec")
)


def load_docs_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("relaybus_docs_hooks", ROOT / "docs" / "_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs_hooks = load_docs_hooks()
SOURCE = (ROOT / "docs" / "hooks.md").read_text()


@pytest.fixture(scope="module")
def rendered() -> str:
    text: str = docs_hooks.render_hooks(SOURCE)
    return text


def test_there_are_hooks() -> None:
    assert {"on_publish", "filter", "on_failure", "on_cleanup"} <= set(HOOKS)
    assert docs_hooks.hook_names() == HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_signature(name: str, rendered: str) -> None:
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"<!-- hook: {name} -->" in SOURCE  # where its hand-written notes are
    assert f"### `{name}({params})`" in rendered
    assert f"def {name}(" in rendered  # the signature from hookspecs.py
    assert f"@{hookspecs.SHAPES[name]}\ndef {name}(" in rendered  # with its shape
    first_line = inspect.getdoc(getattr(hookspecs, name)).splitlines()[0]  # type: ignore[union-attr]
    assert f"> {first_line}" in rendered  # the docstring, quoted


def test_a_hook_without_a_marker_fails_the_build() -> None:
    without = SOURCE.replace("<!-- hook: on_cleanup -->", "")
    with pytest.raises(docs_hooks.DocsError, match=r"hooks missing from docs/hooks\.md.*on_cleanup"):
        docs_hooks.render_hooks(without)


def test_a_marker_for_no_hook_fails_the_build() -> None:
    with pytest.raises(docs_hooks.DocsError, match="'on_nothing', which is not a hook"):
        docs_hooks.render_hooks(SOURCE + "\n<!-- hook: on_nothing -->\n")


def test_the_signature_is_the_source_without_the_body() -> None:
    assert docs_hooks.hook_signature("on_cleanup") == "@each\ndef on_cleanup(bus: Bus) -> None"
    assert docs_hooks.hook_signature("on_failure").endswith(") -> FailureDecision | None")


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    tests = "".join(p.read_text() for p in (ROOT / "integration_tests").glob("test_*.py"))
    assert f"def {name}(" in tests or f'specname="{name}"' in tests


def test_the_shapes_table_lists_every_hook_under_its_shape(rendered: str) -> None:
    assert "<!-- hook-shapes -->" not in rendered
    for name, shape in hookspecs.SHAPES.items():
        row = next(line for line in rendered.splitlines() if line.startswith(f"| `@{shape}` |"))
        assert f"`{name}`" in row
    with pytest.raises(docs_hooks.DocsError, match="hook-shapes"):
        docs_hooks.render_hooks(SOURCE.replace("<!-- hook-shapes -->", ""))

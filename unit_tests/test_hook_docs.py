"""Every hook is in docs/hooks.md with its exact signature, and has a test (datasette's rule)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from relaybus import hookspecs

ROOT = Path(__file__).parent.parent
HOOKS = sorted(
    name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, "relaybus_spec")
)


def test_there_are_hooks() -> None:
    assert {"on_publish", "filter", "on_failure", "on_cleanup"} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_signature(name: str) -> None:
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"### `{name}({params})`" in (ROOT / "docs" / "hooks.md").read_text()


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    tests = "".join(p.read_text() for p in (ROOT / "integration_tests").glob("test_*.py"))
    assert f"def {name}(" in tests or f'specname="{name}"' in tests

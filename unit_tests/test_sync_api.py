"""README and docs/index.md say SyncBus has the same methods as Bus, without `await`."""

from __future__ import annotations

import inspect

from relaybus import Bus, SyncBus


def test_every_public_bus_method_is_a_syncbus_method() -> None:
    methods = {name for name, _ in inspect.getmembers(Bus, inspect.isfunction) if not name.startswith("_")}
    assert "listen" in methods and "publish" in methods
    missing = {name for name in methods if not inspect.isfunction(getattr(SyncBus, name, None))}
    assert missing == set()


def test_syncbus_methods_do_not_await() -> None:
    """Every one returns its result (or an iterator), never a coroutine to await."""
    for name, member in inspect.getmembers(SyncBus, inspect.isfunction):
        assert not inspect.iscoroutinefunction(member) and not inspect.isasyncgenfunction(member), name

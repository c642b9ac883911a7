"""The plugin manager: built-ins and third-party plugins from the `relaybus` entry points."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError
from .hookcaller import HookCaller
from .settings import unknown_names

log = logging.getLogger("relaybus.plugins")
ENTRY_POINT_GROUP = "relaybus"
BUILTIN_DISTRIBUTION = "relaybus"


class PluginManager:
    """A typed facade over one pluggy manager; each Bus has its own."""

    def __init__(self, disabled: Iterable[str] = ()) -> None:
        self.disabled = frozenset(disabled)
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.hook = self.pm.hook
        self._impls: dict[str, list[tuple[str, Callable[..., Any], tuple[str, ...]]]] = {}
        self.call = HookCaller(self)

    def load_entry_points(self) -> None:
        """Register every `relaybus` entry point not disabled by name; ConfigError when a
        disabled name is no entry point's (a misspelling would silently disable nothing).

        A broken built-in is a bug in relaybus and fails loudly; a broken third-party
        plugin is logged and skipped so one bad install cannot stop the bus.
        """
        points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        unknown = unknown_names(sorted(self.disabled), sorted(points.names))
        if unknown:
            raise ConfigError(
                f"disabled_plugins names no installed plugin: {', '.join(unknown)} "
                f"(installed: {', '.join(sorted(points.names))})"
            )
        for ep in points:
            if ep.name in self.disabled or self.pm.has_plugin(ep.name):
                continue
            builtin = ep.dist is not None and ep.dist.name == BUILTIN_DISTRIBUTION
            try:
                self.register(ep.load(), ep.name)
            except Exception as exc:
                if builtin:
                    raise PluginError(f"built-in plugin {ep.name!r} failed to load: {exc}") from exc
                log.warning(
                    "skipping relaybus plugin %r (%s): %s: %s", ep.name, ep.value, type(exc).__name__, exc
                )

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a module or object with @hookimpl functions; returns its name."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if name in self.disabled:
            return name
        self.pm.register(plugin, name=name)
        self._impls.clear()
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            self.unregister(name)
            raise
        return name

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._impls.clear()

    def names(self) -> list[str]:
        return sorted(n for n, _ in self.pm.list_name_plugin())

    def impls(self, hook: str) -> list[tuple[str, Callable[..., Any], tuple[str, ...]]]:
        """(plugin, function, argument names) in call order: last registered first."""
        cached = self._impls.get(hook)
        if cached is None:
            cached = self._impls[hook] = [
                (impl.plugin_name, impl.function, tuple(impl.argnames))
                for impl in reversed(getattr(self.hook, hook).get_hookimpls())
            ]
        return cached

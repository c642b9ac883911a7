"""The plugin manager: the built-ins from DEFAULT_PLUGINS, third-party plugins from the
`relaybus` entry points."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from importlib import metadata
from operator import itemgetter
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError
from .hookcaller import HookCaller
from .settings import unknown_names

log = logging.getLogger("relaybus.plugins")
ENTRY_POINT_GROUP = "relaybus"
# The built-in plugins, registered from here (adding one needs no reinstall); each is
# named by its module's last part, the name `disabled_plugins` takes. Call order is the
# reverse: the last registered is called first.
DEFAULT_PLUGINS = (
    "relaybus_plugins.priority",
    "relaybus_plugins.dedup",
    "relaybus_plugins.dlq",
    "relaybus_plugins.retention",
    "relaybus_plugins.filters",
    "relaybus_plugins.tls_auth",
    "relaybus_plugins.metrics",
    "relaybus_plugins.otel",
)
Impl = tuple[str, Callable[..., Any]]  # (plugin, function taking the spec's arguments in order)


class PluginManager:
    """A typed facade over one pluggy manager; each Bus has its own."""

    def __init__(self, disabled: Iterable[str] = ()) -> None:
        self.disabled = frozenset(disabled)
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.hook = self.pm.hook
        self._impls: dict[Callable[..., Any], list[Impl]] = {}
        self.call = HookCaller(self)

    def load(self) -> None:
        """Register the built-ins and every `relaybus` entry point not disabled by name;
        ConfigError when a disabled name is no plugin's (a misspelling would silently
        disable nothing).

        A broken built-in is a bug in relaybus and fails loudly; a broken third-party
        plugin is logged and skipped so one bad install cannot stop the bus.
        """
        builtins = {path.rpartition(".")[2]: path for path in DEFAULT_PLUGINS}
        points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        known = sorted({*builtins, *points.names})
        unknown = unknown_names(sorted(self.disabled), known)
        if unknown:
            raise ConfigError(
                f"disabled_plugins names no installed plugin: {', '.join(unknown)} "
                f"(installed: {', '.join(known)})"
            )
        for name, path in builtins.items():
            if name in self.disabled or self.pm.has_plugin(name):
                continue
            try:
                module = importlib.import_module(path)
            except Exception as exc:
                raise PluginError(f"built-in plugin {name!r} failed to load: {exc}") from exc
            self.register(module, name)
        for ep in points:
            if ep.name in self.disabled or self.pm.has_plugin(ep.name):
                continue  # also a built-in an older install still lists as an entry point
            try:
                self.register(ep.load(), ep.name)
            except Exception as exc:
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

    def impls(self, spec: Callable[..., Any]) -> list[Impl]:
        """(plugin, function) of each implementation of a hook, in call order (last
        registered first). Each function takes the spec's arguments positionally: one
        naming fewer, or in another order, is wrapped once here, not per call."""
        cached = self._impls.get(spec)
        if cached is None:
            caller = getattr(self.hook, spec.__name__)
            given = tuple(caller.spec.argnames)
            cached = self._impls[spec] = [
                (impl.plugin_name, _taking(impl.function, tuple(impl.argnames), given))
                for impl in reversed(caller.get_hookimpls())
            ]
        return cached


def _taking(
    function: Callable[..., Any], wanted: tuple[str, ...], given: tuple[str, ...]
) -> Callable[..., Any]:
    """`function` called with all of `given`: pluggy hands an implementation only the
    arguments it names, so a hook can gain one without breaking older plugins."""
    if wanted == given:
        return function
    if not wanted:
        return lambda *args: function()
    pick = itemgetter(*(given.index(name) for name in wanted))
    if len(wanted) == 1:
        return lambda *args: function(pick(args))
    return lambda *args: function(*pick(args))

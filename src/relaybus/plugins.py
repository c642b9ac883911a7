"""The plugin manager: built-ins and third-party plugins from the `relaybus` entry points."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from importlib import metadata
from typing import Any, NoReturn, TypeVar

import pluggy

from . import hookspecs
from .errors import PluginError, RelayBusError

log = logging.getLogger("relaybus.plugins")
ENTRY_POINT_GROUP = "relaybus"
BUILTIN_DISTRIBUTION = "relaybus"
T = TypeVar("T")


async def await_me_maybe(value: T | Awaitable[T]) -> T:
    """Hooks are sync; an implementation may hand back an awaitable instead of a value."""
    if inspect.isawaitable(value):
        return await value
    return value


class PluginManager:
    """A typed facade over one pluggy manager; each Bus has its own."""

    def __init__(self, disabled: Iterable[str] = ()) -> None:
        self.disabled = frozenset(disabled)
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.hook = self.pm.hook
        self._impls: dict[str, list[tuple[str, Callable[..., Any], tuple[str, ...]]]] = {}

    def load_entry_points(self) -> None:
        """Register every `relaybus` entry point not disabled by name.

        A broken built-in is a bug in relaybus and fails loudly; a broken third-party
        plugin is logged and skipped so one bad install cannot stop the bus.
        """
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.disabled or self.pm.has_plugin(ep.name):
                continue
            builtin = ep.dist is not None and ep.dist.name == BUILTIN_DISTRIBUTION
            try:
                self.register(ep.load(), ep.name)
            except Exception as exc:
                if builtin:
                    raise PluginError(f"built-in plugin {ep.name!r} failed to load: {exc}") from exc
                log.warning("skipping relaybus plugin %r (%s): %s: %s",
                            ep.name, ep.value, type(exc).__name__, exc)

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

    async def call_each(self, hook: str, **kwargs: Any) -> list[Any]:
        """Every implementation's answer, awaited in call order; an error names the plugin."""
        return [
            await self.call_one(hook, name, function, [kwargs[a] for a in argnames])
            for name, function, argnames in self.impls(hook)
        ]

    def call_sync(self, hook: str, **kwargs: Any) -> list[Any]:
        """For hooks called where nothing can be awaited: an awaitable answer is an error."""
        return [answer for _, answer in self.answers(hook, **kwargs)]

    def answers(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """(plugin, answer) of every implementation of a synchronous hook, in call order."""
        answers = []
        for name, function, argnames in self.impls(hook):
            try:
                answer = function(*[kwargs[a] for a in argnames])
            except Exception as exc:
                self.raise_for(hook, name, exc)
            if inspect.isawaitable(answer):
                getattr(answer, "close", lambda: None)()
                raise PluginError(f"plugin {name!r} returned an awaitable from {hook}, "
                                  "which must answer synchronously")
            answers.append((name, answer))
        return answers

    @staticmethod
    async def call_one(hook: str, name: str, function: Callable[..., Any], args: list[Any]) -> Any:
        try:
            return await await_me_maybe(function(*args))
        except Exception as exc:
            PluginManager.raise_for(hook, name, exc)

    @staticmethod
    def raise_for(hook: str, name: str, exc: Exception) -> NoReturn:
        """Deliberate RelayBusErrors (QueueFullError, ...) pass as they are, with a note
        naming the plugin; anything else becomes a PluginError naming the plugin."""
        if isinstance(exc, RelayBusError):
            note = f"raised by plugin {name!r} in {hook}"
            if note not in getattr(exc, "__notes__", ()):
                exc.add_note(note)
            raise exc
        raise PluginError(f"plugin {name!r} failed in {hook}: {type(exc).__name__}: {exc}") from exc

    async def first(self, hook: str, **kwargs: Any) -> Any:
        """The first non-None answer in call order (DESIGN section 5)."""
        return next((v for v in await self.call_each(hook, **kwargs) if v is not None), None)

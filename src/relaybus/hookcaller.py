"""One caller for every hook (hookspecs.py): it knows each hook's shape - a chain, every
answer, the first answer, all must agree, or an observer - awaits what an
implementation hands back, and names the plugin in every error. Call sites use its
typed methods; no hook name is spelled anywhere else."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from .errors import PluginError, RelayBusError

if TYPE_CHECKING:
    from .config import BusConfig
    from .delivery import FailureDecision, Subscription
    from .message import Message
    from .plugins import PluginManager

log = logging.getLogger("relaybus")
T = TypeVar("T")
FILTER_ARGS = ("message", "subscription")  # the usual order: called without a lookup


async def await_me_maybe(value: T | Awaitable[T]) -> T:
    """Hooks are sync; an implementation may hand back an awaitable instead of a value."""
    if inspect.isawaitable(value):
        return await value
    return value


class HookCaller:
    """`plugins.call.<hook>(...)`: what the core calls, one typed method per hook."""

    def __init__(self, plugins: PluginManager) -> None:
        self._impls = plugins.impls
        self._cleanup_failures: dict[str, int] = {}  # plugin -> on_cleanup failures in a row

    # -- the shapes --------------------------------------------------------------------

    async def _each(self, hook: str, **kwargs: Any) -> list[Any]:
        """Every implementation's answer, awaited in call order; an error names the plugin."""
        return [
            await self._one(hook, name, function, [kwargs[a] for a in argnames])
            for name, function, argnames in self._impls(hook)
        ]

    def _sync(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """(plugin, answer) of each implementation of a hook called where nothing can be
        awaited: an awaitable answer is an error."""
        answers = []
        for name, function, argnames in self._impls(hook):
            try:
                answer = function(*[kwargs[a] for a in argnames])
            except Exception as exc:
                _raise_for(hook, name, exc)
            if inspect.isawaitable(answer):
                getattr(answer, "close", lambda: None)()
                raise PluginError(
                    f"plugin {name!r} returned an awaitable from {hook}, which must answer synchronously"
                )
            answers.append((name, answer))
        return answers

    async def _observe(self, hook: str, **kwargs: Any) -> None:
        """An observer: a failing one is logged and never affects publishing or delivery."""
        for name, function, argnames in self._impls(hook):
            try:
                result = function(*[kwargs[a] for a in argnames])
                if result is not None and inspect.isawaitable(result):  # only an async observer
                    await result
            except Exception:
                log.exception("relaybus observer hook %s of plugin %r failed", hook, name)

    @staticmethod
    async def _one(hook: str, name: str, function: Callable[..., Any], args: list[Any]) -> Any:
        try:
            answer = function(*args)
            return answer if answer is None else await await_me_maybe(answer)  # None: most answers
        except Exception as exc:
            _raise_for(hook, name, exc)

    # -- the hooks ---------------------------------------------------------------------

    def changes_published(self) -> bool:
        """Whether any plugin implements on_publish (else publish skips the chain)."""
        return bool(self._impls("on_publish"))

    async def on_publish(self, bus: Any, message: Message) -> Message:
        """A chain: each implementation sees the previous one's result; raising rejects."""
        for name, function, argnames in self._impls("on_publish"):
            try:  # inline, not through _one: this runs for every message published
                changed = function(*[bus if a == "bus" else message for a in argnames])
                if changed is not None and inspect.isawaitable(changed):
                    changed = await changed
            except Exception as exc:
                _raise_for("on_publish", name, exc)
            if changed is not None:
                if changed.topic != message.topic:  # its keys, and what readers check, are the topic's
                    raise PluginError(
                        f"plugin {name!r} changed the topic of a message in on_publish "
                        f"({message.topic!r} to {changed.topic!r}); publish to the other "
                        "topic instead"
                    )
                message = changed
        return message

    def filters(self) -> bool:
        """Whether any plugin implements filter."""
        return bool(self._impls("filter"))

    async def filter(self, message: Message, subscription: Subscription) -> bool:
        """All must answer True; the first False ends it."""
        for name, function, argnames in self._impls("filter"):
            try:
                keep = (
                    function(message, subscription)
                    if argnames == FILTER_ARGS
                    else function(*[{"message": message, "subscription": subscription}[a] for a in argnames])
                )
                if keep is not True and keep is not False:  # an async filter, or a truthy value
                    keep = await await_me_maybe(keep)
            except Exception as exc:
                _raise_for("filter", name, exc)
            if not keep:
                return False
        return True

    def wraps_handlers(self) -> bool:
        """Whether any plugin implements handler_context."""
        return bool(self._impls("handler_context"))

    def handler_context(
        self, message: Message, subscription: Subscription
    ) -> list[AbstractContextManager[Any]]:
        """Every context manager the plugins wrap a handler in, in call order."""
        answers = self._sync("handler_context", message=message, subscription=subscription)
        return [answer for _, answer in answers if answer is not None]

    def on_subscribe(self, bus: Any, subscription: Subscription) -> None:
        self._sync("on_subscribe", bus=bus, subscription=subscription)

    async def on_failure(
        self, bus: Any, message: Message, error: BaseException, subscription: Subscription
    ) -> FailureDecision | None:
        """The first non-None answer in call order."""
        for name, function, argnames in self._impls("on_failure"):
            args = {"bus": bus, "message": message, "error": error, "subscription": subscription}
            decision = await self._one("on_failure", name, function, [args[a] for a in argnames])
            if decision is not None:
                return decision  # type: ignore[no-any-return]
        return None

    async def on_published(self, bus: Any, topic: str, messages: list[Message], ids: list[str]) -> None:
        await self._observe("on_published", bus=bus, topic=topic, messages=messages, ids=ids)

    def settlements_observed(self) -> bool:
        """Whether any plugin implements on_settled (else its arguments are not made)."""
        return bool(self._impls("on_settled"))

    async def on_settled(
        self,
        bus: Any,
        message: Message,
        subscription: Subscription | None,
        outcome: str,
        duration_s: float | None,
    ) -> None:
        await self._observe(
            "on_settled",
            bus=bus,
            message=message,
            subscription=subscription,
            outcome=outcome,
            duration_s=duration_s,
        )

    async def on_connection_state(self, bus: Any, old: str, new: str, error: str | None) -> None:
        await self._observe("on_connection_state", bus=bus, old=old, new=new, error=error)

    async def on_dead_letter(self, message: Message, reason: str, error: BaseException | None) -> None:
        await self._observe("on_dead_letter", message=message, reason=reason, error=error)

    async def on_cleanup(self, bus: Any) -> list[Exception]:
        """Every implementation, each on its own: one that fails (an error naming the
        plugin) never keeps the others from their duty. A plugin failing run after run is
        logged at its 1st, 2nd, 4th, 8th... failure in a row, not every interval."""
        failures: list[Exception] = []
        for name, function, argnames in self._impls("on_cleanup"):
            try:
                await self._one("on_cleanup", name, function, [bus for _ in argnames])
            except Exception as exc:
                failures.append(exc)
                count = self._cleanup_failures[name] = self._cleanup_failures.get(name, 0) + 1
                if count == 1:
                    log.error(
                        "relaybus on_cleanup of plugin %r failed; the others' cleanup still runs",
                        name,
                        exc_info=exc,
                    )
                elif count & (count - 1) == 0:  # a power of two
                    log.error(
                        "relaybus on_cleanup of plugin %r failed %d times in a row (%s); logged again at %d",
                        name,
                        count,
                        exc,
                        2 * count,
                    )
                continue
            failed = self._cleanup_failures.pop(name, 0)
            if failed:
                log.info("relaybus on_cleanup of plugin %r works again after %d failures", name, failed)
        return failures

    def redis_connection_options(self, config: BusConfig) -> list[dict[str, Any] | None]:
        return [answer for _, answer in self._sync("redis_connection_options", config=config)]

    def subscription_options(self) -> list[tuple[str, Any]]:
        """(plugin, answer) pairs: the answers are checked by the caller, naming the plugin."""
        return self._sync("subscription_options")

    def plugin_settings(self) -> list[tuple[str, Any]]:
        """(plugin, answer) pairs: the answers are checked by the caller, naming the plugin."""
        return self._sync("plugin_settings")


def _raise_for(hook: str, name: str, exc: Exception) -> NoReturn:
    """Deliberate RelayBusErrors (QueueFullError, ...) pass as they are, with a note
    naming the plugin; anything else becomes a PluginError naming the plugin."""
    if isinstance(exc, RelayBusError):
        note = f"raised by plugin {name!r} in {hook}"
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
        raise exc
    raise PluginError(f"plugin {name!r} failed in {hook}: {type(exc).__name__}: {exc}") from exc

"""Every hook a relaybus plugin can implement. These docstrings are the reference.

Each spec declares how it is called with the decorator above it - `@chain`, `@all_true`,
`@first`, `@observer`, `@each` or `@sync` - and the core's one caller (hookcaller.py)
dispatches on that declaration: adding a hook is its spec here, its call site, its
section in docs/hooks.md and its test. Implementations are called in call order (last
registered first) and receive only the arguments they name, so a hook may gain an
argument without breaking an implementation written before it. Never rely on
registration order for correctness.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import pluggy

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .bus import Bus
    from .config import BusConfig
    from .delivery import FailureDecision, Subscription
    from .message import Message

hookspec = pluggy.HookspecMarker("relaybus")
hookimpl = pluggy.HookimplMarker("relaybus")

P = ParamSpec("P")
T = TypeVar("T")
SHAPES: dict[str, str] = {}  # hook name -> its shape: the name of the decorator declaring it


def _declare(shape: str, spec: Callable[..., Any]) -> Any:
    SHAPES[spec.__name__] = shape
    return hookspec(firstresult=shape == "first")(spec)


# -- the shapes: each types what the call gives back -------------------------------------


def chain(spec: Callable[P, T | None]) -> Callable[P, Awaitable[T]]:
    """Each implementation sees the previous one's answer in place of the last argument;
    None keeps it. The call gives the last value. Raising stops the chain: a RelayBusError
    reaches the caller as it is, anything else as a PluginError naming the plugin. An
    awaitable answer is awaited."""
    return cast("Callable[P, Awaitable[T]]", _declare("chain", spec))


def all_true(spec: Callable[P, bool]) -> Callable[P, Awaitable[bool]]:
    """Every implementation must answer True; the first other answer ends it with False.
    Raising is an error naming the plugin. An awaitable answer is awaited."""
    return cast("Callable[P, Awaitable[bool]]", _declare("all_true", spec))


def first(spec: Callable[P, T | None]) -> Callable[P, Awaitable[T | None]]:
    """The first non-None answer in call order wins; the rest are not called (pluggy's
    `firstresult`). Raising is an error naming the plugin. An awaitable answer is awaited."""
    return cast("Callable[P, Awaitable[T | None]]", _declare("first", spec))


def observer(spec: Callable[P, None]) -> Callable[P, Awaitable[None]]:
    """Every implementation watches; the return value is ignored, an awaitable is awaited.
    One that raises is logged naming the plugin (`relaybus observer hook NAME of plugin
    'P' failed`) and never affects the caller, the message or the other observers."""
    return cast("Callable[P, Awaitable[None]]", _declare("observer", spec))


def each(spec: Callable[P, None]) -> Callable[P, Awaitable[list[Exception]]]:
    """Every implementation runs, each on its own: one that fails never keeps the others
    from theirs. The call gives the failures (errors naming the plugin); a plugin failing
    call after call is logged at its 1st, 2nd, 4th, 8th... failure in a row, and once when
    it works again. An awaitable answer is awaited."""
    return cast("Callable[P, Awaitable[list[Exception]]]", _declare("each", spec))


def sync(spec: Callable[P, T]) -> Callable[P, list[tuple[str, T]]]:
    """Every implementation answers synchronously, where nothing can be awaited (an
    awaitable answer is a PluginError). The call gives each (plugin, answer) in call order;
    raising is an error naming the plugin."""
    return cast("Callable[P, list[tuple[str, T]]]", _declare("sync", spec))


SHAPE_NAMES = ("chain", "all_true", "first", "observer", "each", "sync")  # the decorators above


# -- the hooks ---------------------------------------------------------------------------


@chain
def on_publish(bus: Bus, message: Message) -> Message | None:
    """Called for every message before it is written, in `publish` and `publish_many`.

    Return a changed Message (priority, dedup key, headers, expiry) or None to keep
    it. Each implementation sees the previous one's result. Raising rejects the
    publish and nothing is written: a RelayBusError (QueueFullError, ...) reaches
    the caller as it is; any other error as a PluginError naming the plugin.
    """


@all_true
def filter(bus: Bus, message: Message, subscription: Subscription) -> bool:
    """Called before a handler runs, with the bus that delivered the message. Every
    implementation must return True for the message to reach the handler; a False from
    any one acknowledges the message for that group without running the handler, and
    counts it as filtered.
    """


@sync
def on_subscribe(bus: Bus, subscription: Subscription) -> None:
    """Called by `subscribe` as a handler is registered, before anything is read: raise
    to refuse the subscription (a RelayBusError such as FilterError reaches the caller
    as it is; anything else as a PluginError naming the plugin). This is where a plugin
    checks and prepares its own options - the filters plugin compiles
    `subscription.filter`. Return value ignored; must not return an awaitable
    (`subscribe` is synchronous).
    """


@sync
def handler_context(
    bus: Bus, message: Message, subscription: Subscription
) -> AbstractContextManager[Any] | None:
    """Called by `run()` before a handler runs, with the bus: return a context manager to wrap the
    handler and the settling of its message in (a tracing span, a log context), or None.
    It is entered in call order and exited after the message is settled - `on_failure`
    and `on_settled` run inside it - and must not suppress exceptions. Answer
    synchronously; raising leaves the message pending (logged), as any plugin error.
    """


@first
def on_failure(
    bus: Bus, message: Message, error: BaseException, subscription: Subscription
) -> FailureDecision | None:
    """Called when a handler raised (not for `Reject` or a payload that fails the
    subscription's `model`: those are dead-lettered at once). Return a FailureDecision (retry after a delay,
    dead-letter, or drop), or None to leave the decision to another plugin. The first
    non-None answer wins. With no answer at all the message stays pending and is
    delivered again after `claim_idle_ms` - nothing is dropped by default.
    """


@observer
def on_published(bus: Bus, topic: str, messages: list[Message], ids: list[str]) -> None:
    """Called after `publish` / `publish_many` wrote to Redis, with the messages as
    written and the ids publish returned: where `ids[i] != messages[i].id` the message
    was a duplicate inside its dedup window and nothing was appended. For observers
    (metrics); return value ignored, an error is logged and never fails the publish.
    """


@observer
def on_settled(
    bus: Bus,
    message: Message,
    subscription: Subscription | None,
    outcome: str,
    duration_s: float | None,
) -> None:
    """Called once a delivered message is settled for its group. `outcome` is one of
    "handled" (the handler returned; its ack is queued), "retried", "dead_lettered",
    "dropped", "pending" (the handler failed and no plugin decided: it will be
    redelivered), "filtered", "expired". `duration_s` is the handler's run time, None
    where no handler ran; `subscription` is None for pull reads. For observers
    (metrics); return value ignored, an error is logged and never affects delivery.
    """


@observer
def on_connection_state(bus: Bus, old: str, new: str, error: str | None) -> None:
    """Called when the bus's connection state changes between "connected", "degraded"
    (a command failed) and "disconnected" (the health check failed). `error` is the
    redacted error that caused it, None on recovery. For observers (metrics, alerts);
    return value ignored, an error is logged.
    """


@observer
def on_dead_letter(bus: Bus, message: Message, reason: str, error: BaseException | None) -> None:
    """Called after a message was moved to its topic's dead-letter stream of `bus`: by a
    failure decision, `Reject`, an invalid payload, expiry or `bus.dead_letter`. For observers
    (alerts, metrics); return value ignored, an error is logged naming the plugin and
    never affects the settlement (on_settled still fires) or the caller.
    """


@each
def on_cleanup(bus: Bus) -> None:
    """Called every `cleanup_interval_s` while the bus is open (unless
    `periodic_cleanup` is off), and by `bus.cleanup()`: trimming, expiry, retention,
    memory pressure. Each implementation runs whatever the others do. Return value
    ignored; an awaitable is awaited.
    """


@sync
def plugin_settings() -> type[BaseModel] | None:
    """Called when a bus's configuration is built: return a pydantic model class whose
    fields are this plugin's settings, or None. They become configuration fields -
    `Bus.from_url` keywords and `RELAYBUS_<NAME>` environment variables - validated by
    the model (its validators see the core settings as `info.context["config"]`), read
    back as `bus.config.<name>` or, typed, `bus.config.settings(Model)`. A name that
    another plugin or the core declares is a ConfigError. Answer synchronously.
    """


@sync
def subscription_options() -> type[BaseModel] | None:
    """Called by `subscribe`: return a pydantic model class whose fields are this plugin's
    per-subscription options, or None. They are the extra keywords `subscribe` accepts,
    validated by the model, and reach hooks as `subscription.options` (every declared
    option, defaults filled in) and, typed, `subscription.option(Model)`. A keyword nobody
    declares is a TypeError; a name another plugin or `subscribe` itself takes is a
    ConfigError. Answer synchronously.
    """


@sync
def redis_connection_options(config: BusConfig) -> dict[str, Any] | None:
    """Called once per connect, before the client is made: keyword arguments for
    redis-py's `Redis.from_url` (TLS files, ACL credentials, keepalive, ...).

    Answer synchronously (an awaitable is a PluginError): a dict, or None to add
    nothing. Every non-None dict is merged into the
    client options; two plugins giving one option different values, or a plugin
    setting an option the core owns (pool size, timeouts, retries, reply decoding),
    raise PluginError, so no answer silently wins over another.
    """

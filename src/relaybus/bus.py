"""Bus: the asyncio API - publish, subscribe/run, read/ack, history, dead letters."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, Unpack

from redis.exceptions import ResponseError

from . import arguments, settings
from .config import BusConfig
from .connection import UNAVAILABLE, Health, unavailable
from .delivery import Handler, Subscription
from .engine import follow as followers
from .engine.engine import Engine
from .engine.groups import Groups, redis_full
from .engine.publisher import Publisher
from .engine.retained import Retention
from .engine.settlement import Settlement
from .errors import FilterError, RedisFullError, RelayBusError
from .keys import Keys, validate_group, validate_pattern, validate_topic
from .message import Message, new_id
from .options import PublishOptions, PublishParams
from .plugins import PluginManager
from .redact import redact_url
from .stats import (
    BusStats,
    ConnectionStats,
    MemoryStats,
    memory_from_info,
    recommendations,
    server_from_info,
    server_info,
    topic_stats,
)

log = logging.getLogger("relaybus")
P = ParamSpec("P")
T = TypeVar("T")


def _reports_unavailable(
    method: Callable[Concatenate[Bus, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Bus, P], Coroutine[Any, Any, T]]:
    """Redis unreachable inside a public method: a BusUnavailableError naming the
    method (never redis-py's own exception), and the connection state updated. Redis
    refusing a write because its memory is full: a RedisFullError naming the method."""

    @functools.wraps(method)
    async def guarded(bus: Bus, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(bus, *args, **kwargs)
        except UNAVAILABLE as exc:
            await bus.health.failed(exc)
            raise unavailable(f"{method.__name__}()", exc, bus.config.url) from None
        except ResponseError as exc:
            if not redis_full(exc):
                raise
            raise RedisFullError(
                f"{method.__name__}(): Redis's memory is full (maxmemory with "
                "noeviction) and it refused the write; nothing was changed"
            ) from None

    return guarded


def _check_keep(keep_s: float | None, keep_len: int | None, what: str = "") -> None:
    if keep_s is not None:
        arguments.seconds(f"{what}keep_s", keep_s)
    if keep_len is not None:
        arguments.count(f"{what}keep_len", keep_len, least=0)


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"


class Bus:
    """A message bus over one Redis; use `async with bus:` or `connect()`/`close()`.

    The facade: it checks arguments and hands the work to the one Engine that connect
    builds (engine/engine.py), which never sees this class.
    """

    def __init__(self, config: BusConfig | None = None, **fields: Any) -> None:
        if config is not None and fields:
            raise TypeError("pass a BusConfig or keyword fields, not both")
        self.config = config or BusConfig.build(**fields)
        self.keys = Keys(self.config.prefix)
        self.plugins = PluginManager(self.config.disabled_plugins)
        self.consumer = self.config.consumer_name or default_consumer_name()
        self.counters: Counter[str] = Counter()
        self.health = Health(self._connection_changed, self.config.password)
        self._subscriptions: list[Subscription] = []
        self._plugins_loaded = False
        self._opened: Engine | None = None  # from connect() to close()
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_url(cls, url: str, **fields: Any) -> Bus:
        return cls(BusConfig.build(url=url, **fields))

    def __repr__(self) -> str:
        return f"<Bus {redact_url(self.config.url)} prefix={self.config.prefix!r}>"

    # -- lifecycle -------------------------------------------------------------

    async def connect(self) -> Bus:
        """Load plugins, open the pool and check Redis answers; idempotent."""
        if self._opened is not None:
            return self
        self._load_plugins()
        engine = self._opened = Engine.build(
            self, self.config, self.keys, self.plugins, self.health, self.consumer, self.counters
        )
        try:
            await engine.start()  # its connection state changes reach the hooks, as an open bus's
        except BaseException:
            self._opened = None
            raise
        self._loop = asyncio.get_running_loop()
        return self

    async def _connection_changed(self, old: str, new: str, error: str | None) -> None:
        level = logging.INFO if new == "connected" else logging.WARNING
        log.log(
            level,
            "relaybus connection to %s: %s -> %s%s",
            redact_url(self.config.url),
            old,
            new,
            f" ({error})" if error else "",
        )
        if self._opened is not None:
            await self.plugins.call.on_connection_state(self, old, new, error)

    def _load_plugins(self) -> None:
        """Once per Bus, on first need (connect, or a subscribe that a plugin validates)."""
        if not self._plugins_loaded:
            self.plugins.load_entry_points()
            self._plugins_loaded = True

    async def close(self) -> None:
        engine = self._opened
        if engine is not None:
            await engine.drain()
            self._opened = None
            await engine.close()

    async def __aenter__(self) -> Bus:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the bus was connected on (None before): its connections belong
        to it, so code running on another loop hands calls to this one."""
        return self._loop

    @property
    def _engine(self) -> Engine:
        if self._opened is None:
            raise RelayBusError("the bus is not connected: use 'async with bus:' or 'await bus.connect()'")
        return self._opened

    # The pooled client and three engine components, as public attributes: kept only
    # while the CLI, the dashboard and the adapters still use them (the facade work moves
    # them to the public API); then deleted. Nothing else may use them: tests of
    # internals reach the engine through `_engine`.

    # Tasks the bus awaits at close, and the event close sets first: the LangChain
    # adapter's (adapters/_langchain_callbacks.py), until it has a public way.
    @property
    def _background(self) -> list[asyncio.Task[None]]:
        return self._engine.background

    @property
    def _closing(self) -> asyncio.Event:
        return self._engine.closing

    @property
    def redis(self) -> Any:
        return self._engine.ctx.redis

    @property
    def publisher(self) -> Publisher:
        return self._engine.publisher

    @property
    def groups(self) -> Groups:
        return self._engine.groups

    @property
    def settlement(self) -> Settlement:
        return self._engine.settlement

    # -- publishing ------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        priority: int = 0,
        ttl: float | None = None,
        delay: float | None = None,
        dedup_key: str | None = None,
        headers: dict[str, str] | None = None,
        sender: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        dedup_window: float | None = None,
    ) -> str:
        """Append one message; returns its id (made here, before Redis answers).

        With a `dedup_key` seen inside its window (`dedup_window` seconds, default
        `dedup_window_s`), nothing is appended and the original message's id returns.
        """
        params = PublishParams(
            priority=priority,
            ttl=ttl,
            delay=delay,
            dedup_key=dedup_key,
            headers=headers,
            sender=sender,
            correlation_id=correlation_id,
            reply_to=reply_to,
            dedup_window=dedup_window,
        )
        ids = await self._engine.publish(topic, [payload], params)
        return ids[0]

    async def publish_many(
        self, topic: str, payloads: Iterable[Any], **options: Unpack[PublishOptions]
    ) -> list[str]:
        """Append several messages in one round trip; ids in the order given (for a
        duplicate, the original's id). Takes the keywords of `publish`."""
        params = PublishParams(**options)
        return await self._engine.publish(topic, list(payloads), params)

    # -- consuming: push -------------------------------------------------------

    def subscribe(
        self,
        topics: str | Sequence[str],
        *,
        group: str,
        filter: Any = None,
        concurrency: int = 1,
        prefetch: int = 0,
        model: Any = None,
        start: Literal["earliest", "latest"] = "earliest",
        **options: Any,
    ) -> Callable[[Handler], Handler]:
        """Register a handler for `run()`; topics may be names or glob patterns.

        The handler returning acknowledges the message; raising goes to `on_failure`.
        `prefetch` (default 2 x concurrency) bounds the messages one consumer holds at once,
        so competing consumers share the work fairly.
        """
        names = (topics,) if isinstance(topics, str) else tuple(topics)
        self._load_plugins()
        declared = settings.owners(
            self.plugins.call.subscription_options(),
            SUBSCRIBE_KEYWORDS,
            "subscription_options",
            "subscribe option",
        )
        checked = settings.options(options, declared, SUBSCRIBE_KEYWORDS)

        def register(handler: Handler) -> Handler:
            subscription = Subscription(
                topics=names,
                group=group,
                handler=handler,
                concurrency=concurrency,
                prefetch=prefetch,
                filter=filter,
                model=model,
                start=start,
                options=checked,
            )
            if filter is not None and not self.plugins.call.filters():
                raise FilterError(
                    "filter= was given but no plugin implements the filter hook "
                    "(is the 'filters' plugin disabled?)"
                )
            self.plugins.call.on_subscribe(self, subscription)
            self._subscriptions.append(subscription)
            return handler

        return register

    # -- request / reply ---------------------------------------------------------

    async def request(  # `timeout`: the contract's name (the wait is the bus's own)
        self,
        topic: str,
        payload: Any,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109
        priority: int = 0,
        headers: dict[str, str] | None = None,
    ) -> Message:
        """Publish a request and wait for the reply (`reply` in the handler); the request
        expires after `timeout` seconds too, so no handler starts one nobody waits for.
        RequestTimeoutError when no reply comes in time; RequestFailedError as soon as the
        responder failed for good (dead-lettered or dropped)."""
        arguments.seconds("timeout", timeout, positive=True)
        return await self._engine.request(topic, payload, timeout, priority, headers)

    async def reply(self, message: Message, payload: Any, *, headers: dict[str, str] | None = None) -> str:
        """Answer a request (a message with `reply_to`); returns the reply's id. The reply
        carries the request's `correlation_id` (or its id); to an inbox of `request` it
        echoes the request's one-time token and is kept while the requester's inbox is
        (not at all once it is gone), to a topic it is an ordinary publish."""
        if not isinstance(message, Message) or not message.reply_to:
            raise ValueError("reply() needs a delivered request: a Message with reply_to set")
        return await self._engine.reply(message, payload, headers)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    async def run(self) -> None:
        """Deliver to every subscription until `stop()` (which drains) or cancellation
        (which ends it at once: running handlers are cancelled, their messages stay
        pending and are delivered again after `claim_idle_ms`)."""
        if self._opened is not None and self._opened.consumer is not None:
            raise RelayBusError("run() is already going on this bus")
        await self.connect()
        await self._engine.run(self._subscriptions)

    async def stop(self) -> None:
        """Stop reading; returns when in-flight handlers have finished and acks are sent."""
        if self._opened is not None:
            await self._opened.stop()

    # -- consuming: pull -------------------------------------------------------

    @_reports_unavailable
    async def read(
        self,
        topic: str,
        group: str,
        consumer: str | None = None,
        count: int = 10,
        block_ms: int | None = None,
        start: Literal["earliest", "latest"] = "earliest",
    ) -> list[Message]:
        """Up to `count` messages: ones left pending past `claim_idle_ms` (by any consumer,
        this one too: after a failed read, what it took comes back), then new ones. Ack
        each within `claim_idle_ms`, or it is delivered again."""
        validate_topic(topic)
        validate_group(group)
        arguments.count("count", count)
        if block_ms is not None:
            arguments.count("block_ms", block_ms, least=0)
        arguments.choice("start", start, ("earliest", "latest"))
        return await self._engine.read(topic, group, consumer or self.consumer, count, block_ms or 0, start)

    @_reports_unavailable
    async def ack(self, *messages: Message) -> int:
        """Acknowledge messages handed out by `read`; returns how many were still pending."""
        return await self._engine.ack(messages)

    @_reports_unavailable
    async def dead_letter(self, message: Message, reason: str, error: BaseException | None = None) -> bool:
        """Move a delivered message to its topic's DLQ (append + ack in one script)."""
        return await self._engine.dead_letter(message, reason, error)

    # -- history and dead letters -----------------------------------------------

    @_reports_unavailable
    async def history(self, topic: str, limit: int = 100) -> list[Message]:
        """The latest `limit` retained messages of a topic, every lane, oldest first
        (by entry time; within one millisecond by message id)."""
        validate_topic(topic)
        arguments.count("limit", limit)
        return await self._engine.history(topic, limit)

    @_reports_unavailable
    async def dead_letters(self, topic: str, limit: int = 100) -> list[Message]:
        """Dead letters of a topic, oldest first; `headers` carry why each one died."""
        validate_topic(topic)
        arguments.count("limit", limit)
        return await self._engine.dead_letters(topic, limit)

    @_reports_unavailable
    async def replay_dead_letters(self, topic: str, ids: Iterable[str] | None = None) -> int:
        """Put dead letters back (all, or those whose message or DLQ entry id is given)
        for the group they died in, with a fresh attempt count; returns how many."""
        validate_topic(topic)
        return await self._engine.replay_dead_letters(topic, arguments.ids("ids", ids))

    @_reports_unavailable
    async def purge_dead_letters(self, topic: str) -> int:
        """Delete a topic's dead letters; returns how many there were."""
        validate_topic(topic)
        return await self._engine.purge_dead_letters(topic)

    # -- resumable streams -----------------------------------------------------

    def follow(self, topic: str, after: str | None = None) -> AsyncGenerator[Message, None]:
        """Every message of a topic, in stored order, with no consumer group: what is
        retained after `after` (a Message.entry_id seen before; None: the oldest retained),
        then each new one as it is stored - no gap and no duplicate between the two. Ends
        once the topic is closed and read to its end (docs/streams.md)."""
        validate_topic(topic)
        return self._engine.follow(topic, followers.check_position(after))

    @_reports_unavailable
    async def close_topic(self, topic: str, keep_s: float = 600) -> int:
        """Close a topic: its followers end once they have read everything published before
        this, a later publish raises TopicClosedError, and its keys expire `keep_s` later.
        Returns how many delayed messages not yet due it dropped (docs/streams.md)."""
        validate_topic(topic)
        arguments.seconds("keep_s", keep_s, positive=True)
        return await self._engine.close_topic(topic, keep_s)

    # -- ephemeral broadcast ---------------------------------------------------

    async def broadcast(self, topic: str, payload: Any, **fields: Any) -> int:
        """Send over Redis Pub/Sub: lowest latency, nothing stored, lossy (a listener
        that is not connected at that moment never sees it). Returns how many
        listeners Redis handed it to."""
        validate_topic(topic)
        return await self._engine.broadcast(Message(topic=topic, payload=payload, **fields))

    def listen(self, *patterns: str) -> AsyncGenerator[Message, None]:
        """Yield broadcasts on topics matching any glob pattern (`*`, `?`, `[...]`)
        until the caller stops iterating."""
        if not patterns:
            raise ValueError("listen needs at least one topic or pattern")
        return self._engine.listen([validate_pattern(p) for p in patterns])

    @_reports_unavailable
    async def topics(self) -> list[str]:
        """Every topic published to under this prefix."""
        return await self._topics()

    async def _topics(self) -> list[str]:
        return await self._engine.topics()

    # -- stream management -----------------------------------------------------

    async def cleanup(self) -> None:
        """Run every `on_cleanup` hook once (an open bus also does every `cleanup_interval_s`
        unless `periodic_cleanup` is off). Each runs whatever the others do; then the first
        failure, if any, is raised."""
        await self.connect()
        failures = await self.plugins.call.on_cleanup(self)
        if failures:
            raise failures[0]

    @_reports_unavailable
    async def set_retention(
        self,
        topic: str,
        *,
        keep_s: float | None = None,
        keep_len: int | None = None,
        dlq_keep_s: float | None = None,
        dlq_keep_len: int | None = None,
        at_least: bool = False,
    ) -> Retention:
        """Store on the topic what cleanup keeps of it, whatever process runs cleanup:
        consumed history by age (`keep_s`) and length (`keep_len`), dead letters likewise;
        None: no limit. It is pinned: buses' configurations no longer change it. With
        `at_least`, raise each stored limit to at least these instead, never lowering one
        and leaving a pinned one alone - what a bus does with its retention settings on the
        topics it uses. Returns what is stored."""
        validate_topic(topic)
        _check_keep(keep_s, keep_len)
        _check_keep(dlq_keep_s, dlq_keep_len, "dlq_")
        wanted = Retention(keep_s=keep_s, keep_len=keep_len, dlq_keep_s=dlq_keep_s, dlq_keep_len=dlq_keep_len)
        return await self._engine.set_retention(topic, wanted, at_least)

    @_reports_unavailable
    async def retention(self, topic: str) -> Retention | None:
        """The retention stored on the topic, which cleanup trims it by; None: none stored
        (cleanup then keeps all of its history)."""
        validate_topic(topic)
        return await self._engine.retention(topic)

    @_reports_unavailable
    async def trim(self, topic: str, *, keep_s: float | None = None, keep_len: int | None = None) -> int:
        """Remove a topic's consumed history: entries older than `keep_s` or beyond the newest
        `keep_len` of each of its streams (topic, lanes, retry streams) - but only entries every
        consumer group has acknowledged. Never removes anything unconsumed; None keeps all."""
        validate_topic(topic)
        _check_keep(keep_s, keep_len)
        return await self._engine.trim(topic, keep_s, keep_len)

    @_reports_unavailable
    async def trim_dead_letters(
        self, topic: str, *, keep_s: float | None = None, keep_len: int | None = None
    ) -> int:
        """Remove dead letters older than `keep_s` or beyond the newest `keep_len`."""
        validate_topic(topic)
        _check_keep(keep_s, keep_len)
        return await self._engine.trim_dead_letters(topic, keep_s, keep_len)

    @_reports_unavailable
    async def memory(self) -> MemoryStats:
        """Redis's memory use, limit and eviction policy (INFO memory)."""
        return memory_from_info(await server_info(self._engine.ctx.redis, "memory"))

    @_reports_unavailable
    async def stats(self, topics: Iterable[str] | None = None) -> BusStats:
        """Per topic and group: lengths, pending, lag, oldest pending age, delayed, DLQ, memory,
        expired/filtered/dropped counts; the server's memory and clients; recommendations."""
        names = sorted(topics) if topics is not None else await self._topics()
        for name in names:
            validate_topic(name)
        redis = self._engine.ctx.redis  # stats.py's diagnostic reads: redis-py's own pipelines
        per_topic = [await topic_stats(redis, self.keys, name) for name in names]
        infos = await server_info(redis)
        server = server_from_info(infos)
        health, outbox = self.health, self._engine.publisher.outbox
        connection = ConnectionStats(
            state=health.state,
            uptime_s=time.time() - health.connected_since if health.connected_since else None,
            failures=health.failures,
            reconnects=health.reconnects,
            last_error=health.last_error,
            outbox_pending=await outbox.count() if outbox is not None else None,
        )
        return BusStats(
            prefix=self.config.prefix,
            topics=per_topic,
            server=server,
            connection=connection,
            counters=dict(self.counters),
            recommendations=recommendations(server.memory, self.config.memory_pressure_ratio, per_topic),
        )


# what subscribe() takes itself: a plugin's subscription_options cannot claim these
SUBSCRIBE_KEYWORDS = tuple(
    name
    for name, p in inspect.signature(Bus.subscribe).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
)

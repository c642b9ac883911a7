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
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, Unpack

from redis.exceptions import ResponseError

from . import arguments, hookspecs, settings
from .config import BusConfig
from .connection import UNAVAILABLE, Health, unavailable
from .delivery import Handler, Subscription
from .engine import follow as followers
from .engine.engine import Engine
from .engine.groups import redis_full
from .engine.retained import Retention
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

    The facade: it checks arguments and hands the work to the engine (engine/), which
    is given an explicit Context at connect and never sees this class.

    Args:
        config: The whole configuration, built already; None: built from `fields`.
        **fields: `BusConfig` fields (and plugin settings) by name, over the `RELAYBUS_*`
            variables; not together with `config`.

    Raises:
        ConfigError: A field is unknown or invalid (one error naming each).
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
        self._close_callbacks: list[Callable[[], Awaitable[None]]] = []  # on_close()

    @classmethod
    def from_url(cls, url: str, **fields: Any) -> Bus:
        """A bus for the Redis at `url`, not yet connected.

        Args:
            url: `redis://`, `rediss://`, `unix://`, `redis+cluster://` or `redis+sentinel://`
                (docs/configuration.md); a user and password in it are used.
            **fields: Other `BusConfig` fields and plugin settings by name.

        Raises:
            ConfigError: The URL or a field is invalid.
        """
        return cls(BusConfig.build(url=url, **fields))

    def __repr__(self) -> str:
        return f"<Bus {redact_url(self.config.url)} prefix={self.config.prefix!r}>"

    # -- lifecycle -------------------------------------------------------------

    async def connect(self) -> Bus:
        """Load plugins, open the pool and check Redis answers; idempotent.

        Returns:
            This bus, connected.

        Raises:
            BusUnavailableError: Redis did not answer within `connect_timeout`.
            ConfigError: The outbox at `outbox_path` cannot be opened.
        """
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
            await self.plugins.call(hookspecs.on_connection_state, self, old, new, error)

    def _load_plugins(self) -> None:
        """Once per Bus, on first need (connect, or a subscribe that a plugin validates)."""
        if not self._plugins_loaded:
            self.plugins.load()
            self._plugins_loaded = True

    async def close(self) -> None:
        """Stop `run()` (draining), end the background jobs and close every connection."""
        engine = self._opened
        if engine is not None:
            await engine.drain()
            await self._run_close_callbacks()  # run() has stopped; every connection is still open
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

        With a `dedup_key` seen inside its window, nothing is appended and the original
        message's id returns. While Redis is unreachable the publish is retried
        (idempotently) for `publish_timeout_s`, then goes to the outbox if there is one.

        Args:
            topic: Topic name (letters, digits, `. _ - :`; at most 200).
            payload: Any JSON value.
            priority: 0-9, larger is delivered first.
            ttl: Seconds until it expires (not handed to handlers after); None: `default_ttl`.
            delay: Seconds before it is delivered; None: at once.
            dedup_key: Idempotency key per topic: a second publish with it inside the window
                appends nothing.
            headers: String metadata carried with the message.
            sender: Who sent it, for the reader's information.
            correlation_id: Ties a reply to its request.
            reply_to: Where an answer goes (`Bus.reply` uses it).
            dedup_window: Seconds `dedup_key` is remembered; None: `dedup_window_s`.

        Returns:
            The message's id (`Message.id` wherever it is seen again).

        Raises:
            MessageTooLargeError: The encoded message exceeds `max_message_bytes`.
            QueueFullError: The topic is at `max_queue_size` with `overflow="reject"`.
            TopicClosedError: The topic was closed (`close_topic`).
            BusUnavailableError: Redis stayed unreachable and there is no outbox.
            ReplicationError: Fewer than `min_replicas_acked` replicas confirmed it in time.
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
        """Append several messages in one round trip (per batch).

        Args:
            topic: Topic name, as for `publish`.
            payloads: JSON values, one message each.
            **options: The keywords of `publish`, applied to every message.

        Returns:
            The ids in the order given (for a duplicate, the original's id).

        Raises:
            MessageTooLargeError: A message is too large; nothing is appended.
            QueueFullError: The topic is at `max_queue_size` with `overflow="reject"`.
        """
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
        """Register a handler for `run()`; use as a decorator.

        The handler returning acknowledges the message; raising goes to `on_failure`
        (retries, then the DLQ, with the built-in `dlq` plugin).

        Args:
            topics: Topic names or glob patterns (`*`, `?`, `[...]`); a pattern also picks up
                topics created later.
            group: Consumer group: each message goes to one consumer of it; several groups
                each get every message.
            filter: A MongoDB-style query on the message (`{"payload.pr": {"$gt": 10}}`);
                a message it rejects is acked for this group and counted. Needs the `filters`
                plugin.
            concurrency: Handlers running at once in this process.
            prefetch: Messages this consumer holds at once; 0: 2 x `concurrency`. Bounds how
                much one consumer takes from its competitors.
            model: A type pydantic validates the payload into (a BaseModel, a dataclass, ...).
            start: Where a group made by this first use starts: `"earliest"` retained
                message, or `"latest"` (only what comes after).
            **options: Options declared by plugins (`subscription_options`).

        Returns:
            A decorator that registers the handler and returns it unchanged.

        Raises:
            TypeError: An option no plugin declares.
            FilterError: `filter` is given but no plugin implements the filter hook.
        """
        names = (topics,) if isinstance(topics, str) else tuple(topics)
        self._load_plugins()
        declared = settings.owners(
            self.plugins.call(hookspecs.subscription_options),
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
            if filter is not None and not self.plugins.call.implemented(hookspecs.filter):
                raise FilterError(
                    "filter= was given but no plugin implements the filter hook "
                    "(is the 'filters' plugin disabled?)"
                )
            self.plugins.call(hookspecs.on_subscribe, self, subscription)
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
        """Publish a request and wait for its reply (`reply` in the responder's handler).

        The request expires after `timeout` too, so no handler starts one nobody waits for.

        Args:
            topic: Topic the responder subscribes to.
            payload: Any JSON value.
            timeout: Seconds to wait for the reply.
            priority: 0-9, as for `publish`.
            headers: String metadata carried with the request.

        Returns:
            The reply message.

        Raises:
            RequestTimeoutError: No reply within `timeout` (also a TimeoutError).
            RequestFailedError: The responder failed for good (dead-lettered or dropped);
                raised at once, not at the timeout.
        """
        arguments.seconds("timeout", timeout, positive=True)
        return await self._engine.request(topic, payload, timeout, priority, headers)

    async def reply(self, message: Message, payload: Any, *, headers: dict[str, str] | None = None) -> str:
        """Answer a request (a message with `reply_to`).

        The reply carries the request's `correlation_id` (or its id). To an inbox of
        `request` it echoes the request's one-time token and is kept while the requester's
        inbox is (not at all once it is gone); to a topic it is an ordinary publish.

        Args:
            message: The request, as delivered to the handler or by `read`.
            payload: Any JSON value.
            headers: String metadata carried with the reply.

        Returns:
            The reply's id.

        Raises:
            ValueError: `message` is not a delivered request (no `reply_to`).
        """
        if not isinstance(message, Message) or not message.reply_to:
            raise ValueError("reply() needs a delivered request: a Message with reply_to set")
        return await self._engine.reply(message, payload, headers)

    @property
    def subscriptions(self) -> list[Subscription]:
        """The handlers registered by `subscribe`, in order."""
        return list(self._subscriptions)

    async def run(self) -> None:
        """Deliver to every subscription until `stop()` or cancellation.

        `stop()` drains: running handlers finish and their acks are sent. Cancellation ends
        it at once: running handlers are cancelled, their messages stay pending and are
        delivered again after `claim_idle_ms`.

        Raises:
            RelayBusError: `run()` is already going on this bus.
        """
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
        """Pull up to `count` messages for a consumer of `group`.

        First ones left pending past `claim_idle_ms` (by any consumer, this one too: after a
        failed read, what it took comes back), then new ones. Ack each within
        `claim_idle_ms`, or it is delivered again.

        Args:
            topic: Topic name.
            group: Consumer group; made on first use.
            consumer: Consumer name in the group; None: this bus's (`consumer_name`).
            count: Most messages returned.
            block_ms: If nothing is there, wait up to this many milliseconds for a message
                (without holding a connection); None or 0: return at once.
            start: Where a group made by this read starts: `"earliest"` or `"latest"`.

        Returns:
            The messages, possibly none.
        """
        validate_topic(topic)
        validate_group(group)
        arguments.count("count", count)
        if block_ms is not None:
            arguments.count("block_ms", block_ms, least=0)
        arguments.choice("start", start, ("earliest", "latest"))
        return await self._engine.read(topic, group, consumer or self.consumer, count, block_ms or 0, start)

    @_reports_unavailable
    async def ack(self, *messages: Message) -> int:
        """Acknowledge messages handed out by `read`, in one round trip.

        Args:
            *messages: Messages returned by `read`.

        Returns:
            How many were still pending (an ack of an already-acked message counts 0).
        """
        return await self._engine.ack(messages)

    @_reports_unavailable
    async def dead_letter(self, message: Message, reason: str, error: BaseException | None = None) -> bool:
        """Move a delivered message to its topic's DLQ (append and ack in one script).

        Args:
            message: A message returned by `read`.
            reason: Why, kept in the dead letter's headers.
            error: The error that caused it, if any (its type and message are kept).

        Returns:
            True if it was moved; False if it was no longer pending (acked or moved before).
        """
        return await self._engine.dead_letter(message, reason, error)

    # -- history and dead letters -----------------------------------------------

    @_reports_unavailable
    async def history(self, topic: str, limit: int = 100) -> list[Message]:
        """The latest `limit` retained messages of a topic, every lane, oldest first.

        Ordered by entry time; within one millisecond by message id.

        Args:
            topic: Topic name.
            limit: Most messages returned.

        Returns:
            The messages, oldest first.
        """
        validate_topic(topic)
        arguments.count("limit", limit)
        return await self._engine.history(topic, limit)

    @_reports_unavailable
    async def dead_letters(self, topic: str, limit: int = 100) -> list[Message]:
        """Dead letters of a topic, oldest first; their `headers` say why each one died.

        Args:
            topic: Topic name.
            limit: Most dead letters returned.

        Returns:
            The dead-lettered messages.
        """
        validate_topic(topic)
        arguments.count("limit", limit)
        return await self._engine.dead_letters(topic, limit)

    @_reports_unavailable
    async def replay_dead_letters(self, topic: str, ids: Iterable[str] | None = None) -> int:
        """Put dead letters back for the group they died in, with a fresh attempt count.

        Args:
            topic: Topic name.
            ids: Message ids or DLQ entry ids to replay; None: all.

        Returns:
            How many were put back.
        """
        validate_topic(topic)
        return await self._engine.replay_dead_letters(topic, arguments.ids("ids", ids))

    @_reports_unavailable
    async def purge_dead_letters(self, topic: str) -> int:
        """Delete a topic's dead letters.

        Args:
            topic: Topic name.

        Returns:
            How many there were.
        """
        validate_topic(topic)
        return await self._engine.purge_dead_letters(topic)

    # -- resumable streams -----------------------------------------------------

    def follow(self, topic: str, after: str | None = None) -> AsyncGenerator[Message, None]:
        """Every message of a topic, in stored order, with no consumer group.

        What is retained after `after`, then each new one as it is stored - no gap and no
        duplicate between the two. Ends once the topic is closed and read to its end
        (docs/streams.md).

        Args:
            topic: Topic name.
            after: A `Message.entry_id` seen before, to resume after it; None: from the
                oldest retained.

        Returns:
            An async iterator of the messages.
        """
        validate_topic(topic)
        return self._engine.follow(topic, followers.check_position(after))

    @_reports_unavailable
    async def close_topic(self, topic: str, keep_s: float = 600) -> int:
        """Close a topic.

        Its followers end once they have read everything published before this, a later
        publish raises TopicClosedError, and its keys expire `keep_s` later
        (docs/streams.md).

        Args:
            topic: Topic name.
            keep_s: Seconds its keys are kept after closing.

        Returns:
            How many delayed messages not yet due it dropped.
        """
        validate_topic(topic)
        arguments.seconds("keep_s", keep_s, positive=True)
        return await self._engine.close_topic(topic, keep_s)

    # -- ephemeral broadcast ---------------------------------------------------

    async def broadcast(self, topic: str, payload: Any, **fields: Any) -> int:
        """Send over Redis Pub/Sub: lowest latency, nothing stored, lossy.

        A listener that is not connected at that moment never sees it.

        Args:
            topic: Topic name; listeners match it with glob patterns.
            payload: Any JSON value.
            **fields: Other `Message` fields (`headers`, `sender`, `priority`, ...).

        Returns:
            How many listeners Redis handed it to.
        """
        validate_topic(topic)
        return await self._engine.broadcast(Message(topic=topic, payload=payload, **fields))

    def listen(self, *patterns: str) -> AsyncGenerator[Message, None]:
        """Yield broadcasts on topics matching any of the patterns, until the caller stops.

        Args:
            *patterns: Topic names or glob patterns (`*`, `?`, `[...]`); at least one.

        Returns:
            An async iterator of the messages; leaving it unsubscribes.

        Raises:
            ValueError: No pattern given.
        """
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
        """Run every `on_cleanup` hook once.

        First it takes closed topics whose keys have expired out of `topics()`.
        An open bus also does every `cleanup_interval_s` unless `periodic_cleanup` is off.
        Each hook runs whatever the others do.

        Raises:
            Exception: The first failure of a hook, once all have run.
        """
        await self.connect()
        failures = await self._engine.cleanup()
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
        """Store on the topic what cleanup keeps of it, whatever process runs cleanup.

        It is pinned: buses' configurations no longer change it. Returns what is stored.

        Args:
            topic: Topic name.
            keep_s: Seconds of consumed history kept; None: no limit.
            keep_len: Entries of consumed history kept per stream; None: no limit.
            dlq_keep_s: Seconds dead letters are kept; None: no limit.
            dlq_keep_len: Dead letters kept; None: no limit.
            at_least: Raise each stored limit to at least these instead, never lowering one
                and leaving a pinned one alone - what a bus does with its retention settings on
                the topics it uses.

        Returns:
            The retention now stored on the topic.
        """
        validate_topic(topic)
        _check_keep(keep_s, keep_len)
        _check_keep(dlq_keep_s, dlq_keep_len, "dlq_")
        wanted = Retention(keep_s=keep_s, keep_len=keep_len, dlq_keep_s=dlq_keep_s, dlq_keep_len=dlq_keep_len)
        return await self._engine.set_retention(topic, wanted, at_least)

    @_reports_unavailable
    async def retention(self, topic: str) -> Retention | None:
        """The retention stored on the topic, which cleanup trims it by.

        Args:
            topic: Topic name.

        Returns:
            The stored retention; None: none stored (cleanup keeps all of its history).
        """
        validate_topic(topic)
        return await self._engine.retention(topic)

    @_reports_unavailable
    async def trim(self, topic: str, *, keep_s: float | None = None, keep_len: int | None = None) -> int:
        """Remove a topic's consumed history now.

        Only entries every consumer group has acknowledged are removed, from each of its
        streams (topic, lanes, retry streams): never anything unconsumed.

        Args:
            topic: Topic name.
            keep_s: Remove entries older than this many seconds; None: no age limit.
            keep_len: Keep at most this many newest entries per stream; None: no limit.

        Returns:
            How many entries were removed.
        """
        validate_topic(topic)
        _check_keep(keep_s, keep_len)
        return await self._engine.trim(topic, keep_s, keep_len)

    @_reports_unavailable
    async def trim_dead_letters(
        self, topic: str, *, keep_s: float | None = None, keep_len: int | None = None
    ) -> int:
        """Remove a topic's old dead letters now.

        Args:
            topic: Topic name.
            keep_s: Remove dead letters older than this many seconds; None: no age limit.
            keep_len: Keep at most this many newest; None: no limit.

        Returns:
            How many were removed.
        """
        validate_topic(topic)
        _check_keep(keep_s, keep_len)
        return await self._engine.trim_dead_letters(topic, keep_s, keep_len)

    @_reports_unavailable
    async def memory(self) -> MemoryStats:
        """Redis's memory use, limit and eviction policy (INFO memory)."""
        return memory_from_info(await server_info(self._engine.ctx.redis, "memory"))

    @_reports_unavailable
    async def stats(self, topics: Iterable[str] | None = None) -> BusStats:
        """Per topic and group: lengths, pending, lag, oldest pending age, delayed, DLQ, memory.

        Also the expired/filtered/dropped counts, the server's memory and clients, the
        connection's state and recommendations.

        Args:
            topics: Topic names to report; None: every topic under the prefix.

        Returns:
            A `BusStats` model.
        """
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

    # -- for callers outside the core (issue 25) -----------------------------------
    # What the CLI, the dashboard and the adapters needed and reached into the engine
    # for; each is public API now, with a SyncBus counterpart at the end of sync.py.

    @_reports_unavailable
    async def history_after(self, topic: str, after: str | None, limit: int = 100) -> list[Message]:
        """The first `limit` retained messages of a topic stored after a position, every
        lane, oldest first (by entry id): page on by passing the last one's `entry_id`.

        Args:
            topic: the topic to read.
            after: a `Message.entry_id` seen before (from `history`, `history_after`,
                `follow` or `read` of this topic); None for the oldest retained.
            limit: at most this many, plus any other lane's message with the same entry
                id as the last one (so passing the last one's entry id skips none).

        Undecodable entries are skipped (so a page may hold fewer). On a topic with
        priority lanes, entry ids are per lane: a message stored in another lane within
        the same millisecond as `after` may carry a smaller id and is then not returned;
        read that millisecond again to see it (docs/concepts.md, "History and dead letters").
        """
        validate_topic(topic)
        arguments.count("limit", limit)
        return await self._engine.history_after(topic, followers.check_position(after), limit)

    @_reports_unavailable
    async def dead_letter_count(self, topic: str) -> int:
        """How many dead letters a topic holds (one XLEN, cheaper than `stats`).

        Args:
            topic: the topic whose dead-letter queue to count.
        """
        validate_topic(topic)
        return await self._engine.dead_letter_count(topic)

    @_reports_unavailable
    async def consumer_groups(self, topic: str) -> list[str]:
        """The names of the consumer groups reading a topic, sorted; none for a topic
        that does not exist. Needs no INFO (which `stats` does), so it works for an ACL
        user that may only use the bus's keys.

        Args:
            topic: the topic whose groups to list.
        """
        validate_topic(topic)
        return await self._engine.consumer_groups(topic)

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Have `close()` await `callback()` once `run()` has stopped and before any
        connection closes - for a component that hands work to the bus in the background
        (the LangChain callback handler's queued events) and must finish it first.

        Args:
            callback: a coroutine function taking no arguments; awaited on the bus's
                loop at every `close()`, in the order registered. What it raises is
                logged and does not stop the close.
        """
        self._close_callbacks.append(callback)

    async def _run_close_callbacks(self) -> None:
        for callback in list(self._close_callbacks):
            try:
                await callback()
            except Exception:
                log.exception("relaybus: a close callback (%r) failed", callback)


# what subscribe() takes itself: a plugin's subscription_options cannot claim these
SUBSCRIBE_KEYWORDS = tuple(
    name
    for name, p in inspect.signature(Bus.subscribe).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
)

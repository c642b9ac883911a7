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
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .config import BusConfig
from .connection import UNAVAILABLE, Health, make_client
from .delivery import Handler, Subscription
from .errors import BusUnavailableError, DecodeError, FilterError, RelayBusError
from .keys import Keys, validate_group, validate_pattern, validate_topic
from .message import Message, decode, encode, new_id
from .periodic import every
from .plugins import PluginManager
from .publisher import Publisher, Write, unavailable
from .redact import redact_url
from .stats import (
    BusStats,
    ConnectionStats,
    MemoryStats,
    ServerStats,
    memory_from_info,
    recommendations,
    topic_stats,
)
from .streams import Entry, Streams, group_lost

log = logging.getLogger("relaybus")
P = ParamSpec("P")
T = TypeVar("T")
OUTBOX_FLUSH_INTERVAL_S = 0.5


def _reports_unavailable(
    method: Callable[Concatenate[Bus, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Bus, P], Coroutine[Any, Any, T]]:
    """Redis unreachable inside a public method: a BusUnavailableError naming the
    method (never redis-py's own exception), and the connection state updated."""

    @functools.wraps(method)
    async def guarded(bus: Bus, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(bus, *args, **kwargs)
        except UNAVAILABLE as exc:
            await bus.health.failed(exc)
            raise unavailable(f"{method.__name__}()", exc) from None

    return guarded


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"


class Bus:
    """A message bus over one Redis; use `async with bus:` or `connect()`/`close()`."""

    def __init__(self, config: BusConfig | None = None, **fields: Any) -> None:
        if config is not None and fields:
            raise TypeError("pass a BusConfig or keyword fields, not both")
        self.config = config or BusConfig.build(**fields)
        self.keys = Keys(self.config.prefix)
        self.plugins = PluginManager(self.config.disabled_plugins)
        self.consumer = self.config.consumer_name or default_consumer_name()
        self.counters: Counter[str] = Counter()
        self._subscriptions: list[Subscription] = []
        self._redis: aioredis.Redis | None = None
        self._streams: Streams | None = None
        self._plugins_loaded = False
        self._worker: Any = None
        self._background: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()
        self._publisher: Publisher | None = None
        self.health = Health(self._connection_changed, self.config.password)

    @classmethod
    def from_url(cls, url: str, **fields: Any) -> Bus:
        return cls(BusConfig.build(url=url, **fields))

    def __repr__(self) -> str:
        return f"<Bus {redact_url(self.config.url)} prefix={self.config.prefix!r}>"

    # -- lifecycle -------------------------------------------------------------

    async def connect(self) -> Bus:
        """Load plugins, open the pool and check Redis answers; idempotent."""
        if self._redis is not None:
            return self
        self._load_plugins()
        options = self.plugins.call_sync("redis_connection_options", config=self.config)
        client = make_client(self.config, options)
        try:
            await asyncio.wait_for(client.ping(), self.config.connect_timeout)
            self._redis = client
            self._streams = Streams(client, self.keys)
            self._publisher = Publisher(self)
            await self._publisher.start()
            if self._publisher.outbox is not None:
                await self._flush_outbox()  # what an earlier process left, before anything new
        except BaseException as exc:  # a half-connected bus would look connected: undo it all
            if self._publisher is not None:
                self._publisher.close()
            self._redis = self._streams = self._publisher = None
            await client.aclose()
            if isinstance(exc, (TimeoutError, *UNAVAILABLE)):
                raise BusUnavailableError(
                    f"cannot reach Redis at {redact_url(self.config.url)}: {type(exc).__name__}: {exc}"
                ) from None
            raise
        await self.health.succeeded()
        self._closing = asyncio.Event()
        jobs = [(self.config.cleanup_interval_s, self.cleanup),
                (self.config.health_check_interval_s, self._check_health)]
        if self._publisher.outbox is not None:
            jobs.append((OUTBOX_FLUSH_INTERVAL_S, self._flush_outbox))
        self._background = [asyncio.create_task(every(s, job, self._closing)) for s, job in jobs]
        return self

    async def _check_health(self) -> None:
        try:
            await self.redis.ping()
        except UNAVAILABLE as exc:
            await self.health.failed(exc, "disconnected")
            return
        await self.health.succeeded()

    async def _flush_outbox(self) -> None:
        """Never raises for Redis being away or refusing an entry: the flush is retried
        every OUTBOX_FLUSH_INTERVAL_S, and the entry stays first in the outbox."""
        try:
            await self.publisher.flush()
        except BusUnavailableError as exc:
            await self.health.failed(exc)
        except (RelayBusError, ResponseError) as exc:
            log.warning("relaybus: outbox flush refused (%s: %s); retrying", type(exc).__name__, exc)

    async def _connection_changed(self, old: str, new: str, error: str | None) -> None:
        level = logging.INFO if new == "connected" else logging.WARNING
        log.log(level, "relaybus connection to %s: %s -> %s%s", redact_url(self.config.url), old, new,
                f" ({error})" if error else "")
        await self.observe("on_connection_state", old=old, new=new, error=error)

    def _load_plugins(self) -> None:
        """Once per Bus, on first need (connect, or a subscribe that a plugin validates)."""
        if not self._plugins_loaded:
            self.plugins.load_entry_points()
            self._plugins_loaded = True

    async def close(self) -> None:
        if self._worker is not None:
            await self.stop()
        self._closing.set()
        for task in self._background:  # a job under way finishes (each command within socket_timeout)
            await task
        self._background = []
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        if self._redis is not None:
            await self._redis.aclose()
        self._redis = self._streams = None

    async def __aenter__(self) -> Bus:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RelayBusError("the bus is not connected: use 'async with bus:' or 'await bus.connect()'")
        return self._redis

    @property
    def publisher(self) -> Publisher:
        self.redis  # noqa: B018 - raises the clear error when not connected
        assert self._publisher is not None
        return self._publisher

    @property
    def streams(self) -> Streams:
        self.redis  # noqa: B018 - raises the clear error when not connected
        assert self._streams is not None
        return self._streams

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
        ids = await self._publish(topic, [payload], priority=priority, ttl=ttl, delay=delay,
                                  dedup_key=dedup_key, headers=headers, sender=sender,
                                  correlation_id=correlation_id, reply_to=reply_to,
                                  dedup_window=dedup_window)
        return ids[0]

    async def publish_many(
        self, topic: str, payloads: Iterable[Any], **options: Any
    ) -> list[str]:
        """Append several messages in one round trip; ids in the order given (for a
        duplicate, the original's id). Takes the keywords of `publish`."""
        return await self._publish(topic, list(payloads), **options)

    async def _publish(
        self,
        topic: str,
        payloads: Sequence[Any],
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
    ) -> list[str]:
        validate_topic(topic)
        if dedup_window is not None and dedup_window <= 0:
            raise ValueError(f"dedup_window must be > 0 seconds, got {dedup_window}")
        if delay is not None and delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        ttl = ttl if ttl is not None else self.config.default_ttl
        now = time.time()
        messages = [
            Message(
                topic=topic, payload=payload, priority=priority, created_at=now,
                expires_at=now + ttl if ttl is not None else None, dedup_key=dedup_key,
                headers=headers or {}, sender=sender, correlation_id=correlation_id,
                reply_to=reply_to,
            )
            for payload in payloads
        ]
        if self.plugins.impls("on_publish"):
            messages = [await self._on_publish(m) for m in messages]
        due_ms = int((time.time() + delay) * 1000) if delay is not None else 0
        window_ms = max(1, int((dedup_window or self.config.dedup_window_s) * 1000))
        writes = [
            Write(encode(m, self.config.max_message_bytes), m.id, m.lane, due_ms, m.dedup_key,
                  window_ms if m.dedup_key else 0)
            for m in messages
        ]
        ids = await self.publisher.write(topic, writes)
        if self.plugins.impls("on_published"):
            await self.observe("on_published", topic=topic, messages=messages, ids=ids)
        return ids

    async def _on_publish(self, message: Message) -> Message:
        for name, function, argnames in self.plugins.impls("on_publish"):
            args = {"bus": self, "message": message}
            try:
                changed = function(*[args[a] for a in argnames])
                if inspect.isawaitable(changed):  # awaited only when a plugin is async
                    changed = await changed
            except Exception as exc:
                self.plugins.raise_for("on_publish", name, exc)
            if changed is not None:
                message = changed
        return message

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

        def register(handler: Handler) -> Handler:
            subscription = Subscription(
                topics=names, group=group, handler=handler, concurrency=concurrency,
                prefetch=prefetch, filter=filter, model=model, start=start, options=options,
            )
            self._load_plugins()
            if filter is not None and not self.plugins.impls("filter"):
                raise FilterError("filter= was given but no plugin implements the filter hook "
                                  "(is the 'filters' plugin disabled?)")
            self.plugins.call_sync("on_subscribe", bus=self, subscription=subscription)
            self._subscriptions.append(subscription)
            return handler

        return register

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    async def run(self) -> None:
        """Deliver to every subscription until `stop()` or cancellation."""
        from .worker import Worker

        if self._worker is not None:
            raise RelayBusError("run() is already going on this bus")
        await self.connect()
        self._worker = Worker(self)
        try:
            await self._worker.run()
        finally:
            self._worker = None

    async def stop(self) -> None:
        """Stop reading; returns when in-flight handlers have finished and acks are sent."""
        worker = self._worker
        if worker is not None:
            await worker.stop()

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
        """Up to `count` messages: ones other consumers left idle past `claim_idle_ms`,
        then new ones. Never this consumer's own still-pending messages. Ack each."""
        validate_topic(topic)
        validate_group(group)
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        consumer = consumer or self.consumer
        try:
            return await self._read(topic, group, consumer, count, block_ms or 0, start)
        except ResponseError as exc:
            if not group_lost(exc):
                raise
            self.streams.forget_group(topic, group)  # deleted under us: recreate, once
            return await self._read(topic, group, consumer, count, block_ms or 0, start)

    async def _read(
        self, topic: str, group: str, consumer: str, count: int, block_ms: int, start: str
    ) -> list[Message]:
        streams = self.streams
        await streams.ensure_group(topic, group, start)
        claimed, counts = await streams.claim_from_others(
            topic, group, consumer, self.config.claim_idle_ms, count
        )
        fresh: list[tuple[str, Entry]] = []
        if len(claimed) < count:
            fresh = await streams.read_new(
                topic, group, consumer, count - len(claimed), 0 if claimed else block_ms
            )
        out = []
        for source, entry in [*claimed, *fresh]:
            message = await self.admit(source, entry, group, counts.get(entry[0]))
            if message is not None:
                out.append(message)
        return out

    async def admit(
        self, source: str, entry: Entry, group: str, delivered: int | None
    ) -> Message | None:
        """Decode an entry handed to this consumer. Entries that cannot be delivered are
        settled here: undecodable ones go to the DLQ, expired ones are acked and counted.
        `delivered` is the XPENDING delivery count of a reclaimed entry."""
        entry_id, fields = entry
        if fields is None:  # deleted or trimmed while pending: nothing left to deliver
            await self.redis.xack(source, group, entry_id)
            return None
        try:
            message = self.streams.to_message(entry, group, source)
        except DecodeError as exc:
            raw = orjson.dumps({k.decode(errors="replace"): v.decode(errors="replace")
                                for k, v in fields.items()})
            await self.streams.dead_letter(source, entry_id, group, _topic_of(source),
                                           ["raw", raw], "undecodable", exc, 1)
            self.counters["undecodable"] += 1
            return None
        if delivered is not None:
            message.attempt += max(delivered - 1, 0)
        if message.expired():
            if self.config.dead_letter_expired:
                await self.dead_letter(message, "expired")
                await self.redis.hincrby(self.keys.counters(message.topic), "expired", 1)
                self.counters["expired"] += 1
            else:
                await self.settle(message, "expired")
            await self.observe("on_settled", message=message, subscription=None, outcome="expired",
                               duration_s=None)
            return None
        return message

    @_reports_unavailable
    async def ack(self, *messages: Message) -> int:
        """Acknowledge messages handed out by `read`; returns how many were still pending."""
        by_source: dict[tuple[str, str], list[str]] = {}
        for m in messages:
            source, group, entry_id = _delivery(m)
            by_source.setdefault((source, group), []).append(entry_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for (source, group), ids in by_source.items():
                pipe.xack(source, group, *ids)
            replies = await pipe.execute()
        if self.plugins.impls("on_settled"):
            for m in messages:
                await self.observe("on_settled", message=m, subscription=None, outcome="handled",
                                   duration_s=None)
        return sum(int(r) for r in replies)

    @_reports_unavailable
    async def dead_letter(
        self, message: Message, reason: str, error: BaseException | None = None
    ) -> bool:
        """Move a delivered message to its topic's DLQ (append + ack in one script)."""
        source, group, entry_id = _delivery(message)
        moved = await self.streams.dead_letter(
            source, entry_id, group, message.topic, ["m", encode(message)], reason, error,
            message.attempt,
        )
        if moved:
            self.counters["dead_lettered"] += 1
            await self.plugins.call_each("on_dead_letter", message=message, reason=reason,
                                         error=error)
        return moved

    async def observe(self, hook: str, **kwargs: Any) -> None:
        """Call an observer hook (on_published, on_settled) if any plugin has it; a
        failing observer is logged and never affects publishing or delivery."""
        kwargs["bus"] = self
        for name, function, argnames in self.plugins.impls(hook):
            try:
                result = function(*[kwargs[a] for a in argnames])
                if inspect.isawaitable(result):  # awaited only when the observer is async
                    await result
            except Exception:
                log.exception("relaybus observer hook %s of plugin %r failed", hook, name)

    @_reports_unavailable
    async def settle(self, message: Message, counter: str) -> None:
        """Ack a message that will not reach a handler, and count why (per topic)."""
        source, group, entry_id = _delivery(message)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(source, group, entry_id)
            pipe.hincrby(self.keys.counters(message.topic), counter, 1)
            await pipe.execute()
        self.counters[counter] += 1

    # -- history and dead letters -----------------------------------------------

    @_reports_unavailable
    async def history(self, topic: str, limit: int = 100) -> list[Message]:
        """The latest `limit` retained messages of a topic, every lane, oldest first
        (by entry time; within one millisecond by message id)."""
        validate_topic(topic)
        lanes = [int(n) for n in await self.redis.smembers(self.keys.lanes(topic))]
        found: list[tuple[int, str, Message]] = []
        for key in [self.keys.lane(topic, n) for n in [0, *lanes]]:
            for entry_id, fields in await self.redis.xrevrange(key, count=limit):
                try:
                    message = self.streams.to_message((entry_id, fields), None, key)
                except DecodeError:
                    continue
                found.append((int(entry_id.split(b"-")[0]), message.id, message))
        found.sort(key=lambda f: (f[0], f[1]))
        return [message for _, _, message in found[-limit:]]

    @_reports_unavailable
    async def dead_letters(self, topic: str, limit: int = 100) -> list[Message]:
        """Dead letters of a topic, oldest first; `headers` carry why each one died."""
        validate_topic(topic)
        entries = await self.redis.xrange(self.keys.dlq(topic), count=limit)
        return [_dead_letter_message(topic, eid, fields) for eid, fields in entries]

    @_reports_unavailable
    async def replay_dead_letters(self, topic: str, ids: Iterable[str] | None = None) -> int:
        """Put dead letters back (all, or those whose message or DLQ entry id is given)
        for the group they died in, with a fresh attempt count; returns how many."""
        validate_topic(topic)
        wanted = set(ids) if ids is not None else None
        dlq = self.keys.dlq(topic)
        replayed, cursor = 0, "-"
        while True:
            entries = await self.redis.xrange(dlq, min=cursor, count=200)
            batch: list[Any] = []
            for eid, fields in entries:
                message = _dead_letter_message(topic, eid, fields)
                if b"m" not in fields or (
                    wanted is not None and not {message.id, message.entry_id} & wanted
                ):
                    continue
                message.attempt = 1
                group = fields.get(b"group", b"").decode()
                batch += [eid, group, encode(message)]
            if batch:
                replayed += await self.streams.replay_script(
                    keys=[dlq, self.keys.retry(topic)], args=batch
                )
            if len(entries) < 200:
                return replayed
            cursor = "(" + entries[-1][0].decode()

    @_reports_unavailable
    async def purge_dead_letters(self, topic: str) -> int:
        """Delete a topic's dead letters; returns how many there were."""
        validate_topic(topic)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xlen(self.keys.dlq(topic))
            pipe.delete(self.keys.dlq(topic))
            length, _ = await pipe.execute()
        return int(length)

    # -- ephemeral broadcast ---------------------------------------------------

    async def broadcast(self, topic: str, payload: Any, **fields: Any) -> int:
        """Send over Redis Pub/Sub: lowest latency, nothing stored, lossy (a listener
        that is not connected at that moment never sees it). Returns how many
        listeners Redis handed it to."""
        validate_topic(topic)
        message = Message(topic=topic, payload=payload, **fields)
        data = encode(message, self.config.max_message_bytes)
        try:
            return int(await self.redis.publish(self.keys.channel(topic), data))
        except UNAVAILABLE as exc:
            raise unavailable(f"broadcast to {topic!r}", exc) from None

    async def listen(self, *patterns: str) -> AsyncIterator[Message]:
        """Yield broadcasts on topics matching any glob pattern (`*`, `?`, `[...]`)
        until the caller stops iterating."""
        if not patterns:
            raise ValueError("listen needs at least one topic or pattern")
        channels = [self.keys.channel(validate_pattern(p)) for p in patterns]
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            while True:
                try:
                    if not pubsub.subscribed:
                        await pubsub.psubscribe(*channels)
                    item = await pubsub.get_message(timeout=1.0)
                except UNAVAILABLE as exc:  # a broadcast sent meanwhile is lost: say so
                    await self.health.failed(exc)
                    raise unavailable("listen()", exc) from None
                if item is None or item["type"] != "pmessage":
                    continue
                try:
                    yield decode({b"v": b"1", b"m": item["data"]}, None)
                except DecodeError:
                    self.counters["undecodable"] += 1
        finally:
            await pubsub.aclose()

    @_reports_unavailable
    async def topics(self) -> list[str]:
        """Every topic published to under this prefix."""
        return await self._topics()

    async def _topics(self) -> list[str]:
        return sorted(t.decode() for t in await self.redis.smembers(self.keys.registry))

    # -- stream management -----------------------------------------------------

    async def cleanup(self) -> None:
        """Run every `on_cleanup` hook once (an open bus also does every `cleanup_interval_s`)."""
        await self.connect()
        await self.plugins.call_each("on_cleanup", bus=self)

    @_reports_unavailable
    async def trim(self, topic: str, *, keep_s: float | None = None, keep_len: int | None = None) -> int:
        """Remove a topic's consumed history: entries older than `keep_s` or beyond the newest
        `keep_len` of each of its streams (topic, lanes, retry streams) - but only entries every
        consumer group has acknowledged. Never removes anything unconsumed; None keeps all."""
        validate_topic(topic)
        main = self.keys.stream(topic)
        groups = [g["name"].decode() for g in await self._groups_of(main)]
        lanes = [int(n) for n in await self.redis.smembers(self.keys.lanes(topic))]
        # a lane's entries also wait for topic-stream groups that have not read the lane yet
        streams = [(self.keys.lane(topic, n), main) for n in [0, *lanes]]
        streams += [(self.keys.retry(topic, g), self.keys.retry(topic, g)) for g in groups]
        return await self._trim(streams, keep_s, keep_len, consumed_only=True)

    @_reports_unavailable
    async def trim_dead_letters(
        self, topic: str, *, keep_s: float | None = None, keep_len: int | None = None
    ) -> int:
        """Remove dead letters older than `keep_s` or beyond the newest `keep_len`."""
        validate_topic(topic)
        dlq = self.keys.dlq(topic)
        return await self._trim([(dlq, dlq)], keep_s, keep_len, consumed_only=False)

    async def _trim(
        self, streams: list[tuple[str, str]], keep_s: float | None, keep_len: int | None,
        consumed_only: bool,
    ) -> int:
        """Trim each (stream, stream whose groups must also have consumed it)."""
        args = [-1 if keep_s is None else int(keep_s * 1000), -1 if keep_len is None else keep_len,
                "1" if consumed_only else "0"]
        removed = 0
        for key, required in streams:
            removed += int(await self.streams.trim_script(keys=[key, required], args=args))
        return removed

    async def _groups_of(self, stream: str) -> list[dict[str, Any]]:
        try:
            return list(await self.redis.xinfo_groups(stream))
        except ResponseError as exc:
            if "no such key" in str(exc):
                return []
            raise

    @_reports_unavailable
    async def memory(self) -> MemoryStats:
        """Redis's memory use, limit and eviction policy (INFO memory)."""
        return memory_from_info(await self.redis.info("memory"))

    @_reports_unavailable
    async def stats(self, topics: Iterable[str] | None = None) -> BusStats:
        """Per topic and group: lengths, pending, lag, oldest pending age, delayed, DLQ, memory,
        expired/filtered/dropped counts; the server's memory and clients; recommendations."""
        names = sorted(topics) if topics is not None else await self._topics()
        for name in names:
            validate_topic(name)
        per_topic = [await topic_stats(self.redis, self.keys, name) for name in names]
        info = await self.redis.info()
        server = ServerStats(
            redis_version=str(info.get("redis_version", "")),
            connected_clients=int(info.get("connected_clients", 0)),
            memory=memory_from_info(info),
        )
        health, outbox = self.health, self.publisher.outbox
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


def _dead_letter_message(topic: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Message:
    info = {k.decode(): v.decode(errors="replace") for k, v in fields.items() if k not in (b"m", b"raw")}
    headers = {f"x-dead-{k.replace('_', '-')}": v for k, v in info.items() if k != "v"}
    if b"m" in fields:
        message = Message.model_validate(orjson.loads(fields[b"m"]))
        message.headers = {**message.headers, **headers}
    else:
        message = Message(topic=topic, payload={"raw": orjson.loads(fields.get(b"raw", b"{}"))},
                          headers=headers)
    message.entry_id = entry_id.decode()
    return message


def _delivery(message: Message) -> tuple[str, str, str]:
    """Stream, group and entry id of a delivered message: what ack and settle need."""
    if message.stream_key is None or message.group is None or message.entry_id is None:
        raise RelayBusError(f"message {message.id} was not delivered by read() or a handler")
    return message.stream_key, message.group, message.entry_id


def _topic_of(key: str) -> str:
    return key[key.index("{") + 1 : key.index("}")]

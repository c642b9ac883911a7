"""SyncBus: the one Bus, driven on a private event-loop thread, for code without asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, Unpack

from .bus import Bus
from .config import BusConfig
from .delivery import Handler, Subscription
from .engine.retained import Retention
from .message import Message
from .options import PublishOptions
from .stats import BusStats, MemoryStats

T = TypeVar("T")


class SyncBus:
    """The same methods as Bus, without `await`, on a private event-loop thread.

    Handlers may be plain functions (they run in a worker thread) or coroutines (they
    run on the bus loop). A SyncBus method called from that loop (e.g. in a coroutine
    handler) raises RuntimeError: it would wait for itself.

    Args:
        config: The whole configuration, built already; None: built from `fields`.
        **fields: `BusConfig` fields (and plugin settings) by name, over the `RELAYBUS_*`
            variables; not together with `config`.

    Raises:
        ConfigError: A field is unknown or invalid (one error naming each).
    """

    def __init__(self, config: BusConfig | None = None, **fields: Any) -> None:
        self.bus = Bus(config, **fields)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relaybus-sync", daemon=True)
        self._thread.start()

    @classmethod
    def from_url(cls, url: str, **fields: Any) -> SyncBus:
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
        return f"<SyncBus wrapping {self.bus!r}>"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncBus methods cannot be called from its own loop (e.g. a handler)")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def config(self) -> BusConfig:
        return self.bus.config

    @property
    def plugins(self) -> Any:
        return self.bus.plugins

    def connect(self) -> SyncBus:
        """`Bus.connect` without `await`: load plugins, open the pool, check Redis answers.

        Returns:
            This SyncBus, connected.

        Raises:
            BusUnavailableError: Redis did not answer within `connect_timeout`.
            ConfigError: The outbox at `outbox_path` cannot be opened.
        """
        self._call(self.bus.connect())
        return self

    def close(self) -> None:
        """Close the bus and end the loop thread; the SyncBus cannot be used after."""
        if self._loop.is_closed():
            return
        try:
            self._call(self.bus.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> SyncBus:
        return self.connect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def publish(
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

        `Bus.publish` without `await`.

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
        return self._call(
            self.bus.publish(
                topic,
                payload,
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
        )

    def publish_many(
        self, topic: str, payloads: Iterable[Any], **options: Unpack[PublishOptions]
    ) -> list[str]:
        """Append several messages in one round trip (per batch).

        `Bus.publish_many` without `await`.

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
        return self._call(self.bus.publish_many(topic, payloads, **options))

    def request(
        self,
        topic: str,
        payload: Any,
        *,
        timeout: float = 30.0,
        priority: int = 0,
        headers: dict[str, str] | None = None,
    ) -> Message:
        """Publish a request and wait for its reply (`reply` in the responder's handler).

        `Bus.request` without `await`.

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
        return self._call(
            self.bus.request(topic, payload, timeout=timeout, priority=priority, headers=headers)
        )

    def reply(self, message: Message, payload: Any, *, headers: dict[str, str] | None = None) -> str:
        """Answer a request (a message with `reply_to`).

        `Bus.reply` without `await`.

        Args:
            message: The request, as delivered to the handler or by `read`.
            payload: Any JSON value.
            headers: String metadata carried with the reply.

        Returns:
            The reply's id.

        Raises:
            ValueError: `message` is not a delivered request (no `reply_to`).
        """
        return self._call(self.bus.reply(message, payload, headers=headers))

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

        `Bus.subscribe` on this bus.

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
        return self.bus.subscribe(
            topics,
            group=group,
            filter=filter,
            concurrency=concurrency,
            prefetch=prefetch,
            model=model,
            start=start,
            **options,
        )

    @property
    def subscriptions(self) -> list[Subscription]:
        """The handlers registered by `subscribe`, in order.

        `Bus.subscriptions` on this bus.
        """
        return self.bus.subscriptions

    def run(self) -> None:
        """Block the calling thread, delivering, until `stop()` is called from another thread.

        Raises:
            RelayBusError: `run()` is already going on this bus.
        """
        self._call(self.bus.run())

    def stop(self) -> None:
        """End `run()`; returns when in-flight handlers have finished and acks are sent."""
        self._call(self.bus.stop())

    def read(
        self,
        topic: str,
        group: str,
        consumer: str | None = None,
        count: int = 10,
        block_ms: int | None = None,
        start: Literal["earliest", "latest"] = "earliest",
    ) -> list[Message]:
        """Pull up to `count` messages for a consumer of `group`.

        `Bus.read` without `await`.

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
        return self._call(
            self.bus.read(topic, group, consumer=consumer, count=count, block_ms=block_ms, start=start)
        )

    def ack(self, *messages: Message) -> int:
        """Acknowledge messages handed out by `read`, in one round trip.

        `Bus.ack` without `await`.

        Args:
            *messages: Messages returned by `read`.

        Returns:
            How many were still pending (an ack of an already-acked message counts 0).
        """
        return self._call(self.bus.ack(*messages))

    def history(self, topic: str, limit: int = 100) -> list[Message]:
        """The latest `limit` retained messages of a topic, every lane, oldest first.

        `Bus.history` without `await`.

        Args:
            topic: Topic name.
            limit: Most messages returned.

        Returns:
            The messages, oldest first.
        """
        return self._call(self.bus.history(topic, limit))

    def dead_letters(self, topic: str, limit: int = 100) -> list[Message]:
        """Dead letters of a topic, oldest first; their `headers` say why each one died.

        `Bus.dead_letters` without `await`.

        Args:
            topic: Topic name.
            limit: Most dead letters returned.

        Returns:
            The dead-lettered messages.
        """
        return self._call(self.bus.dead_letters(topic, limit))

    def replay_dead_letters(self, topic: str, ids: Iterable[str] | None = None) -> int:
        """Put dead letters back for the group they died in, with a fresh attempt count.

        `Bus.replay_dead_letters` without `await`.

        Args:
            topic: Topic name.
            ids: Message ids or DLQ entry ids to replay; None: all.

        Returns:
            How many were put back.
        """
        return self._call(self.bus.replay_dead_letters(topic, ids))

    def purge_dead_letters(self, topic: str) -> int:
        """Delete a topic's dead letters.

        `Bus.purge_dead_letters` without `await`.

        Args:
            topic: Topic name.

        Returns:
            How many there were.
        """
        return self._call(self.bus.purge_dead_letters(topic))

    def topics(self) -> list[str]:
        """Every topic published to under this prefix.

        `Bus.topics` without `await`.
        """
        return self._call(self.bus.topics())

    def cleanup(self) -> None:
        """Run every `on_cleanup` hook once.

        `Bus.cleanup` without `await`.

        Raises:
            Exception: The first failure of a hook, once all have run.
        """
        self._call(self.bus.cleanup())

    def dead_letter(self, message: Message, reason: str, error: BaseException | None = None) -> bool:
        """Move a delivered message to its topic's DLQ (append and ack in one script).

        `Bus.dead_letter` without `await`.

        Args:
            message: A message returned by `read`.
            reason: Why, kept in the dead letter's headers.
            error: The error that caused it, if any (its type and message are kept).

        Returns:
            True if it was moved; False if it was no longer pending (acked or moved before).
        """
        return self._call(self.bus.dead_letter(message, reason, error))

    def follow(self, topic: str, after: str | None = None) -> Iterator[Message]:
        """`Bus.follow` as a plain iterator: every message of a topic, in stored order.

        Each step runs on the bus loop; closing the iterator (or leaving a for loop) ends
        the follower there.

        Args:
            topic: Topic name.
            after: A `Message.entry_id` seen before, to resume after it; None: from the
                oldest retained.

        Returns:
            An iterator of the messages.
        """
        return self._iterate(self.bus.follow(topic, after))

    def _iterate(self, stream: AsyncGenerator[Message, None]) -> Iterator[Message]:
        try:
            while (message := self._call(_next(stream))) is not None:
                yield message
        finally:
            if not self._loop.is_closed():
                self._call(stream.aclose())

    def close_topic(self, topic: str, keep_s: float = 600) -> int:
        """Close a topic.

        `Bus.close_topic` without `await`.

        Args:
            topic: Topic name.
            keep_s: Seconds its keys are kept after closing.

        Returns:
            How many delayed messages not yet due it dropped.
        """
        return self._call(self.bus.close_topic(topic, keep_s))

    def broadcast(self, topic: str, payload: Any, **fields: Any) -> int:
        """Send over Redis Pub/Sub: lowest latency, nothing stored, lossy.

        `Bus.broadcast` without `await`.

        Args:
            topic: Topic name; listeners match it with glob patterns.
            payload: Any JSON value.
            **fields: Other `Message` fields (`headers`, `sender`, `priority`, ...).

        Returns:
            How many listeners Redis handed it to.
        """
        return self._call(self.bus.broadcast(topic, payload, **fields))

    def listen(self, *patterns: str) -> Iterator[Message]:
        """`Bus.listen` as a plain iterator: broadcasts on topics matching any pattern.

        Until the caller stops iterating (leaving the loop, or `close()` on the iterator,
        unsubscribes). Each message is awaited on the bus loop, as every other call is.

        Args:
            *patterns: Topic names or glob patterns (`*`, `?`, `[...]`); at least one.

        Returns:
            An iterator of the messages.

        Raises:
            ValueError: No pattern given.
        """
        return self._iterate(self.bus.listen(*patterns))  # no pattern: ValueError here

    def trim(self, topic: str, *, keep_s: float | None = None, keep_len: int | None = None) -> int:
        """Remove a topic's consumed history now.

        `Bus.trim` without `await`.

        Args:
            topic: Topic name.
            keep_s: Remove entries older than this many seconds; None: no age limit.
            keep_len: Keep at most this many newest entries per stream; None: no limit.

        Returns:
            How many entries were removed.
        """
        return self._call(self.bus.trim(topic, keep_s=keep_s, keep_len=keep_len))

    def trim_dead_letters(
        self, topic: str, *, keep_s: float | None = None, keep_len: int | None = None
    ) -> int:
        """Remove a topic's old dead letters now.

        `Bus.trim_dead_letters` without `await`.

        Args:
            topic: Topic name.
            keep_s: Remove dead letters older than this many seconds; None: no age limit.
            keep_len: Keep at most this many newest; None: no limit.

        Returns:
            How many were removed.
        """
        return self._call(self.bus.trim_dead_letters(topic, keep_s=keep_s, keep_len=keep_len))

    def set_retention(
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

        `Bus.set_retention` without `await`.

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
        return self._call(
            self.bus.set_retention(
                topic,
                keep_s=keep_s,
                keep_len=keep_len,
                dlq_keep_s=dlq_keep_s,
                dlq_keep_len=dlq_keep_len,
                at_least=at_least,
            )
        )

    def retention(self, topic: str) -> Retention | None:
        """The retention stored on the topic, which cleanup trims it by.

        `Bus.retention` without `await`.

        Args:
            topic: Topic name.

        Returns:
            The stored retention; None: none stored (cleanup keeps all of its history).
        """
        return self._call(self.bus.retention(topic))

    def memory(self) -> MemoryStats:
        """Redis's memory use, limit and eviction policy (INFO memory).

        `Bus.memory` without `await`.
        """
        return self._call(self.bus.memory())

    def stats(self, topics: Iterable[str] | None = None) -> BusStats:
        """Per topic and group: lengths, pending, lag, oldest pending age, delayed, DLQ, memory.

        `Bus.stats` without `await`.

        Args:
            topics: Topic names to report; None: every topic under the prefix.

        Returns:
            A `BusStats` model.
        """
        return self._call(self.bus.stats(topics))

    # -- for callers outside the core (issue 25): Bus's section of the same name --------

    def history_after(self, topic: str, after: str | None, limit: int = 100) -> list[Message]:
        """The first `limit` retained messages stored after a position, oldest first.

        `Bus.history_after` without `await`.

        Args:
            topic: Topic name.
            after: A `Message.entry_id` seen before; None for the oldest retained.
            limit: At most this many (plus other lanes' messages sharing the last entry id).

        Returns:
            The messages, by entry id.
        """
        return self._call(self.bus.history_after(topic, after, limit))

    def dead_letter_count(self, topic: str) -> int:
        """How many dead letters a topic holds.

        `Bus.dead_letter_count` without `await`.

        Args:
            topic: Topic name.

        Returns:
            The length of the topic's dead-letter queue.
        """
        return self._call(self.bus.dead_letter_count(topic))

    def consumer_groups(self, topic: str) -> list[str]:
        """The names of the consumer groups reading a topic, sorted.

        `Bus.consumer_groups` without `await`.

        Args:
            topic: Topic name.

        Returns:
            Group names; empty for a topic that does not exist.
        """
        return self._call(self.bus.consumer_groups(topic))

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Have `close()` await `callback()` on the bus's loop before connections close.

        `Bus.on_close`, the same call.

        Args:
            callback: A coroutine function taking no arguments.
        """
        self.bus.on_close(callback)


async def _next(stream: AsyncGenerator[Message, None]) -> Message | None:
    """The next message, or None at the end (StopAsyncIteration cannot cross threads)."""
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None

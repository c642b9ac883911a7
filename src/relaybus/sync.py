"""SyncBus: the one Bus, driven on a private event-loop thread, for code without asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator, Sequence
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
    """The same methods as Bus, without `await`. Handlers may be plain functions
    (they run in a worker thread) or coroutines (they run on the bus loop)."""

    def __init__(self, config: BusConfig | None = None, **fields: Any) -> None:
        self.bus = Bus(config, **fields)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relaybus-sync", daemon=True)
        self._thread.start()

    @classmethod
    def from_url(cls, url: str, **fields: Any) -> SyncBus:
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
        return self._call(
            self.bus.request(topic, payload, timeout=timeout, priority=priority, headers=headers)
        )

    def reply(self, message: Message, payload: Any, *, headers: dict[str, str] | None = None) -> str:
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
        return self.bus.subscriptions

    def run(self) -> None:
        """Block the calling thread until `stop()` is called from another thread."""
        self._call(self.bus.run())

    def stop(self) -> None:
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
        return self._call(self.bus.read(topic, group, consumer, count, block_ms, start))

    def ack(self, *messages: Message) -> int:
        return self._call(self.bus.ack(*messages))

    def history(self, topic: str, limit: int = 100) -> list[Message]:
        return self._call(self.bus.history(topic, limit))

    def dead_letters(self, topic: str, limit: int = 100) -> list[Message]:
        return self._call(self.bus.dead_letters(topic, limit))

    def replay_dead_letters(self, topic: str, ids: Iterable[str] | None = None) -> int:
        return self._call(self.bus.replay_dead_letters(topic, ids))

    def purge_dead_letters(self, topic: str) -> int:
        return self._call(self.bus.purge_dead_letters(topic))

    def topics(self) -> list[str]:
        return self._call(self.bus.topics())

    def cleanup(self) -> None:
        self._call(self.bus.cleanup())

    def dead_letter(self, message: Message, reason: str, error: BaseException | None = None) -> bool:
        return self._call(self.bus.dead_letter(message, reason, error))

    def follow(self, topic: str, after: str | None = None) -> Iterator[Message]:
        """Bus.follow as a plain iterator: each step runs on the bus loop; closing the
        iterator (or leaving a for loop) ends the follower there."""
        return self._iterate(self.bus.follow(topic, after))

    def _iterate(self, stream: AsyncGenerator[Message, None]) -> Iterator[Message]:
        try:
            while (message := self._call(_next(stream))) is not None:
                yield message
        finally:
            if not self._loop.is_closed():
                self._call(stream.aclose())

    def close_topic(self, topic: str, keep_s: float = 600) -> int:
        return self._call(self.bus.close_topic(topic, keep_s))

    def broadcast(self, topic: str, payload: Any, **fields: Any) -> int:
        return self._call(self.bus.broadcast(topic, payload, **fields))

    def listen(self, *patterns: str) -> Iterator[Message]:
        """Bus.listen without `async for`: broadcasts on topics matching any glob pattern,
        until the caller stops iterating (leaving the loop, or `close()` on the iterator,
        unsubscribes). Each message is awaited on the bus loop, as every other call is."""
        return self._iterate(self.bus.listen(*patterns))  # no pattern: ValueError here

    def trim(self, topic: str, *, keep_s: float | None = None, keep_len: int | None = None) -> int:
        return self._call(self.bus.trim(topic, keep_s=keep_s, keep_len=keep_len))

    def trim_dead_letters(
        self, topic: str, *, keep_s: float | None = None, keep_len: int | None = None
    ) -> int:
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
        return self._call(self.bus.retention(topic))

    def memory(self) -> MemoryStats:
        return self._call(self.bus.memory())

    def stats(self, topics: Iterable[str] | None = None) -> BusStats:
        return self._call(self.bus.stats(topics))


async def _next(stream: AsyncGenerator[Message, None]) -> Message | None:
    """The next message, or None at the end (StopAsyncIteration cannot cross threads)."""
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None

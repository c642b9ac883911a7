"""Wake-ups: which topics got something new, heard over one pub/sub connection of its
own, so a consumer waits on any number of topics without holding a pooled connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from ..connection import UNAVAILABLE, Health, open_pubsub
from ..errors import BusUnavailableError
from ..keys import Keys

log = logging.getLogger("relaybus")
Watcher = Callable[[str, bool], None]  # (topic, certain): certain is False after a lost connection
LINGER_S = 30.0  # a channel nobody watches any more is unsubscribed after this
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.1, 5.0


class Doorbell:
    """Subscribes to the wake channel of every watched topic (scripts/wake.lua) and calls
    its watchers when it rings. A watcher is called only once the subscription is
    confirmed, so whoever reads after `watch()` returns cannot miss a ring. After the
    connection was lost, every watcher is called with certain=False: rings may have
    gone unheard."""

    def __init__(self, client: aioredis.Redis, keys: Keys, health: Health) -> None:
        self.client = client
        self._keys = keys
        self._health = health
        self._watchers: dict[str, set[Watcher]] = {}
        self._idle_since: dict[str, float] = {}  # topic -> when its last watcher left
        self._confirmed: set[str] = set()  # topics whose subscription Redis confirmed
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._error: Exception | None = None  # what ended the listener other than an outage
        self._changed = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def closed(self) -> bool:
        return self._closed

    def _channel(self, topic: str) -> str:
        return self._keys.wake(topic)

    def _topic(self, channel: bytes) -> str:
        return self._keys.topic_of(channel.decode())

    async def watch(self, topics: list[str], watcher: Watcher) -> None:
        """Call `watcher` whenever one of `topics` rings; returns once Redis confirmed
        every subscription. It waits on futures only, so a timeout around it is safe.
        Raises what stopped wake-ups for good (say, an ACL refusing the channels)."""
        if self._error is not None:
            raise self._error
        new = []
        for topic in topics:
            watchers = self._watchers.setdefault(topic, set())
            watchers.add(watcher)
            self._idle_since.pop(topic, None)
            if topic not in self._confirmed and topic not in self._waiting:
                self._waiting[topic] = asyncio.get_running_loop().create_future()
                new.append(topic)
        self._start()
        if new and self._pubsub is not None and self._pubsub.connection is not None:
            task = asyncio.create_task(self._subscribe(self._pubsub, new))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        elif new:
            self._changed.set()
        pending = [self._waiting[t] for t in topics if t in self._waiting]
        if pending:
            await asyncio.gather(*[asyncio.shield(f) for f in pending])

    async def _subscribe(self, pubsub: PubSub, topics: list[str]) -> None:
        with contextlib.suppress(*UNAVAILABLE):  # the listener resubscribes after reconnecting
            await pubsub.subscribe(*[self._channel(t) for t in topics])

    def unwatch(self, topics: list[str], watcher: Watcher) -> None:
        now = time.monotonic()
        for topic in topics:
            watchers = self._watchers.get(topic)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    self._idle_since[topic] = now

    def _start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._listen(), name="relaybus-doorbell")

    async def close(self) -> None:
        self._closed = True
        self._changed.set()
        if self._task is not None:
            await self._task  # ends within one get_message timeout
            self._task = None
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        self._fail(BusUnavailableError("the bus was closed"))
        for topic, watchers in list(self._watchers.items()):  # waiting pull reads look once more
            for watcher in list(watchers):
                watcher(topic, False)

    def _fail(self, error: Exception) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a future nobody awaits any more is no error
        self._waiting.clear()

    async def _listen(self) -> None:
        pause = MIN_BACKOFF_S
        next_tidy = time.monotonic() + LINGER_S
        lost = False  # rings may have been missed: tell every watcher once resubscribed
        while not self._closed:
            try:
                if self._pubsub is None:
                    self._pubsub = await open_pubsub(self.client)
                    self._confirmed.clear()
                    for topic in self._watchers:
                        self._waiting.setdefault(topic, asyncio.get_running_loop().create_future())
                    if self._waiting:
                        await self._pubsub.subscribe(*[self._channel(t) for t in self._waiting])
                    else:
                        await self._pubsub.connect()
                elif self._changed.is_set():
                    self._changed.clear()
                    await self._subscribe_changes()
                message = await self._pubsub.get_message(timeout=0.25)
            except UNAVAILABLE as exc:
                await self._drop(exc, warn=not lost)  # once an outage: not per reconnect attempt
                lost = True
                await asyncio.sleep(random.uniform(pause / 2, pause))
                pause = min(pause * 2, MAX_BACKOFF_S)
                continue
            except Exception as exc:  # not an outage (NOPERM, ...): waiting would never end
                log.error("relaybus wake-ups stopped: %s: %s", type(exc).__name__, exc)
                self._error = exc
                self._fail(exc)
                break
            pause = MIN_BACKOFF_S
            if time.monotonic() >= next_tidy:
                next_tidy = time.monotonic() + LINGER_S
                self._changed.set()
            if message is not None:
                self._dispatch(message)
            if lost and not self._waiting:
                lost = False
                await self._health.succeeded()
                for topic, watchers in list(self._watchers.items()):
                    for watcher in list(watchers):
                        watcher(topic, False)
        await self._drop(None)

    async def _subscribe_changes(self) -> None:
        """Subscribe what watch() queued before the connection existed; unsubscribe
        topics no one has watched for LINGER_S."""
        assert self._pubsub is not None
        todo = [t for t in self._waiting if self._channel(t).encode() not in self._pubsub.channels]
        if todo:
            await self._pubsub.subscribe(*[self._channel(t) for t in todo])
        cutoff = time.monotonic() - LINGER_S
        stale = [t for t, since in self._idle_since.items() if since < cutoff]
        if stale:
            for topic in stale:
                del self._idle_since[topic]
                del self._watchers[topic]
                self._confirmed.discard(topic)
            await self._pubsub.unsubscribe(*[self._channel(t) for t in stale])

    def _dispatch(self, message: dict[str, object]) -> None:
        kind, channel = message["type"], message["channel"]
        assert isinstance(channel, bytes)
        topic = self._topic(channel)
        if kind == "message":
            for watcher in list(self._watchers.get(topic, ())):
                watcher(topic, True)
        elif kind == "subscribe":
            self._confirmed.add(topic)
            future = self._waiting.pop(topic, None)
            if future is not None and not future.done():
                future.set_result(None)

    async def _drop(self, error: BaseException | None, warn: bool = True) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if error is not None:
            await self._health.failed(error)
            log.log(
                logging.WARNING if warn else logging.DEBUG,
                "relaybus wake-up connection lost (%s); reconnecting",
                type(error).__name__,
            )
        if pubsub is not None:
            with contextlib.suppress(*UNAVAILABLE):
                await pubsub.aclose()

"""The run loop: one reader per (subscription, topic), handlers, batched acks."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError
from redis.exceptions import ResponseError

from .connection import UNAVAILABLE
from .delivery import FailureDecision, Subscription
from .errors import PluginError, Reject
from .message import Message
from .periodic import every
from .streams import Entry, group_lost

if TYPE_CHECKING:
    from .bus import Bus

log = logging.getLogger("relaybus.worker")
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.1, 5.0
DISCOVERY_INTERVAL_S = 0.5  # pattern subscriptions see a new topic within this (plus a read)


class Worker:
    """Runs every subscription of one Bus; `stop()` drains what was already delivered."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.streams = bus.streams
        self.consumer = bus.consumer
        self._stopping = asyncio.Event()
        self._acks: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
        self._done = asyncio.Event()
        self._held: dict[tuple[str, bytes], str] = {}  # (stream, entry id) -> group
        self._handlers: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        if not self.bus.subscriptions:
            raise ValueError("run() needs at least one bus.subscribe(...) handler")
        acker = asyncio.create_task(self._ack_loop(), name="relaybus-acks")
        heartbeat = asyncio.create_task(every(self.bus.config.claim_idle_ms / 3000, self._heartbeat,
                                              self._stopping))
        subs = [asyncio.create_task(self._subscription(s)) for s in self.bus.subscriptions]
        try:
            await asyncio.gather(*subs)
        finally:
            # stop by asking, not by cancelling: a cancelled redis-py command can hang
            self._stopping.set()
            await asyncio.gather(*subs, heartbeat, return_exceptions=True)
            await self._acks.join()
            acker.cancel()  # idle now, waiting on an empty queue
            await asyncio.gather(acker, return_exceptions=True)
            self._done.set()

    async def stop(self) -> None:
        self._stopping.set()
        if asyncio.current_task() in self._handlers:
            return  # called from a handler: waiting for ourselves would never end
        await self._done.wait()

    async def _heartbeat(self) -> None:
        by_group: dict[str, list[tuple[str, bytes]]] = {}
        for (source, entry_id), group in list(self._held.items()):
            by_group.setdefault(group, []).append((source, entry_id))
        for group, held in by_group.items():
            await self.streams.heartbeat(group, self.consumer, held)

    # -- topics ------------------------------------------------------------------

    async def _subscription(self, sub: Subscription) -> None:
        """Start a reader per matching topic; keep looking for new ones for patterns."""
        slots = asyncio.Semaphore(sub.concurrency)
        readers: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    topics = await self._topics_for(sub)
                except UNAVAILABLE as exc:  # the readers already running carry on
                    await self.bus.health.failed(exc)
                    topics = []
                for topic in topics:
                    if topic not in readers:
                        readers[topic] = asyncio.create_task(self._reader(sub, topic, slots))
                if not sub.patterns:
                    break
                try:
                    await asyncio.wait_for(self._stopping.wait(), DISCOVERY_INTERVAL_S)
                    break
                except TimeoutError:
                    continue
            await asyncio.gather(*readers.values())
        finally:
            # one reader failing stops its siblings; each drains what it holds
            self._stopping.set()
            await asyncio.gather(*readers.values(), return_exceptions=True)

    async def _topics_for(self, sub: Subscription) -> list[str]:
        topics = [t for t in sub.topics if t not in sub.patterns]
        if sub.patterns:
            topics += [t for t in await self.bus._topics() if t not in topics and sub.matches(t)]
        return topics

    async def _reader(self, sub: Subscription, topic: str, slots: asyncio.Semaphore) -> None:
        """Fetch for one topic and spawn handlers; first take back our own pending
        entries, then read new ones, reclaiming idle entries every claim interval."""
        streams, group, consumer = self.streams, sub.group, self.consumer
        claim_every = self.bus.config.claim_idle_ms / 2000
        tasks: set[asyncio.Task[None]] = set()
        cursors: dict[str, str] = {}
        own_after: dict[str, str] = {}
        own_left, next_claim = True, time.monotonic() + claim_every
        pause = MIN_BACKOFF_S  # after a failed read: doubles up to MAX_BACKOFF_S, with jitter
        while not self._stopping.is_set():
            want = sub.prefetch - len(tasks)
            if want <= 0:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            counts: dict[bytes, int] = {}
            try:
                await streams.ensure_group(topic, group, sub.start)
                if own_left or time.monotonic() >= next_claim:
                    if own_left:
                        got, counts = await streams.claim_own(topic, group, consumer, want, own_after)
                        own_left = bool(got)
                    else:
                        cursors, got = await streams.claim_idle(
                            topic, group, consumer, self.bus.config.claim_idle_ms, want, cursors
                        )
                        got = [g for g in got if (g[0], g[1][0]) not in self._held]
                        if not cursors:
                            next_claim = time.monotonic() + claim_every
                        if got:
                            counts = await streams.delivery_counts(group, consumer, got)
                else:
                    block = 0 if tasks else self.bus.config.block_ms
                    got = await streams.read_new(topic, group, consumer, want, block)
                    if not got and tasks:
                        # nothing new, handlers busy: wait a little for a slot to free up
                        await asyncio.wait(tasks, timeout=0.05,
                                           return_when=asyncio.FIRST_COMPLETED)
            except ResponseError as exc:
                if group_lost(exc):
                    streams.forget_group(topic, group)
                    continue
                raise
            except UNAVAILABLE as exc:
                await self.bus.health.failed(exc)
                log.warning("relaybus reader %s/%s: Redis unavailable (%s); retrying in %.2fs",
                            topic, group, type(exc).__name__, pause)
                with contextlib.suppress(TimeoutError):  # a stop ends the wait at once
                    await asyncio.wait_for(self._stopping.wait(), random.uniform(pause / 2, pause))
                pause = min(pause * 2, MAX_BACKOFF_S)
                continue
            if pause > MIN_BACKOFF_S:
                pause = MIN_BACKOFF_S
                await self.bus.health.succeeded()
            for source, entry in got:
                self._held[(source, entry[0])] = group
                task = asyncio.create_task(
                    self._deliver(sub, source, entry, counts.get(entry[0]), slots)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- one message -------------------------------------------------------------

    async def _deliver(
        self, sub: Subscription, source: str, entry: Entry, delivered: int | None,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            async with slots:
                message = await self.bus.admit(source, entry, sub.group, delivered)
                if message is not None:
                    await self._handle(sub, message)
        except Exception:
            log.exception("relaybus could not settle entry %r of %s; it stays pending",
                          entry[0], source)
        finally:
            self._held.pop((source, entry[0]), None)

    async def _handle(self, sub: Subscription, message: Message) -> None:
        for name, function, argnames in self.bus.plugins.impls("filter"):
            args = {"message": message, "subscription": sub}
            if not await self.bus.plugins.call_one("filter", name, function,
                                                   [args[a] for a in argnames]):
                await self.bus.settle(message, "filtered")
                await self.bus.observe("on_settled", message=message, subscription=sub,
                                       outcome="filtered", duration_s=None)
                return
        payload = message.payload
        started = time.perf_counter()
        try:
            if sub.model is not None:
                message.payload = _adapter(sub.model).validate_python(payload)
            if inspect.iscoroutinefunction(sub.handler):
                await sub.handler(message)
            else:  # a plain function must not block the loop other handlers share
                await asyncio.to_thread(sub.handler, message)
        except Exception as exc:
            message.payload = payload  # the wire form, for the retry or the DLQ
            outcome = await self._failed(sub, message, exc)
            await self.bus.observe("on_settled", message=message, subscription=sub, outcome=outcome,
                                   duration_s=time.perf_counter() - started)
            return
        assert message.entry_id is not None and message.stream_key is not None
        self._acks.put_nowait((message.stream_key, sub.group, message.entry_id.encode()))
        await self.bus.observe("on_settled", message=message, subscription=sub, outcome="handled",
                               duration_s=time.perf_counter() - started)

    async def _failed(self, sub: Subscription, message: Message, error: Exception) -> str:
        """Carry out the failure decision; returns the outcome for on_settled."""
        if isinstance(error, Reject | ValidationError):
            decision: FailureDecision | None = FailureDecision.dead_letter(
                "rejected" if isinstance(error, Reject) else "invalid payload"
            )
        else:
            try:
                decision = await self.bus.plugins.first(
                    "on_failure", bus=self.bus, message=message, error=error, subscription=sub
                )
            except PluginError:
                log.exception("on_failure failed for message %s; it stays pending", message.id)
                return "pending"
        log.info("handler %s failed on %s (%s: %s); decision: %s", sub.name, message.id,
                 type(error).__name__, error, decision)
        if decision is None:
            return "pending"  # redelivered after claim_idle_ms
        if decision.action == "retry":
            await self.streams.schedule_retry(message, sub.group, decision.delay)
            return "retried"
        if decision.action == "dead_letter":
            await self.bus.dead_letter(message, decision.reason, error)
            return "dead_lettered"
        await self.bus.settle(message, "dropped")
        return "dropped"

    # -- acks --------------------------------------------------------------------

    async def _ack_loop(self) -> None:
        """Send acks in batches: everything queued goes out in one pipelined round trip."""
        while True:
            batch = [await self._acks.get()]
            while not self._acks.empty():
                batch.append(self._acks.get_nowait())
            by_source: dict[tuple[str, str], list[bytes]] = {}
            for source, group, entry_id in batch:
                by_source.setdefault((source, group), []).append(entry_id)
            try:
                await self._send_acks(by_source, len(batch))
            finally:
                for _ in batch:
                    self._acks.task_done()

    async def _send_acks(self, by_source: dict[tuple[str, str], list[bytes]], count: int) -> None:
        """One pipelined XACK per stream and group. While Redis is away, retried with
        backoff for up to half of claim_idle_ms - an ack that arrives later than that
        may race a reclaim, and the message is delivered again anyway."""
        give_up = time.monotonic() + self.bus.config.claim_idle_ms / 2000
        pause = MIN_BACKOFF_S
        while True:
            try:
                async with self.bus.redis.pipeline(transaction=False) as pipe:
                    for (source, group), ids in by_source.items():
                        pipe.xack(source, group, *ids)
                    await pipe.execute(raise_on_error=False)
                return
            except UNAVAILABLE as exc:
                await self.bus.health.failed(exc)
                if time.monotonic() + pause > give_up:
                    log.warning("relaybus could not send %d acks (%s); those messages will be "
                                "delivered again", count, type(exc).__name__)
                    return
                await asyncio.sleep(random.uniform(pause / 2, pause))
                pause = min(pause * 2, MAX_BACKOFF_S)


_adapters: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(model)
    if adapter is None:
        adapter = _adapters[model] = TypeAdapter(model)
    return adapter


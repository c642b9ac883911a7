"""`run()`: every subscription of one bus - topic discovery, the reader, the runners,
heartbeats and sweeps - and how it ends (stop drains; cancellation ends it at once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

from ..connection import UNAVAILABLE
from ..delivery import Subscription
from ..keys import registered_topics
from ..periodic import every
from .context import Context
from .groups import Groups
from .reader import Feed, Reader
from .runners import Runners
from .settlement import Settlement

log = logging.getLogger("relaybus")
DISCOVERY_INTERVAL_S = 0.5  # pattern subscriptions see a new topic within this
FULL_DISCOVERY_EVERY = 60  # discovery rounds between full registry reads when its size is unchanged
FULL_SWEEP_EVERY = 4  # sweeps (each claim_idle_ms / 2) between sweeps of every topic, quiet ones too


class Consumer:
    """Runs a bus's subscriptions until `stop()` (drain) or cancellation (prompt)."""

    def __init__(
        self, ctx: Context, groups: Groups, settlement: Settlement, subscriptions: Sequence[Subscription]
    ) -> None:
        if not subscriptions:
            raise ValueError("run() needs at least one bus.subscribe(...) handler")
        self.ctx = ctx
        self._reader = Reader(ctx, groups)
        self._runners = [Runners(s, settlement, self._reader) for s in subscriptions]
        self._groups = groups
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._fed: set[tuple[Runners, str]] = set()
        self._registry_size = -1
        self._sweeps = 0
        self._discoveries = 0

    async def run(self) -> None:
        ctx, reader = self.ctx, self._reader
        reading = asyncio.create_task(reader.run(), name="relaybus-reader")
        claim_every = ctx.config.claim_idle_ms / 1000
        discovering = asyncio.create_task(self._discover_until_stopped(), name="relaybus-discovery")
        jobs = [
            asyncio.create_task(every(claim_every / 3, self._heartbeat, self._stopping)),
            asyncio.create_task(every(claim_every / 2, self._sweep, self._stopping)),
        ]
        stopped = asyncio.create_task(self._stopping.wait())
        cancelled = False
        try:
            await asyncio.wait([reading, discovering, stopped], return_when=asyncio.FIRST_COMPLETED)
            if discovering.done() and discovering.exception() is None:  # named topics only: found
                await asyncio.wait([reading, stopped], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            cancelled = True
        finally:
            cancelled = await self._finish(reading, [discovering, *jobs, stopped], cancelled)
        for task in (reading, discovering):  # an unexpected error ends run() with it
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if cancelled:
            raise asyncio.CancelledError

    async def _finish(
        self, reading: asyncio.Task[None], jobs: list[asyncio.Task[Any]], cancelled: bool
    ) -> bool:
        """Stop fetching; let the round under way land, then the handlers finish - or,
        when cancelled (also during that wait), end them: their entries stay pending; send
        the acks; end. Returns whether run() was cancelled. No Redis command is cancelled
        midway, and a second cancel cannot leave the reader running."""
        self._stopping.set()
        self._reader.stop_fetching(give_up_acks=cancelled)
        try:
            if not (cancelled or reading.done()):
                try:
                    await self._reader.between_rounds()  # what it fetched reaches the runners
                    for runners in self._runners:
                        await runners.drain()
                except asyncio.CancelledError:
                    cancelled = True
                    self._reader.stop_fetching(give_up_acks=True)
        finally:
            for runners in self._runners:
                await _uncancelled(runners.cancel())
            self._reader.close()
            await _uncancelled(asyncio.gather(reading, *jobs, return_exceptions=True))
            self.ctx.doorbell.unwatch(sorted(self._reader.topics()), self._reader.wake)
            self._done.set()
        return cancelled

    async def stop(self) -> None:
        """Ask run() to drain and end; returns when it has (at once from a handler)."""
        self._stopping.set()
        if any(r.owns(asyncio.current_task()) for r in self._runners):
            return  # called from a handler: waiting for ourselves would never end
        await self._done.wait()

    async def _heartbeat(self) -> None:
        try:
            await self._reader.held.heartbeat(self._groups, self.ctx.consumer)
        except UNAVAILABLE as exc:  # the reader's and the connection state's warnings say it
            await self.ctx.health.failed(exc)

    async def _sweep(self) -> None:
        self._sweeps += 1
        self._reader.sweep(self.ctx.config.claim_idle_ms / 2000, self._sweeps % FULL_SWEEP_EVERY == 0)

    # -- topics --------------------------------------------------------------------------

    async def _discover_until_stopped(self) -> None:
        patterns = any(r.sub.patterns for r in self._runners)
        while not self._stopping.is_set():
            try:
                await self._discover()
            except UNAVAILABLE as exc:  # the feeds already running carry on; try again
                await self.ctx.health.failed(exc)
            else:
                if not patterns:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), DISCOVERY_INTERVAL_S)

    async def _discover(self) -> None:
        """Feeds for every named topic, and for registry topics matching a pattern; each
        topic's wake channel is subscribed before its first read."""
        registry: list[str] = []
        size = await self._registry_changed() if any(r.sub.patterns for r in self._runners) else None
        if size is not None:
            registry = registered_topics(
                await self.ctx.scripts.call("SMEMBERS", [self.ctx.keys.registry], [])
            )
            self._registry_size = size
        feeds = []
        for runners in self._runners:
            sub = runners.sub
            named = [t for t in sub.topics if t not in sub.patterns]
            for topic in dict.fromkeys([*named, *(t for t in registry if sub.matches(t))]):
                if (runners, topic) not in self._fed:
                    feeds.append(Feed(runners, topic))
        if not feeds:
            return
        topics = sorted({f.topic for f in feeds})
        await _until(self.ctx.doorbell.watch(topics, self._reader.wake), self._stopping)
        if not self._stopping.is_set():
            self._fed.update((f.runners, f.topic) for f in feeds)
            self._reader.add(feeds)

    async def _registry_changed(self) -> int | None:
        """The registry's size if it is worth reading in full: SCARD each time (cheap),
        the whole set when the size changed, and now and then anyway."""
        size = int(await self.ctx.scripts.call("SCARD", [self.ctx.keys.registry], []))
        self._discoveries += 1
        if size != self._registry_size or self._discoveries % FULL_DISCOVERY_EVERY == 0:
            return size
        return None


async def _uncancelled(awaitable: Awaitable[Any]) -> Any:
    """Await to the end even if the awaiting task is cancelled meanwhile (the cancel is
    taken up by the caller's own `raise CancelledError`)."""
    task = asyncio.ensure_future(awaitable)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()


async def _until(awaitable: Awaitable[Any], stopping: asyncio.Event) -> None:
    """Wait for `awaitable` or for a stop, whichever comes first (a wait on futures only:
    safe to abandon)."""
    task = asyncio.ensure_future(awaitable)
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]

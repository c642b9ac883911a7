"""Handler runners: a fixed set of tasks per subscription, and what they hold per group."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..connection import UNAVAILABLE
from ..delivery import Subscription
from ..errors import BusUnavailableError
from .groups import Entry, Groups, redis_full
from .settlement import Settlement

if TYPE_CHECKING:
    from .reader import Reader

log = logging.getLogger("relaybus")
FULL_WARN_EVERY_S = 60.0  # settlements refused by a full Redis: one warning per this
HeldKey = tuple[str, str, bytes]  # (group, stream, entry id): two groups never share one
# a settlement that could not reach Redis
OUTAGE: tuple[type[BaseException], ...] = (*UNAVAILABLE, BusUnavailableError)


@dataclass(slots=True)
class Delivery:
    """A fetched entry on its way to a handler."""

    source: str
    entry: Entry
    delivered: int | None  # delivery count, where a claim told it


class Held:
    """Entries this bus fetched and has not settled yet, per group: heartbeats keep them
    from being reclaimed by another consumer (or by this one) while handlers work."""

    def __init__(self) -> None:
        self._keys: set[HeldKey] = set()

    def add(self, group: str, source: str, entry_id: bytes) -> None:
        self._keys.add((group, source, entry_id))

    def discard(self, group: str, source: str, entry_id: bytes) -> None:
        self._keys.discard((group, source, entry_id))

    def __contains__(self, key: HeldKey) -> bool:
        return key in self._keys

    async def heartbeat(self, groups: Groups, consumer: str) -> None:
        """Reset the idle time of every held entry (XCLAIM JUSTID), one round trip."""
        by_stream: dict[tuple[str, str], list[bytes]] = {}
        for group, source, entry_id in list(self._keys):
            by_stream.setdefault((source, group), []).append(entry_id)
        await groups.heartbeat(consumer, by_stream)


class Runners:
    """`concurrency` tasks running one subscription's handlers, fed by the reader through
    a queue; `room` is how many more entries the subscription may hold (`prefetch`). A
    handled message's ack goes to the reader's queue; the reader is told when room frees."""

    def __init__(self, sub: Subscription, settlement: Settlement, reader: Reader) -> None:
        self.sub = sub
        self._settlement = settlement
        self._reader = reader
        self._acks = reader.acks
        self._held = reader.held
        self._queue: deque[Delivery] = deque()
        self._idle_runners: deque[asyncio.Future[None]] = deque()  # one is woken per delivery
        self.inflight = 0  # fetched and not settled: queued or running
        self._full_warned_at = -FULL_WARN_EVERY_S
        self._unsettled = 0  # settlements that could not reach Redis, this outage
        self._unsettled_at = 0.0  # when the last one failed (loop time)
        self._tasks = [
            asyncio.create_task(self._run(), name=f"relaybus-handler-{sub.name}")
            for _ in range(sub.concurrency)
        ]
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def room(self) -> int:
        return self.sub.prefetch - self.inflight

    @property
    def hungry(self) -> bool:
        """Worth a fetch: at least half of prefetch free, or nothing left queued."""
        return self.room > 0 and (self.room * 2 >= self.sub.prefetch or not self._queue)

    def owns(self, task: asyncio.Task[object] | None) -> bool:
        return task in self._tasks

    def put(self, delivery: Delivery) -> None:
        self._held.add(self.sub.group, delivery.source, delivery.entry[0])
        self.inflight += 1
        self._idle.clear()
        self._queue.append(delivery)
        while self._idle_runners:
            waiter = self._idle_runners.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def _run(self) -> None:
        settlement, sub, queue = self._settlement, self.sub, self._queue
        loop = asyncio.get_running_loop()
        while True:
            if not queue:
                waiter = loop.create_future()
                self._idle_runners.append(waiter)
                await waiter
                continue
            delivery = queue.popleft()
            try:
                message = settlement.admissible(
                    delivery.source, delivery.entry, sub.group, delivery.delivered
                )
                if message is None:  # not for the handler: settled there
                    message = await settlement.admit(
                        delivery.source, delivery.entry, sub.group, delivery.delivered
                    )
                if message is not None:
                    await settlement.handle(sub, message, self._acks)
                if self._unsettled and self._outage_ended(loop.time()):
                    self._outage_over()
            except OUTAGE as exc:
                if not self._unsettled:  # one warning an outage, not a traceback per message
                    log.warning(
                        "relaybus could not settle messages of %s: Redis unavailable (%s); they "
                        "stay pending and are delivered again",
                        sub.name,
                        type(exc).__name__,
                    )
                    await settlement.ctx.health.failed(exc)
                self._unsettled += 1
                self._unsettled_at = loop.time()
            except Exception as exc:
                if not redis_full(exc):
                    log.exception(
                        "relaybus could not settle entry %r of %s; it stays pending",
                        delivery.entry[0],
                        delivery.source,
                    )
                elif loop.time() >= self._full_warned_at + FULL_WARN_EVERY_S:  # every settlement meets it
                    self._full_warned_at = loop.time()
                    log.warning(
                        "relaybus could not settle entry %r of %s: Redis's memory is full; "
                        "it stays pending and is delivered again",
                        delivery.entry[0],
                        delivery.source,
                    )
            finally:
                self._held.discard(sub.group, delivery.source, delivery.entry[0])
                self.inflight -= 1
                if not self.inflight:
                    self._idle.set()
                if self.hungry:  # only then may the reader fetch for us: no wake-up before
                    self._reader.kick()

    def _outage_ended(self, now: float) -> bool:
        """Connected again, and no settlement failed for a socket_timeout: those sent during
        the outage have failed by then (they belong to it, not to a new one)."""
        ctx = self._settlement.ctx
        return ctx.health.state == "connected" and now - self._unsettled_at > ctx.config.socket_timeout

    def _outage_over(self) -> None:
        log.warning(
            "relaybus: %d message(s) of %s could not be settled while Redis was unavailable; "
            "they stay pending and are delivered again",
            self._unsettled,
            self.sub.name,
        )
        self._unsettled = 0

    async def drain(self) -> None:
        """Wait until everything fetched is settled, then end the runners."""
        await self._idle.wait()
        await self.cancel()

    async def cancel(self) -> None:
        """End the runners now; entries they held stay pending (delivered again later)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._unsettled:
            self._outage_over()

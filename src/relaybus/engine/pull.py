"""Pull reads (`Bus.read`): claimed and new entries for a caller, and waiting for the
topic to ring without holding a connection."""

from __future__ import annotations

import asyncio
import contextlib
import time

from ..errors import BusUnavailableError
from ..message import Message
from .context import Context
from .groups import Fetched, Groups
from .reader import UNARMED_RETRY_S
from .settlement import Settlement


class Puller:
    """Pull reads for the caller of `Bus.read`, who is then the handler: claimed and new
    entries admitted by the settlement, and waits on the doorbell."""

    def __init__(self, ctx: Context, groups: Groups, settlement: Settlement) -> None:
        self.ctx = ctx
        self._groups = groups
        self._settlement = settlement

    async def read(
        self, topic: str, group: str, consumer: str, count: int, block_ms: int, start: str
    ) -> list[Message]:
        """Up to `count` messages: entries pending past claim_idle_ms in any consumer of the
        group - the caller's own too - then new ones, claimed and read in one script call; if
        there are none and `block_ms`, whatever arrives within it. A read that fails after
        Redis ran it (its reply lost) leaves what it took pending to `consumer`: the next
        reads hand it out again once idle past claim_idle_ms, so nothing stays stranded."""
        groups = self._groups
        fetch = await groups.read(topic, group, consumer, count, start, self.ctx.config.claim_idle_ms)
        fresh, counts = fetch.entries, fetch.delivered or {}
        if not fresh and block_ms > 0:
            fresh = await self._wait_and_read(topic, group, consumer, count, start, block_ms)
        out = []
        for source, entry in fresh:
            message = await self._settlement.admit(source, entry, group, counts.get(entry[0]))
            if message is not None:
                out.append(message)
        return out

    async def _wait_and_read(
        self, topic: str, group: str, consumer: str, count: int, start: str, block_ms: int
    ) -> list[Fetched]:
        """Subscribe to the topic's wake channel, then read - a read that finds nothing arms
        the wake-up in the same step - and wait for a ring, until `block_ms` has passed.
        Only waits on futures are ever timed out, never a Redis command."""
        doorbell = self.ctx.doorbell
        deadline = time.monotonic() + block_ms / 1000
        rung = asyncio.Event()

        def watcher(_topic: str, _certain: bool) -> None:
            rung.set()

        try:
            await asyncio.wait_for(doorbell.watch([topic], watcher), block_ms / 1000)
        except TimeoutError:  # not subscribed in time (Redis away?): nothing arrived that we know of
            doorbell.unwatch([topic], watcher)
            return []
        try:
            while True:
                rung.clear()
                fetch = await self._groups.read(topic, group, consumer, count, start)
                left = deadline - time.monotonic()
                if fetch.entries or left <= 0:
                    return fetch.entries
                if fetch.next_due is not None:  # a delayed entry falls due before the deadline
                    left = min(left, max(0.0, fetch.next_due - time.time()))
                if not fetch.armed:  # Redis refused the wake key (memory full): no ring will come
                    left = min(left, UNARMED_RETRY_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rung.wait(), left)
                if doorbell.closed:
                    raise BusUnavailableError("read() was waiting when the bus was closed")
        finally:
            doorbell.unwatch([topic], watcher)

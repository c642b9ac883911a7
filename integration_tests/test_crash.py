"""A worker killed with SIGKILL mid-batch loses nothing: another worker finishes it all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from relaybus import Bus

WORKER = Path(__file__).with_name("worker_proc.py")


def _start(url: str, prefix: str, consumer: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(WORKER), url, prefix, "crash.jobs", consumer])


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


async def test_sigkill_mid_batch_loses_nothing(
    bus: Bus, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    ids = set(await bus.publish_many("crash.jobs", [{"n": i} for i in range(300)]))
    handled = f"{prefix}:handled"
    first = _start(redis_url, prefix, "worker-1")
    try:
        _wait(lambda: raw.scard(handled) >= 40, 30, "the first worker to get going")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
    done_by_first = raw.scard(handled)
    pending = raw.xpending(bus.keys.stream("crash.jobs"), "crash")["pending"]
    assert done_by_first < len(ids) and pending > 0  # it died holding a batch

    second = _start(redis_url, prefix, "worker-2")
    try:
        _wait(lambda: raw.scard(handled) == len(ids), 60, "the second worker to finish")
    finally:
        second.kill()
        second.wait()
    assert {m.decode() for m in raw.smembers(handled)} == ids

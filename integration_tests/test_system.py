"""The system checker on one durable Redis (AOF, fsync always), on every Redis line: the
whole deployment (system.py) under late bytes past the socket timeout, consumers SIGKILLed
and SIGSTOPped, Redis SIGKILLed and SIGSTOPped, memory full and the responder SIGKILLed,
then one invariant checked from Redis. Short in CI; RELAYBUS_CHAOS_LONG=1 runs the faults
four times over."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from relaybus.embedded import EmbeddedRedis

from .faultproxy import FaultProxy
from .helpers import VERSIONS
from .system import LONG, Fault, System

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(2400 if LONG else 600)]  # a whole deployment


async def test_the_whole_system_keeps_its_promise_under_faults(
    aof_server: EmbeddedRedis, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    admin = redis.Redis.from_url(aof_server.url)
    async with FaultProxy("127.0.0.1", aof_server.port) as proxy:
        system = System(
            proxy.url,
            aof_server.url,
            lambda: admin,
            redis_url,
            prefix,
            tmp_path,
            publish_timeout_s=20,
            socket_timeout=0.5,
            connect_timeout=1,
        )
        procs = system.procs

        def redis_signal(sig: signal.Signals) -> Callable[[], None]:
            return lambda: os.kill(aof_server.process.pid, sig)  # type: ignore[union-attr]

        def used() -> int:
            return int(admin.info("memory")["used_memory"])

        faults = [
            Fault(
                "late bytes",
                lambda: proxy.late_open(3.0, match=b"EVALSHA"),
                1.0,
                lambda: proxy.late_open(0.0),
            ),
            Fault(
                "consumer SIGKILL", lambda: procs.kill("push-1"), 0.2, lambda: system.worker("push", "push-1")
            ),
            Fault("redis SIGKILL", aof_server.kill, 0.5, aof_server.start),
            Fault(
                "consumer SIGSTOP",
                lambda: procs.signal("pull-1", signal.SIGSTOP),
                4.0,
                lambda: procs.signal("pull-1", signal.SIGCONT),
            ),
            Fault("redis SIGSTOP", redis_signal(signal.SIGSTOP), 3.0, redis_signal(signal.SIGCONT)),
            Fault(
                "memory full",
                lambda: admin.config_set("maxmemory", used() + (64 << 10)),
                2.0,
                lambda: admin.config_set("maxmemory", 0),
            ),
            Fault(
                "responder SIGKILL",
                lambda: procs.kill("responder-1"),
                0.2,
                lambda: system.worker("responder", "responder-1"),
            ),
        ]
        rounds = 4 if LONG else 1
        try:
            await system.run(
                f"system checker, {rounds * len(faults)} faults "
                f"(redis {VERSIONS.get(aof_server.executable or '', '?')})",
                faults * rounds,
            )
        finally:
            admin.close()

"""The system checker (system.py) where Redis itself changes under the deployment, on the
newest Redis (NEWEST, this module's only line): restarted without its data, and a
Sentinel failover."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.sentinel import Sentinel

from relaybus.embedded import EmbeddedRedis, free_port

from .faultproxy import FaultProxy
from .helpers import NEWEST, VERSIONS
from .system import LONG, Fault, System
from .topologies import SentinelSetup, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(2400 if LONG else 600)]  # a whole deployment


async def test_the_whole_system_through_a_restart_without_data(
    server_factory: Callable[..., EmbeddedRedis], redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """What was in Redis is gone (counted); everything made after it came back is handled."""
    with server_factory(port=free_port()) as server:
        admin = redis.Redis.from_url(server.url)
        async with FaultProxy("127.0.0.1", server.port) as proxy:
            system = System(
                proxy.url,
                server.url,
                lambda: admin,
                redis_url,
                prefix,
                tmp_path,
                publish_timeout_s=20,
                socket_timeout=0.5,
                connect_timeout=1,
            )
            faults = [
                Fault(
                    "late bytes",
                    lambda: proxy.late_open(3.0, match=b"EVALSHA"),
                    1.0,
                    lambda: proxy.late_open(0.0),
                ),
                Fault("redis restarted empty", server.kill, 0.5, server.start, wipes=True),
                Fault(
                    "consumer SIGKILL",
                    lambda: system.procs.kill("push-2"),
                    0.2,
                    lambda: system.worker("push", "push-2"),
                ),
            ]
            try:
                await system.run(
                    f"system checker, restart without data (redis "
                    f"{VERSIONS.get(server.executable or '', '?')})",
                    faults,
                )
            finally:
                admin.close()


async def test_the_whole_system_through_a_sentinel_failover(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """min_replicas_acked=1: a publish that returned is on the replica that is promoted."""
    with SentinelSetup(NEWEST) as sentinel:
        sentinels = Sentinel([("127.0.0.1", p) for p in sentinel.sentinel_ports], socket_timeout=2)
        master = sentinels.master_for(sentinel.service, socket_timeout=2)
        old = sentinel.master.port

        def fail_over() -> None:
            sentinel.master.kill()
            wait_until(lambda: sentinel.master_port() != old, 30, "failover")

        system = System(
            sentinel.url,
            sentinel.url,
            lambda: master,
            redis_url,
            prefix,
            tmp_path,
            min_replicas_acked=1,
            publish_timeout_s=20,
            socket_timeout=1,
            connect_timeout=1,
        )
        faults = [Fault("master SIGKILL, replica promoted", fail_over, 0.5, sentinel.master.start)]
        try:
            await system.run(f"system checker, sentinel failover (redis {VERSIONS[NEWEST]})", faults)
        finally:
            master.close()

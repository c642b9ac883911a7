"""Consuming across a fault, checked from Redis itself: a pull read that fails half-way,
a saturated group through a Redis stall, and what an outage logs. Every test starts
its own server (each Redis line there is)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from relaybus import Bus, BusUnavailableError, Message
from relaybus.embedded import EmbeddedRedis, free_port

from .faultproxy import FaultProxy
from .helpers import running, wait_for

CLAIM_IDLE_MS = 1000
FAST = {"claim_idle_ms": CLAIM_IDLE_MS, "socket_timeout": 0.5, "connect_timeout": 0.5}


@pytest.fixture
def server(server_factory: Callable[..., EmbeddedRedis], tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private redis-server that keeps every write (AOF, fsync always) over a kill -9."""
    (tmp_path / "data").mkdir()
    with server_factory(
        port=free_port(), directory=tmp_path / "data", args=["--appendonly", "yes", "--appendfsync", "always"]
    ) as instance:
        yield instance


async def read_all(bus: Bus, consumer: str, want: int, seconds: float) -> dict[int, Message]:
    """Read (and ack) as one consumer keeps doing, until `want` messages or `seconds`."""
    got: dict[int, Message] = {}
    deadline = asyncio.get_running_loop().time() + seconds
    while len(got) < want and asyncio.get_running_loop().time() < deadline:
        batch = await bus.read("jobs", group="g", consumer=consumer, count=10)
        if batch:
            await bus.ack(*batch)
        got.update((m.payload, m) for m in batch)
        await asyncio.sleep(0.05)
    return got


async def test_a_pull_read_failing_between_claim_and_read_strands_nothing(
    server: EmbeddedRedis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's repro: c1 reads 100 and acks 50; Redis is killed (and restarted with
    its AOF) just as c2's read goes on from claiming c1's idle entries to reading; c2
    alone keeps reading and must get 50-99."""
    admin = redis.Redis.from_url(server.url)
    async with Bus.from_url(server.url, prefix=prefix, **FAST) as bus:
        await bus.publish_many("jobs", list(range(100)))
        taken = await bus.read("jobs", group="g", consumer="c1", count=100)
        await bus.ack(*taken[:50])
        await asyncio.sleep(CLAIM_IDLE_MS / 1000 + 0.2)  # c1's other 50 are idle: claimable
        scripts = bus._engine.ctx.scripts
        run = scripts.run

        async def killed_first(*args: Any, **kwargs: Any) -> Any:  # Redis dies as the script goes out
            monkeypatch.setattr(scripts, "run", run)
            server.kill()
            return await run(*args, **kwargs)

        monkeypatch.setattr(scripts, "run", killed_first)
        with pytest.raises(BusUnavailableError):
            await bus.read("jobs", group="g", consumer="c2", count=100)
        server.start()
        got = await read_all(bus, "c2", 50, CLAIM_IDLE_MS / 1000 * 3 + 2)
        assert sorted(got) == list(range(50, 100))
        assert admin.xpending(bus.keys.stream("jobs"), "g")["pending"] == 0
    admin.close()


async def test_a_pull_read_whose_reply_is_lost_strands_nothing(server: EmbeddedRedis, prefix: str) -> None:
    """Redis ran the read - claimed c1's idle entries and read new ones for c2 - but its
    reply never came back: c2 alone keeps reading and gets all of them, within
    claim_idle_ms of the lost read."""
    admin = redis.Redis.from_url(server.url)
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(server.url, prefix=prefix, **FAST) as direct,
        Bus.from_url(proxy.url, prefix=prefix, **FAST) as bus,
    ):
        await direct.publish_many("jobs", list(range(100)))
        taken = await direct.read("jobs", group="g", consumer="c1", count=100)  # read.lua is loaded
        await direct.ack(*taken[:50])
        await asyncio.sleep(CLAIM_IDLE_MS / 1000 + 0.2)
        await direct.publish_many("jobs", list(range(100, 120)))
        proxy.set("forward_then_drop_reply")
        with pytest.raises(BusUnavailableError):
            await bus.read("jobs", group="g", consumer="c2", count=100)
        proxy.set("pass")
        by_consumer = {c["name"]: c["pending"] for c in admin.xinfo_consumers(bus.keys.stream("jobs"), "g")}
        assert by_consumer.get(b"c2") == 70  # the lost read took c1's 50 and the 20 new ones
        started = asyncio.get_running_loop().time()
        got = await read_all(bus, "c2", 70, CLAIM_IDLE_MS / 1000 * 3 + 2)
        assert sorted(got) == list(range(50, 120))
        assert asyncio.get_running_loop().time() - started < CLAIM_IDLE_MS / 1000 + 1.5
        assert all(m.attempt >= 2 for m in got.values())  # each one's lost delivery is counted
        assert admin.xpending(bus.keys.stream("jobs"), "g")["pending"] == 0
    admin.close()


def oldest_pending_s(admin: redis.Redis, stream: str, group: str) -> float:
    """The longest any entry of the group has been pending since its last delivery, as
    Redis counts it (XPENDING's idle times)."""
    entries = admin.xpending_range(stream, group, min="-", max="+", count=100_000)
    return max((e["time_since_delivered"] for e in entries), default=0) / 1000


async def test_a_saturated_group_leaves_nothing_pending_past_the_bound_after_a_stall(
    server: EmbeddedRedis, prefix: str
) -> None:
    """Two consumers with every slot busy (prefetch = concurrency) and a backlog behind
    them; Redis is cut off (a blackhole: what is sent meanwhile is lost) for longer than
    claim_idle_ms, so acks are given up and entries are left pending with nobody working
    on them. Once the consumers are connected again, none of those may wait for the
    backlog to drain: from claim_idle_ms + one handler run on, nothing is pending longer
    than that (measured from Redis's XPENDING)."""
    stall_s, handler_s, backlog = 2.5, 0.7, 200
    bound_s = CLAIM_IDLE_MS / 1000 + handler_s  # docs/guarantees.md, after a reconnection
    admin = redis.Redis.from_url(server.url)
    handled: dict[int, int] = {}
    async with FaultProxy("127.0.0.1", server.port) as proxy:
        buses = [Bus.from_url(proxy.url, prefix=prefix, **FAST) for _ in range(2)]
        for bus in buses:

            @bus.subscribe("jobs", group="g", concurrency=4, prefetch=4)
            async def handle(message: Message) -> None:
                await asyncio.sleep(handler_s)
                handled[message.payload] = handled.get(message.payload, 0) + 1

        async with buses[0], buses[1]:
            await buses[0].publish_many("jobs", list(range(backlog)))
            runs = [asyncio.create_task(bus.run()) for bus in buses]
            stream = buses[0].keys.stream("jobs")
            await asyncio.sleep(1.0)
            proxy.set("blackhole")
            await asyncio.sleep(stall_s)
            assert all(bus.health.state != "connected" for bus in buses)
            proxy.set("pass")
            await wait_for(lambda: all(bus.health.state == "connected" for bus in buses), 10)
            back = time.monotonic()
            worst_late = 0.0  # the oldest pending entry seen once the bound has passed
            while len(handled) < backlog and time.monotonic() < back + 60:
                oldest = await asyncio.to_thread(oldest_pending_s, admin, stream, "g")
                if time.monotonic() - back > bound_s:
                    worst_late = max(worst_late, oldest)
                await asyncio.sleep(0.1)
            assert time.monotonic() - back > bound_s + 3, "the backlog must outlast the bound: make it longer"
            for bus in buses:
                await bus.stop()
            await asyncio.gather(*runs)
    assert worst_late <= bound_s, f"an entry stayed pending {worst_late:.1f}s (bound {bound_s:.1f}s)"
    assert sorted(handled) == list(range(backlog))
    assert admin.xpending(stream, "g")["pending"] == 0
    admin.close()


async def test_a_short_outage_logs_a_few_lines_with_counts_and_no_traceback_per_message(
    server: EmbeddedRedis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis away for 0.7 s while a hundred handlers run, each publishing its result: a
    handler whose publish fails is retried, but its retry cannot be scheduled while
    Redis is away. The outage is told in a few warnings - one for the subscription, and
    one with the count of messages left pending - never a traceback a message; every
    message is still handled."""
    handled: set[int] = set()
    started: list[int] = []
    total = 1500
    caplog.set_level(logging.DEBUG, logger="relaybus")
    async with Bus.from_url(
        server.url, prefix=prefix, retry_backoff_s=0.05, publish_timeout_s=0.3, **FAST
    ) as bus:

        @bus.subscribe("jobs", group="g", concurrency=100)
        async def handle(message: Message) -> None:
            started.append(message.payload)
            await asyncio.sleep(0.2)
            await bus.publish("results", message.payload)
            handled.add(message.payload)

        await bus.publish_many("jobs", list(range(total)))
        async with running(bus):
            await wait_for(lambda: len(started) >= 300, 10)  # a hundred running, some settled
            server.kill()
            await asyncio.sleep(0.7)
            server.start()
            await wait_for(lambda: len(handled) == total, 30)
        admin = redis.Redis.from_url(server.url)
        assert admin.xpending(bus.keys.stream("jobs"), "g")["pending"] == 0
        admin.close()
    ours = [r for r in caplog.records if r.name == "relaybus"]
    assert not [r for r in ours if r.exc_info], "a traceback was logged"
    outage = [r.getMessage() for r in ours if r.levelno >= logging.WARNING]
    assert len(outage) <= 8, outage
    [left] = [m for m in outage if "could not be settled while Redis was unavailable" in m]
    assert handle.__name__ in left and int(left.split()[1]) > 0

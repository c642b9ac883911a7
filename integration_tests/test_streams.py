"""Stream management against a real Redis: filters, TTL, cleanup/retention, overflow,
memory and stats."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis
from redis.cluster import RedisCluster

from relaybus import Bus, FilterError, Message, QueueFullError, Subscription, hookimpl
from relaybus.embedded import EmbeddedRedis

from .helpers import run_until, running, wait_for

# -- filters ---------------------------------------------------------------------------


async def test_filtered_subscription_handles_matches_and_acks_the_rest(bus: Bus, raw: redis.Redis) -> None:
    seen: list[int] = []

    @bus.subscribe("jobs", group="big", filter={"payload.size": {"$gt": 10}, "headers.kind": "pr"})
    async def handle(msg: Message) -> None:
        seen.append(msg.payload["size"])

    for size, kind in [(5, "pr"), (50, "pr"), (60, "issue"), (70, "pr")]:
        await bus.publish("jobs", {"size": size}, headers={"kind": kind})
    await run_until(bus, lambda: len(seen) == 2 and bus.counters["filtered"] == 2)
    assert seen == [50, 70]
    assert raw.hget(bus.keys.counters("jobs"), "filtered") == b"2"
    assert raw.xpending(bus.keys.stream("jobs"), "big")["pending"] == 0  # filtered ones acked too


async def test_filter_applies_per_group(bus: Bus) -> None:
    urgent: list[int] = []
    everything: list[int] = []

    @bus.subscribe("work", group="urgent", filter={"priority": {"$gte": 5}})
    async def on_urgent(msg: Message) -> None:
        urgent.append(msg.payload)

    @bus.subscribe("work", group="all")
    async def on_all(msg: Message) -> None:
        everything.append(msg.payload)

    await bus.publish("work", 1, priority=1)
    await bus.publish("work", 9, priority=9)
    await run_until(bus, lambda: len(everything) == 2 and urgent == [9])


async def test_bad_filter_is_refused_at_subscribe_before_connecting(redis_url: str, prefix: str) -> None:
    bus = Bus.from_url(redis_url, prefix=prefix)
    with pytest.raises(FilterError, match=r"payload\.x\.\$regexp: unknown operator '\$regexp'"):
        bus.subscribe("t", group="g", filter={"payload.x": {"$regexp": "a"}})(print)
    assert bus.subscriptions == []


async def test_filter_without_the_filters_plugin_is_an_error(redis_url: str, prefix: str) -> None:
    bus = Bus.from_url(redis_url, prefix=prefix, disabled_plugins=["filters"])
    with pytest.raises(FilterError, match="'filters' plugin disabled"):
        bus.subscribe("t", group="g", filter={"payload.x": 1})(print)


async def test_on_subscribe_can_refuse_a_subscription(bus: Bus) -> None:
    class OnlyNamedGroups:
        @hookimpl
        def on_subscribe(self, subscription: Subscription) -> None:
            if not subscription.group.startswith("team-"):
                raise FilterError(f"group {subscription.group!r} must start with 'team-'")

    bus.plugins.register(OnlyNamedGroups(), "named")
    bus.subscribe("t", group="team-a")(print)
    with pytest.raises(FilterError, match="must start with 'team-'"):
        bus.subscribe("t", group="other")(print)
    assert [s.group for s in bus.subscriptions] == ["team-a"]


# -- TTL --------------------------------------------------------------------------------


async def test_expired_message_is_never_handed_out_and_is_counted(bus: Bus, raw: redis.Redis) -> None:
    await bus.publish("short", "stale", ttl=0.2)
    await bus.publish("short", "fresh", ttl=60)
    await asyncio.sleep(0.3)
    got = await bus.read("short", group="g", count=10)
    assert [m.payload for m in got] == ["fresh"]
    assert got[0].expires_at is not None
    assert raw.hget(bus.keys.counters("short"), "expired") == b"1"
    assert raw.xpending(bus.keys.stream("short"), "g")["pending"] == 1  # only "fresh", unacked
    assert await bus.dead_letters("short") == []


async def test_default_ttl_applies_and_handlers_skip_expired(redis_url: str, prefix: str) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, default_ttl=0.2) as bus:
        await bus.publish("t", "old")
        await asyncio.sleep(0.3)
        await bus.publish("t", "new", ttl=60)
        seen: list[str] = []

        @bus.subscribe("t", group="g")
        async def handle(msg: Message) -> None:
            seen.append(msg.payload)

        await run_until(bus, lambda: seen == ["new"] and bus.counters["expired"] == 1)


async def test_expired_messages_can_be_dead_lettered(redis_url: str, prefix: str) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, dead_letter_expired=True) as bus:
        mid = await bus.publish("t", "late", ttl=0.1)
        await asyncio.sleep(0.2)
        assert await bus.read("t", group="g") == []
        [dead] = await bus.dead_letters("t")
        assert (dead.id, dead.headers["x-dead-reason"]) == (mid, "expired")
        assert (await bus.stats(["t"])).topics[0].counts["expired"] == 1


# -- cleanup and retention -----------------------------------------------------------------


async def test_trim_never_removes_an_unconsumed_or_pending_entry(bus: Bus) -> None:
    ids = await bus.publish_many("t", list(range(10)))
    await bus.ack(*(await bus.read("t", group="fast", consumer="f", count=10)))
    await bus.ack(*(await bus.read("t", group="slow", consumer="s", count=6)))
    await bus.read("t", group="slow", consumer="s", count=2)  # 6 and 7: pending, never acked
    await bus.ack(*(await bus.read("t", group="idle", consumer="i", count=2)))
    # fast consumed everything, slow 0-5 (6 pending), idle 0-1: only 0 and 1 may go
    assert await bus.trim("t", keep_s=0, keep_len=0) == 2
    assert [m.id for m in await bus.history("t", limit=100)] == ids[2:]
    rest = await bus.read("t", group="idle", consumer="i", count=20)
    assert [m.payload for m in rest] == list(range(2, 10))  # nothing idle needed went missing


async def test_trim_keeps_everything_for_a_group_that_read_nothing(bus: Bus) -> None:
    assert await bus.read("z", group="late", count=1) == []  # the group exists, at the start
    await bus.publish_many("z", [1, 2, 3])
    await bus.ack(*(await bus.read("z", group="eager", count=3)))
    assert await bus.trim("z", keep_s=0, keep_len=0) == 0
    assert [m.payload for m in await bus.read("z", group="late", count=5)] == [1, 2, 3]


async def test_trim_keeps_pending_entries_of_a_crashed_consumer(bus: Bus) -> None:
    await bus.publish_many("t", list(range(6)))
    got = await bus.read("t", group="g", consumer="dead", count=6)
    await bus.ack(*[m for m in got if m.payload != 2])  # entry 2 stays pending
    assert await bus.trim("t", keep_s=0, keep_len=0) == 2  # 0 and 1 only
    assert [m.payload for m in await bus.history("t")] == [2, 3, 4, 5]
    await asyncio.sleep(1.1)  # claim_idle_ms of the fixture
    [again] = await bus.read("t", group="g", consumer="other", count=5)
    assert (again.payload, again.attempt) == (2, 2)


async def test_retention_by_length_and_by_age(bus: Bus) -> None:
    await bus.publish_many("t", list(range(5)))
    await asyncio.sleep(0.3)
    await bus.publish_many("t", list(range(5, 10)))
    await bus.ack(*(await bus.read("t", group="g", count=10)))
    assert await bus.trim("t", keep_len=8) == 2
    assert await bus.trim("t", keep_s=0.2) == 3  # the older batch's remaining three
    assert await bus.trim("t", keep_s=60, keep_len=100) == 0
    assert [m.payload for m in await bus.history("t")] == list(range(5, 10))
    assert await bus.trim("t") == 0  # no limit given: keep everything consumed


async def test_trim_covers_priority_lanes(bus: Bus, raw: redis.Redis) -> None:
    await bus.publish("t", "low")
    await bus.publish("t", "high", priority=7)
    await bus.ack(*(await bus.read("t", group="g", count=5)))
    assert raw.xlen(bus.keys.lane("t", 7)) == 1
    assert await bus.trim("t", keep_s=0) == 2
    assert raw.xlen(bus.keys.lane("t", 7)) == 0 and raw.xlen(bus.keys.stream("t")) == 0


async def test_trim_keeps_lane_entries_a_group_has_not_read_yet(bus: Bus) -> None:
    """Groups get a priority lane on their first read after it appeared: until then the
    lane's entries are unconsumed for them, and neither cleanup nor drop_oldest may count
    them as consumed."""
    await bus.read("t", group="a", count=1)
    await bus.read("t", group="b", count=1)  # both groups exist, before any lane does
    await bus.publish_many("t", list(range(5)), priority=5)
    await bus.ack(*(await bus.read("t", group="a", count=5)))
    assert await bus.trim("t", keep_s=0, keep_len=0) == 0
    assert [m.payload for m in await bus.read("t", group="b", count=10)] == list(range(5))


async def test_stream_without_groups_is_never_trimmed(bus: Bus, raw: redis.Redis) -> None:
    await bus.publish_many("nobody", list(range(3)))
    assert await bus.trim("nobody", keep_s=0, keep_len=0) == 0
    assert raw.xlen(bus.keys.stream("nobody")) == 3


async def test_dead_letter_retention(bus: Bus) -> None:
    for n in range(4):
        await bus.publish("t", n)
    for message in await bus.read("t", group="g", count=4):
        await bus.dead_letter(message, "test")
    assert await bus.trim_dead_letters("t", keep_len=1) == 3
    assert [m.payload for m in await bus.dead_letters("t")] == [3]


async def test_cleanup_applies_the_configured_retention(redis_url: str, prefix: str) -> None:
    async with Bus.from_url(
        redis_url, prefix=prefix, retention_s=None, retention_max_len=2, dlq_max_len=0
    ) as bus:
        await bus.publish_many("a", list(range(5)))
        await bus.ack(*(await bus.read("a", group="g", count=3)))  # 3 and 4 stay unconsumed
        [doomed] = await bus.read("a", group="h", count=1)
        await bus.dead_letter(doomed, "test")
        await bus.cleanup()
        assert [m.payload for m in await bus.history("a")] == [1, 2, 3, 4]
        assert await bus.dead_letters("a") == []


async def test_open_bus_cleans_up_periodically(redis_url: str, prefix: str, raw: redis.Redis) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, retention_s=0, cleanup_interval_s=0.1) as bus:
        await bus.publish_many("p", list(range(4)))
        await bus.ack(*(await bus.read("p", group="g", count=4)))
        await wait_for(lambda: raw.xlen(bus.keys.stream("p")) == 0, seconds=3)


async def test_memory_pressure_drops_consumed_history_and_warns(
    server_factory: type[EmbeddedRedis], prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    with server_factory(args=["--maxmemory-policy", "allkeys-lru"]) as server:
        async with Bus.from_url(server.url, prefix=prefix, retention_s=None, retention_max_len=None) as bus:
            await bus.publish_many("m", list(range(20)))
            await bus.ack(*(await bus.read("m", group="g", count=15)))
            with caplog.at_level(logging.WARNING, logger="relaybus.retention"):
                await bus.cleanup()
            assert len(await bus.history("m")) == 20  # no pressure: retention keeps everything
            assert "maxmemory-policy is 'allkeys-lru'" in caplog.text
            assert any("noeviction" in r for r in (await bus.stats()).recommendations)
            # Under pressure with allkeys-lru Redis itself may evict the stream (7.x does, at
            # 110 %): what cleanup does is seen with the policy the docs recommend.
            await bus._engine.ctx.redis.config_set("maxmemory-policy", "noeviction")
            used = (await bus.memory()).used_memory
            await bus._engine.ctx.redis.config_set("maxmemory", str(int(used * 1.1)))
            stats = await bus.stats()
            assert stats.server.memory.pressure is not None and stats.server.memory.pressure > 0.8
            assert any("memory at" in r for r in stats.recommendations)
            await bus.cleanup()
            assert [m.payload for m in await bus.history("m")] == list(range(15, 20))


# -- overflow ------------------------------------------------------------------------------


async def test_reject_at_max_queue_size_appends_nothing(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, max_queue_size=5) as bus:
        await bus.publish_many("q", list(range(5)))  # no group yet: every entry counts
        with pytest.raises(QueueFullError, match="'q' holds 5 unconsumed messages and max_queue_size is 5"):
            await bus.publish("q", "one too many")
        got = await bus.read("q", group="g", count=3)
        with pytest.raises(QueueFullError):  # read but not acked: still unconsumed
            await bus.publish("q", "still full")
        await bus.ack(*got)
        with pytest.raises(QueueFullError):  # room for 3, a batch of 4: none of it goes in
            await bus.publish_many("q", ["a", "b", "c", "d"])
        assert raw.xlen(bus.keys.stream("q")) == 5
        await bus.publish_many("q", ["a", "b", "c"])
        with pytest.raises(QueueFullError):
            await bus.publish("q", "urgent", priority=9)  # lanes count too
        assert await bus.publish("q", "later", delay=60)  # a delayed message is not queued yet
        assert [m.payload for m in await bus.history("q", limit=100)][-3:] == ["a", "b", "c"]


async def test_queue_size_follows_the_group_furthest_behind(redis_url: str, prefix: str) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, max_queue_size=3) as bus:
        await bus.read("q", group="fast", count=1, block_ms=1)
        await bus.read("q", group="slow", count=1, block_ms=1)
        await bus.publish_many("q", [1, 2, 3])
        await bus.ack(*(await bus.read("q", group="fast", count=3)))
        with pytest.raises(QueueFullError):
            await bus.publish("q", 4)
        await bus.ack(*(await bus.read("q", group="slow", count=1)))
        await bus.publish("q", 4)


async def test_drop_oldest_keeps_the_newest_and_counts(redis_url: str, prefix: str, raw: redis.Redis) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, max_queue_size=5, overflow="drop_oldest") as bus:
        await bus.read("d", group="g", count=1, block_ms=1)
        await bus.publish_many("d", list(range(5)))
        held = await bus.read("d", group="g", consumer="c", count=2)  # 0, 1 pending
        for n in range(5, 8):
            await bus.publish("d", n)
        assert [m.payload for m in await bus.history("d")] == [3, 4, 5, 6, 7]
        assert raw.hget(bus.keys.counters("d"), "dropped_overflow") == b"3"
        assert raw.xpending(bus.keys.stream("d"), "g")["pending"] == 0  # dropped pending were acked
        assert await bus.ack(*held) == 0
        assert [m.payload for m in await bus.read("d", group="g", count=10)] == [3, 4, 5, 6, 7]
        with pytest.raises(QueueFullError):  # a single batch larger than the queue
            await bus.publish_many("d", list(range(6)))


# -- stats -----------------------------------------------------------------------------------


async def test_stats_against_a_known_state(bus: Bus) -> None:
    await bus.publish_many("s", list(range(10)))
    await bus.publish("s", "urgent", priority=5)
    await bus.publish("s", "later", delay=60)
    got = await bus.read("s", group="g", consumer="c1", count=4)  # the urgent one first
    await bus.ack(*got[:2])
    await bus.dead_letter(got[2], "test")
    await bus.publish("s", "short", ttl=0.05)
    await asyncio.sleep(0.1)
    await bus.read("s", group="other", count=20)

    stats = await bus.stats()
    assert [t.topic for t in stats.topics] == ["s"]
    [topic] = stats.topics
    assert (topic.length, topic.lanes, topic.delayed, topic.dlq_length) == (12, {0: 11, 5: 1}, 1, 1)
    assert topic.counts == {"expired": 1}
    assert topic.memory_bytes > 0
    groups = {g.name: g for g in topic.groups}
    assert set(groups) == {"g", "other"}
    g = groups["g"]
    assert (g.pending, g.lag, g.consumers) == (1, 8, 1)
    assert g.oldest_pending_age_s is not None and 0 <= g.oldest_pending_age_s < 30
    other = groups["other"]
    assert (other.pending, other.lag) == (11, 0)  # the expired one was acked when it was read
    assert stats.server.redis_version and stats.server.connected_clients >= 1
    assert stats.server.memory.used_memory > 0
    assert any("1 dead letters" in r for r in stats.recommendations)
    assert stats.model_dump_json()  # plain data, serialisable


async def test_stats_name_the_server_and_its_own_version(bus: Bus, raw: redis.Redis) -> None:
    """Valkey's INFO says redis_version 7.2.4 (what it is compatible with): stats name the
    server and its own version, as HELLO does."""
    node = raw.get_primaries()[0].redis_connection if isinstance(raw, RedisCluster) else raw
    said = {k.decode(): v for k, v in node.execute_command("HELLO").items()}
    server = (await bus.stats()).server
    assert (server.server_name, server.server_version) == (said["server"].decode(), said["version"].decode())
    assert server.redis_version  # what the server calls itself to Redis clients


async def test_stats_of_an_empty_bus(bus: Bus) -> None:
    stats = await bus.stats()
    assert stats.topics == [] and stats.prefix == bus.config.prefix


async def test_pattern_subscription_keeps_working_with_filters(bus: Bus) -> None:
    seen: list[str] = []

    @bus.subscribe("agents.*", group="g", filter={"payload.ok": True})
    async def handle(msg: Message) -> None:
        seen.append(msg.topic)

    async with running(bus):
        await asyncio.sleep(0.1)
        await bus.publish("agents.a", {"ok": True})
        await bus.publish("agents.b", {"ok": False})
        await bus.publish("agents.c", {"ok": True})
        await wait_for(lambda: sorted(seen) == ["agents.a", "agents.c"] and bus.counters["filtered"] == 1)

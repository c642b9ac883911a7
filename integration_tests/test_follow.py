"""Resumable streams: bus.follow and bus.close_topic (docs/streams.md) on real Redis, both
lines and the cluster."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from relaybus import Bus, Message, RelayBusError, SyncBus, TopicClosedError
from relaybus.embedded import EmbeddedRedis

from .conftest import sync_client
from .helpers import wait_for

FAST = {"socket_timeout": 1.0, "connect_timeout": 0.5, "health_check_interval_s": 0.2}


async def collect(
    bus: Bus, topic: str, after: str | None = None, into: list[Message] | None = None
) -> list[Message]:
    got = into if into is not None else []
    async for message in bus.follow(topic, after):
        got.append(message)
    return got


def stored(raw: redis.Redis, bus: Bus, topic: str) -> list[str]:
    return [eid.decode() for eid, _ in raw.xrange(bus.keys.stream(topic))]


async def test_replay_then_live_has_no_gap_and_no_duplicate(bus: Bus, raw: redis.Redis) -> None:
    """Followers start at random positions while a publisher keeps publishing; each one's
    sequence is the stream's order from its position, whole, each entry once."""
    topic, rng = "runs.seam", random.Random(26)
    await bus.publish_many(topic, list(range(100)))
    followers: list[tuple[str | None, asyncio.Task[list[Message]]]] = []
    for i in range(100, 700):
        if i % 7 == 0:
            await bus.publish_many(topic, [i, i + 0.5])
        else:
            await bus.publish(topic, i)
        if i % 40 == 0:  # a follower from a random position, the publisher not waiting for it
            ids = [eid.decode() for eid, _ in await bus._engine.ctx.redis.xrange(bus.keys.stream(topic))]
            after = None if len(followers) % 4 == 0 else rng.choice(ids)
            followers.append((after, asyncio.create_task(collect(bus, topic, after))))
        if i % 5 == 0:
            await asyncio.sleep(0)
    await bus.close_topic(topic)
    results = await asyncio.wait_for(asyncio.gather(*(task for _, task in followers)), 60)
    ids = stored(raw, bus, topic)
    assert len(ids) == 700 + 85 and len(followers) == 15  # 85 of the publishes were pairs
    for (after, _), got in zip(followers, results, strict=True):
        expected = ids if after is None else ids[ids.index(after) + 1 :]
        assert [m.entry_id for m in got] == expected


async def test_many_followers_each_get_everything(bus: Bus) -> None:
    topic = "runs.fan"
    got: list[list[Message]] = [[] for _ in range(25)]
    tasks = [asyncio.create_task(collect(bus, topic, None, into)) for into in got]
    await asyncio.sleep(0.1)
    sent = [await bus.publish(topic, i) for i in range(50)]
    sent += await bus.publish_many(topic, list(range(50, 150)))
    await wait_for(lambda: all(len(g) == 150 for g in got))
    await bus.close_topic(topic)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    for g in got:
        assert [m.id for m in g] == sent


async def test_a_delayed_message_reaches_followers_when_due_without_any_group(bus: Bus) -> None:
    """Nothing but a follower reads the topic: the follower moves due delayed entries itself."""
    got: list[Message] = []
    task = asyncio.create_task(collect(bus, "runs.later", None, got))
    await bus.publish("runs.later", "now")
    await bus.publish("runs.later", "later", delay=0.3)
    await wait_for(lambda: [m.payload for m in got] == ["now", "later"], 5)
    task.cancel()


def clients(raw: redis.Redis | RedisCluster) -> int:
    """Connections to the server, or to every node of the cluster (CLIENT LIST)."""
    if isinstance(raw, RedisCluster):
        return sum(len(raw.client_list(target_nodes=node)) for node in raw.get_nodes())
    return len(raw.client_list())


async def test_followers_of_a_thousand_topics_share_the_doorbell(
    bus: Bus, raw: redis.Redis, redis_line: str
) -> None:
    """No connection and no blocking read per follower: 1,000 followers use the connections
    one does (counted in CLIENT LIST). On a cluster the command pools may open more under
    the load of 1,000 replays at once, up to their size, never one per follower."""
    topics = [f"many.{i}" for i in range(1000)]
    got: dict[str, list[Message]] = {t: [] for t in topics}
    tasks = [asyncio.create_task(collect(bus, topics[0], None, got[topics[0]]))]
    await bus.publish(topics[0], "hello")
    await wait_for(lambda: len(got[topics[0]]) == 1)
    one = clients(raw)
    tasks += [asyncio.create_task(collect(bus, t, None, got[t])) for t in topics[1:]]
    for t in topics:
        await bus.publish(t, "hello")
    await wait_for(lambda: all(len(g) >= 1 for g in got.values()), 30)
    await bus.publish(topics[500], "live")  # every follower is waiting now, on the doorbell
    await wait_for(lambda: len(got[topics[500]]) == 2)
    if redis_line == "cluster":
        assert clients(raw) <= one + 3 * bus.config.max_connections
    else:
        assert clients(raw) == one
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_close_ends_followers_after_the_last_message(bus: Bus) -> None:
    topic = "runs.closing"
    early = asyncio.create_task(collect(bus, topic))
    await asyncio.sleep(0.05)
    sent = await bus.publish_many(topic, list(range(30)))
    sent.append(await bus.publish(topic, "last"))
    await bus.close_topic(topic)
    assert [m.id for m in await asyncio.wait_for(early, 10)] == sent
    # one that starts after the close reads everything, then ends too
    assert [m.id for m in await asyncio.wait_for(collect(bus, topic), 10)] == sent


async def test_a_closed_topic_refuses_every_publish_path(bus: Bus, raw: redis.Redis, tmp_path: Path) -> None:
    topic = "runs.shut"
    await bus.publish(topic, "before")
    await bus.close_topic(topic)
    length = raw.xlen(bus.keys.stream(topic))
    attempts = {
        "plain append": bus.publish(topic, 1),
        "publish_many": bus.publish_many(topic, [1, 2]),
        "scripted (dedup key)": bus.publish(topic, 1, dedup_key="k"),
        "delayed": bus.publish(topic, 1, delay=5),
        "priority lane": bus.publish(topic, 1, priority=5),
    }
    for path, attempt in attempts.items():
        with pytest.raises(TopicClosedError, match="closed"):
            await attempt
            pytest.fail(f"{path} was not refused")
    assert raw.xlen(bus.keys.stream(topic)) == length
    assert raw.zcard(bus.keys.delayed(topic)) == 0
    # the outbox's flush: what it held for the topic can never be sent - dropped, loudly
    async with Bus.from_url(bus.config.url, prefix=bus.config.prefix, outbox_path=tmp_path / "o.db") as other:
        other._engine.publisher.backlog = True  # as after an outage: publishes queue in the outbox
        await other.publish(topic, "queued")
        assert await other._engine.publisher.flush() == 0
        assert other.counters["outbox_dropped_closed"] == 1
        assert (
            other._engine.publisher.outbox is not None and await other._engine.publisher.outbox.count() == 0
        )
    assert raw.xlen(bus.keys.stream(topic)) == length


async def test_close_sets_the_topic_keys_to_expire(bus: Bus, raw: redis.Redis) -> None:
    topic = "runs.expiring"
    await bus.publish(topic, "a")
    await bus.publish(topic, "b", priority=3)  # a lane stream
    await bus.read(topic, "g")  # a group
    await bus.publish(topic, "c", delay=600)  # not yet due at the close: dropped
    assert await bus.close_topic(topic, keep_s=30) == 1
    keys = [
        bus.keys.stream(topic),
        bus.keys.lane(topic, 3),
        bus.keys.lanes(topic),
        bus.keys.closed(topic),
        bus.keys.retry(topic, "g"),
    ]
    for key in keys:
        assert 0 < raw.pttl(key) <= 30_000, key
    assert raw.zcard(bus.keys.delayed(topic)) == 0
    await bus.close_topic(topic, keep_s=0.2)  # closing again sets the expiry anew
    await wait_for(lambda: not any(raw.exists(k) for k in keys), 5)
    await bus.publish(topic, "a new life")  # expired: the name is free again


async def test_following_a_topic_with_priority_lanes_is_refused(bus: Bus) -> None:
    await bus.publish("runs.lanes", "x", priority=4)
    with pytest.raises(RelayBusError, match="priority lanes"):
        await asyncio.wait_for(collect(bus, "runs.lanes"), 5)


async def test_bad_arguments_are_refused(bus: Bus) -> None:
    with pytest.raises(ValueError, match="entry id"):
        bus.follow("t", after="not-an-id")
    with pytest.raises(ValueError, match="invalid topic"):
        bus.follow("a b")
    with pytest.raises(ValueError, match="keep_s"):
        await bus.close_topic("t", keep_s=0)


def test_sync_follow(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        ids = bus.publish_many("sync.f", [1, 2, 3])
        first = next(iter(bus.follow("sync.f")))
        assert first.id == ids[0]
        bus.close_topic("sync.f")
        assert [m.id for m in bus.follow("sync.f", after=first.entry_id)] == ids[1:]
        with pytest.raises(TopicClosedError):
            bus.publish("sync.f", 4)


async def test_follow_resumes_across_a_redis_restart(aof_server: EmbeddedRedis, prefix: str) -> None:
    """A follower reading when Redis is killed (-9) reads on, from where it was, once Redis
    is back from its AOF; one resuming from the last entry id it saw gets the rest too.
    Neither misses nor repeats an entry."""
    async with Bus.from_url(aof_server.url, prefix=prefix, **FAST) as bus:
        before = await bus.publish_many("runs.crash", list(range(1200)))  # more than a page (500)
        got: list[Message] = []
        killed = asyncio.Event()

        async def follower() -> None:
            async for message in bus.follow("runs.crash"):
                got.append(message)
                if len(got) == 100:
                    await killed.wait()  # the rest of this page is in hand; the next read fails

        following = asyncio.create_task(follower())
        await wait_for(lambda: len(got) == 100)
        aof_server.kill()
        killed.set()
        await asyncio.sleep(0.5)
        assert len(got) == 500
        aof_server.start()
        after: list[str] = []
        for i in range(50):
            while True:
                try:
                    after.append(await bus.publish("runs.crash", i))
                    break
                except RelayBusError:
                    await asyncio.sleep(0.1)
        await wait_for(lambda: len(got) >= 1250, 15)
        await bus.close_topic("runs.crash")
        await asyncio.wait_for(following, 10)
        assert [m.id for m in got] == before + after
        resumed = await asyncio.wait_for(collect(bus, "runs.crash", got[1199].entry_id), 10)
        assert [m.id for m in resumed] == after
        client = sync_client(aof_server.url)
        assert len(client.xrange(bus.keys.stream("runs.crash"))) == 1250
        client.close()


async def test_a_topic_served_as_server_sent_events_resumes_after_last_event_id(bus: Bus) -> None:
    pytest.importorskip("sse_starlette")
    import httpx
    from starlette.applications import Starlette
    from starlette.routing import Route

    from relaybus.sse import topic_events

    app = Starlette(routes=[Route("/runs/{topic}", topic_events(bus))])
    sent = await bus.publish_many("runs.sse", ["a", "b"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        whole = asyncio.create_task(http.get("/runs/runs.sse"))
        await asyncio.sleep(0.2)
        sent.append(await bus.publish("runs.sse", "live"))
        await bus.close_topic("runs.sse")
        body = (await asyncio.wait_for(whole, 10)).text
        entry_ids = [m.entry_id or "" for m in await collect(bus, "runs.sse")]
        resumed = await http.get("/runs/runs.sse", headers={"Last-Event-ID": entry_ids[0]})
        bad = await http.get("/runs/runs.sse", headers={"Last-Event-ID": "nope"})

    def events(text: str) -> list[tuple[str, str]]:
        blocks = [
            dict(
                line.split(": ", 1)
                for line in block.splitlines()
                if ": " in line and not line.startswith(":")
            )
            for block in text.replace("\r\n", "\n").split("\n\n")
            if block.strip()
        ]
        return [(b.get("event", ""), b.get("id", "")) for b in blocks]

    assert events(body) == [*[("message", e) for e in entry_ids], ("closed", "")]
    assert [m.id for m in await collect(bus, "runs.sse")] == sent
    assert events(resumed.text) == [*[("message", e) for e in entry_ids[1:]], ("closed", "")]
    assert bad.status_code == 400 and "entry id" in bad.text


async def test_a_closed_topic_leaves_the_registry_once_its_keys_expired(bus: Bus, raw: redis.Redis) -> None:
    """After keep_s, cleanup takes a closed topic out of topics() (the registry grows by
    one name per MCP stream or A2A task otherwise); a live topic stays, and so does a
    closed one published again after it expired."""
    for topic in ("runs.live", "runs.closed", "runs.again"):
        await bus.publish(topic, 1)
    await bus.close_topic("runs.closed", keep_s=0.2)
    await bus.close_topic("runs.again", keep_s=0.2)
    await bus.cleanup()  # before the deadline: nothing leaves
    assert await bus.topics() == ["runs.again", "runs.closed", "runs.live"]
    await wait_for(lambda: not raw.exists(bus.keys.stream("runs.closed"), bus.keys.stream("runs.again")))
    await bus.publish("runs.again", 2)  # a new topic of the same name, live
    await bus.cleanup()
    assert await bus.topics() == ["runs.again", "runs.live"]
    assert raw.zcard(bus.keys.closing) == 0
    await bus.cleanup()
    assert await bus.topics() == ["runs.again", "runs.live"]


async def test_a_bus_remembers_few_registrations_and_none_of_closed_topics(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publisher's registration times stay bounded (MAX_REGISTERED) and drop a closed
    topic, so they do not grow with every stream a server ever opened."""
    monkeypatch.setattr("relaybus.engine.publisher.MAX_REGISTERED", 2)
    registered = bus._engine.publisher._registered
    for topic in ("runs.a", "runs.b", "runs.c"):
        await bus.publish(topic, 1)
    assert list(registered) == ["runs.b", "runs.c"]
    await bus.close_topic("runs.c", keep_s=60)
    assert list(registered) == ["runs.b"]
    assert await bus.topics() == ["runs.a", "runs.b", "runs.c"]  # the registry itself is whole

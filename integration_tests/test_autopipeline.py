"""Auto-pipelining (engine/autopipeline.py): concurrent calls share round trips on one
connection, and each caller still gets its own id, its own error and the same
guarantees. One server only: a Cluster client keeps a pool per node."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis

from relaybus import Bus, QueueFullError, RedisFullError
from relaybus.embedded import EmbeddedRedis, free_port

from .helpers import running, wait_for


def clients(raw: redis.Redis) -> int:
    return int(raw.info("clients")["connected_clients"])


async def test_concurrent_publishes_share_a_connection_and_each_gets_its_id(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    async with Bus.from_url(redis_url, prefix=prefix) as bus:
        await bus.publish("burst", {"n": -1})
        before = clients(raw)
        ids = await asyncio.gather(*(bus.publish("burst", {"n": n}) for n in range(200)))
        assert clients(raw) <= before + 1  # not a connection per publish
        assert len(set(ids)) == 200
        stored = [m.id for m in await bus.history("burst", limit=300)]
        assert stored[1:] == ids  # each its own id, in the order the calls were made


def script_runs(raw: redis.Redis) -> int:
    return int(raw.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_appends_to_one_topic_share_one_script_run(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """Queued plain appends to one topic are merged into one append.lua call; every
    message is still there once, in the order of the calls, and other topics' calls
    in the same round trip are not merged with them."""
    async with Bus.from_url(redis_url, prefix=prefix) as bus:
        await bus.publish("merged", -1)
        await bus.publish("apart", -1)
        before = script_runs(raw)
        calls = [bus.publish(topic, n) for n in range(100) for topic in ("merged", "apart")]
        ids = await asyncio.gather(*calls)
        assert script_runs(raw) - before < 100  # 200 publishes, far fewer script runs
        for topic, mine in (("merged", ids[0::2]), ("apart", ids[1::2])):
            stored = await bus.history(topic, limit=200)
            assert [m.id for m in stored][1:] == mine
            assert [m.payload for m in stored][1:] == list(range(100))


async def test_merged_appends_refused_by_a_full_redis_fail_every_caller(
    server_factory: Callable[..., EmbeddedRedis], prefix: str
) -> None:
    """A merged call is refused whole (maxmemory, noeviction): every caller it carried
    gets RedisFullError and none of their messages is appended."""
    with server_factory(port=free_port()) as server:
        admin = redis.Redis.from_url(server.url)
        async with Bus.from_url(server.url, prefix=prefix) as bus:
            await bus.publish("full", -1)
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 100_000)
            results = await asyncio.gather(
                *(bus.publish("full", n) for n in range(50)), return_exceptions=True
            )
            assert all(isinstance(r, RedisFullError) for r in results), results
            assert admin.xlen(bus.keys.stream("full")) == 1
            admin.config_set("maxmemory", 0)
            assert await bus.publish("full", 50)
        admin.close()


async def test_each_caller_gets_its_own_error(redis_url: str, prefix: str) -> None:
    """A refused publish (max_queue_size) in a shared round trip fails only its caller."""
    async with Bus.from_url(redis_url, prefix=prefix, max_queue_size=1) as bus:
        await bus.publish("full", 0)
        calls = [bus.publish(topic, n) for n in range(20) for topic in ("full", "free")]
        results = await asyncio.gather(*calls, return_exceptions=True)
        full, free = results[0::2], results[1::2]
        assert all(isinstance(r, QueueFullError) for r in full)
        assert [isinstance(r, str) for r in free].count(True) == 1  # the first fits, the rest are refused
        assert await bus.history("full") and len(await bus.history("free")) == 1


async def test_a_cancelled_caller_leaves_the_others_whole(redis_url: str, prefix: str) -> None:
    async with Bus.from_url(redis_url, prefix=prefix) as bus:
        await bus.publish("mixed", -1)
        tasks = [asyncio.create_task(bus.publish("mixed", n)) for n in range(100)]
        await asyncio.sleep(0)
        for task in tasks[::10]:
            task.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        ids = [r for r in done if isinstance(r, str)]
        assert len(ids) >= 90
        stored = {m.id for m in await bus.history("mixed", limit=200)}
        assert set(ids) <= stored  # a cancelled one may or may not be there, as any in flight
        got: list[int] = []

        @bus.subscribe("mixed", group="g")
        async def handle(msg: object) -> None:
            got.append(1)

        async with running(bus):
            await wait_for(lambda: len(got) == len(stored))


async def test_the_first_call_after_redis_restarted_goes_through(
    server_factory: Callable[..., EmbeddedRedis], prefix: str
) -> None:
    """The held connection was left idle, Redis restarted under it: the next round trip
    goes on a new connection (as a pooled one is checked at checkout), not on the dead one
    - which failed the first read after every restart (reads are not retried)."""
    with server_factory(port=free_port(), args=["--appendonly", "yes", "--appendfsync", "always"]) as server:
        async with Bus.from_url(server.url, prefix=prefix) as bus:
            mid = await bus.publish("jobs", 1)  # the held connection is open from here
            server.kill()
            await asyncio.sleep(0.2)  # away a moment, the bus idle: its loop sees the connection end
            server.start()
            assert [m.id for m in await bus.read("jobs", "g")] == [mid]
            assert await bus.publish("jobs", 2)
            assert bus.health.failures == 0  # nothing failed on the way

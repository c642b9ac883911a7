"""Auto-pipelining (engine/autopipeline.py): concurrent calls share round trips on one
connection, and each caller still gets its own id, its own error and the same
guarantees. One server only: a Cluster client keeps a pool per node."""

from __future__ import annotations

import asyncio

import redis

from relaybus import Bus, QueueFullError

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

"""The engine's one road to Redis (docs/architecture.md, "The road to Redis"): every
command of publishing, consuming, settling and reading retained data goes through
`Scripts`, never redis-py's own command path or a pipeline of its own beside it."""

from __future__ import annotations

import asyncio
from typing import Any

from relaybus import Bus, Message, Reject

from .helpers import running, wait_for

# what may still take redis-py's own path (the documented exceptions): the keyless PING
# of the health check, and Scripts' own SCRIPT LOAD on a Cluster
ALLOWED = {"PING", "SCRIPT LOAD"}


def record(client: Any) -> list[str]:
    """Every command the pooled client is asked for by its own path, and every pipeline."""
    sent: list[str] = []
    execute, pipeline = client.execute_command, client.pipeline

    async def recording(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await execute(*args, **options)

    def recording_pipeline(*args: Any, **options: Any) -> Any:
        sent.append("pipeline")
        return pipeline(*args, **options)

    client.execute_command, client.pipeline = recording, recording_pipeline
    return sent


async def test_every_engine_command_goes_through_scripts(redis_url: str, prefix: str) -> None:
    async with (
        Bus.from_url(
            redis_url, prefix=prefix, claim_idle_ms=500, max_attempts=2, retry_backoff_s=0.05
        ) as bus,
        Bus.from_url(redis_url, prefix=prefix) as asker,
    ):
        sent = record(bus._engine.ctx.redis)
        handled: list[str] = []

        @bus.subscribe(["road.work"], group="g")
        async def work(message: Message) -> None:
            if message.payload == "reject":
                raise Reject("no")
            if message.payload == "flaky" and message.attempt == 1:
                raise RuntimeError("once")
            handled.append(message.payload)

        @bus.subscribe(["road.ask"], group="g")
        async def answer(message: Message) -> None:
            await bus.reply(message, {"ok": message.payload})

        await bus.publish("road.work", "plain")
        await bus.publish("road.work", "urgent", priority=9, dedup_key="k")
        await bus.publish_many("road.work", ["reject", "flaky"], delay=0.1)
        async with running(bus):
            await wait_for(lambda: sorted(handled) == ["flaky", "plain", "urgent"], 10)
            reply = await asker.request("road.ask", 7, timeout=10)
            assert reply.payload == {"ok": 7}

        await bus.publish("road.pull", "a")
        await bus.publish("road.pull", "b")
        await bus.publish("road.pull", "gone", ttl=0.05)
        await asyncio.sleep(0.1)
        pulled = await bus.read("road.pull", "p", count=10)  # the expired one is acked and counted
        assert sorted(m.payload for m in pulled) == ["a", "b"]
        assert await bus.ack(pulled[0]) == 1
        assert await bus.dead_letter(pulled[1], "by hand")

        assert {m.payload for m in await bus.history("road.work")} >= {"plain", "urgent"}
        assert [m.payload for m in await bus.dead_letters("road.pull")] == ["b"]
        assert await bus.replay_dead_letters("road.pull") == 1
        [again] = await bus.read("road.pull", "p")
        assert await bus.dead_letter(again, "twice")
        assert await bus.purge_dead_letters("road.pull") == 1
        assert [m.payload for m in await bus.dead_letters("road.work")] == ["reject"]
        await bus.set_retention("road.work", keep_len=1)
        assert (await bus.retention("road.work")) is not None
        await bus.trim("road.work", keep_len=0)
        await bus.trim_dead_letters("road.work", keep_len=0)
        assert set(await bus.topics()) >= {"road.work", "road.pull", "road.ask"}
        followed = bus.follow("road.f")
        await bus.publish("road.f", "one")
        assert (await anext(followed)).payload == "one"
        await followed.aclose()
        await bus.close_topic("road.f")
    assert set(sent) <= ALLOWED, sent

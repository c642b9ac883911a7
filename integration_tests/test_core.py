"""Core delivery against a real Redis: publish, groups, pull reads, push handlers."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest
import redis

from relaybus import Bus, Message, RelayBusError

from .helpers import run_until, running, wait_for


async def test_publish_read_ack(bus: Bus) -> None:
    mid = await bus.publish("tasks.review", {"pr": 42}, headers={"k": "v"}, sender="planner")
    [msg] = await bus.read("tasks.review", group="g", consumer="c1", count=10)
    assert (msg.id, msg.topic, msg.payload, msg.headers, msg.sender) == (
        mid,
        "tasks.review",
        {"pr": 42},
        {"k": "v"},
        "planner",
    )
    assert msg.attempt == 1 and msg.group == "g" and msg.entry_id
    assert await bus.ack(msg) == 1
    pending = await bus._engine.ctx.redis.xpending(bus.keys.stream("tasks.review"), "g")
    assert pending["pending"] == 0
    assert await bus.ack(msg) == 0  # already acknowledged


async def test_publish_many_ids_in_order(bus: Bus) -> None:
    ids = await bus.publish_many("t", [{"n": i} for i in range(50)])
    assert len(set(ids)) == 50 and ids == sorted(ids)  # client-made ids sort by time
    msgs = await bus.read("t", group="g", count=100)
    assert [m.id for m in msgs] == ids
    assert [m.payload["n"] for m in msgs] == list(range(50))


async def test_two_groups_each_get_every_message(bus: Bus) -> None:
    ids = await bus.publish_many("fan", [1, 2, 3])
    a = await bus.read("fan", group="a", count=10)
    b = await bus.read("fan", group="b", count=10)
    assert [m.id for m in a] == ids == [m.id for m in b]


async def test_late_group_gets_earlier_messages(bus: Bus) -> None:
    ids = await bus.publish_many("early", ["x", "y"])
    await bus.read("early", group="first", count=10)
    late = await bus.read("early", group="late", count=10)
    assert [m.id for m in late] == ids
    latest = await bus.read("early", group="tail-only", count=10, start="latest")
    assert latest == []


async def test_read_returns_own_pending_only_once_idle_past_claim_idle_ms(bus: Bus) -> None:
    await bus.publish_many("own", [1, 2])
    first = await bus.read("own", group="g", consumer="c1", count=1)
    again = await bus.read("own", group="g", consumer="c1", count=10)
    assert [m.payload for m in first] == [1] and [m.payload for m in again] == [2]
    assert await bus.read("own", group="g", consumer="c1", count=10) == []  # not idle yet
    # past claim_idle_ms its own unacked entries come back to it, as to any consumer
    await asyncio.sleep(bus.config.claim_idle_ms / 1000 + 0.2)
    back = await bus.read("own", group="g", consumer="c1", count=10)
    assert [(m.payload, m.attempt) for m in back] == [(1, 2), (2, 2)]
    assert await bus.ack(*back) == 2


async def test_reclaim_after_claim_idle_ms(bus: Bus) -> None:
    mid = await bus.publish("work", {"job": 1})
    [taken] = await bus.read("work", group="g", consumer="dies", count=1)
    assert await bus.read("work", group="g", consumer="other", count=1) == []  # not idle yet
    await asyncio.sleep(bus.config.claim_idle_ms / 1000 + 0.2)
    [again] = await bus.read("work", group="g", consumer="other", count=1)
    assert again.id == mid == taken.id
    assert again.attempt >= 2
    await bus.ack(again)
    assert await bus.ack(taken) == 0  # the dead consumer's late ack changes nothing


async def test_history_order_and_limit(bus: Bus) -> None:
    ids = await bus.publish_many("hist", list(range(10)))
    latest = await bus.history("hist", limit=4)
    assert [m.id for m in latest] == ids[-4:]  # the latest four, oldest first
    assert [m.payload for m in await bus.history("hist", limit=100)] == list(range(10))
    assert await bus.history("nothing-here") == []


async def test_handlers_receive_and_ack(bus: Bus) -> None:
    ids = await bus.publish_many("jobs", [{"n": i} for i in range(30)])
    seen: list[str] = []

    @bus.subscribe("jobs", group="workers", concurrency=4)
    async def handle(msg: Message) -> None:
        seen.append(msg.id)

    await run_until(bus, lambda: len(seen) >= 30)
    assert sorted(seen) == sorted(ids)
    pending = await bus._engine.ctx.redis.xpending(bus.keys.stream("jobs"), "workers")
    assert pending["pending"] == 0  # stop() waited for the acks


async def test_sync_handler_runs_in_a_thread(bus: Bus) -> None:
    await bus.publish("sync-handler", "hello")
    seen: list[tuple[str, bool]] = []

    @bus.subscribe("sync-handler", group="g")
    def handle(msg: Message) -> None:
        seen.append((msg.payload, threading.current_thread() is threading.main_thread()))

    await run_until(bus, lambda: len(seen) == 1)
    assert seen == [("hello", False)]  # not on the loop the other handlers share


async def test_failed_handler_without_policy_is_redelivered(bare_bus: Bus) -> None:
    """No on_failure plugin: the message stays pending and comes back, never dropped."""
    mid = await bare_bus.publish("flaky", {"x": 1})
    attempts: list[int] = []

    @bare_bus.subscribe("flaky", group="g")
    async def handle(msg: Message) -> None:
        attempts.append(msg.attempt)
        if len(attempts) == 1:
            raise RuntimeError("first try fails")

    await run_until(bare_bus, lambda: len(attempts) >= 2, seconds=10)
    assert attempts[:2] == [1, 2]
    assert (await bare_bus.history("flaky"))[0].id == mid


async def test_stop_waits_for_in_flight_handlers(bus: Bus) -> None:
    await bus.publish_many("slow", [1, 2, 3])
    finished: list[int] = []
    started = asyncio.Event()

    @bus.subscribe("slow", group="g", concurrency=3)
    async def handle(msg: Message) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.append(msg.payload)

    runner = asyncio.create_task(bus.run())
    await asyncio.wait_for(started.wait(), 5)
    await bus.stop()
    await runner
    assert sorted(finished) == [1, 2, 3]
    pending = await bus._engine.ctx.redis.xpending(bus.keys.stream("slow"), "g")
    assert pending["pending"] == 0


async def test_garbage_entry_does_not_stop_delivery(bus: Bus, raw: redis.Redis) -> None:
    await bus.publish("mixed", {"n": 1})
    raw.xadd(bus.keys.stream("mixed"), {"foreign": "not an envelope"})
    raw.xadd(bus.keys.stream("mixed"), {"v": "1", "m": "{broken json"})
    await bus.publish("mixed", {"n": 2})
    seen: list[int] = []

    @bus.subscribe("mixed", group="g")
    async def handle(msg: Message) -> None:
        seen.append(msg.payload["n"])

    await run_until(bus, lambda: seen == [1, 2])
    dead = await bus.dead_letters("mixed")
    assert [d.headers["x-dead-reason"] for d in dead] == ["undecodable", "undecodable"]
    assert dead[0].payload == {"raw": {"foreign": "not an envelope"}}
    pending = await bus._engine.ctx.redis.xpending(bus.keys.stream("mixed"), "g")
    assert pending["pending"] == 0


async def test_stream_deleted_under_running_subscription(bus: Bus) -> None:
    seen: list[int] = []

    @bus.subscribe("fragile", group="g")
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)

    async with running(bus):
        await bus.publish("fragile", 1)
        await wait_for(lambda: seen == [1])
        await bus._engine.ctx.redis.delete(bus.keys.stream("fragile"))
        await asyncio.sleep(0.3)  # the reader is blocked on the deleted stream
        await bus.publish("fragile", 2)
        await bus.publish("fragile", 3)
        await wait_for(lambda: seen == [1, 2, 3])


async def test_pattern_subscription_picks_up_new_topics(bus: Bus) -> None:
    seen: list[str] = []

    @bus.subscribe("agents.*.events", group="g")
    async def handle(msg: Message) -> None:
        seen.append(msg.topic)

    async with running(bus):
        await asyncio.sleep(0.2)
        await bus.publish("agents.alpha.events", 1)
        await bus.publish("agents.beta.events", 2)
        await bus.publish("agents.beta.other", 3)
        await wait_for(lambda: sorted(seen) == ["agents.alpha.events", "agents.beta.events"])
    assert "agents.beta.other" not in seen


async def test_read_on_unconnected_bus_is_a_clear_error(redis_url: str) -> None:
    bus = Bus.from_url(redis_url)
    with pytest.raises(RelayBusError, match="not connected"):
        await bus.read("t", group="g")


async def test_restart_with_many_own_pending_delivers_each_once(redis_url: str, prefix: str) -> None:
    """A consumer with a stable name drains what an earlier run of it left pending."""
    async with Bus.from_url(redis_url, prefix=prefix, consumer_name="stable", claim_idle_ms=60_000) as bus:
        ids = await bus.publish_many("left", list(range(25)))
        assert len(await bus.read("left", group="g", count=25)) == 25  # pending, never acked
        seen: list[str] = []

        @bus.subscribe("left", group="g", concurrency=2)
        async def handle(msg: Message) -> None:
            seen.append(msg.id)

        await run_until(bus, lambda: len(seen) >= 25)
        await asyncio.sleep(0.2)
        assert sorted(seen) == sorted(ids)  # each once, none twice


async def test_read_recovers_when_the_stream_is_deleted(bus: Bus) -> None:
    await bus.publish("gone", 1)
    assert len(await bus.read("gone", group="g")) == 1
    await bus._engine.ctx.redis.delete(bus.keys.stream("gone"), bus.keys.retry("gone", "g"))
    await bus.publish("gone", 2)
    assert [m.payload for m in await bus.read("gone", group="g")] == [2]


async def test_stop_from_inside_a_handler(bus: Bus) -> None:
    await bus.publish_many("self-stop", [1, 2])
    seen: list[int] = []

    @bus.subscribe("self-stop", group="g")
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)
        await bus.stop()

    await asyncio.wait_for(bus.run(), 5)
    assert seen[0] == 1


async def test_broadcast_reaches_pattern_listeners(bus: Bus) -> None:
    got: list[Message] = []

    async def listen() -> None:
        async for message in bus.listen("alerts.*", "audit.?"):
            got.append(message)
            if len(got) == 2:
                return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)  # the subscription is live; earlier broadcasts would be lost
    assert await bus.broadcast("alerts.cpu", {"load": 0.9}) == 1
    await bus.broadcast("other.cpu", {"load": 0.1})
    await bus.broadcast("audit.x", "y")
    await asyncio.wait_for(listener, 5)
    assert [(m.topic, m.payload) for m in got] == [("alerts.cpu", {"load": 0.9}), ("audit.x", "y")]
    assert await bus.history("alerts.cpu") == []  # nothing stored


async def test_listening_to_everything_hears_no_other_prefix(redis_url: str, prefix: str) -> None:
    """A bus with prefix P listening to "*" must not hear the bus with prefix "P:bc"
    (whose channels, without braces round the topic, would start with P's pattern)."""
    got: list[Message] = []
    async with (
        Bus.from_url(redis_url, prefix=prefix) as outer,
        Bus.from_url(redis_url, prefix=f"{prefix}:bc") as inner,
    ):

        async def listen() -> None:
            async for message in outer.listen("*"):
                got.append(message)
                return

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.2)
        assert await inner.broadcast("x", {"from": "inner"}) == 0
        assert await outer.broadcast("x", {"from": "outer"}) == 1
        await asyncio.wait_for(listener, 5)
    assert [m.payload for m in got] == [{"from": "outer"}]


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda b: b.publish("t", 1, ttl=math.nan), ValueError, "ttl must be a finite number"),
        (lambda b: b.publish("t", 1, ttl=math.inf), ValueError, "ttl must be a finite number"),
        (lambda b: b.publish("t", 1, ttl="5"), TypeError, "ttl must be a number of seconds"),
        (lambda b: b.publish("t", 1, delay=math.inf), ValueError, "delay must be a finite number"),
        (lambda b: b.publish("t", 1, dedup_key="k", dedup_window=math.inf), ValueError, "dedup_window"),
        (lambda b: b.publish("t", 1, dedup_key=""), ValueError, "dedup_key must be a non-empty string"),
        (lambda b: b.history("t", limit=0), ValueError, "limit must be >= 1"),
        (lambda b: b.dead_letters("t", limit=-1), ValueError, "limit must be >= 1"),
        (lambda b: b.replay_dead_letters("t", ids="abc"), TypeError, "ids must be a list of id strings"),
        (lambda b: b.read("t", "g", start="middle"), ValueError, "start must be one of"),
        (lambda b: b.trim("t", keep_s=math.inf), ValueError, "keep_s must be a finite number"),
    ],
)
async def test_bad_numbers_and_choices_are_clear_errors_and_write_nothing(
    bus: Bus, raw: redis.Redis, call: Any, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        await call(bus)
    assert raw.exists(bus.keys.stream("t")) == 0

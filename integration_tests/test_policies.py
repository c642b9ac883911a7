"""The built-in delivery policies against a real Redis: retries and the DLQ, dedup,
priority lanes, delayed publish, typed handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
import redis
from pydantic import BaseModel

from relaybus import Bus, Message, RelayBusError
from relaybus.message import MAX_PAYLOAD_DEPTH

from .helpers import run_until


@pytest.fixture
async def fast_bus(redis_url: str, prefix: str) -> AsyncIterator[Bus]:
    """Built-in plugins on, short backoff, so retry tests take tenths of a second."""
    async with Bus.from_url(
        redis_url,
        prefix=prefix,
        claim_idle_ms=5000,
        max_attempts=3,
        retry_backoff_s=0.05,
        retry_backoff_max_s=0.2,
    ) as b:
        yield b


async def test_always_failing_handler_is_tried_max_attempts_then_dead_lettered(
    fast_bus: Bus, raw: redis.Redis
) -> None:
    bus = fast_bus
    mid = await bus.publish("pay", {"order": 7})
    attempts: list[int] = []

    @bus.subscribe("pay", group="billing")
    async def charge(msg: Message) -> None:
        attempts.append(msg.attempt)
        raise RuntimeError("card declined")

    await run_until(bus, lambda: raw.xlen(bus.keys.dlq("pay")) == 1)
    await asyncio.sleep(0.3)  # nothing more arrives after the move
    assert attempts == [1, 2, 3]
    [dead] = await bus.dead_letters("pay")
    assert dead.id == mid and dead.attempt == 3 and dead.payload == {"order": 7}
    assert dead.headers["x-dead-error"] == "card declined"
    assert dead.headers["x-dead-attempts"] == "3"
    for key in (bus.keys.stream("pay"), bus.keys.retry("pay", "billing")):
        assert raw.xpending(key, "billing")["pending"] == 0  # never in both places
    assert raw.zcard(bus.keys.delayed("pay")) == 0

    # replay puts it back with a fresh count, and empties the DLQ
    attempts.clear()
    assert await bus.replay_dead_letters("pay") == 1
    assert await bus.dead_letters("pay") == []
    await run_until(bus, lambda: raw.xlen(bus.keys.dlq("pay")) == 1)
    assert attempts == [1, 2, 3]


async def test_failing_once_then_succeeding_is_acked_without_dead_letter(
    fast_bus: Bus, raw: redis.Redis
) -> None:
    bus = fast_bus
    await bus.publish("flaky", 1)
    attempts: list[int] = []

    @bus.subscribe("flaky", group="g")
    async def handle(msg: Message) -> None:
        attempts.append(msg.attempt)
        if msg.attempt == 1:
            raise TimeoutError("upstream slow")

    await run_until(bus, lambda: attempts == [1, 2])
    assert raw.xlen(bus.keys.dlq("flaky")) == 0
    for key in (bus.keys.stream("flaky"), bus.keys.retry("flaky", "g")):
        assert raw.xpending(key, "g")["pending"] == 0


async def test_retry_waits_for_its_backoff(redis_url: str, prefix: str) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, retry_backoff_s=0.6) as bus:
        await bus.publish("slow-retry", 1)
        seen: list[float] = []

        @bus.subscribe("slow-retry", group="g")
        async def handle(msg: Message) -> None:
            seen.append(time.monotonic())
            if len(seen) == 1:
                raise RuntimeError("again")

        await run_until(bus, lambda: len(seen) == 2)
        assert 0.3 - 0.05 <= seen[1] - seen[0] <= 0.6 + 0.5  # jitter keeps it in [d/2, d]


class Order(BaseModel):
    order_id: int
    amount: float


async def test_typed_handler_gets_the_model_and_invalid_payloads_skip_retries(
    fast_bus: Bus, raw: redis.Redis
) -> None:
    bus = fast_bus
    await bus.publish("orders", {"order_id": 1, "amount": 9.5})
    bad = await bus.publish("orders", {"order_id": "not a number"})
    got: list[Order] = []

    @bus.subscribe("orders", group="g", model=Order)
    async def handle(msg: Message) -> None:
        got.append(msg.payload)

    await run_until(bus, lambda: got and raw.xlen(bus.keys.dlq("orders")) == 1)
    assert got == [Order(order_id=1, amount=9.5)]
    [dead] = await bus.dead_letters("orders")
    assert dead.id == bad and dead.attempt == 1  # no retries for a payload that cannot pass
    assert dead.headers["x-dead-reason"] == "invalid payload"
    assert dead.headers["x-dead-error-type"] == "ValidationError"
    assert dead.payload == {"order_id": "not a number"}  # the wire form, not the model


async def test_dedup_returns_the_original_id_and_appends_nothing(bus: Bus) -> None:
    first = await bus.publish("jobs", {"n": 1}, dedup_key="job-1")
    again = await bus.publish("jobs", {"n": 2}, dedup_key="job-1")
    other = await bus.publish("jobs", {"n": 3}, dedup_key="job-2")
    assert again == first != other
    assert [m.payload for m in await bus.history("jobs")] == [{"n": 1}, {"n": 3}]


async def test_dedup_window_expires(bus: Bus) -> None:
    first = await bus.publish("w", 1, dedup_key="k", dedup_window=0.2)
    await asyncio.sleep(0.3)
    second = await bus.publish("w", 1, dedup_key="k")
    assert second != first and len(await bus.history("w")) == 2


async def test_dedup_under_concurrent_publishers(bus: Bus) -> None:
    ids = await asyncio.gather(*(bus.publish("race", {"from": n}, dedup_key="same") for n in range(50)))
    assert len(set(ids)) == 1
    assert len(await bus.history("race")) == 1


async def test_dedup_in_publish_many_and_from_payload(redis_url: str, prefix: str) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, dedup_from_payload=True) as bus:
        ids = await bus.publish_many("p", [{"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": 2}])
        assert ids[0] == ids[1] != ids[2]  # same payload, keys in another order
        assert [m.payload for m in await bus.history("p")] == [{"a": 1, "b": 2}, {"a": 2}]
        again = await bus.publish("p", {"a": 2})
        assert again == ids[2]


@pytest.mark.parametrize("depth", [MAX_PAYLOAD_DEPTH + 1, 254, 255, 2_000])
async def test_dedup_from_payload_gives_the_core_error_for_a_too_deep_payload(
    redis_url: str, prefix: str, depth: int
) -> None:
    """The dedup plugin serialises the payload before the core does: past orjson's own 254
    levels it used to fail first (PluginError "Recursion limit reached"). Now every depth
    past the limit gets the core's error, with or without the plugin, and appends nothing."""
    payload: object = 1
    for _ in range(depth):
        payload = [payload]
    errors = []
    for derive in (False, True):
        async with Bus.from_url(redis_url, prefix=prefix, dedup_from_payload=derive) as bus:
            with pytest.raises(RelayBusError) as caught:
                await bus.publish("deep", payload)
            errors.append(str(caught.value))
            assert await bus.topics() == []  # nothing appended, nothing registered
    assert errors[0] == errors[1]
    assert f"nests deeper than {MAX_PAYLOAD_DEPTH} levels" in errors[1]


async def test_priority_message_overtakes_a_backlog_in_read(bus: Bus) -> None:
    for start in range(0, 10_000, 1000):
        await bus.publish_many("backlog", [{"n": n} for n in range(start, start + 1000)])
    urgent = await bus.publish("backlog", {"urgent": True}, priority=9)
    first = await bus.read("backlog", group="g", count=10)
    assert first[0].id == urgent and first[0].priority == 9
    assert len(first) == 10
    await bus.ack(*first)


async def test_priority_message_is_handled_first_by_run(bus: Bus) -> None:
    await bus.publish_many("queue", list(range(2000)))
    await bus.publish("queue", "mid", priority=5)
    await bus.publish("queue", "urgent", priority=9)
    order: list[object] = []

    @bus.subscribe("queue", group="g")
    async def handle(msg: Message) -> None:
        order.append(msg.payload)

    await run_until(bus, lambda: len(order) >= 5)
    assert order[:3] == ["urgent", "mid", 0]


async def test_priority_lanes_ack_reclaim_and_dead_letter_alike(fast_bus: Bus, raw: redis.Redis) -> None:
    bus = fast_bus
    mid = await bus.publish("lanes", "x", priority=7)
    [taken] = await bus.read("lanes", group="g", consumer="a")
    assert await bus.ack(taken) == 1
    await bus.publish("lanes", "y", priority=7)
    await bus.read("lanes", group="g", consumer="dies")
    async with Bus.from_url(bus.config.url, prefix=bus.config.prefix, claim_idle_ms=200) as other:
        await asyncio.sleep(0.3)
        [again] = await other.read("lanes", group="g", consumer="b")
        assert again.payload == "y" and again.attempt == 2
    fails: list[int] = []

    @bus.subscribe("lanes", group="h")
    async def handle(msg: Message) -> None:
        fails.append(msg.attempt)
        raise RuntimeError("no")

    await run_until(bus, lambda: raw.xlen(bus.keys.dlq("lanes")) == 2)
    assert {d.id for d in await bus.dead_letters("lanes")} >= {mid}
    assert sorted(fails) == [1, 1, 2, 2, 3, 3]


async def test_priority_disabled_keeps_fifo(bare_bus: Bus) -> None:
    await bare_bus.publish_many("fifo", [1, 2])
    await bare_bus.publish("fifo", 3, priority=9)
    assert [m.payload for m in await bare_bus.read("fifo", group="g")] == [1, 2, 3]


async def test_delayed_publish_is_held_until_due(bus: Bus) -> None:
    """A delay is wall-clock time, kept in whole ms (docs/policies/delayed.md): handed out
    no earlier than publish time + delay by the wall clock, and not much later."""
    sent, started = time.time(), time.monotonic()
    mid = await bus.publish("later", {"x": 1}, delay=0.5)
    assert await bus.read("later", group="g") == []
    got: list[Message] = []
    while not got:
        got = await bus.read("later", group="g", block_ms=50)
    assert got[0].id == mid
    assert time.time() >= sent + 0.5 - 0.001  # the due time is rounded down to the ms
    assert time.monotonic() - started <= 0.5 + 0.5


async def test_delay_reaches_every_group(bus: Bus) -> None:
    await bus.publish("later-fan", 1, delay=0.1)
    await asyncio.sleep(0.2)
    a = await bus.read("later-fan", group="a")
    b = await bus.read("later-fan", group="b")
    assert [m.payload for m in a] == [1] == [m.payload for m in b]


async def test_delay_and_dedup_together(bus: Bus) -> None:
    first = await bus.publish("dd", 1, delay=0.1, dedup_key="k")
    assert await bus.publish("dd", 1, delay=0.1, dedup_key="k") == first
    await asyncio.sleep(0.2)
    assert [m.id for m in await bus.read("dd", group="g")] == [first]


async def test_history_includes_every_lane_in_publish_order(bus: Bus) -> None:
    ids = [await bus.publish("mixed-lanes", n, priority=p) for n, p in enumerate([0, 5, 0, 9, 1])]
    assert [m.id for m in await bus.history("mixed-lanes")] == ids
    assert [m.id for m in await bus.history("mixed-lanes", limit=2)] == ids[-2:]


async def test_a_handler_that_keeps_failing_is_logged_at_warning_when_given_up(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """At the default WARNING level a retry says nothing, but the message given up on
    (dead-lettered after max_attempts) is logged with its handler, topic and error."""
    async with Bus.from_url(
        redis_url, prefix=prefix, max_attempts=2, retry_backoff_s=0.05, claim_idle_ms=1000
    ) as bus:
        await bus.publish("flaky", {"n": 1})

        @bus.subscribe("flaky", group="g")
        async def always_fails(msg: Message) -> None:
            raise ValueError("upstream said no")

        with caplog.at_level(logging.WARNING, logger="relaybus"):
            await run_until(bus, lambda: len(caplog.records) > 0, seconds=10)
    [record] = [r for r in caplog.records if "failed on message" in r.getMessage()]
    text = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "always_fails" in text and "'flaky'" in text and "(attempt 2)" in text
    assert "ValueError: upstream said no" in text and "dead-lettered: failed 2 times (max_attempts)" in text

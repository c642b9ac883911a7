"""Promises the docs make that had no test yet (docs/guarantees.md, "Promises without a
test yet"): settling races, a raising on_failure plugin, dedup's edges, delayed lane
messages, start="latest" on lanes, drop_oldest's lane order, a reader's unexpected error,
and acks retried during stop()."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
import redis

from relaybus import Bus, BusUnavailableError, FailureDecision, Message, hookimpl
from relaybus.embedded import EmbeddedRedis, free_port

from .faultproxy import FaultProxy
from .helpers import running, wait_for


async def poll(fetch: Callable[[], Awaitable[list[Message]]], seconds: float = 5.0) -> list[Message]:
    """Call fetch() until it returns something; fail the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (got := await fetch()):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing fetched within {seconds}s")
        await asyncio.sleep(0.05)
    return got


# -- settling ---------------------------------------------------------------------------------


class SettledAlready:
    """Answers on_failure by the payload ("retry" or "dead"), and records every dead letter
    and every settlement."""

    def __init__(self) -> None:
        self.dead: list[str] = []
        self.settled: list[tuple[object, str]] = []

    @hookimpl
    def on_failure(self, message: Message) -> FailureDecision:
        if message.payload == "retry":
            return FailureDecision.retry(0.05)
        return FailureDecision.dead_letter("gave up")

    @hookimpl
    def on_dead_letter(self, message: Message) -> None:
        self.dead.append(message.id)

    @hookimpl
    def on_settled(self, message: Message, outcome: str) -> None:
        self.settled.append((message.payload, outcome))


async def test_retry_or_dead_letter_of_an_entry_another_consumer_settled_does_nothing(
    bare_bus: Bus, raw: redis.Redis
) -> None:
    """A retry or dead-letter decision for an entry that another consumer has already
    settled does nothing: no second DLQ entry, no retry entry (retries-and-dlq.md,
    concepts.md "Failure handling")."""
    bus = bare_bus
    url, prefix = bus.config.url, bus.config.prefix
    async with Bus.from_url(url, prefix=prefix, claim_idle_ms=200, disabled_plugins=["dlq"]) as other:
        # pull reads: consumer "b" reclaims "a"'s idle entry and settles it; "a" then gives up too
        await bus.publish("race", "dead first")
        await bus.publish("race", "acked first")
        a_copies = await bus.read("race", group="g", consumer="a", count=2)
        b_copies = await poll(lambda: other.read("race", group="g", consumer="b", count=2))
        if len(b_copies) == 1:
            b_copies += await poll(lambda: other.read("race", group="g", consumer="b", count=2))
        b_by = {m.payload: m for m in b_copies}
        assert [m.id for m in a_copies] == [b_by["dead first"].id, b_by["acked first"].id]
        assert await other.dead_letter(b_by["dead first"], "b gave up") is True
        assert await other.ack(b_by["acked first"]) == 1
        assert await bus.dead_letter(a_copies[0], "a gave up too") is False
        assert await bus.dead_letter(a_copies[1], "a gave up too") is False
        [dead] = await bus.dead_letters("race")  # one DLQ entry, b's; none for the acked one
        assert dead.payload == "dead first" and dead.headers["x-dead-reason"] == "b gave up"

        # run(): the handler's entry is settled by another consumer before its decision runs
        plugin = SettledAlready()
        bus.plugins.register(plugin, "settled-already")
        await bus.publish_many("run-race", ["retry", "dead"])
        calls: list[tuple[object, int]] = []

        @bus.subscribe("run-race", group="h")
        async def handle(msg: Message) -> None:
            calls.append((msg.payload, msg.attempt))
            assert msg.entry_id is not None and msg.stream_key is not None
            raw.xclaim(msg.stream_key, "h", "b", 0, [msg.entry_id])  # taken over by "b" ...
            assert await other.ack(msg) == 1  # ... which settles it first
            raise RuntimeError("fails after the entry was settled elsewhere")

        async with running(bus):
            await wait_for(lambda: len(plugin.settled) == 2)
            await asyncio.sleep(0.5)  # a retry due after 0.05 s would be handled by now
        assert sorted(calls, key=str) == [("dead", 1), ("retry", 1)]
        assert plugin.dead == []  # no move, so no on_dead_letter
        assert raw.xlen(bus.keys.dlq("run-race")) == 0
        assert raw.zcard(bus.keys.delayed("run-race")) == 0
        assert raw.xlen(bus.keys.retry("run-race", "h")) == 0
        assert raw.xpending(bus.keys.stream("run-race"), "h")["pending"] == 0


class RaisingOnFailure:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0
        self.outcomes: list[str] = []

    @hookimpl
    def on_failure(self, message: Message) -> None:
        self.calls += 1
        raise self.error

    @hookimpl
    def on_settled(self, outcome: str) -> None:
        self.outcomes.append(outcome)


@pytest.mark.parametrize(
    ("error", "claim_idle_ms"),
    [
        pytest.param(RuntimeError("policy bug"), 1000, id="error-1000ms"),
        pytest.param(BusUnavailableError("policy bug"), 1000, id="relaybus-error-1000ms"),
        # a short claim_idle_ms: each sweep's probes replaced the last one's before their first tick
        pytest.param(RuntimeError("policy bug"), 166, id="error-166ms"),
        pytest.param(RuntimeError("policy bug"), 300, id="error-300ms"),
    ],
)
async def test_a_raising_on_failure_plugin_leaves_the_message_pending(
    redis_url: str,
    prefix: str,
    raw: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    claim_idle_ms: int,
) -> None:
    """An on_failure implementation that raises is logged (naming the plugin), and the
    message stays pending - not acked, not retried (though the dlq plugin answers retry),
    not dead-lettered - so it is delivered again once idle for claim_idle_ms (concepts.md
    "Failure handling", hooks.md)."""
    async with Bus.from_url(redis_url, prefix=prefix, claim_idle_ms=claim_idle_ms) as bus:
        plugin = RaisingOnFailure(error)
        bus.plugins.register(plugin, "raising-policy")
        mid = await bus.publish("fragile", {"x": 1})
        attempts: list[int] = []

        @bus.subscribe("fragile", group="g")
        async def handle(msg: Message) -> None:
            attempts.append(msg.attempt)
            if msg.attempt == 1:
                raise ValueError("handler fails once")

        with caplog.at_level(logging.WARNING, logger="relaybus"):
            async with running(bus):
                await wait_for(lambda: plugin.calls == 1)
                await asyncio.sleep(0.05)
                # between the failure and the reclaim: pending, and nowhere else
                assert raw.xpending(bus.keys.stream("fragile"), "g")["pending"] == 1
                assert raw.xlen(bus.keys.dlq("fragile")) == 0
                assert raw.zcard(bus.keys.delayed("fragile")) == 0
                # sweeps run every claim_idle_ms / 2: allow several, and a slow machine
                await wait_for(lambda: attempts == [1, 2], seconds=max(1.0, 3 * claim_idle_ms / 1000) + 0.5)
        assert raw.xpending(bus.keys.stream("fragile"), "g")["pending"] == 0  # handled on attempt 2
        assert raw.xlen(bus.keys.dlq("fragile")) == 0
        assert [m.id for m in await bus.history("fragile")] == [mid]
        assert "raising-policy" in caplog.text and "policy bug" in caplog.text
        assert plugin.outcomes == ["pending", "handled"]


# -- dedup ------------------------------------------------------------------------------------


async def test_explicit_dedup_key_dedups_with_the_dedup_plugin_disabled(redis_url: str, prefix: str) -> None:
    """An explicit dedup_key is honoured with the dedup plugin disabled: the core's publish
    script does the check (policies/dedup.md "Disabling it")."""
    async with Bus.from_url(redis_url, prefix=prefix, disabled_plugins=["dedup"]) as bus:
        assert "dedup" not in bus.plugins.names()
        first = await bus.publish("jobs", {"n": 1}, dedup_key="job-1")
        assert await bus.publish("jobs", {"n": 2}, dedup_key="job-1") == first
        assert await bus.publish_many("jobs", [{"n": 3}], dedup_key="job-1") == [first]
        other = await bus.publish("jobs", {"n": 4}, dedup_key="job-2")
        assert other != first
        assert [m.payload for m in await bus.history("jobs")] == [{"n": 1}, {"n": 4}]


async def test_a_duplicate_does_not_extend_the_dedup_window(bus: Bus, raw: redis.Redis) -> None:
    """The window starts at the publish that appended; a duplicate inside it does not
    extend it. Once the original window has passed, the key appends again, even though a
    duplicate came less than a window ago (policies/dedup.md "Window")."""
    window = 0.6
    for run in range(3):  # a run the machine stalls in proves nothing either way: run again
        key = f"k{run}"
        first = await bus.publish("w", run, dedup_key=key, dedup_window=window)
        first_done = time.monotonic()
        await asyncio.sleep(0.2)
        dup_started = time.monotonic()
        assert await bus.publish("w", run, dedup_key=key, dedup_window=window) == first
        remaining_ms = raw.pttl(bus.keys.dedup("w", key))
        assert 0 < remaining_ms <= (first_done + window - dup_started) * 1000  # not restarted
        await asyncio.sleep(max(0.0, first_done + window + 0.08 - time.monotonic()))
        third_started = time.monotonic()
        third = await bus.publish("w", run, dedup_key=key, dedup_window=window)
        third_done = time.monotonic()
        if third_started > first_done + window and third_done < dup_started + window:
            # the original window had passed; a window restarted by the duplicate had not
            assert third != first
            assert [m.id for m in await bus.history("w")][-2:] == [first, third]
            return
    pytest.fail("the machine was too slow to tell the two windows apart in three runs")


async def test_dedup_is_per_topic(bus: Bus) -> None:
    """The same dedup_key on two topics appends on both (policies/dedup.md "Scope")."""
    on_a = await bus.publish("topic-a", "x", dedup_key="same")
    on_b = await bus.publish("topic-b", "x", dedup_key="same")
    assert on_a != on_b
    assert [m.id for m in await bus.history("topic-a")] == [on_a]
    assert [m.id for m in await bus.history("topic-b")] == [on_b]
    assert await bus.publish("topic-a", "y", dedup_key="same") == on_a  # still deduped per topic
    assert await bus.publish("topic-b", "y", dedup_key="same") == on_b


async def test_publish_many_with_a_dedup_key_appends_only_the_first(bus: Bus) -> None:
    """publish_many(topic, [a, b, c], dedup_key=k) appends only the batch's first message
    and returns its id at every position (policies/dedup.md "Limits")."""
    ids = await bus.publish_many("batch", ["a", "b", "c"], dedup_key="k")
    assert len(ids) == 3 and ids == [ids[0]] * 3
    [only] = await bus.history("batch")
    assert only.id == ids[0] and only.payload == "a"


# -- priority lanes ---------------------------------------------------------------------------


async def test_a_delayed_priority_message_goes_to_its_lane_when_due(bus: Bus, raw: redis.Redis) -> None:
    """A delayed message with priority >= 1 is moved to its lane's stream when due, and
    so overtakes a lane-0 backlog (policies/delayed.md "Move")."""
    await bus.publish_many("later-lane", list(range(50)))
    mid = await bus.publish("later-lane", "urgent", priority=6, delay=0.3)
    assert raw.exists(bus.keys.lane("later-lane", 6)) == 0  # not due: in no stream
    await asyncio.sleep(0.4)  # past due (the delay counts from the publish)
    [first] = await bus.read("later-lane", group="g", count=1)
    assert first.id == mid and first.priority == 6
    assert first.stream_key == bus.keys.lane("later-lane", 6)
    assert raw.xlen(bus.keys.lane("later-lane", 6)) == 1
    assert raw.zcard(bus.keys.delayed("later-lane")) == 0
    assert raw.xlen(bus.keys.stream("later-lane")) == 50  # the backlog stayed where it was
    await bus.ack(first)


async def test_start_latest_does_not_apply_to_priority_lanes(bus: Bus) -> None:
    """A group made with start="latest" still gets the lane entries published before it
    existed, though not the topic stream's (policies/priority.md "Limits", concepts.md)."""
    await bus.publish("lanes-late", "old-0")
    old5 = await bus.publish("lanes-late", "old-5", priority=5)
    # pull read
    got = await bus.read("lanes-late", group="pull", count=10, start="latest")
    assert [m.id for m in got] == [old5]
    await bus.ack(*got)
    new0 = await bus.publish("lanes-late", "new-0")
    assert [m.id for m in await bus.read("lanes-late", group="pull", count=10)] == [new0]
    # run()
    seen: list[object] = []

    @bus.subscribe("lanes-late", group="push", start="latest")
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)

    async with running(bus):
        await wait_for(lambda: seen == ["old-5"])
        await bus.publish("lanes-late", "newer-0")
        await wait_for(lambda: seen == ["old-5", "newer-0"])
    assert "old-0" not in seen and "new-0" not in seen


async def test_drop_oldest_drops_from_the_lowest_lane_first(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """With max_queue_size and overflow="drop_oldest", the unconsumed entries dropped to
    make room are the oldest of the lowest priority lane, then of the next lane up
    (retention.md "Overflow")."""
    async with Bus.from_url(redis_url, prefix=prefix, max_queue_size=4, overflow="drop_oldest") as bus:
        assert await bus.read("of", group="g", count=1, block_ms=1) == []  # a group that has read nothing

        async def kept() -> list[object]:
            return [m.payload for m in await bus.history("of")]

        await bus.publish("of", "p3-old", priority=3)  # the oldest entries are in lanes
        await bus.publish("of", "p7-old", priority=7)
        await bus.publish_many("of", ["a", "b"])
        assert await kept() == ["p3-old", "p7-old", "a", "b"]  # full
        await bus.publish("of", "c")
        assert await kept() == ["p3-old", "p7-old", "b", "c"]  # lane 0's oldest, not the oldest
        await bus.publish("of", "d", priority=7)
        assert await kept() == ["p3-old", "p7-old", "c", "d"]  # lane 0 first, whatever comes in
        await bus.publish("of", "e", priority=9)
        assert await kept() == ["p3-old", "p7-old", "d", "e"]  # lane 0 is now empty
        await bus.publish("of", "f", priority=9)
        assert await kept() == ["p7-old", "d", "e", "f"]  # then lane 3
        await bus.publish("of", "g", priority=9)
        assert await kept() == ["d", "e", "f", "g"]  # then lane 7's oldest
        assert raw.hget(bus.keys.counters("of"), "dropped_overflow") == b"5"
        got = await bus.read("of", group="g", count=10)
        assert [m.payload for m in got] == ["e", "f", "g", "d"]  # what is left is delivered
        await bus.ack(*got)


# -- the consume engine -----------------------------------------------------------------------


async def test_an_unexpected_reader_error_stops_every_subscription_and_run_raises_it(
    server_factory: Callable[..., EmbeddedRedis], prefix: str
) -> None:
    """A reader that hits an unexpected error stops every subscription - running handlers
    cancelled, their messages left pending - and run() raises it (concepts.md). Here the
    bus's ACL user loses the right to run scripts while it runs: NOPERM is no outage, so
    it is not retried."""
    with server_factory(port=free_port()) as server:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("ACL", "SETUSER", "worker", "on", ">worker-pw", "~*", "&*", "+@all")
        started, cancelled = asyncio.Event(), list[str]()
        try:
            async with Bus.from_url(
                f"redis://127.0.0.1:{server.port}/0",
                username="worker",
                password="worker-pw",
                prefix=prefix,
                claim_idle_ms=1000,
            ) as bus:

                @bus.subscribe("slow", group="g")
                async def slow(msg: Message) -> None:
                    started.set()
                    try:
                        await asyncio.sleep(60)
                    except asyncio.CancelledError:
                        cancelled.append(msg.id)
                        raise

                @bus.subscribe("other", group="g")
                async def other(msg: Message) -> None:
                    pass

                mid = await bus.publish("slow", {})
                runner = asyncio.create_task(bus.run())
                await asyncio.wait_for(started.wait(), 5)
                admin.execute_command("ACL", "SETUSER", "worker", "-@scripting")
                with pytest.raises(redis.exceptions.NoPermissionError):
                    await asyncio.wait_for(runner, 10)
                assert cancelled == [mid]
                names = [t.get_name() for t in asyncio.all_tasks()]  # the doorbell: the bus's
                assert [n for n in names if n.startswith("relaybus-")] == ["relaybus-doorbell"]
                assert admin.xpending(bus.keys.stream("slow"), "g")["pending"] == 1
        finally:
            admin.close()


@pytest.mark.parametrize("outage_s", [0.8, None], ids=["back-in-time", "stays-away"])
async def test_stop_retries_acks_redis_cannot_take_for_half_of_claim_idle_ms(
    redis_url: str, prefix: str, raw: redis.Redis, caplog: pytest.LogCaptureFixture, outage_s: float | None
) -> None:
    """During stop(), acks that cannot reach Redis are retried for up to claim_idle_ms / 2
    (consuming.md): sent if Redis is back within that, else given up - the message stays
    pending, to be delivered again - and stop() returns."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with (
        FaultProxy("127.0.0.1", port) as proxy,
        Bus.from_url(
            proxy.url, prefix=prefix, claim_idle_ms=4000, socket_timeout=0.5, connect_timeout=0.5
        ) as bus,
    ):
        started, release = asyncio.Event(), asyncio.Event()

        @bus.subscribe("acks", group="g")
        async def handle(msg: Message) -> None:
            started.set()
            await release.wait()

        await bus.publish("acks", {})
        runner = asyncio.create_task(bus.run())
        await asyncio.wait_for(started.wait(), 5)
        proxy.set("reset")
        stopping = asyncio.create_task(bus.stop())
        began = time.monotonic()
        release.set()  # handled: its ack cannot be sent
        if outage_s is not None:
            await asyncio.sleep(outage_s)
            assert not stopping.done()
            assert raw.xpending(bus.keys.stream("acks"), "g")["pending"] == 1
            proxy.set("pass")
        await asyncio.wait_for(stopping, 10)
        await runner
        pending = raw.xpending(bus.keys.stream("acks"), "g")["pending"]
        if outage_s is not None:
            assert pending == 0
        else:
            assert pending == 1
            assert time.monotonic() - began >= 2.0 - 0.1  # tried for claim_idle_ms / 2
            assert "could not send acks" in caplog.text
        proxy.set("pass")

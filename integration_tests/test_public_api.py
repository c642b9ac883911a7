"""The public API the CLI, the dashboard and the adapters use instead of the engine
(docs/architecture.md, "The layering rule"): history after a position, the dead-letter
count, a topic's consumer groups, and close callbacks - on Bus and SyncBus."""

from __future__ import annotations

import logging

import pytest
import redis

from relaybus import Bus, Message, SyncBus


def _entry(m: Message) -> tuple[int, int]:
    ms, _, seq = (m.entry_id or "").partition("-")
    return int(ms), int(seq)


async def test_history_after_pages_through_every_lane_once_in_entry_order(bus: Bus) -> None:
    ids = [await bus.publish("paged", {"n": n}, priority=n % 3) for n in range(20)]
    seen: list[Message] = []
    after: str | None = None
    while page := await bus.history_after("paged", after, limit=3):
        assert [_entry(m) for m in page] == sorted(_entry(m) for m in page)
        assert all(_entry(m) == _entry(page[2]) for m in page[3:])  # past the limit: ties only
        seen += page
        after = page[-1].entry_id
    assert sorted(m.id for m in seen) == sorted(ids)  # every lane, each message once
    assert [_entry(m) for m in seen] == sorted(_entry(m) for m in seen)


async def test_history_after_a_position_returns_what_was_stored_after_it(bus: Bus) -> None:
    first = await bus.publish_many("pos", ["a", "b", "c"])
    last = (await bus.history("pos", limit=1))[0]
    assert last.id == first[-1]
    assert await bus.history_after("pos", last.entry_id) == []
    later = await bus.publish_many("pos", ["d", "e"])
    assert [m.id for m in await bus.history_after("pos", last.entry_id)] == later
    assert [m.id for m in await bus.history_after("pos", None)] == first + later  # None: the oldest
    assert [m.payload for m in await bus.history_after("pos", None, limit=2)] == ["a", "b"]
    assert await bus.history_after("nothing-here", None) == []


async def test_history_after_refuses_what_is_no_position(bus: Bus) -> None:
    with pytest.raises(ValueError, match="after must be None or a stream entry id"):
        await bus.history_after("pos", "yesterday")
    with pytest.raises(ValueError, match="limit"):
        await bus.history_after("pos", None, limit=0)


async def test_history_after_keeps_the_messages_of_other_lanes_sharing_the_last_entry_id(
    bus: Bus, raw: redis.Redis, prefix: str
) -> None:
    """Entry ids are per lane: two lanes may both hold 5-0. A page cut at one of them
    carries the other too, so paging on from 5-0 skips neither."""
    zero, five = await bus.publish("tie", "zero"), await bus.publish("tie", "five", priority=5)
    lane0, lane5 = f"{prefix}:{{tie}}:stream", f"{prefix}:{{tie}}:lane:5"
    [(_, zero_fields)] = raw.xrange(lane0)
    [(_, five_fields)] = raw.xrange(lane5)
    raw.delete(lane0, lane5)
    raw.xadd(lane0, zero_fields, id="5-0")
    raw.xadd(lane5, five_fields, id="5-0")
    raw.xadd(lane0, zero_fields, id="6-0")
    page = await bus.history_after("tie", None, limit=1)
    assert sorted(m.id for m in page) == sorted([zero, five])  # both at 5-0, though limit=1
    assert [(m.entry_id, m.id) for m in await bus.history_after("tie", "5-0", limit=1)] == [("6-0", zero)]


async def test_history_after_steps_over_undecodable_entries(bus: Bus, raw: redis.Redis, prefix: str) -> None:
    await bus.publish("junk", "before")
    for n in range(5):
        raw.xadd(f"{prefix}:{{junk}}:stream", {"not": f"an envelope {n}"})
    after = await bus.publish_many("junk", ["x", "y"])
    page = await bus.history_after("junk", None, limit=2)
    assert [m.payload for m in page] == ["before", "x"]  # the five between skipped, pages on past them
    assert [m.id for m in await bus.history_after("junk", page[-1].entry_id, limit=2)] == after[1:]


async def test_dead_letter_count(bus: Bus) -> None:
    assert await bus.dead_letter_count("dl") == 0
    await bus.publish_many("dl", [1, 2, 3])
    for message in await bus.read("dl", group="g", count=10):
        await bus.dead_letter(message, "test")
    assert await bus.dead_letter_count("dl") == 3 == len(await bus.dead_letters("dl"))
    await bus.purge_dead_letters("dl")
    assert await bus.dead_letter_count("dl") == 0


async def test_consumer_groups_of_a_topic(bus: Bus) -> None:
    assert await bus.consumer_groups("grouped") == []  # no such topic
    await bus.publish("grouped", 1)
    assert await bus.consumer_groups("grouped") == []
    await bus.read("grouped", group="b")
    await bus.read("grouped", group="a")
    assert await bus.consumer_groups("grouped") == ["a", "b"]
    await bus.publish("laned", 1, priority=7)  # only a priority lane so far
    await bus.read("laned", group="g")
    assert "g" in await bus.consumer_groups("laned")


async def test_close_awaits_the_close_callbacks_before_the_connections_close(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[str] = []
    closing = Bus.from_url(redis_url, prefix=prefix)

    async def publish_last() -> None:  # the bus still works here
        done.append(await closing.publish("last", "words"))

    async def broken() -> None:
        raise RuntimeError("boom")

    closing.on_close(broken)
    closing.on_close(publish_last)
    await closing.close()  # never connected: nothing to finish
    assert done == []
    await closing.connect()
    with caplog.at_level(logging.ERROR, logger="relaybus"):
        await closing.close()
    assert "a close callback" in caplog.text and "boom" in caplog.text  # logged; the others ran
    async with Bus.from_url(redis_url, prefix=prefix) as other:
        assert [m.id for m in await other.history("last")] == done and len(done) == 1


def test_the_sync_bus_has_the_same(redis_url: str, prefix: str) -> None:
    called: list[bool] = []

    async def on_close() -> None:
        called.append(True)

    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        bus.on_close(on_close)
        ids = bus.publish_many("s", [1, 2])
        [first] = bus.history_after("s", None, limit=1)
        assert [m.id for m in bus.history_after("s", first.entry_id)] == ids[1:]
        [message] = bus.read("s", group="g", count=1)
        bus.dead_letter(message, "test")
        assert bus.dead_letter_count("s") == 1
        assert bus.consumer_groups("s") == ["g"]
    assert called == [True]

"""What another client (or a person with redis-cli) may leave in a bus's keys: one
foreign member or entry never stops a topic, nor the other topics, and is reported."""

from __future__ import annotations

import asyncio
import json
import logging

import orjson
import pytest
import redis

from relaybus import Bus, Message, Reject, RelayBusError
from relaybus.engine.retained import FOREIGN
from relaybus.keys import Keys
from relaybus.message import MAX_PAYLOAD_DEPTH

from .helpers import run_until
from .test_dashboard import TOKEN, _get, _post, dashboard


async def test_foreign_delayed_members_and_lanes_do_not_stop_a_topic(bus: Bus, raw: redis.Redis) -> None:
    """A delayed member without the separator, one naming a lane that is no 1-9, and a
    lane-set member that is no number: the topic's own messages are still delivered, the
    foreign ones reach the DLQ as undecodable."""
    await bus.publish("jobs", {"n": 1}, priority=3)
    raw.zadd(bus.keys.delayed("jobs"), {"no separator here": 0, "*x|also foreign": 0})
    raw.sadd(bus.keys.lanes("jobs"), "abc")
    await bus.publish("jobs", {"n": 2})
    seen: list[int] = []

    @bus.subscribe("jobs", group="g")
    async def handle(message: Message) -> None:
        seen.append(message.payload["n"])

    await run_until(bus, lambda: sorted(seen) == [1, 2] and raw.xlen(bus.keys.dlq("jobs")) == 2)
    reasons = [d.headers["x-dead-reason"] for d in await bus.dead_letters("jobs")]
    assert reasons == ["undecodable", "undecodable"]
    assert raw.zcard(bus.keys.delayed("jobs")) == 0
    assert [t.lanes for t in (await bus.stats(["jobs"])).topics] == [{0: 3, 3: 1}]  # "abc" is no lane
    assert sorted(m.payload["n"] for m in await bus.history("jobs")) == [1, 2]


async def test_a_foreign_dead_letter_is_shown_as_text_and_never_replayed(bus: Bus, raw: redis.Redis) -> None:
    @bus.subscribe("orders", group="billing")
    async def handle(message: Message) -> None:
        raise Reject("card declined")  # dead-lettered at once

    await bus.publish("orders", {"id": 7})
    await run_until(bus, lambda: raw.xlen(bus.keys.dlq("orders")) == 1)
    raw.xadd(bus.keys.dlq("orders"), {"v": "1", "m": "{not json", "reason": "forged"})
    other = orjson.dumps({"id": "x", "topic": "elsewhere", "payload": 1}).decode()
    raw.xadd(bus.keys.dlq("orders"), {"v": "1", "m": other, "group": "billing"})
    dead = await bus.dead_letters("orders")
    assert len(dead) == 3
    assert dead[0].payload == {"id": 7}
    assert "x-dead-undecodable" not in dead[0].headers
    assert dead[1].payload == {"raw": {"m": "{not json"}} and "x-dead-undecodable" in dead[1].headers
    assert "x-dead-undecodable" in dead[2].headers  # names another topic
    assert await bus.replay_dead_letters("orders") == 1
    assert raw.xlen(bus.keys.dlq("orders")) == 2


@pytest.mark.parametrize("member", [b"bad name with spaces", b"a{b}", b"\xff\xfe"])
async def test_a_foreign_registry_member_breaks_nothing(bus: Bus, raw: redis.Redis, member: bytes) -> None:
    await bus.publish("reports.daily", {"n": 1})
    raw.sadd(bus.keys.registry, member)
    assert await bus.topics() == ["reports.daily"]
    assert [t.topic for t in (await bus.stats()).topics] == ["reports.daily"]
    await bus.cleanup()
    seen: list[Message] = []

    @bus.subscribe("*", group="g")
    async def handle(message: Message) -> None:
        seen.append(message)

    await run_until(bus, lambda: len(seen) == 1)
    made = {key.decode() for key in raw.scan_iter(match=f"{bus.config.prefix}:*")} - {bus.keys.registry}
    assert {Keys.topic_of(key) for key in made} == {"reports.daily"}  # no key made for the member


def nested(depth: int) -> object:
    """A payload nesting arrays and objects `depth` deep (`[{"a": [1]}]` is 3 deep)."""
    value: object = 1
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


def envelope(depth: int, **fields: object) -> bytes:
    """An envelope as another client might write it, its payload nested `depth` deep
    (json: orjson writes no more than 254 levels)."""
    return json.dumps(
        {"id": "01FOREIGN", "topic": "orders", "created_at": 1.5, **fields, "payload": nested(depth)}
    ).encode()


async def test_the_deepest_payload_publish_accepts_is_delivered_and_one_deeper_is_refused(
    bus: Bus, raw: redis.Redis
) -> None:
    """Publish refuses what no reader could decode, naming the limit; the deepest payload
    it accepts comes back from read, history and a replayed dead letter unchanged."""
    deepest, too_deep = nested(MAX_PAYLOAD_DEPTH), nested(MAX_PAYLOAD_DEPTH + 1)
    for publish in (
        lambda: bus.publish("deep", too_deep),
        lambda: bus.publish("deep", too_deep, delay=1),
        lambda: bus.publish("deep", too_deep, priority=5),
        lambda: bus.publish_many("deep", [1, too_deep]),
    ):
        with pytest.raises(RelayBusError, match=f"nests deeper than {MAX_PAYLOAD_DEPTH} levels"):
            await publish()
    assert raw.exists(bus.keys.stream("deep"), bus.keys.delayed("deep"), bus.keys.lane("deep", 5)) == 0
    message_id = await bus.publish("deep", deepest)
    assert [m.payload for m in await bus.history("deep")] == [deepest]
    [message] = await bus.read("deep", "g")
    assert (message.id, message.payload) == (message_id, deepest)
    assert await bus.dead_letter(message, "on purpose")
    assert [m.payload for m in await bus.dead_letters("deep")] == [deepest]
    assert await bus.replay_dead_letters("deep") == 1
    assert [m.payload for m in await bus.read("deep", "g")] == [deepest]


async def test_an_undecodable_dead_letter_is_listed_kept_and_reported_while_the_rest_replay(
    bus: Bus, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A foreign dead letter nested too deep to decode (or with an undecodable `raw`, or
    naming no group) is listed as undecodable with its size and why, never replayed and
    never lost; every other dead letter of the topic is replayed around it."""
    await bus.publish_many("orders", [{"n": 0}, {"n": 1}])
    for message in await bus.read("orders", "billing", count=2):
        await bus.dead_letter(message, "declined")
    dlq = bus.keys.dlq("orders")
    deep = envelope(300)
    foreign = [
        raw.xadd(dlq, {"v": "1", "m": deep, "reason": "x", "group": "billing"}),
        raw.xadd(dlq, {"v": "1", "raw": json.dumps({"m": nested(300)}), "group": "billing"}),
        raw.xadd(dlq, {"v": "1", "m": envelope(1)}),  # decodes, but no group to go back to
        raw.xadd(dlq, {"v": "1", "m": envelope(1), "group": "no such group!"}),
    ]
    await bus.publish("orders", {"n": 2})
    [late] = await bus.read("orders", "billing")
    await bus.dead_letter(late, "declined")
    dead = await bus.dead_letters("orders")
    assert [d.payload for d in dead if FOREIGN not in d.headers] == [{"n": 0}, {"n": 1}, {"n": 2}]
    undecodable = {d.entry_id: d for d in dead if FOREIGN in d.headers}
    assert sorted(undecodable) == sorted(e.decode() for e in foreign)
    first = undecodable[foreign[0].decode()]
    assert first.id == first.entry_id  # the same on every listing: `--id` can name it
    assert first.payload == {"raw": {"m": deep.decode()}}
    assert first.headers[FOREIGN].startswith(f"{len(deep)} bytes: ")
    assert f"nests more than {MAX_PAYLOAD_DEPTH + 1} levels deep" in first.headers[FOREIGN]
    assert "group" in undecodable[foreign[2].decode()].headers[FOREIGN]
    assert "group" in undecodable[foreign[3].decode()].headers[FOREIGN]
    for d in dead:  # what the dashboard and `dlq list --json` write of each
        orjson.dumps(d.payload)
        d.model_dump_json()

    with caplog.at_level(logging.WARNING, logger="relaybus"):
        assert await bus.replay_dead_letters("orders") == 3
    assert [e for e, _ in raw.xrange(dlq)] == foreign  # kept, in order
    assert sorted(m.payload["n"] for m in await bus.read("orders", "billing", count=10)) == [0, 1, 2]
    reported = " ".join(r.getMessage() for r in caplog.records)
    assert all(e.decode() in reported for e in foreign) and "they stay in the DLQ" in reported
    assert await bus.replay_dead_letters("orders", [foreign[0].decode()]) == 0
    assert raw.xlen(dlq) == 4


async def test_history_and_reads_step_over_an_entry_nested_too_deep(bus: Bus, raw: redis.Redis) -> None:
    await bus.publish("orders", {"n": 1})
    raw.xadd(bus.keys.stream("orders"), {"v": "1", "m": envelope(MAX_PAYLOAD_DEPTH + 1)})
    await bus.publish("orders", {"n": 2})
    assert [m.payload for m in await bus.history("orders")] == [{"n": 1}, {"n": 2}]
    assert [m.payload for m in await bus.read("orders", "g", count=10)] == [{"n": 1}, {"n": 2}]
    [dead] = await bus.dead_letters("orders")
    assert dead.headers["x-dead-reason"] == "undecodable" and FOREIGN in dead.headers
    assert f"nests more than {MAX_PAYLOAD_DEPTH + 1} levels deep" in dead.headers["x-dead-error"]


async def test_the_dashboard_shows_and_replays_around_an_undecodable_dead_letter(
    redis_url: str, prefix: str, bus: Bus, raw: redis.Redis
) -> None:
    await bus.publish("orders", {"n": 0})
    [message] = await bus.read("orders", "billing")
    await bus.dead_letter(message, "declined")
    raw.xadd(bus.keys.dlq("orders"), {"v": "1", "m": envelope(300), "group": "billing"})
    async with dashboard(redis_url, prefix) as base:
        status, _, body = await asyncio.to_thread(_get, f"{base}/api/topics/orders")
        assert status == 200, body
        shown = orjson.loads(body)["dead_letters"]
        assert [d["replayable"] for d in shown] == [True, False]
        status, body = await asyncio.to_thread(
            _post,
            f"{base}/api/topics/orders/dead-letters/replay",
            b"{}",
            {"Authorization": f"Bearer {TOKEN}"},
        )
        assert (status, orjson.loads(body)) == (200, {"replayed": 1})
    assert raw.xlen(bus.keys.dlq("orders")) == 1

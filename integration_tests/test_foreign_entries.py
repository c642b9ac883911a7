"""What another client (or a person with redis-cli) may leave in a bus's keys: one
foreign member or entry never stops a topic, nor the other topics, and is reported."""

from __future__ import annotations

import orjson
import pytest
import redis

from relaybus import Bus, Message, Reject
from relaybus.keys import Keys

from .helpers import run_until


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

"""Late bytes: a publish attempt the client gave up on (socket_timeout) reaches Redis after
its retry. Whichever attempt of a message runs second appends nothing, on every publish
path (docs/guarantees.md, "Late bytes"). Each test puts a FaultProxy in front of a
private server and makes the script calls of chosen connections arrive seconds late."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from relaybus import Bus, QueueFullError
from relaybus.embedded import EmbeddedRedis, free_port
from relaybus.keys import Keys

from .faultproxy import FaultProxy
from .helpers import wait_for

LATE = 3.0  # seconds a late script call takes to reach Redis: six socket_timeouts
SETTINGS: dict[str, Any] = {"socket_timeout": 0.5, "connect_timeout": 2.0}


@pytest.fixture
def server(server_factory: type[EmbeddedRedis]) -> Iterator[EmbeddedRedis]:
    with server_factory(port=free_port()) as instance:
        yield instance


def copies(url: str, keys: Keys, topic: str) -> Counter[str]:
    """How many entries each message id has in the topic's stream, lanes and delayed set."""
    client = redis.Redis.from_url(url)
    try:
        counts: Counter[str] = Counter()
        for key in [keys.stream(topic), *(keys.lane(topic, n) for n in range(1, 10))]:
            for _, fields in client.xrange(key):
                counts[json.loads(fields[b"m"])["id"]] += 1
        for member in client.zrange(keys.delayed(topic), 0, -1):
            counts[json.loads(member.split(b"|", 1)[1])["id"]] += 1
        return counts
    finally:
        client.close()


async def landed(proxy: FaultProxy) -> None:
    """Every late script call reached Redis and was answered (or the grace passed)."""
    await wait_for(lambda: proxy.late_links == 0, seconds=LATE * 4)


def once_each(ids: list[str], counts: Counter[str], extra: int = 1) -> None:
    assert len(set(ids)) == len(ids)  # the caller got each id once
    assert {i: counts[i] for i in ids} == dict.fromkeys(ids, 1)  # one entry per message id
    assert sum(counts.values()) == len(ids) + extra  # and nothing else (the warm-up)


async def test_publish_late_first_attempts_append_nothing(server: EmbeddedRedis, prefix: str) -> None:
    """N publishes at once: the first goes alone on the held connection, the rest merged
    into one append.lua call on the next one; both arrive after the retries."""
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(proxy.url, prefix=prefix, **SETTINGS) as bus,
    ):
        await bus.publish("t", "warm-up")  # connected, the topic registered
        proxy.late_open(LATE, match=b"EVALSHA")
        proxy.late_next(LATE, match=b"EVALSHA")
        ids = list(await asyncio.gather(*(bus.publish("t", n) for n in range(40))))
        await landed(proxy)
        once_each(ids, copies(server.url, bus.keys, "t"))


async def test_publish_many_late_first_attempt_appends_nothing(server: EmbeddedRedis, prefix: str) -> None:
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(proxy.url, prefix=prefix, **SETTINGS) as bus,
    ):
        await bus.publish("t", "warm-up")
        proxy.late_open(LATE, match=b"EVALSHA")
        ids = await bus.publish_many("t", list(range(200)))
        await landed(proxy)
        once_each(ids, copies(server.url, bus.keys, "t"))


@pytest.mark.parametrize(
    "options", [{"priority": 5}, {"max_queue_size": 1000}], ids=["priority", "max_queue_size"]
)
async def test_scripted_late_first_attempt_appends_nothing(
    server: EmbeddedRedis, prefix: str, options: dict[str, Any]
) -> None:
    """The publish.lua path: a priority lane, a bounded topic."""
    settings = {k: v for k, v in options.items() if k == "max_queue_size"}
    publish = {k: v for k, v in options.items() if k != "max_queue_size"}
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(proxy.url, prefix=prefix, **SETTINGS, **settings) as bus,
    ):
        await bus.publish("t", "warm-up", **publish)
        proxy.late_open(LATE, match=b"EVALSHA")
        ids = await bus.publish_many("t", list(range(20)), **publish)
        await landed(proxy)
        once_each(ids, copies(server.url, bus.keys, "t"))


async def test_delayed_late_first_attempt_appends_nothing(server: EmbeddedRedis, prefix: str) -> None:
    """A delayed message: the retry's copy falls due and a reader moves it into the stream
    before the first attempt arrives (the same delayed-set member again, otherwise)."""
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(proxy.url, prefix=prefix, **SETTINGS) as bus,
        Bus.from_url(server.url, prefix=prefix, **SETTINGS) as reader,
    ):
        await bus.publish("t", "warm-up")
        proxy.late_open(LATE, match=b"EVALSHA")
        ids = await bus.publish_many("t", list(range(5)), delay=1.0)
        got: list[str] = []
        async with asyncio.timeout(LATE):
            while len(got) < 6:  # the warm-up, then the five once due
                got += [m.id for m in await reader.read("t", group="g", count=10, block_ms=200)]
        assert proxy.late_links == 1  # the first attempt is still on its way
        await landed(proxy)
        once_each(ids, copies(server.url, bus.keys, "t"))


async def test_late_attempts_after_the_outbox_flush_append_nothing(
    server: EmbeddedRedis, prefix: str, tmp_path: Path
) -> None:
    """The first attempt and the retry are late, the publish goes to the outbox, and the
    flush appends before either arrives: the flush's sent markers stop both."""
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(
            proxy.url, prefix=prefix, publish_timeout_s=0.3, outbox_path=tmp_path / "outbox.db", **SETTINGS
        ) as bus,
    ):
        await bus.publish("t", "warm-up")
        proxy.late_open(LATE, match=b"EVALSHA")
        proxy.late_next(LATE, match=b"EVALSHA")
        ids = await bus.publish_many("t", list(range(10)))
        assert bus._engine.publisher.backlog  # in the outbox
        await wait_for(lambda: all(copies(server.url, bus.keys, "t")[i] for i in ids), seconds=LATE)
        assert proxy.late_links  # flushed before the late attempts arrived
        await landed(proxy)
        once_each(ids, copies(server.url, bus.keys, "t"))


async def test_late_retry_after_a_later_retry_appends_nothing(server: EmbeddedRedis, prefix: str) -> None:
    """Retries arrive out of order too. The first attempt and the first four retries are
    late, the fifth (sent 3.2-4.1 s in) is not and appends; the first retry arrives after
    it, long past the end of its own written-already window (its send + 2 s), and the
    first attempt last: only the fifth retry's sent markers stop them."""
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(proxy.url, prefix=prefix, **SETTINGS) as bus,
    ):
        await bus.publish("t", "warm-up")
        proxy.late_open(8.0, match=b"EVALSHA")
        proxy.late_next(7.0, LATE, LATE, LATE, match=b"EVALSHA")
        ids = await bus.publish_many("t", list(range(10)))
        await landed(proxy)
        once_each(ids, copies(server.url, bus.keys, "t"))


async def test_late_attempt_after_a_refused_retry_appends_nothing(server: EmbeddedRedis, prefix: str) -> None:
    """A retry refused by max_queue_size tells the caller nothing was appended: the first
    attempt, arriving after room was made, must not append it after all."""
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(proxy.url, prefix=prefix, max_queue_size=1, **SETTINGS) as bus,
    ):
        await bus.publish("t", "warm-up")  # the topic is full
        proxy.late_open(LATE, match=b"EVALSHA")
        with pytest.raises(QueueFullError):
            await bus.publish("t", "refused")
        raw = redis.Redis(port=server.port)
        raw.xtrim(bus.keys.stream("t"), maxlen=0)  # room, before the first attempt arrives
        raw.close()
        await landed(proxy)
        assert copies(server.url, bus.keys, "t") == Counter()

"""Redis going away and coming back: idempotent retries, the durable outbox, kill -9 and
restart, connection state. Every test starts its own server (or a proxy in front of one)."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path

import pytest
import redis

from relaybus import Bus, BusUnavailableError, Message, hookimpl
from relaybus.embedded import EmbeddedRedis, free_port

from .faultproxy import FaultProxy
from .helpers import run_until, running, wait_for

FAST = {
    "claim_idle_ms": 1000,
    "socket_timeout": 1.0,
    "connect_timeout": 0.5,
    "health_check_interval_s": 0.2,
}


@pytest.fixture
def server(aof_server: EmbeddedRedis) -> EmbeddedRedis:
    """conftest's aof_server: killed with -9 and started again with its data."""
    return aof_server


def entries(url: str, key: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return [fields[b"m"] for _, fields in client.xrange(key)]
    finally:
        client.close()


def pending(url: str, key: str, group: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.xpending(key, group)["pending"])
    finally:
        client.close()


async def test_retry_after_a_lost_reply_appends_once(server: EmbeddedRedis, prefix: str) -> None:
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(proxy.url, prefix=prefix, **FAST) as bus,
    ):
        await bus.publish("t", "warm-up")  # connections made and the topic registered
        proxy.set("forward_then_drop_reply")  # the XADD reaches Redis, its reply never comes back
        publishing = asyncio.create_task(bus.publish("t", "once", dedup_key=None))
        await wait_for(lambda: len(entries(server.url, bus.keys.stream("t"))) == 2)
        proxy.set("pass")
        mid = await asyncio.wait_for(publishing, 10)
        got = entries(server.url, bus.keys.stream("t"))
        assert len(got) == 2 and mid.encode() in got[1]  # written by the first attempt, once


async def test_publish_many_retry_after_lost_reply_appends_each_once(
    server: EmbeddedRedis, prefix: str
) -> None:
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(proxy.url, prefix=prefix, **FAST) as bus,
    ):
        await bus.publish("t", 0, priority=3)
        proxy.set("forward_then_drop_reply")
        publishing = asyncio.create_task(bus.publish_many("t", [1, 2, 3], priority=3))
        await wait_for(lambda: len(entries(server.url, bus.keys.lane("t", 3))) == 4)
        proxy.set("pass")
        ids = await asyncio.wait_for(publishing, 10)
        assert [m.id for m in await bus.history("t")][1:] == ids


async def test_unreachable_redis_raises_promptly_without_outbox(server: EmbeddedRedis, prefix: str) -> None:
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(proxy.url, prefix=prefix, publish_timeout_s=0.5, **FAST) as bus,
    ):
        proxy.set("blackhole")
        started = time.monotonic()
        with pytest.raises(BusUnavailableError, match="publish to 't' failed"):
            await bus.publish("t", "lost?")
        # publish_timeout_s plus at most one socket_timeout for the attempt in flight
        assert time.monotonic() - started < 0.5 + FAST["socket_timeout"] + 1.0
        proxy.set("pass")
        assert await bus.publish("t", "after")
        assert len(entries(server.url, bus.keys.stream("t"))) == 1


async def test_outbox_keeps_publishes_while_down_and_flushes_in_order(
    server: EmbeddedRedis, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(
            proxy.url, prefix=prefix, publish_timeout_s=0.2, outbox_path=tmp_path / "outbox.db", **FAST
        ) as bus,
    ):
        first = await bus.publish("t", 0)
        proxy.set("reset")
        ids = [await bus.publish("t", n) for n in range(1, 6)]
        ids.append(await bus.publish("t", 6, priority=7))
        assert (await bus._engine.publisher.outbox.count()) == 6  # type: ignore[union-attr]
        kept = [r for r in caplog.records if "kept in the outbox" in r.getMessage()]
        assert [r.levelname for r in kept] == ["WARNING"]  # once per backlog, not per publish
        proxy.set("pass")
        await wait_for(lambda: len(entries(server.url, bus.keys.stream("t"))) == 6, seconds=10)
        assert [m.id for m in await bus.history("t", limit=10)] == [first, *ids]
        stats = await bus.stats(["t"])
        assert stats.connection.outbox_pending == 0 and stats.connection.reconnects >= 1


async def test_outbox_flush_of_a_publish_whose_lost_attempt_was_applied_appends_once(
    server: EmbeddedRedis, prefix: str, tmp_path: Path
) -> None:
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(
            proxy.url, prefix=prefix, publish_timeout_s=0.3, outbox_path=tmp_path / "outbox.db", **FAST
        ) as bus,
    ):
        await bus.publish("t", "warm-up")
        proxy.set("forward_then_drop_reply")  # the first attempt is applied, its reply lost
        publishing = asyncio.create_task(bus.publish("t", "once"))
        await wait_for(lambda: len(entries(server.url, bus.keys.stream("t"))) == 2)
        proxy.set("reset")  # the retries fail: the message goes to the outbox
        mid = await asyncio.wait_for(publishing, 10)
        assert (await bus._engine.publisher.outbox.count()) == 1  # type: ignore[union-attr]
        proxy.set("pass")
        await wait_for(
            lambda: bus._engine.publisher.outbox is not None and not bus._engine.publisher.backlog, seconds=10
        )
        got = entries(server.url, bus.keys.stream("t"))
        assert len(got) == 2 and mid.encode() in got[1]


async def test_half_done_flush_appends_nothing_twice(
    server: EmbeddedRedis, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    async with (
        FaultProxy("127.0.0.1", server.port) as proxy,
        Bus.from_url(proxy.url, prefix=prefix, publish_timeout_s=0.1, outbox_path=path, **FAST) as bus,
    ):
        await bus.publish("t", "registered")
        proxy.set("reset")
        ids = await bus.publish_many("t", list(range(10)))
        outbox = bus._engine.publisher.outbox
        assert outbox is not None
        # a flusher that sent the first four and died before it could delete them
        proxy.set("pass")
        bus._engine.publisher.backlog = False  # keep this bus's own flusher out of the way
        half = await outbox.entries(4)
        async with Bus.from_url(server.url, prefix=prefix) as direct:
            from relaybus.engine.publisher import MARK_TTL_MS, Write

            await direct._engine.publisher._scripted(
                "t", [Write.from_outbox(e) for e in half], check=(1, "+"), mark_ms=MARK_TTL_MS
            )
        bus._engine.publisher.backlog = True
        await wait_for(lambda: len(entries(server.url, bus.keys.stream("t"))) == 11, seconds=10)
        await asyncio.sleep(0.6)  # another flush round would have appended duplicates by now
        assert [m.id for m in await bus.history("t", limit=20)][1:] == ids


WRITER = """
import asyncio, sys
from relaybus import Bus

async def main():
    async with Bus.from_url(sys.argv[1], prefix=sys.argv[2], outbox_path=sys.argv[3],
                            publish_timeout_s=0.1, connect_timeout=0.5, socket_timeout=1.0) as bus:
        await bus.publish("t", "connected")
        input()  # the test takes Redis away, then says go
        for n in range(5):
            print(await bus.publish("t", n), flush=True)

asyncio.run(main())
"""


async def test_a_later_bus_flushes_what_an_earlier_process_left(
    server: EmbeddedRedis, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    async with FaultProxy("127.0.0.1", server.port) as proxy:
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            proxy.url,
            prefix,
            str(path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        await wait_for(lambda: len(entries(server.url, f"{prefix}:{{t}}:stream")) == 1, seconds=15)
        proxy.set("reset")
        out, _ = await asyncio.wait_for(writer.communicate(b"go\n"), 30)
        assert writer.returncode == 0
        left = out.decode().split()
        assert len(left) == 5 and len(entries(server.url, f"{prefix}:{{t}}:stream")) == 1
    async with Bus.from_url(server.url, prefix=prefix, outbox_path=path, **FAST) as later:
        assert [m.id for m in await later.history("t")][1:] == left  # flushed during connect


async def test_kill_and_restart_loses_nothing(server: EmbeddedRedis, prefix: str, tmp_path: Path) -> None:
    handled: list[str] = []
    states: list[str] = []

    class Watch:
        @hookimpl
        def on_connection_state(self, new: str) -> None:
            states.append(new)

    async with Bus.from_url(
        server.url, prefix=prefix, outbox_path=tmp_path / "outbox.db", publish_timeout_s=0.3, **FAST
    ) as bus:
        bus.plugins.register(Watch(), "watch")

        @bus.subscribe("jobs", group="workers", concurrency=4)
        async def work(msg: Message) -> None:
            handled.append(msg.id)

        published: list[str] = []
        async with running(bus):
            for round_ in range(3):
                for n in range(40):
                    published.append(await bus.publish("jobs", {"round": round_, "n": n}))
                    if n == 20:
                        server.kill()  # SIGKILL, mid-stream
                        await asyncio.sleep(0.3)
                        server.start()
                        await asyncio.sleep(0.05)
            await wait_for(lambda: set(published) <= set(handled), seconds=30)
            # an ack batch lost in a crash leaves its entries pending: they come back after
            # claim_idle_ms and are acked then (at-least-once: duplicates, never losses)
            await wait_for(lambda: pending(server.url, bus.keys.stream("jobs"), "workers") == 0, seconds=10)
        stream = bus.keys.stream("jobs")
        assert len(entries(server.url, stream)) == len(published)  # nothing appended twice
        assert "disconnected" in states or "degraded" in states
        await wait_for(lambda: states[-1] == "connected", seconds=10)  # the health check's next PING
        assert (await bus.stats()).connection.reconnects >= 3


async def test_consumers_back_off_and_resume(server: EmbeddedRedis, prefix: str) -> None:
    seen: list[int] = []
    by_pattern: list[int] = []
    async with Bus.from_url(server.url, prefix=prefix, **FAST) as bus:

        @bus.subscribe("t", group="g")
        async def handle(msg: Message) -> None:
            seen.append(msg.payload)

        @bus.subscribe("t*", group="p")  # pattern discovery must survive the outage too
        async def handle_pattern(msg: Message) -> None:
            by_pattern.append(msg.payload)

        async with running(bus):
            await bus.publish("t", 1)
            await wait_for(lambda: seen == [1] and by_pattern == [1])
            server.kill()
            await asyncio.sleep(1.0)  # readers fail, back off, keep trying
            assert bus.health.state in ("degraded", "disconnected")
            server.start()
            await wait_for(lambda: bus.health.state == "connected", seconds=10)
            await bus.publish("t", 2)
            await bus.publish("t2", 3)  # a topic created after the restart
            await wait_for(lambda: seen == [1, 2] and sorted(by_pattern) == [1, 2, 3], seconds=10)


async def test_every_call_reports_an_unreachable_redis_as_bus_unavailable(
    server: EmbeddedRedis, prefix: str
) -> None:
    async with Bus.from_url(server.url, prefix=prefix, publish_timeout_s=0, **FAST) as bus:
        await bus.publish("t", 1)
        [message] = await bus.read("t", group="g")
        server.kill()
        calls = {
            "read()": bus.read("t", group="g"),
            "ack()": bus.ack(message),
            "history()": bus.history("t"),
            "dead_letters()": bus.dead_letters("t"),
            "replay_dead_letters()": bus.replay_dead_letters("t"),
            "purge_dead_letters()": bus.purge_dead_letters("t"),
            "topics()": bus.topics(),
            "trim()": bus.trim("t", keep_len=0),
            "stats()": bus.stats(),
            "memory()": bus.memory(),
            "dead_letter()": bus.dead_letter(message, "x"),
            "publish to 't'": bus.publish("t", 2),
            "broadcast to 't'": bus.broadcast("t", 3),
        }
        for name, call in calls.items():
            with pytest.raises(BusUnavailableError, match=rf"^{re.escape(name)} failed, Redis unreachable"):
                await call
        with pytest.raises(BusUnavailableError, match=r"^listen\(\) failed"):
            async for _ in bus.listen("t"):
                pass
        assert bus.health.state != "connected" and bus.health.failures >= len(calls)


async def test_a_refused_outbox_entry_does_not_break_connect(
    server: EmbeddedRedis, prefix: str, tmp_path: Path
) -> None:
    """An entry the topic refuses (queue full) stays in the outbox and is retried; connect()
    still succeeds, and other topics' entries behind it are flushed meanwhile."""
    path = tmp_path / "outbox.db"
    async with Bus.from_url(server.url, prefix=prefix, max_queue_size=1, **FAST) as first:
        await first.publish("full", "the one allowed")
    from relaybus.engine.publisher import Write
    from relaybus.message import Message, encode
    from relaybus.outbox import Outbox

    waiting = Message(topic="full", payload="left in the outbox")
    behind = Message(topic="other", payload="not held up")
    box = Outbox(path, max_entries=10, max_bytes=1 << 20)
    for m in (waiting, behind):
        await box.put(m.topic, m.id, encode(m), Write(b"", m.id).options())
    box.close()
    async with Bus.from_url(server.url, prefix=prefix, max_queue_size=1, outbox_path=path, **FAST) as bus:
        assert bus.health.state == "connected"
        assert [m.payload for m in await bus.history("other")] == ["not held up"]
        assert await bus._engine.publisher.outbox.count() == 1  # type: ignore[union-attr]
        await bus.ack(*(await bus.read("full", group="g")))  # room again
        await wait_for(lambda: not bus._engine.publisher.backlog, seconds=10)
        assert [m.payload for m in await bus.history("full")][-1] == "left in the outbox"


async def test_closing_the_bus_ends_a_publish_still_retrying(
    server: EmbeddedRedis, prefix: str, tmp_path: Path
) -> None:
    async with FaultProxy("127.0.0.1", server.port) as proxy:
        bus = await Bus.from_url(
            proxy.url, prefix=prefix, publish_timeout_s=30, outbox_path=tmp_path / "outbox.db", **FAST
        ).connect()
        proxy.set("reset")
        publishing = asyncio.create_task(bus.publish("t", "in flight"))
        await asyncio.sleep(0.3)  # retrying
        await bus.close()
        with pytest.raises(BusUnavailableError, match="closed while Redis was unreachable"):
            await asyncio.wait_for(publishing, 5)


async def test_a_server_that_is_not_redis_is_reported_as_redis_unreachable(prefix: str) -> None:
    """A URL pointing at another service (here one answering HTTP): connect says it cannot
    reach Redis there - not redis-py's bare protocol error."""

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    web = await asyncio.start_server(http, "127.0.0.1", 0)
    port = web.sockets[0].getsockname()[1]
    try:
        with pytest.raises(
            BusUnavailableError,
            match=rf"cannot reach Redis at redis://127.0.0.1:{port}/0: "
            r".*Protocol error.*\(is it a Redis server\?\)",
        ):
            await Bus.from_url(f"redis://127.0.0.1:{port}/0", prefix=prefix, connect_timeout=2).connect()
    finally:
        web.close()
        await web.wait_closed()


async def test_the_publish_meeting_an_emptied_redis_registers_its_topic_again(
    server_factory: type[EmbeddedRedis], prefix: str
) -> None:
    """Redis restarts empty: the publish that meets it registers its topic again in that
    round trip, so topics() and pattern subscriptions - the one running and one started
    afterwards - see it right after the reconnect, not health_check_interval_s later."""
    server = server_factory(port=free_port()).start()
    fast = {**FAST, "health_check_interval_s": 60}
    got: list[int] = []
    later: list[int] = []
    try:
        async with (
            Bus.from_url(server.url, prefix=prefix, **fast) as publisher,
            Bus.from_url(server.url, prefix=prefix, **fast) as consumer,
        ):

            @consumer.subscribe("jobs.*", group="g")
            async def handle(message: Message) -> None:
                got.append(message.payload)

            async with running(consumer):
                await publisher.publish("jobs.a", 0)
                await wait_for(lambda: got == [0])
                server.kill()
                server.start()
                await publisher.publish("jobs.a", 1)
                assert await publisher.topics() == ["jobs.a"]
                await wait_for(lambda: got == [0, 1], seconds=10)
            async with Bus.from_url(server.url, prefix=prefix, **fast) as newcomer:

                @newcomer.subscribe("jobs.*", group="late")
                async def handle_late(message: Message) -> None:
                    later.append(message.payload)

                await run_until(newcomer, lambda: later == [1])
    finally:
        server.close()

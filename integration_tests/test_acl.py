"""Every bus feature as an ACL user made with the documented least-privilege rule
(docs/security.md), confined to the bus's prefix; afterwards ACL LOG is empty."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from relaybus import Bus, BusUnavailableError, Message
from relaybus.embedded import EmbeddedRedis, free_port
from relaybus.engine.publisher import MARK_TTL_MS, Write
from relaybus.message import encode

from .helpers import BINARIES, VERSIONS, run_until, running, wait_for

DOC = Path(__file__).parent.parent / "docs" / "security.md"
PREFIX, USER, PASSWORD = "acl", "relaybus-agent", "s3cret-acl-pw"


def documented_rule(prefix: str) -> list[str]:
    """The ACL SETUSER arguments docs/security.md gives, for `prefix`, plus the literal
    channel pattern of the one `listen` pattern this test uses (as the page says)."""
    [line] = [s for s in DOC.read_text().splitlines() if s.startswith(f"ACL SETUSER {USER} ")]
    args = [a.replace("CHANGE-ME", PASSWORD) for a in shlex.split(line)[3:]]
    args = [a.replace("~relaybus:", f"~{prefix}:").replace("&relaybus:", f"&{prefix}:") for a in args]
    return [*args, f"&{prefix}:bc:{{alerts.*}}"]


@pytest.fixture(params=BINARIES, ids=VERSIONS.get)
def acl_server(
    request: pytest.FixtureRequest, server_factory: type[EmbeddedRedis]
) -> Iterator[tuple[int, redis.Redis]]:
    """A private server (each redis-server binary there is) with the confined user;
    yields its TCP port and an admin client on the unix socket."""
    with server_factory(port=free_port(), executable=request.param) as server:
        assert server.port is not None
        admin = redis.Redis(unix_socket_path=str(server.socket_path))
        admin.execute_command("ACL", "SETUSER", USER, *documented_rule(PREFIX))
        with contextlib.suppress(redis.ResponseError):  # where the server accepts it (see the docs)
            admin.execute_command("ACL", "SETUSER", USER, "+client|maint_notifications")
        admin.execute_command("ACL", "LOG", "RESET")
        yield server.port, admin
        admin.close()


def confined_bus(port: int, **fields: object) -> Bus:
    return Bus.from_url(
        f"redis://127.0.0.1:{port}/0",
        username=USER,
        password=PASSWORD,
        prefix=PREFIX,
        claim_idle_ms=1000,
        max_attempts=2,
        retry_backoff_s=0.05,
        cleanup_interval_s=0.2,
        **fields,
    )


async def test_every_feature_as_a_confined_user(acl_server: tuple[int, redis.Redis]) -> None:
    port, admin = acl_server
    async with confined_bus(port) as bus:
        # publishing: plain, batch, priority lane, delayed, dedup, ttl
        await bus.publish("jobs", {"n": 0})
        await bus.publish_many("jobs", [{"n": 1}, {"n": 2}])
        await bus.publish("jobs", {"n": 3}, priority=7)
        await bus.publish("jobs", {"n": 4}, delay=0.1)
        first = await bus.publish("jobs", {"n": 5}, dedup_key="once")
        assert await bus.publish("jobs", {"n": 6}, dedup_key="once") == first
        await bus.publish("jobs", {"n": 7}, ttl=60)
        # the written-already check of a retried publish and an outbox flush (sent markers),
        # here for a message that was written: nothing is appended
        again = [Write(encode(m), m.id) for m in await bus.history("jobs", limit=1)]
        await bus._engine.publisher._scripted(
            "jobs", again, check=(1, int(time.time() * 1000) + 60_000), mark_ms=MARK_TTL_MS
        )
        await asyncio.sleep(0.15)

        # pull: read and ack
        pulled = await bus.read("jobs", group="pull", count=20)
        assert sorted(m.payload["n"] for m in pulled) == [0, 1, 2, 3, 4, 5, 7]
        assert await bus.ack(*pulled) == 7

        # push: a handler that succeeds, one that always fails (retry, then DLQ)
        done: list[int] = []
        attempts: list[int] = []

        @bus.subscribe("jobs", group="workers")
        async def work(msg: Message) -> None:
            done.append(msg.payload["n"])

        @bus.subscribe("fail*", group="workers")  # a pattern: the topic registry
        async def fail(msg: Message) -> None:
            attempts.append(msg.attempt)
            raise RuntimeError("boom")

        await bus.publish("failing", {"x": 1})
        await run_until(bus, lambda: len(done) == 7 and len(attempts) == 2, seconds=10)
        assert attempts == [1, 2]
        [dead] = await bus.dead_letters("failing")
        assert dead.payload == {"x": 1}

        # history, replay (dead-lettered again after two more attempts), purge
        assert len(await bus.history("jobs")) == 7
        assert await bus.replay_dead_letters("failing") == 1
        assert await bus.dead_letters("failing") == []
        await run_until(bus, lambda: len(attempts) == 4, seconds=10)
        assert await bus.purge_dead_letters("failing") == 1

        # request/reply: the requester's inbox (made, expired, read and deleted by it)
        @bus.subscribe("asks", group="answerers")
        async def answer(msg: Message) -> None:
            await bus.reply(msg, msg.payload + 1)

        async with running(bus):
            assert (await bus.request("asks", 1, timeout=10)).payload == 2

        # broadcast / listen over Pub/Sub
        heard: list[Message] = []

        async def listen() -> None:
            async for m in bus.listen("alerts.*"):
                heard.append(m)
                return

        listener = asyncio.create_task(listen())
        await wait_for(lambda: admin.execute_command("PUBSUB", "NUMPAT") >= 1)
        assert await bus.broadcast("alerts.cpu", {"load": 0.9}) == 1
        await asyncio.wait_for(listener, 5)
        assert heard[0].payload == {"load": 0.9}

        assert await bus.topics() == ["asks", "failing", "jobs"]
        await bus.cleanup()
        stats = await bus.stats()
        assert {t.topic for t in stats.topics} == {"asks", "failing", "jobs"}

    assert admin.execute_command("ACL", "LOG") == []

    # the user really is confined: outside the prefix it is refused (and logged)
    outsider = redis.Redis(port=port, username=USER, password=PASSWORD)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            outsider.set("elsewhere", "x")
    finally:
        outsider.close()
    denied = [e[b"object"] for e in admin.execute_command("ACL", "LOG") if e[b"reason"] == b"key"]
    assert denied == [b"elsewhere"]


async def test_wrong_password_is_refused_without_showing_it(acl_server: tuple[int, redis.Redis]) -> None:
    port, _ = acl_server
    bus = Bus.from_url(f"redis://{USER}:not-the-password@127.0.0.1:{port}/0", prefix=PREFIX)
    with pytest.raises(BusUnavailableError) as info:
        await bus.connect()
    assert "not-the-password" not in str(info.value) and "***" in str(info.value)

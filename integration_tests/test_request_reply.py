"""Request/reply between agents (engine/replies.py): a request waits for its reply,
any number at once, across processes and from SyncBus; no reply in time is a
RequestTimeoutError, a responder that failed for good a RequestFailedError at once;
a reply is accepted only from a responder that read the request, and only the
requester sets when its inbox expires; close() ends the inbox reader at once."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator

import pytest
import redis

from relaybus import (
    Bus,
    FailureDecision,
    Message,
    Reject,
    RelayBusError,
    RequestFailedError,
    RequestTimeoutError,
    SyncBus,
    hookimpl,
)
from relaybus.engine import replies
from relaybus.message import encode

from .helpers import running, wait_for


@contextlib.asynccontextmanager
async def two_buses(url: str, prefix: str) -> AsyncIterator[tuple[Bus, Bus]]:
    """A replying bus and a requesting one, as two agents would each have."""
    async with Bus.from_url(url, prefix=prefix) as server, Bus.from_url(url, prefix=prefix) as client:
        yield server, client


def reviewer(bus: Bus, delay: float = 0.0) -> list[str]:
    """Answers every review request after `delay` s; the list holds each reply's id."""
    sent: list[str] = []

    @bus.subscribe("agents.reviewer", group="reviewers", concurrency=16)
    async def review(msg: Message) -> None:
        await asyncio.sleep(delay)
        sent.append(await bus.reply(msg, {"pr": msg.payload["pr"], "verdict": "approve"}))

    return sent


async def test_a_request_gets_its_reply(redis_url: str, prefix: str) -> None:
    async with two_buses(redis_url, prefix) as (server, client):
        reviewer(server)
        async with running(server):
            answer = await client.request("agents.reviewer", {"pr": 42}, timeout=10)
        assert answer.payload == {"pr": 42, "verdict": "approve"}
        assert answer.correlation_id and answer.topic == "agents.reviewer"
        [request] = await client.history("agents.reviewer")
        assert request.correlation_id == answer.correlation_id and request.reply_to.startswith("@")
        assert request.expires_at is not None  # expires with the wait: no work nobody waits for


async def test_many_requests_in_flight_each_get_their_own_reply(redis_url: str, prefix: str) -> None:
    async with two_buses(redis_url, prefix) as (server, client):
        reviewer(server, delay=0.05)
        async with running(server):
            answers = await asyncio.gather(
                *(client.request("agents.reviewer", {"pr": n}, timeout=20) for n in range(50))
            )
        assert [a.payload["pr"] for a in answers] == list(range(50))


async def test_no_reply_in_time_is_a_request_timeout_error(redis_url: str, prefix: str) -> None:
    async with Bus.from_url(redis_url, prefix=prefix) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match=r"no reply to the request on 'nobody.home' within 0.3"):
            await client.request("nobody.home", {}, timeout=0.3)
        assert time.monotonic() - started < 3
        assert issubclass(RequestTimeoutError, RelayBusError)
        assert issubclass(RequestTimeoutError, TimeoutError)
        with pytest.raises(ValueError, match="timeout"):
            await client.request("nobody.home", {}, timeout=0)


async def test_a_reply_to_a_topic_is_an_ordinary_publish(bus: Bus) -> None:
    await bus.publish("questions", {"q": 1}, reply_to="answers", correlation_id="c-1")
    [question] = await bus.read("questions", group="g")
    reply_id = await bus.reply(question, {"a": 2})
    [answer] = await bus.history("answers")
    assert (answer.id, answer.payload, answer.correlation_id) == (reply_id, {"a": 2}, "c-1")
    with pytest.raises(ValueError, match="reply_to"):
        await bus.reply(answer, {})


def test_sync_bus_requests_and_replies(redis_url: str, prefix: str) -> None:
    with (
        SyncBus.from_url(redis_url, prefix=prefix) as server,
        SyncBus.from_url(redis_url, prefix=prefix) as client,
    ):

        @server.subscribe("sync.asks", group="g")
        def answer(msg: Message) -> None:  # a plain function: runs in a worker thread
            server.reply(msg, msg.payload * 2)

        runner = threading.Thread(target=server.run)
        runner.start()
        try:
            assert client.request("sync.asks", 21, timeout=10).payload == 42
        finally:
            server.stop()
            runner.join()


REPLIER = r"""
import asyncio, sys
from relaybus import Bus

async def main(url, prefix):
    async with Bus.from_url(url, prefix=prefix) as bus:
        @bus.subscribe("agents.other", group="g")
        async def handle(msg):
            await bus.reply(msg, {"from": "another process", "got": msg.payload})
        await bus.run()

asyncio.run(main(*sys.argv[1:3]))
"""


def start_replier(url: str, prefix: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", REPLIER, url, prefix])


async def test_a_request_answered_by_another_process(redis_url: str, prefix: str) -> None:
    proc = start_replier(redis_url, prefix)
    try:
        async with Bus.from_url(redis_url, prefix=prefix) as client:
            answer = await client.request("agents.other", {"n": 7}, timeout=30)
        assert answer.payload == {"from": "another process", "got": {"n": 7}}
    finally:
        proc.kill()
        proc.wait()


async def test_replies_to_a_requester_that_gave_up_are_read_then_gone_with_its_inbox(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """The requester gave up: the late reply is read and deleted like any other, the
    inbox expires a moment after the last deadline, and a reply after that is not kept
    (a reply never makes an inbox)."""
    async with two_buses(redis_url, prefix) as (server, client):
        sent = reviewer(server, delay=1.2)  # answers after the requester gave up
        async with running(server):
            with pytest.raises(RequestTimeoutError):
                await client.request("agents.reviewer", {"pr": 1}, timeout=1.0)
            assert client._engine.inbox is not None
            inbox = client._engine.inbox.key
            assert 0 < raw.pttl(inbox) <= replies.MARGIN_MS  # the deadline passed: the margin is left
            await wait_for(lambda: len(sent) == 1, 5)
            await asyncio.sleep(0.2)  # for the reader to read it
            assert raw.xlen(inbox) == 0  # the late reply was read (and dropped): nothing kept
            await wait_for(lambda: raw.exists(inbox) == 0, 5)  # gone with its inbox
            [request] = await client.history("agents.reviewer")
            await server.reply(request, "far too late")
            assert raw.exists(inbox) == 0  # not made again by a reply


async def test_more_replies_in_flight_than_ever_before_are_none_of_them_lost(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """1,500 replies land in the inbox at once, before the requester reads them: none is
    trimmed (the inbox had MAXLEN ~1000: 483 of 1,500 timed out), and once read they are
    deleted, so the inbox is bounded by what is unread."""
    count = 1500
    async with two_buses(redis_url, prefix) as (server, client):
        asking = asyncio.gather(*(client.request("bulk", n, timeout=60) for n in range(count)))
        got: list[Message] = []
        while len(got) < count:
            got += await server.read("bulk", group="g", count=count, block_ms=100)
        await asyncio.gather(*(server.reply(m, m.payload * 2) for m in got))  # all at once
        answers = await asking
        assert [a.payload for a in answers] == [2 * n for n in range(count)]
        assert client._engine.inbox is not None
        assert raw.xlen(client._engine.inbox.key) == 0


def fails_for_good(bus: Bus, error: Exception) -> None:
    @bus.subscribe("agents.flaky", group="g")
    async def handle(msg: Message) -> None:
        raise error


SECRET_URL = "redis://agent:hunter2@db.internal:6379/0"


async def test_a_responder_that_fails_for_good_raises_request_failed_error(
    redis_url: str, prefix: str
) -> None:
    """Retries used up (the dlq plugin, max_attempts 2) or rejected at once: the
    requester learns it from a RequestFailedError, not a timeout - the error's type and a
    bounded message, no password."""
    async with (
        Bus.from_url(redis_url, prefix=prefix, max_attempts=2, retry_backoff_s=0.01) as server,
        Bus.from_url(redis_url, prefix=prefix) as client,
    ):
        fails_for_good(server, ValueError(f"cannot reach {SECRET_URL} " + "x" * 10_000))
        async with running(server):
            with pytest.raises(RequestFailedError) as failed:
                await client.request("agents.flaky", {"n": 1}, timeout=60)
        error = failed.value
        assert isinstance(error, RelayBusError) and not isinstance(error, TimeoutError)
        assert (error.error_type, error.outcome) == ("ValueError", "dead_lettered")
        assert error.reason == "failed 2 times (max_attempts)"
        assert error.error.startswith("cannot reach redis://agent:***@db.internal")
        assert len(error.error) == replies.ERROR_CHARS and "hunter2" not in str(error)
        assert "failed for good (dead_lettered: failed 2 times (max_attempts)): ValueError: " in str(error)
        [dead] = await client.dead_letters("agents.flaky")  # and the request is in the DLQ as ever
        assert dead.payload == {"n": 1}

    async with two_buses(redis_url, prefix) as (server, client):
        fails_for_good(server, Reject("not my kind of request"))
        async with running(server):
            with pytest.raises(RequestFailedError, match=r"dead_lettered: rejected.*Reject: not my kind"):
                await client.request("agents.flaky", {"n": 2}, timeout=60)


async def test_a_dropped_or_pulled_and_dead_lettered_request_raises_request_failed_error(
    redis_url: str, prefix: str
) -> None:
    class Drop:
        @hookimpl
        def on_failure(self) -> FailureDecision:
            return FailureDecision.drop("not worth it")

    async with two_buses(redis_url, prefix) as (server, client):
        server.plugins.register(Drop(), "drop")
        fails_for_good(server, RuntimeError("boom"))
        async with running(server):
            dropped = r"\(dropped: not worth it\): RuntimeError: boom"
            with pytest.raises(RequestFailedError, match=dropped) as e:
                await client.request("agents.flaky", {}, timeout=60)
        assert e.value.outcome == "dropped"

        asking = asyncio.create_task(client.request("pulled", {}, timeout=60))
        got: list[Message] = []
        while not got:
            got = await server.read("pulled", group="g", block_ms=100)
        assert await server.dead_letter(got[0], "bad input", KeyError("pr")) is True
        with pytest.raises(RequestFailedError, match=r"dead_lettered: bad input\): KeyError: 'pr'"):
            await asking


def test_sync_bus_request_raises_request_failed_error(redis_url: str, prefix: str) -> None:
    with (
        SyncBus.from_url(redis_url, prefix=prefix) as server,
        SyncBus.from_url(redis_url, prefix=prefix) as client,
    ):

        @server.subscribe("sync.fails", group="g")
        def answer(msg: Message) -> None:
            raise Reject("no")

        runner = threading.Thread(target=server.run)
        runner.start()
        try:
            with pytest.raises(RequestFailedError, match="rejected"):
                client.request("sync.fails", 1, timeout=60)
        finally:
            server.stop()
            runner.join()


async def test_a_reply_without_the_requests_token_is_ignored(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """Someone who can write to the prefix but did not read the request - knowing the
    inbox and the correlation id, not the token - answers first: ignored; the
    responder's reply, echoing the token, is the one returned, and only once."""
    async with two_buses(redis_url, prefix) as (server, client):
        asking = asyncio.create_task(client.request("asks", "real?", timeout=60))
        got: list[Message] = []
        while not got:
            got = await server.read("asks", group="g", block_ms=100)
        [request] = got
        assert client._engine.inbox is not None
        for token in ({}, {replies.TOKEN: "guessed"}):
            forged = Message(
                topic="asks", payload="forged", correlation_id=request.correlation_id, headers=token
            )
            raw.xadd(client._engine.inbox.key, {"v": "1", "m": encode(forged)})
        await asyncio.sleep(0.3)  # the forgeries were read
        assert not asking.done()
        await server.reply(request, "real")
        await server.reply(request, "a second answer")
        answer = await asking
        assert answer.payload == "real" and answer.headers[replies.TOKEN] == request.headers[replies.TOKEN]


async def test_only_the_requester_sets_when_its_inbox_expires(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """A request forged to live ten years, naming a requester's inbox, answered by an
    honest responder, does not make that inbox live ten years; nor does a writer's
    PEXPIRE outlast the requester's next request."""
    ten_years = 10 * 365 * 86400
    async with two_buses(redis_url, prefix) as (server, client):
        sent = reviewer(server)
        async with running(server):
            await client.request("agents.reviewer", {"pr": 1}, timeout=5)
            assert client._engine.inbox is not None
            inbox = client._engine.inbox.key
            await client.publish(
                "agents.reviewer", {"pr": 2}, ttl=ten_years, reply_to=client._engine.inbox.address
            )
            await wait_for(lambda: len(sent) == 2, 5)
            await asyncio.sleep(0.2)  # the reply to it was read
            assert raw.pttl(inbox) <= 5000 + replies.MARGIN_MS
            raw.pexpire(inbox, ten_years * 1000)
            await client.request("agents.reviewer", {"pr": 3}, timeout=5)
            assert raw.pttl(inbox) <= 5000 + replies.MARGIN_MS


async def test_close_ends_the_inbox_reader_at_once(
    redis_url: str, prefix: str, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() wakes the reader's blocking XREAD instead of waiting it out: with a
    60 s XREAD, close returns within a fraction of that, and the reader ended by itself
    (it was ~1 s with the usual BLOCK_MS: every bus that made a request)."""
    monkeypatch.setattr(replies, "BLOCK_MS", 60_000)
    async with Bus.from_url(redis_url, prefix=prefix) as server:
        reviewer(server)
        async with running(server):
            client = await Bus.from_url(redis_url, prefix=prefix, socket_timeout=120).connect()
            await client.request("agents.reviewer", {"pr": 1}, timeout=10)
            assert client._engine.inbox is not None
            reader = client._engine.inbox._reader
            assert reader is not None and not reader.done()
            await asyncio.wait_for(client.close(), 20)
            assert reader.done() and not reader.cancelled()

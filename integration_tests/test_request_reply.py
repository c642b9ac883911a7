"""Request/reply between agents (engine/replies.py): a request waits for its reply,
many at once, across processes and from SyncBus; no reply in time is a
RequestTimeoutError; replies to a requester that died expire."""

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

from relaybus import Bus, Message, RelayBusError, RequestTimeoutError, SyncBus

from .helpers import running, wait_for


@contextlib.asynccontextmanager
async def two_buses(url: str, prefix: str) -> AsyncIterator[tuple[Bus, Bus]]:
    """A replying bus and a requesting one, as two agents would each have."""
    async with Bus.from_url(url, prefix=prefix) as server, Bus.from_url(url, prefix=prefix) as client:
        yield server, client


def reviewer(bus: Bus, delay: float = 0.0) -> None:
    @bus.subscribe("agents.reviewer", group="reviewers", concurrency=16)
    async def review(msg: Message) -> None:
        await asyncio.sleep(delay)
        await bus.reply(msg, {"pr": msg.payload["pr"], "verdict": "approve"})


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
            answers = await asyncio.gather(*(client.request("agents.reviewer", {"pr": n}, timeout=20)
                                             for n in range(50)))
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
    with SyncBus.from_url(redis_url, prefix=prefix) as server, \
            SyncBus.from_url(redis_url, prefix=prefix) as client:

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


async def test_replies_to_a_requester_that_died_expire(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """The requester gave up (or died): the reply still lands in its inbox, which
    expires when the request would have - nothing piles up."""
    async with two_buses(redis_url, prefix) as (server, client):
        reviewer(server, delay=1.5)  # answers after the requester gave up
        async with running(server):
            with pytest.raises(RequestTimeoutError):
                await client.request("agents.reviewer", {"pr": 1}, timeout=1.0)
            assert client._inbox is not None
            inbox = client.keys.inbox(client._inbox.name)
            await wait_for(lambda: raw.exists(inbox) == 1, 5)  # the late reply arrived
            assert 0 < raw.pttl(inbox) <= 1000  # the request expired: the shortest life
            await wait_for(lambda: raw.exists(inbox) == 0, 5)  # and is gone with its inbox

"""The fault proxy does what each mode says, between redis-py and a real redis-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from relaybus.embedded import EmbeddedRedis, free_port

from .faultproxy import FaultProxy
from .helpers import wait_for


@pytest.fixture
async def proxied(server_factory: type[EmbeddedRedis]) -> AsyncIterator[tuple[FaultProxy, redis.Redis]]:
    """A proxy in front of a private server, and a direct client to look behind it."""
    with server_factory(port=free_port()) as server:
        assert server.port is not None
        direct = redis.Redis(port=server.port)
        async with FaultProxy("127.0.0.1", server.port) as proxy:
            yield proxy, direct
        direct.close()


def client(proxy: FaultProxy, timeout: float = 2.0) -> aioredis.Redis:
    """A client that never retries by itself, so each fault shows."""
    return aioredis.Redis.from_url(
        proxy.url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), retries=0)
    )


async def test_pass(proxied: tuple[FaultProxy, redis.Redis]) -> None:
    proxy, direct = proxied
    async with client(proxy) as r:
        await r.set("k", "v")
        assert await r.get("k") == b"v"
    assert direct.get("k") == b"v" and proxy.accepted >= 1


async def test_delay(proxied: tuple[FaultProxy, redis.Redis]) -> None:
    proxy, _ = proxied
    async with client(proxy) as r:
        await r.ping()  # connected before the delay starts
        proxy.set("delay", 0.3)
        started = time.monotonic()
        assert await r.ping()
        assert time.monotonic() - started >= 0.6  # request and reply each waited 0.3 s
        proxy.set("pass")
        started = time.monotonic()
        assert await r.ping()
        assert time.monotonic() - started < 0.3


async def test_blackhole(proxied: tuple[FaultProxy, redis.Redis]) -> None:
    proxy, direct = proxied
    async with client(proxy, timeout=0.5) as r:
        await r.ping()
        proxy.set("blackhole")
        with pytest.raises(redis.TimeoutError):
            await r.set("k", "v")
    assert direct.get("k") is None  # nothing reached the server
    async with client(proxy, timeout=0.5) as fresh:  # new connections are held too
        with pytest.raises(redis.TimeoutError):
            await fresh.ping()
    proxy.set("pass")
    async with client(proxy) as r:
        assert await r.ping()


async def test_reset(proxied: tuple[FaultProxy, redis.Redis]) -> None:
    proxy, _ = proxied
    async with client(proxy) as r:
        await r.ping()
        proxy.set("reset")  # the open connection is aborted now
        with pytest.raises(redis.ConnectionError):
            await r.ping()
        with pytest.raises(redis.ConnectionError):  # and a new one on accept
            await r.ping()
        proxy.set("pass")
        assert await r.ping()


async def test_forward_then_drop_reply(proxied: tuple[FaultProxy, redis.Redis]) -> None:
    proxy, direct = proxied
    async with client(proxy) as r:
        await r.ping()
        proxy.set("forward_then_drop_reply")
        with pytest.raises(redis.ConnectionError):
            await r.incr("counter")
        assert direct.get("counter") == b"1"  # the write was applied, once
        proxy.set("pass")
        assert await r.incr("counter") == 2


async def test_late_bytes_reach_the_server_after_the_client_left(
    proxied: tuple[FaultProxy, redis.Redis],
) -> None:
    proxy, direct = proxied
    async with client(proxy, timeout=0.3) as r:
        await r.ping()
        proxy.late_open(1.0, match=b"SET")
        assert await r.ping()  # not matched: on time
        with pytest.raises(redis.exceptions.TimeoutError):
            await r.set("late", "1")
        assert direct.get("late") is None and proxy.late_links == 1
        await r.aclose()  # the client gave up on it
    await wait_for(lambda: proxy.late_links == 0, seconds=5)
    assert direct.get("late") == b"1"

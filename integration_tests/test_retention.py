"""Retention is the topic's, not the cleaning process's: stored on the topic, applied by
whichever bus runs cleanup; tools run no cleanup; one plugin's failing cleanup does not
stop another's."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from typer.testing import CliRunner, Result

from relaybus import Bus, ConfigError, PluginError, RelayBusError, SyncBus, hookimpl
from relaybus.cli import app
from relaybus.embedded import free_port

from .helpers import wait_for

COMMAND = [sys.executable, "-c", "from relaybus.cli import app; app()"]


async def consumed(bus: Bus, topic: str, n: int) -> None:
    """`n` entries on `topic`, every one read and acknowledged by group g: all trimmable."""
    for start in range(0, n, 1000):
        await bus.publish_many(topic, list(range(start, min(n, start + 1000))))
    while got := await bus.read(topic, "g", count=1000):
        await bus.ack(*got)


async def test_a_cleanup_with_other_settings_leaves_history_an_app_keeps_whole(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """The issue's dashboard, small: an app keeps all history; a process whose own
    settings would keep 1,000 runs cleanup."""
    async with Bus.from_url(redis_url, prefix=prefix, retention_max_len=None) as app:
        await consumed(app, "kept", 2000)
    async with Bus.from_url(redis_url, prefix=prefix, retention_max_len=1000) as tool:
        await tool.cleanup()
        assert raw.xlen(f"{prefix}:{{kept}}:stream") == 2000
        stored = await tool.retention("kept")  # the app's settings, declared as it published
        assert stored is not None and (stored.keep_s, stored.keep_len, stored.pinned) == (86_400, None, False)


async def test_any_bus_trims_a_topic_by_the_retention_stored_on_it(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, retention_max_len=5) as app:
        await consumed(app, "declared", 50)  # its settings, declared on the topic as it publishes
        await consumed(app, "pinned", 50)
        await app.set_retention("pinned", keep_len=10, dlq_keep_len=1)
        first, *rest = await app.read("pinned", "h", count=50)  # a second group consumes too,
        for message in (first, *rest[:2]):  # three as dead letters
            await app.dead_letter(message, "test")
        await app.ack(*rest[2:])
    async with Bus.from_url(redis_url, prefix=prefix, retention_s=None, retention_max_len=None) as other:
        await other.cleanup()
        assert [m.payload for m in await other.history("pinned")] == list(range(40, 50))
        assert [m.payload for m in await other.dead_letters("pinned")] == [2]
    assert raw.xlen(f"{prefix}:{{declared}}:stream") == 5


async def test_a_bus_never_lowers_what_another_asked_to_keep_until_it_is_set(
    redis_url: str, prefix: str, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        Bus.from_url(redis_url, prefix=prefix, retention_max_len=None) as keeper,
        Bus.from_url(redis_url, prefix=prefix, retention_s=None, retention_max_len=10) as lean,
    ):
        await consumed(keeper, "t", 100)
        with caplog.at_level(logging.WARNING, logger="relaybus.retention"):
            await lean.publish("t", "more")
            await lean.publish("t", "and more")
        assert caplog.text.count("topic 't' keeps") == 1  # said once, naming why
        assert "not this bus's retention settings keep_s=None, keep_len=10" in caplog.text
        await lean.ack(*await lean.read("t", "g", count=5))
        await lean.cleanup()
        assert raw.xlen(lean.keys.stream("t")) == 102
        stored = await lean.set_retention("t", keep_len=10)  # set by hand: pinned
        assert (stored.keep_len, stored.pinned) == (10, True)
        await keeper.cleanup()  # declares its topics again (no change to a pinned one), then trims
        assert raw.xlen(lean.keys.stream("t")) == 10


async def test_a_topic_with_no_retention_stored_keeps_all_its_history(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    async with Bus.from_url(redis_url, prefix=prefix) as writer:
        await consumed(writer, "legacy", 20)
    raw.delete(writer.keys.retention("legacy"))  # as a topic written before retention was stored
    async with Bus.from_url(redis_url, prefix=prefix, retention_s=0, retention_max_len=0) as bus:
        assert await bus.retention("legacy") is None
        await bus.cleanup()
        assert raw.xlen(bus.keys.stream("legacy")) == 20


async def test_a_subscribing_bus_declares_its_retention_at_each_cleanup(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, retention_max_len=None) as app:
        app.subscribe(["orders", "audit.*"], group="g")(lambda message: None)
        await app.cleanup()
        stored = await app.retention("orders")
        assert stored is not None and stored.keep_len is None
        raw.delete(app.keys.retention("orders"))  # Redis restarted empty, say
        await app.cleanup()
        assert await app.retention("orders") is not None
        assert [k for k in raw.scan_iter(f"{prefix}:*retention")] == [app.keys.retention("orders").encode()]


async def test_bad_retention_arguments_are_clear_errors(bus: Bus) -> None:
    with pytest.raises(ValueError, match="dlq_keep_len must be >= 0, got -1"):
        await bus.set_retention("t", dlq_keep_len=-1)
    with pytest.raises(ValueError, match="keep_s must be a finite number"):
        await bus.set_retention("t", keep_s=math.inf)
    with pytest.raises(ValueError, match="invalid topic"):
        await bus.retention("a b")
    with pytest.raises(ConfigError, match="retention_s: Input should be less than or equal to 315360000"):
        Bus(retention_s=1e12)  # refused when built, not at every cleanup


def test_sync_bus_sets_and_reads_retention(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        assert bus.retention("t") is None
        stored = bus.set_retention("t", keep_s=60, dlq_keep_len=3)
        assert bus.retention("t") == stored
        assert (stored.keep_s, stored.keep_len, stored.dlq_keep_len, stored.pinned) == (60, None, 3, True)


async def test_a_hand_written_retention_value_counts_as_no_limit(
    bus: Bus, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await consumed(bus, "t", 5)
    raw.hset(bus.keys.retention("t"), "keep_len", "lots")
    with caplog.at_level(logging.WARNING, logger="relaybus.retention"):
        assert (await bus.retention("t")).keep_len is None  # type: ignore[union-attr]
    assert "retention keep_len of topic 't' is b'lots', no integer: taken as no limit" in caplog.text


def ctrl_c_kills() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a terminal's Ctrl-C


async def test_a_foreign_key_in_one_topics_place_stops_neither_publishing_nor_the_others_retention(
    redis_url: str, prefix: str, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, retention_max_len=2) as bus:
        raw.set(bus.keys.retention("a"), "not a hash")  # written by someone else
        with caplog.at_level(logging.ERROR, logger="relaybus"):
            for n in range(20):
                await bus.publish("a", n)  # every publish goes in; the declaration fails once
        assert raw.xlen(bus.keys.stream("a")) == 20
        assert len([r for r in caplog.records if "on_published" in r.getMessage()]) == 1
        await consumed(bus, "b", 10)
        with pytest.raises(
            RelayBusError,
            match=r"retention failed for 2 topic.*the others were done: "
            r"declaring on 'a': .*WRONGTYPE.*trimming 'a': WRONGTYPE",
        ):
            await bus.cleanup()
        assert raw.xlen(bus.keys.stream("b")) == 2


# -- tools ---------------------------------------------------------------------------------


@pytest.fixture
def tool_env() -> Iterator[dict[str, str]]:
    """What would make a tool trim everything consumed at once, if it ran cleanup."""
    yield {
        **os.environ,
        "RELAYBUS_CLEANUP_INTERVAL_S": "0.1",
        "RELAYBUS_RETENTION_S": "0",
        "RELAYBUS_RETENTION_MAX_LEN": "0",
    }


def test_the_dashboard_metrics_and_tail_change_nothing(
    redis_url: str, prefix: str, raw: redis.Redis, tool_env: dict[str, str]
) -> None:
    """The real commands, as subprocesses, each with a cleanup interval of 0.1 s and
    settings that keep nothing: a topic pinned to keep nothing stays whole too."""

    async def app() -> None:
        async with Bus.from_url(redis_url, prefix=prefix, retention_max_len=None) as bus:
            await consumed(bus, "kept", 2000)
            await consumed(bus, "pinned", 200)
            await bus.set_retention("pinned", keep_s=0, keep_len=0)

    asyncio.run(app())
    common = ["--redis-url", redis_url, "--prefix", prefix]
    tools = {
        "dashboard": [*COMMAND, "dashboard", "--port", str(free_port()), *common],
        "metrics": [*COMMAND, "metrics", "--port", str(free_port()), "--interval", "0.1", *common],
        "tail": [*COMMAND, "tail", "kept", "--follow", "--json", "--count", "1", *common],
    }
    ready = {"dashboard": "relaybus dashboard on", "metrics": "serving http", "tail": '"payload":1999'}
    procs = {
        name: subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=tool_env,
            preexec_fn=ctrl_c_kills,
        )
        for name, args in tools.items()
    }
    try:
        for name, proc in procs.items():
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert ready[name] in line, (name, line)
        time.sleep(1.0)  # ten of the cleanup intervals they would run by
        for proc in procs.values():
            assert proc.poll() is None
        assert raw.xlen(f"{prefix}:{{kept}}:stream") == 2000
        assert raw.xlen(f"{prefix}:{{pinned}}:stream") == 200
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_the_mcp_server_changes_nothing(
    redis_url: str, prefix: str, raw: redis.Redis, tool_env: dict[str, str]
) -> None:
    async with Bus.from_url(redis_url, prefix=prefix) as bus:
        await consumed(bus, "pinned", 200)
        await bus.set_retention("pinned", keep_s=0, keep_len=0)
    params = StdioServerParameters(
        command=sys.executable,
        env=tool_env,
        args=[
            "-c",
            "from relaybus.cli import app; app()",
            "mcp",
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
        ],
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        seen = await session.call_tool("relaybus_history", {"topic": "pinned", "limit": 1})
        assert not seen.is_error  # it is up, its bus connected
        await asyncio.sleep(1.0)  # ten of the cleanup intervals it would run by
        assert raw.xlen(f"{prefix}:{{pinned}}:stream") == 200


def test_relaybus_cleanup_applies_the_topics_retention_not_its_own(
    redis_url: str, prefix: str, raw: redis.Redis, tool_env: dict[str, str]
) -> None:
    async def app() -> None:
        async with Bus.from_url(redis_url, prefix=prefix, retention_max_len=None) as bus:
            await consumed(bus, "kept", 2000)
            await consumed(bus, "pinned", 200)
            await bus.set_retention("pinned", keep_len=50)

    asyncio.run(app())
    done = subprocess.run(
        [*COMMAND, "cleanup", "--redis-url", redis_url, "--prefix", prefix],
        env=tool_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert raw.xlen(f"{prefix}:{{kept}}:stream") == 2000
    assert raw.xlen(f"{prefix}:{{pinned}}:stream") == 50


def test_relaybus_retention_shows_and_sets_a_topics_retention(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    def cli(*args: str) -> Result:
        return CliRunner().invoke(app, ["retention", *args, "--redis-url", redis_url, "--prefix", prefix])

    async def app_publishes() -> None:
        async with Bus.from_url(redis_url, prefix=prefix, retention_max_len=None) as bus:
            await bus.publish("t", 1)

    asyncio.run(app_publishes())
    shown = cli("t")
    assert shown.exit_code == 0 and json.loads(shown.stdout) == {
        "keep_s": 86400.0,
        "keep_len": None,
        "dlq_keep_s": None,
        "dlq_keep_len": None,
        "pinned": False,
    }
    assert json.loads(cli("nothing-there").stdout) is None
    refused = cli("t", "--keep-len", "5")
    assert refused.exit_code == 1 and "give --set to store a retention" in refused.stderr
    assert json.loads(cli("t").stdout)["keep_len"] is None  # nothing stored
    stored = cli("t", "--set", "--keep-len", "5")
    assert json.loads(stored.stdout) == {
        "keep_s": None,
        "keep_len": 5,
        "dlq_keep_s": None,
        "dlq_keep_len": None,
        "pinned": True,
    }
    assert raw.hget(f"{prefix}:{{t}}:retention", "keep_len") == b"5"


# -- a failing cleanup plugin ------------------------------------------------------------------


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def on_cleanup(self) -> None:
        self.calls += 1
        raise RuntimeError("broken on purpose")


async def test_a_raising_cleanup_plugin_does_not_stop_retention(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    async with Bus.from_url(redis_url, prefix=prefix, retention_max_len=10) as bus:
        bus.plugins.register(Broken(), "broken")  # after the built-ins: called before them
        await consumed(bus, "t", 500)
        with pytest.raises(PluginError, match="plugin 'broken' failed in on_cleanup: RuntimeError"):
            await bus.cleanup()  # called by hand, it still says so: once every plugin ran
        assert raw.xlen(bus.keys.stream("t")) == 10


async def test_a_plugin_failing_every_cleanup_is_logged_boundedly(
    redis_url: str, prefix: str, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Broken()
    with caplog.at_level(logging.INFO, logger="relaybus"):
        async with Bus.from_url(
            redis_url, prefix=prefix, retention_max_len=10, cleanup_interval_s=0.1
        ) as bus:  # the floor
            bus.plugins.register(broken, "broken")
            await consumed(bus, "t", 100)
            await wait_for(lambda: broken.calls >= 20 and raw.xlen(bus.keys.stream("t")) == 10, seconds=20)
    said = [r for r in caplog.records if "'broken'" in r.getMessage()]
    assert len(said) == int(math.log2(broken.calls)) + 1  # failures 1, 2, 4, 8, ...
    assert said[0].exc_info is not None and all(r.exc_info is None for r in said[1:])
    assert "failed 2 times in a row (plugin 'broken' failed in on_cleanup" in said[1].getMessage()
    assert not [r for r in caplog.records if "background job" in r.getMessage()]

"""The long-running commands - `tail --follow` (with and without --group), `metrics`,
`dashboard`, `mcp --transport http` - as real processes on a Redis that is SIGKILLed and
restarted from its AOF, then SIGSTOPped for 3 s: each stays alive, says once on stderr that
Redis is unreachable and that it is retrying, carries on when Redis is back, and only a
Ctrl-C ends it (exit 0)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from relaybus import SyncBus
from relaybus.embedded import EmbeddedRedis, free_port

from .helpers import wait_for
from .test_mcp import listening

COMMAND = [sys.executable, "-c", "from relaybus.cli import app; app()"]
UNREACHABLE = "warning: Redis unreachable ("
BACK = "Redis reachable again after "
STOPPED_S = 3.0  # a SIGSTOP shorter than socket_timeout (5 s): waited out, no outage seen
PREFIX = "tools"  # the server is this test's own


@pytest.fixture
def server(server_factory: Callable[..., EmbeddedRedis]) -> Iterator[EmbeddedRedis]:
    with server_factory(port=free_port(), args=["--appendonly", "yes", "--appendfsync", "always"]) as s:
        yield s


class Tool:
    """A `relaybus` command as a subprocess, its stdout and stderr read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*COMMAND, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a terminal's Ctrl-C
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        streams = ((self.proc.stdout, self.out.put), (self.proc.stderr, self.err.append))
        self.pumps = [threading.Thread(target=self._pump, args=pair, daemon=True) for pair in streams]
        for pump in self.pumps:
            pump.start()

    @staticmethod
    def _pump(stream: object, put: Callable[[str], None]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            put(line.rstrip("\n"))

    def stderr(self) -> str:
        return "\n".join(self.err)

    def failed(self) -> bool:
        """A traceback or an `error:` line on stderr: the command gave up."""
        return any("Traceback" in line or line.startswith("error:") for line in self.err)

    def said(self, text: str) -> int:
        return sum(text in line for line in self.err)

    def wait_said(self, text: str, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while not self.said(text):
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.err}"
            assert time.monotonic() < deadline, f"never said {text!r}: {self.err}"
            time.sleep(0.05)

    def lines(self, n: int, seconds: float = 30.0) -> list[str]:
        got, deadline = [], time.monotonic() + seconds
        while len(got) < n:
            try:
                got.append(self.out.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"only {got} of {n} lines; stderr: {self.err}") from None
        return got

    def ctrl_c(self) -> int:
        """Its exit code after a Ctrl-C; all it wrote has been read."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=20)
        for pump in self.pumps:
            pump.join(10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return int(reply.status)


def wait_http(url: str, tool: Tool, needle: str = "", seconds: float = 30.0) -> str:
    """The body of `url` once it answers 200 (and holds `needle`)."""
    deadline = time.monotonic() + seconds
    while True:
        assert tool.proc.poll() is None, f"exited {tool.proc.returncode}: {tool.err}"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = reply.read().decode()
                if reply.status == 200 and needle in body:
                    return body
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered with {needle!r}: {tool.err}"
        time.sleep(0.1)


def stop_for_a_while(server: EmbeddedRedis) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        time.sleep(STOPPED_S)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def payloads(lines: list[str]) -> list[object]:
    return [json.loads(line)["payload"] for line in lines]


@pytest.mark.parametrize("group", [[], ["--group", "g"]], ids=["history", "group"])
def test_tail_follow_rides_out_a_restart_and_a_stop(server: EmbeddedRedis, group: list[str]) -> None:
    """What was appended while the follow waited - a publish retried across the outage -
    is shown once Redis is back, in order, and nothing shown before is shown again."""
    with SyncBus.from_url(server.url, prefix=PREFIX, publish_timeout_s=60) as bus:
        bus.publish("sys.a", "before")
        tail = Tool(
            "tail", "sys.*", *group, "--follow", "--json", "--redis-url", server.url, "--prefix", PREFIX
        )
        try:
            assert payloads(tail.lines(1)) == ["before"]
            server.kill()
            tail.wait_said(UNREACHABLE)  # a follow polls every 0.25 s: it finds out at once
            retried = threading.Thread(target=bus.publish, args=("sys.a", "during the outage"))
            retried.start()  # it retries until Redis is back
            time.sleep(1)
            server.start()
            retried.join(60)
            bus.publish("sys.b", "after the restart")  # a new topic of the pattern, too
            assert payloads(tail.lines(2)) == ["during the outage", "after the restart"]
            tail.wait_said(BACK)
            stop_for_a_while(server)
            bus.publish("sys.a", "after the stop")
            assert payloads(tail.lines(1)) == ["after the stop"]
            assert tail.proc.poll() is None
            assert tail.ctrl_c() == 0
            assert tail.out.empty()  # nothing repeated
        finally:
            tail.close()
        assert (tail.said(UNREACHABLE), tail.said(BACK)) == (1, 1), tail.stderr()
        assert not tail.failed(), tail.stderr()
        if group:
            groups = [g for t in bus.stats().topics for g in t.groups]
            assert len(groups) == 2 and not any(g.pending for g in groups)  # all shown, all acked


def test_ctrl_c_ends_a_follow_waiting_for_redis(server: EmbeddedRedis) -> None:
    with SyncBus.from_url(server.url, prefix=PREFIX) as bus:
        bus.publish("sys.a", "before")
    tail = Tool("tail", "sys.*", "--follow", "--json", "--redis-url", server.url, "--prefix", PREFIX)
    try:
        assert payloads(tail.lines(1)) == ["before"]
        server.kill()
        tail.wait_said(UNREACHABLE)
        assert tail.ctrl_c() == 0
    finally:
        tail.close()
    assert not tail.failed(), tail.stderr()


def test_metrics_and_dashboard_ride_out_a_restart_and_a_stop(server: EmbeddedRedis) -> None:
    """Both keep answering 200 while Redis is away (the last numbers), say so once, and
    show what is published after it is back."""
    metrics_port, dashboard_port = free_port(), free_port()
    common = ["--redis-url", server.url, "--prefix", PREFIX]
    metrics = Tool("metrics", "--port", str(metrics_port), "--interval", "0.2", *common)
    dashboard = Tool("dashboard", "--port", str(dashboard_port), *common)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    overview_url = f"http://127.0.0.1:{dashboard_port}/api/overview"
    try:
        with SyncBus.from_url(server.url, prefix=PREFIX) as bus:
            bus.publish("before", 1)
        wait_http(metrics_url, metrics, 'relaybus_queue_length{topic="before"} 1.0')
        wait_http(overview_url, dashboard, '"topic":"before"')
        server.kill()
        for tool in (metrics, dashboard):
            tool.wait_said(UNREACHABLE)
        assert http_status(metrics_url) == 200  # the last numbers, while Redis is away
        assert http_status(f"http://127.0.0.1:{dashboard_port}/") == 200
        server.start()
        with SyncBus.from_url(server.url, prefix=PREFIX) as bus:
            bus.publish("after", 1)
        for tool in (metrics, dashboard):
            tool.wait_said(BACK)
        wait_http(metrics_url, metrics, 'relaybus_queue_length{topic="after"} 1.0')
        wait_http(overview_url, dashboard, '"topic":"after"')
        stop_for_a_while(server)
        with SyncBus.from_url(server.url, prefix=PREFIX) as bus:
            bus.publish("stopped", 1)
        wait_http(metrics_url, metrics, 'relaybus_queue_length{topic="stopped"} 1.0')
        wait_http(overview_url, dashboard, '"topic":"stopped"')
        for tool in (metrics, dashboard):
            assert tool.ctrl_c() == 0, tool.stderr()
            assert (tool.said(UNREACHABLE), tool.said(BACK)) == (1, 1), tool.stderr()
            assert not tool.failed(), tool.stderr()
    finally:
        metrics.close()
        dashboard.close()


async def test_mcp_over_http_rides_out_a_restart_and_a_stop(server: EmbeddedRedis) -> None:
    """A tool call while Redis is away is an error the model reads; the server lives on,
    says so once, and the next call after the restart works."""
    from mcp.client import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    port = free_port()
    mcp = Tool(
        "mcp", "--transport", "http", "--port", str(port), "--redis-url", server.url, "--prefix", PREFIX
    )
    try:
        await wait_for(lambda: listening(port), 30)
        async with (
            streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            sent = await session.call_tool("relaybus_publish", {"topic": "notes", "payload": "before"})
            assert not sent.is_error, sent
            server.kill()
            away = await session.call_tool("relaybus_history", {"topic": "notes"})
            assert away.is_error and "unreachable" in str(away.content), away
            await asyncio.to_thread(mcp.wait_said, UNREACHABLE)
            server.start()
            await asyncio.to_thread(mcp.wait_said, BACK)  # the bus's health check finds it back
            history = await session.call_tool("relaybus_history", {"topic": "notes"})
            assert history.structured_content is not None, history
            assert [m["payload"] for m in history.structured_content["messages"]] == ["before"]
            await asyncio.to_thread(stop_for_a_while, server)
            again = await session.call_tool("relaybus_publish", {"topic": "notes", "payload": "after"})
            assert not again.is_error, again
        assert mcp.proc.poll() is None
        assert (mcp.said(UNREACHABLE), mcp.said(BACK)) == (1, 1), mcp.stderr()
    finally:
        mcp.proc.send_signal(signal.SIGINT)
        mcp.proc.wait(timeout=20)
        mcp.close()

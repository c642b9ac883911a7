"""The MCP server as a real subprocess - `relaybus mcp` over stdio, and streamable HTTP -
driven by the MCP SDK's ClientSession: the same tests over both transports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

import relaybus
from relaybus import Bus, Message
from relaybus.adapters.mcp import serve
from relaybus.embedded import free_port

from .helpers import running, wait_for

SERVE = "from relaybus.cli import app; app()"
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "mcp.md"


def quoted(start: str) -> str:
    """The message the MCP guide quotes (in backticks) starting so, lines joined."""
    match = re.search(rf"`({re.escape(start)}[^`]*)`", " ".join(GUIDE.read_text().split()))
    assert match is not None, f"the guide quotes no message starting {start!r}"
    return match[1]


def server(redis_url: str, prefix: str, *options: str) -> StdioServerParameters:
    return StdioServerParameters(  # the environment, PYTHONPATH too: the code under test, not the installed
        command=sys.executable,
        args=["-c", SERVE, "mcp", "--redis-url", redis_url, "--prefix", prefix, *options],
        env=dict(os.environ),
    )


ALLOWED = ["tasks.*", "reviews.*", "notes"]
HTTP_SERVE = (
    "import asyncio, sys; from relaybus.adapters.mcp import serve; "
    "asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[4].split(','), 'http', '127.0.0.1', "
    "int(sys.argv[3]), new_groups=['reviewers']))"
)


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start_http(redis_url: str, prefix: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", HTTP_SERVE, redis_url, prefix, str(port), ",".join(ALLOWED)]
    )


@contextlib.asynccontextmanager
async def connect(redis_url: str, prefix: str, transport: str = "stdio") -> AsyncIterator[ClientSession]:
    """A session with a fresh server (not a fixture: anyio's task groups must be entered
    and exited in one task)."""
    if transport == "stdio":
        params = server(
            redis_url,
            prefix,
            "--allowed-topics",
            "tasks.*,reviews.*",
            "--allowed-topics",
            "notes",
            "--new-groups",
            "reviewers",
        )
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
        return
    port = free_port()
    proc = start_http(redis_url, prefix, port)
    try:
        await wait_for(lambda: listening(port), 30)
        async with (
            streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
    finally:
        proc.terminate()
        proc.wait(10)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def test_lists_the_five_tools_with_schemas(redis_url: str, prefix: str, transport: str) -> None:
    async with connect(redis_url, prefix, transport) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {
        "relaybus_publish",
        "relaybus_request",
        "relaybus_read",
        "relaybus_history",
        "relaybus_stats",
    }
    assert tools["relaybus_request"].input_schema["required"] == ["topic", "payload"]
    hints = {
        name: (a.read_only_hint, a.destructive_hint, a.idempotent_hint)
        for name, t in tools.items()
        if (a := t.annotations) is not None
    }
    assert hints == {
        "relaybus_publish": (False, False, False),
        "relaybus_request": (False, False, False),
        "relaybus_read": (False, True, False),
        "relaybus_history": (True, False, True),
        "relaybus_stats": (True, False, True),
    }
    publish = tools["relaybus_publish"]
    assert publish.input_schema["required"] == ["topic", "payload"]
    assert publish.input_schema["properties"]["priority"]["maximum"] == 9
    assert publish.output_schema is not None and "id" in publish.output_schema["properties"]
    assert "Allowed topics: tasks.*, reviews.*, notes." in (publish.description or "")


async def test_call_each_tool_with_structured_results(
    redis_url: str, prefix: str, bus: Bus, transport: str
) -> None:
    async with connect(redis_url, prefix, transport) as session:
        await check_each_tool(session, bus)


async def check_each_tool(session: ClientSession, bus: Bus) -> None:
    sent = await session.call_tool(
        "relaybus_publish", {"topic": "tasks.review", "payload": {"pr": 7}, "priority": 2}
    )
    assert not sent.is_error and sent.structured_content is not None
    mid = sent.structured_content["id"]
    assert [m.id for m in await bus.history("tasks.review")] == [mid]  # really on the bus

    history = await session.call_tool("relaybus_history", {"topic": "tasks.review", "limit": 5})
    assert history.structured_content is not None
    assert [(m["id"], m["payload"]) for m in history.structured_content["messages"]] == [(mid, {"pr": 7})]

    read = await session.call_tool("relaybus_read", {"topic": "tasks.review", "group": "reviewers"})
    assert read.structured_content is not None
    assert [m["id"] for m in read.structured_content["messages"]] == [mid]
    again = await session.call_tool("relaybus_read", {"topic": "tasks.review", "group": "reviewers"})
    assert again.structured_content == {"topic": "tasks.review", "messages": []}  # acked

    await bus.publish("payments.refund", 1)  # outside the allowlist: not reported
    stats = await session.call_tool("relaybus_stats", {})
    assert not stats.is_error and stats.structured_content is not None
    assert [t["topic"] for t in stats.structured_content["topics"]] == ["tasks.review"]
    assert stats.structured_content["topics"][0]["groups"][0]["pending"] == 0

    @bus.subscribe("tasks.ask", group="answerers")
    async def answer(msg: Message) -> None:
        await bus.reply(msg, {"answer": msg.payload["q"] * 2})

    async with running(bus):
        asked = await session.call_tool(
            "relaybus_request", {"topic": "tasks.ask", "payload": {"q": 21}, "timeout_s": 10}
        )
    assert not asked.is_error and asked.structured_content is not None
    assert asked.structured_content["reply"]["payload"] == {"answer": 42}
    silent = await session.call_tool(
        "relaybus_request", {"topic": "tasks.nobody", "payload": {}, "timeout_s": 0.2}
    )
    assert silent.is_error and "no reply to the request on 'tasks.nobody'" in str(silent.content)


async def test_server_version_compact_results_and_one_line_argument_errors(
    redis_url: str, prefix: str, bus: Bus, transport: str
) -> None:
    """The package version as the server's; results as compact JSON without nulls or
    defaults (what the LangChain tools give); a bad argument named in one line, with
    no pydantic documentation link and no echo of the input."""
    for n in range(5):
        await bus.publish("tasks.review", {"pr": n})
    async with connect(redis_url, prefix, transport) as session:
        info = session.server_info
        history = await session.call_tool("relaybus_history", {"topic": "tasks.review", "limit": 5})
        bad = await session.call_tool("relaybus_read", {"topic": "tasks.review", "group": "g", "count": 500})
    assert info is not None and info.version == relaybus.__version__
    text = history.content[0].text  # type: ignore[union-attr]
    assert text == json.dumps(history.structured_content, separators=(",", ":"))
    assert "null" not in text and "\n" not in text and '"attempt"' not in text
    assert bad.is_error
    error = bad.content[0].text  # type: ignore[union-attr]
    assert error == "relaybus_read: invalid arguments: count: Input should be less than or equal to 100"
    assert error == quoted("relaybus_read: invalid arguments:")


async def test_a_refused_topic_is_a_tool_error_the_model_reads(
    redis_url: str, prefix: str, bus: Bus, transport: str
) -> None:
    async with connect(redis_url, prefix, transport) as session:
        refused = await session.call_tool("relaybus_publish", {"topic": "payments.refund", "payload": 1})
        bad = await session.call_tool("relaybus_read", {"topic": "tasks.x", "group": "no spaces"})
    assert refused.is_error
    text = refused.content[0].text  # type: ignore[union-attr]
    assert text == (
        "Error executing tool relaybus_publish: topic 'payments.refund' is not allowed for "
        "this agent; allowed topics: tasks.*, reviews.*, notes"
    )  # the SDK's prefix, then ours
    assert text == quoted("Error executing tool relaybus_publish:").replace("reviews.*", "reviews.*, notes")
    assert bad.is_error and "invalid group 'no spaces'" in bad.content[0].text  # type: ignore[union-attr]
    assert await bus.topics() == []


async def test_a_read_makes_no_group_or_topic_nothing_would_clean(
    redis_url: str, prefix: str, bus: Bus, transport: str
) -> None:
    """A made-up group is refused (the server makes only the groups --new-groups names); a
    read of a topic that does not exist creates no key, even waiting for it."""
    await bus.publish("tasks.review", {"pr": 1})
    await bus.ack(*await bus.read("tasks.review", "workers"))
    own = f"{prefix}:mcp:".encode()  # over HTTP, the server's own streams (they expire)
    keys = {k async for k in bus._engine.ctx.redis.scan_iter(match=f"{prefix}:*") if not k.startswith(own)}
    async with connect(redis_url, prefix, transport) as session:
        made_up = await session.call_tool("relaybus_read", {"topic": "tasks.review", "group": "ghosts"})
        nothing = await session.call_tool(
            "relaybus_read", {"topic": "tasks.nobody", "group": "reviewers", "wait_seconds": 0.3}
        )
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert made_up.is_error and made_up.content[0].text == (  # type: ignore[union-attr]
        "Error executing tool relaybus_read: no consumer group 'ghosts' reads topic 'tasks.review', "
        "and this agent may not make one; its groups: workers"
    )
    assert nothing.structured_content == {"topic": "tasks.nobody", "messages": []}
    assert [g.name for g in (await bus.stats(["tasks.review"])).topics[0].groups] == ["workers"]
    assert {
        k async for k in bus._engine.ctx.redis.scan_iter(match=f"{prefix}:*") if not k.startswith(own)
    } == keys
    assert "new ones named reviewers" in (tools["relaybus_read"].description or "")


async def test_resources_list_topics_and_show_history(
    redis_url: str, prefix: str, bus: Bus, transport: str
) -> None:
    async with connect(redis_url, prefix, transport) as session:
        await check_resources(session, bus)


async def check_resources(session: ClientSession, bus: Bus) -> None:
    await bus.publish("notes", {"n": 1})
    await bus.publish("notes", {"n": 2})
    await bus.publish("secret.plans", 0)
    listed = {str(r.uri) for r in (await session.list_resources()).resources}
    assert "relaybus://topics" in listed
    templates = [t.uri_template for t in (await session.list_resource_templates()).resource_templates]
    assert templates == ["relaybus://topics/{topic}/history"]

    topics = await session.read_resource("relaybus://topics")
    assert json.loads(topics.contents[0].text) == ["notes"]  # type: ignore[union-attr]
    history = await session.read_resource("relaybus://topics/notes/history")
    assert [m["payload"] for m in json.loads(history.contents[0].text)["messages"]] == [  # type: ignore[union-attr]
        {"n": 1},
        {"n": 2},
    ]
    with pytest.raises(MCPError, match=r"'secret\.plans' is not allowed"):
        await session.read_resource("relaybus://topics/secret.plans/history")


def test_unreachable_redis_fails_on_stderr_with_nothing_on_stdout() -> None:
    params = server("redis://127.0.0.1:1/0", "x")
    done = subprocess.run(
        [params.command, *params.args], input="", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert (
        done.stderr.strip().splitlines() == [done.stderr.strip()]
        and "cannot reach Redis at redis://127.0.0.1:1/0" in done.stderr
    )


# -- streamable HTTP at its boundary: Host/Origin on every bind address, the token, the logs --------

SERVE_WITH = (
    "import asyncio, json, sys; from relaybus.adapters.mcp import serve; "
    "asyncio.run(serve(sys.argv[1], sys.argv[2], transport='http', **json.loads(sys.argv[3])))"
)
TOKEN = "mcp-test-token-5f3a9c0e"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


def start(*args: str) -> subprocess.Popen[str]:
    """Python running `args`; its logs (the SDK's rich handler) one line each."""
    return subprocess.Popen(
        [sys.executable, "-c", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )


def reachable(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


@contextlib.asynccontextmanager
async def http_server(redis_url: str, prefix: str, **options: Any) -> AsyncIterator[tuple[str, str]]:
    """`serve(..., transport='http', **options)` in a subprocess; yields its URL and, once
    it stopped, leaves its stderr in the list given as `options['_stderr']`."""
    stderr: list[str] = options.pop("_stderr", [])
    host, port = options.setdefault("host", "127.0.0.1"), options.setdefault("port", free_port())
    proc = start(SERVE_WITH, redis_url, prefix, json.dumps(options))
    try:
        await wait_for(lambda: reachable(host, port) or proc.poll() is not None, 30)
        assert proc.poll() is None, proc.communicate()
        yield f"http://{host}:{port}/mcp", f"{host}:{port}"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
        stderr.append(err)
        assert out == ""  # stdout is never the server's log


async def post(url: str, headers: dict[str, str]) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(url, json=INITIALIZE, headers={**ACCEPT, **headers})
        return response.status_code


async def test_host_and_origin_are_checked_on_any_loopback_address(redis_url: str, prefix: str) -> None:
    """127.0.0.2 is loopback but not one of the three names the SDK protects by itself: a
    DNS-rebinding page (Host: its own name) or another site's page (Origin) is refused."""
    async with http_server(redis_url, prefix, host="127.0.0.2") as (url, netloc):
        assert await post(url, {"Host": "attacker.example:8765"}) == 421
        assert await post(url, {"Host": "127.1:8765"}) == 421  # only exact names
        assert await post(url, {"Origin": "http://attacker.example"}) == 403
        assert await post(url, {}) == 200
        assert (
            await post(url, {"Host": f"localhost:{netloc.split(':')[1]}", "Origin": "http://localhost:6274"})
            == 200
        )


async def test_a_bind_beyond_loopback_needs_a_token(redis_url: str, prefix: str) -> None:
    """Refused before connecting to Redis or binding anything (an unreachable Redis is
    not what it reports), for the wildcard address, a LAN one and an unusual spelling
    of loopback alike."""
    for host in ("0.0.0.0", "192.0.2.10", "::", "127.1"):
        with pytest.raises(
            ValueError, match=f"refusing to serve MCP on {host} without a token: it is not a loopback address"
        ):
            await serve("redis://127.0.0.1:1/0", prefix, transport="http", host=host, port=free_port())
    with pytest.raises(ValueError, match="for --transport http only"):
        await serve(redis_url, prefix, token=TOKEN)


def test_the_command_refuses_a_bind_beyond_loopback_without_a_token(redis_url: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE,
            "mcp",
            "--redis-url",
            redis_url,
            "--transport",
            "http",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (
        "error: refusing to serve MCP on 0.0.0.0 without a token: it is not a loopback address (localhost, "
        "127.0.0.0/8, ::1), so other machines may reach it; pass --token (or RELAYBUS_MCP_TOKEN), or listen "
        "on 127.0.0.1"
    )


async def test_with_a_token_every_request_carries_it(redis_url: str, prefix: str, bus: Bus) -> None:
    """The token as a bearer header, nothing else: none or a wrong one is a 401 (a right one
    with a forged Host is still refused); the official client with it uses every tool;
    the token is never in the server's output."""
    stderr: list[str] = []
    async with http_server(
        redis_url,
        prefix,
        host="127.0.0.2",
        token=TOKEN,
        allowed_topics=ALLOWED,
        new_groups=["reviewers"],
        allowed_hosts=["relay.internal"],
        _stderr=stderr,
    ) as (url, _):
        assert await post(url, {}) == 401
        assert await post(url, {"Authorization": f"Bearer {TOKEN}x"}) == 401
        assert await post(url, {"Authorization": f"Basic {TOKEN}"}) == 401
        assert await post(url, {"Authorization": f"Bearer {TOKEN}", "Host": "attacker.example"}) == 421
        assert await post(url, {"Authorization": f"Bearer {TOKEN}", "Host": "relay.internal:80"}) == 200
        client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
        async with (
            client,
            streamable_http_client(url, http_client=client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await check_each_tool(session, bus)
    assert TOKEN not in stderr[0]


async def test_the_request_log_goes_to_stderr_never_stdout(redis_url: str, prefix: str) -> None:
    """`relaybus mcp --transport http`: uvicorn's request log is on stderr; stdout stays empty."""
    port = free_port()
    proc = start(
        SERVE, "mcp", "--redis-url", redis_url, "--prefix", prefix, "--transport", "http", "--port", str(port)
    )
    try:
        await wait_for(lambda: reachable("127.0.0.1", port), 30)
        assert await post(f"http://127.0.0.1:{port}/mcp", {}) == 200
        await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert out == ""
    assert '"POST /mcp HTTP/1.1" 200' in err

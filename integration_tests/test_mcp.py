"""The MCP server as a real subprocess - `relaybus mcp` over stdio, and streamable HTTP -
driven by the MCP SDK's ClientSession: the same tests over both transports."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

import relaybus
from relaybus import Bus, Message
from relaybus.embedded import free_port

from .helpers import running, wait_for

SERVE = "from relaybus.cli import app; app()"


def server(redis_url: str, prefix: str, *options: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-c", SERVE, "mcp", "--redis-url", redis_url, "--prefix", prefix, *options],
    )


ALLOWED = ["tasks.*", "reviews.*", "notes"]
HTTP_SERVE = ("import asyncio, sys; from relaybus.adapters.mcp import serve; "
              "asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[4].split(','), 'http', '127.0.0.1', "
              "int(sys.argv[3])))")


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start_http(redis_url: str, prefix: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", HTTP_SERVE, redis_url, prefix, str(port),
                             ",".join(ALLOWED)])


@contextlib.asynccontextmanager
async def connect(redis_url: str, prefix: str, transport: str = "stdio") -> AsyncIterator[ClientSession]:
    """A session with a fresh server (not a fixture: anyio's task groups must be entered
    and exited in one task)."""
    if transport == "stdio":
        params = server(redis_url, prefix, "--allowed-topics", "tasks.*,reviews.*",
                        "--allowed-topics", "notes")
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
        return
    port = free_port()
    proc = start_http(redis_url, prefix, port)
    try:
        await wait_for(lambda: listening(port), 30)
        async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write), \
                ClientSession(read, write) as session:
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
    assert set(tools) == {"relaybus_publish", "relaybus_request", "relaybus_read", "relaybus_history",
                          "relaybus_stats"}
    assert tools["relaybus_request"].input_schema["required"] == ["topic", "payload"]
    hints = {name: (a.read_only_hint, a.destructive_hint, a.idempotent_hint)
             for name, t in tools.items() if (a := t.annotations) is not None}
    assert hints == {"relaybus_publish": (False, False, False), "relaybus_request": (False, False, False),
                     "relaybus_read": (False, True, False), "relaybus_history": (True, False, True),
                     "relaybus_stats": (True, False, True)}
    publish = tools["relaybus_publish"]
    assert publish.input_schema["required"] == ["topic", "payload"]
    assert publish.input_schema["properties"]["priority"]["maximum"] == 9
    assert publish.output_schema is not None and "id" in publish.output_schema["properties"]
    assert "Allowed topics: tasks.*, reviews.*, notes." in (publish.description or "")


async def test_call_each_tool_with_structured_results(redis_url: str, prefix: str, bus: Bus,
                                                     transport: str) -> None:
    async with connect(redis_url, prefix, transport) as session:
        await check_each_tool(session, bus)


async def check_each_tool(session: ClientSession, bus: Bus) -> None:
    sent = await session.call_tool("relaybus_publish", {"topic": "tasks.review", "payload": {"pr": 7},
                                                        "priority": 2})
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
        asked = await session.call_tool("relaybus_request", {"topic": "tasks.ask", "payload": {"q": 21},
                                                             "timeout_s": 10})
    assert not asked.is_error and asked.structured_content is not None
    assert asked.structured_content["reply"]["payload"] == {"answer": 42}
    silent = await session.call_tool("relaybus_request", {"topic": "tasks.nobody", "payload": {},
                                                          "timeout_s": 0.2})
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


async def test_a_refused_topic_is_a_tool_error_the_model_reads(redis_url: str, prefix: str, bus: Bus,
                                                               transport: str) -> None:
    async with connect(redis_url, prefix, transport) as session:
        refused = await session.call_tool("relaybus_publish", {"topic": "payments.refund", "payload": 1})
        bad = await session.call_tool("relaybus_read", {"topic": "tasks.x", "group": "no spaces"})
    assert refused.is_error
    text = refused.content[0].text  # type: ignore[union-attr]
    assert "topic 'payments.refund' is not allowed" in text and "tasks.*, reviews.*, notes" in text
    assert bad.is_error and "invalid group 'no spaces'" in bad.content[0].text  # type: ignore[union-attr]
    assert await bus.topics() == []


async def test_resources_list_topics_and_show_history(redis_url: str, prefix: str, bus: Bus,
                                                      transport: str) -> None:
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
        {"n": 1}, {"n": 2}]
    with pytest.raises(MCPError, match=r"'secret\.plans' is not allowed"):
        await session.read_resource("relaybus://topics/secret.plans/history")


def test_unreachable_redis_fails_on_stderr_with_nothing_on_stdout() -> None:
    params = server("redis://127.0.0.1:1/0", "x")
    done = subprocess.run([params.command, *params.args], input="", capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        done.stderr.strip()] and "cannot reach Redis at redis://127.0.0.1:1/0" in done.stderr

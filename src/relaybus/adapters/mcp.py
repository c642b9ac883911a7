"""MCP adapter: the bus as an MCP server (the `mcp` SDK 2.x `MCPServer`).

`create_server(bus, allowed_topics)` offers the five agent tools with structured
output, plus two resources: `relaybus://topics` (the allowed topics) and
`relaybus://topics/{topic}/history` (a topic's latest messages). Errors the model
should read — a topic outside the allowlist, a bad name, a full queue — are raised as
the SDK's `ToolError`; the SDK hides any other exception's message. `relaybus mcp`
serves it over stdio. Needs the `mcp` extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from ..bus import Bus
from . import _tools
from ._tools import (
    Allowlist,
    Count,
    Group,
    Limit,
    Messages,
    Payload,
    Priority,
    Published,
    Replied,
    TimeoutSeconds,
    Topic,
    WaitSeconds,
)

INSTRUCTIONS = (
    "relaybus is a message bus shared by agents. Publish work or results to a topic with "
    "relaybus_publish; ask another agent and wait for its answer with relaybus_request; "
    "take messages meant for your consumer group with relaybus_read; look at recent "
    "traffic with relaybus_history; find backlogs with relaybus_stats."
)


@contextlib.contextmanager
def _as(error: type[Exception]) -> Iterator[None]:
    """Bus errors and bad names become the SDK's error whose message the client sees."""
    try:
        yield
    except _tools.AGENT_ERRORS as exc:
        raise error(str(exc)) from exc


def create_server(bus: Bus, allowed_topics: Iterable[str] | None = None) -> MCPServer[Any]:
    """An MCP server over a connected `bus`; `allowed_topics` are glob patterns (None: all)."""
    allow = Allowlist(allowed_topics)
    server: MCPServer[Any] = MCPServer("relaybus", instructions=INSTRUCTIONS)

    @server.tool(description=allow.tool_description("relaybus_publish"))
    async def relaybus_publish(topic: Topic, payload: Payload, priority: Priority = 0) -> Published:
        with _as(ToolError):
            return await _tools.publish(bus, allow, topic, payload, priority)

    @server.tool(description=allow.tool_description("relaybus_request"))
    async def relaybus_request(topic: Topic, payload: Payload, timeout_s: TimeoutSeconds = 30) -> Replied:
        with _as(ToolError):
            return await _tools.request(bus, allow, topic, payload, timeout_s)

    @server.tool(description=allow.tool_description("relaybus_read"))
    async def relaybus_read(topic: Topic, group: Group, count: Count = 10,
                            wait_seconds: WaitSeconds = 0) -> Messages:
        with _as(ToolError):
            return await _tools.read(bus, allow, topic, group, count, wait_seconds)

    @server.tool(description=allow.tool_description("relaybus_history"))
    async def relaybus_history(topic: Topic, limit: Limit = 20) -> Messages:
        with _as(ToolError):
            return await _tools.history(bus, allow, topic, limit)

    @server.tool(description=allow.tool_description("relaybus_stats"))
    async def relaybus_stats() -> dict[str, Any]:
        with _as(ToolError):
            return await _tools.stats(bus, allow)

    @server.resource("relaybus://topics", name="topics", mime_type="application/json",
                     description="The topics this server may use that have messages.")
    async def topic_list() -> str:
        return _tools.compact_json(await _tools.topics(bus, allow))

    @server.resource("relaybus://topics/{topic}/history", name="topic-history", mime_type="application/json",
                     description="The latest 20 messages of a topic, oldest first.")
    async def topic_history(topic: str) -> str:
        with _as(ResourceError):
            return (await _tools.history(bus, allow, topic)).model_dump_json(exclude_defaults=True)

    return server


async def serve_stdio(url: str | None, prefix: str, allowed_topics: Iterable[str] | None = None) -> None:
    """Connect to Redis first (so an unreachable one fails before any protocol traffic),
    then serve MCP on stdin/stdout until the client closes them."""
    allow = list(allowed_topics) if allowed_topics is not None else None
    Allowlist(allow)  # bad patterns fail before connecting
    bus = Bus.from_url(url, prefix=prefix) if url else Bus(prefix=prefix)
    async with bus:
        await create_server(bus, allow).run_stdio_async()

"""MCP adapter: the bus as an MCP server (the `mcp` SDK 2.x `MCPServer`).

`create_server(bus, allowed_topics)` offers the five agent tools with structured
output and annotations (which change nothing, which only read), plus two resources:
`relaybus://topics` (the allowed topics) and `relaybus://topics/{topic}/history` (a
topic's latest messages). Results are compact JSON without empty fields, as the
LangChain tools give. Errors the model should read — a topic outside the allowlist,
a bad name or argument, a full queue, no reply in time — are raised as the SDK's
`ToolError`, in one line; the SDK hides any other exception's message. `relaybus mcp`
serves it over stdio or streamable HTTP (`http_app`: Host/Origin checked on every bind
address, a bearer token beyond loopback). Needs the `mcp` extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from .._web import bearer_ok, host_names, is_loopback, listen
from ..bus import Bus
from . import _tools
from ._mcp_backend import RelayBusEventStore, RelayBusSubscriptionBus, Resumable  # protocol backends
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

STORE_TIMEOUT_S = 1.0  # how long the HTTP server's event store waits for Redis to store an event
INSTRUCTIONS = (
    "relaybus is a message bus shared by agents. Publish work or results to a topic with "
    "relaybus_publish; ask another agent and wait for its answer with relaybus_request; "
    "take messages meant for your consumer group with relaybus_read; look at recent "
    "traffic with relaybus_history; find backlogs with relaybus_stats."
)
# open_world_hint=False: the tools touch this bus only, nothing outside it
SENDS = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
TAKES = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
)  # read acknowledges: the group will not see them again
LOOKS = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
Transport = Literal["stdio", "http"]


class _Server(MCPServer[Any]):
    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """Bad arguments in one line the model can act on (the SDK gives pydantic's
        multi-line text with documentation links)."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(f"{name}: {_tools.explain_invalid(exc.__cause__)}") from None
            raise


@contextlib.contextmanager
def _as(error: type[Exception]) -> Iterator[None]:
    """Bus errors and bad names become the SDK's error whose message the client sees."""
    try:
        yield
    except _tools.AGENT_ERRORS as exc:
        raise error(str(exc)) from exc


def _compact(result: BaseModel | dict[str, Any]) -> CallToolResult:
    """Structured content and its text without nulls or defaults: a model pays for every byte."""
    if isinstance(result, BaseModel):
        structured = result.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    else:
        structured = result
    return CallToolResult(
        content=[TextContent(type="text", text=_tools.compact_json(structured))],
        structured_content=structured,
    )


def create_server(
    bus: Bus,
    allowed_topics: Iterable[str] | None = None,
    new_groups: Iterable[str] | None = None,
    subscriptions: RelayBusSubscriptionBus | None = None,
) -> MCPServer[Any]:
    """An MCP server over a connected `bus`; `allowed_topics` are glob patterns (None: all),
    `new_groups` those of the consumer groups `relaybus_read` may create (None: none);
    `subscriptions` fans server events out (None: in this process only)."""
    allow = Allowlist(allowed_topics, new_groups)
    server = _Server("relaybus", version=__version__, instructions=INSTRUCTIONS, subscriptions=subscriptions)

    @server.tool(description=allow.tool_description("relaybus_publish"), annotations=SENDS)
    async def relaybus_publish(
        topic: Topic, payload: Payload, priority: Priority = 0
    ) -> Annotated[CallToolResult, Published]:
        with _as(ToolError):
            return _compact(await _tools.publish(bus, allow, topic, payload, priority))

    @server.tool(description=allow.tool_description("relaybus_request"), annotations=SENDS)
    async def relaybus_request(
        topic: Topic, payload: Payload, timeout_s: TimeoutSeconds = 30
    ) -> Annotated[CallToolResult, Replied]:
        with _as(ToolError):
            return _compact(await _tools.request(bus, allow, topic, payload, timeout_s))

    @server.tool(description=allow.tool_description("relaybus_read"), annotations=TAKES)
    async def relaybus_read(
        topic: Topic, group: Group, count: Count = 10, wait_seconds: WaitSeconds = 0
    ) -> Annotated[CallToolResult, Messages]:
        with _as(ToolError):
            return _compact(await _tools.read(bus, allow, topic, group, count, wait_seconds))

    @server.tool(description=allow.tool_description("relaybus_history"), annotations=LOOKS)
    async def relaybus_history(topic: Topic, limit: Limit = 20) -> Annotated[CallToolResult, Messages]:
        with _as(ToolError):
            return _compact(await _tools.history(bus, allow, topic, limit))

    @server.tool(description=allow.tool_description("relaybus_stats"), annotations=LOOKS)
    async def relaybus_stats() -> Annotated[CallToolResult, dict[str, Any]]:
        with _as(ToolError):
            return _compact(await _tools.stats(bus, allow))

    @server.resource(
        "relaybus://topics",
        name="topics",
        mime_type="application/json",
        description="The topics this server may use that have messages.",
    )
    async def topic_list() -> str:
        return _tools.compact_json(await _tools.topics(bus, allow))

    @server.resource(
        "relaybus://topics/{topic}/history",
        name="topic-history",
        mime_type="application/json",
        description="The latest 20 messages of a topic, oldest first.",
    )
    async def topic_history(topic: str) -> str:
        with _as(ResourceError):
            return (await _tools.history(bus, allow, topic)).model_dump_json(
                exclude_defaults=True, exclude_none=True
            )

    return server


class BearerToken:
    """Every request must carry `Authorization: Bearer <token>` (constant-time compare;
    the token is never logged or echoed); anything else is a 401 before MCP sees it."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not bearer_ok(Headers(scope=scope).get("authorization"), self.token):
            refused = Response(
                "missing or wrong bearer token",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="relaybus"'},
            )
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def http_app(
    server: MCPServer[Any],
    host: str = "127.0.0.1",
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    event_store: RelayBusEventStore | None = None,
) -> ASGIApp:
    """`server` as streamable HTTP at /mcp, behind the SDK's Host/Origin checks (DNS
    rebinding) on every bind address - the names of `_web.host_names` and `allowed_hosts`,
    any port; their http(s) origins and `allowed_origins` - and, with `token`, a bearer
    token. A bind beyond loopback without a token is refused (ValueError). With
    `event_store`, a stream resumes on any replica (docs/protocol-backends.md)."""
    if not token and not is_loopback(host):
        raise ValueError(
            f"refusing to serve MCP on {host} without a token: it is not a loopback address "
            "(localhost, 127.0.0.0/8, ::1), so other machines may reach it; pass --token "
            "(or RELAYBUS_MCP_TOKEN), or listen on 127.0.0.1"
        )
    names = host_names(host, allowed_hosts)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[h for n in names for h in (n, f"{n}:*")],
        allowed_origins=[
            *(f"{scheme}://{n}{port}" for n in names for scheme in ("http", "https") for port in ("", ":*")),
            *allowed_origins,
        ],
    )
    app: ASGIApp = server.streamable_http_app(transport_security=security, host=host, event_store=event_store)
    app = Resumable(app, event_store, security=security) if event_store else app
    return BearerToken(app, token) if token else app


async def serve(
    url: str | None,
    prefix: str,
    allowed_topics: Iterable[str] | None = None,
    transport: Transport = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    new_groups: Iterable[str] | None = None,
    plugins: Iterable[object] = (),
) -> None:
    """Connect to Redis first (so an unreachable one fails before any protocol traffic),
    then serve MCP - on stdin/stdout until the client closes them, or as streamable HTTP
    at http://host:port/mcp until stopped (see `http_app`; uvicorn's logs, its request
    log among them, go to the logging config, never to stdout). A later outage fails the
    tool calls made meanwhile, nothing more. `plugins` go on the bus (the CLI's outage
    notice)."""
    allow = list(allowed_topics) if allowed_topics is not None else None
    groups = list(new_groups) if new_groups is not None else None
    Allowlist(allow, groups)  # bad patterns fail before connecting
    hosts, origins = list(allowed_hosts), list(allowed_origins)
    if transport == "stdio" and (token or hosts or origins):
        raise ValueError("a token, allowed hosts and allowed origins are for --transport http only")

    def new_bus(prefix: str, **more: Any) -> Bus:  # a tool: retention is the topics' own (docs/retention.md)
        fields: dict[str, Any] = {"prefix": prefix, "periodic_cleanup": False, **more}
        return Bus.from_url(url, **fields) if url else Bus(**fields)

    bus = new_bus(prefix)
    for plugin in plugins:
        bus.plugins.register(plugin)
    if transport == "stdio":
        async with bus:
            await create_server(bus, allow, groups).run_stdio_async()
        return
    # over HTTP, replicas share streams and server events, under a prefix of their own
    # an event the store cannot keep is still delivered live: it waits for Redis briefly only
    backend = new_bus(f"{prefix}:mcp", publish_timeout_s=STORE_TIMEOUT_S)
    store, events = RelayBusEventStore(backend), RelayBusSubscriptionBus(backend)
    server = create_server(bus, allow, groups, events)
    app = http_app(server, host, token=token, allowed_hosts=hosts, allowed_origins=origins, event_store=store)
    async with bus, backend:
        sock = listen(host, port)
        try:
            await uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on")).serve(sockets=[sock])
        finally:
            sock.close()
            await events.aclose()

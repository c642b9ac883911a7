"""relaybus as the backend of MCP servers on several replicas (extra `mcp`; docs/protocol-backends.md).

`RelayBusEventStore` is the SDK's `EventStore`: each SSE stream is a topic, each event a
message, and the stream is closed (then expires) once its JSON-RPC response is stored.
`Resumable(app, store)` lets any replica serve a `Last-Event-ID` resumption from Redis,
replay then live (`bus.follow`), so a client may resume on another replica than the one
running its request. `RelayBusSubscriptionBus` is the SDK's `SubscriptionBus` over
`bus.broadcast`/`bus.listen`: every replica's listeners get every server event.

Built on the public Bus API only (publish, follow, close_topic, history, broadcast, listen).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.subscriptions import ServerEvent
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp_types import JSONRPCError, JSONRPCMessage, JSONRPCResponse, jsonrpc_message_adapter
from sse_starlette import EventSourceResponse
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as Message_

from ..bus import Bus
from ..errors import BusUnavailableError, TopicClosedError
from ..message import Message, new_id

log = logging.getLogger("relaybus.mcp")

SESSION_HEADER = "mcp-session-id"
STREAM_HEADER = "mcp-stream"  # the SDK's stream id, on every stored event
EVENT_ID_RE = re.compile(r"(?P<key>[0-9a-f]{24})\.(?P<mid>[0-9A-Za-z]{1,64})")
MAX_SESSIONS = 100_000  # session ids remembered per process (oldest forgotten first)
IDLE_S = 300.0  # a resumed stream with no new event for this long ends (its producer may be dead)

# The session a store_event belongs to (set by `Resumable`): stream ids are JSON-RPC
# request ids, unique only within a session, so two sessions' request "1" must not share.
_session: contextvars.ContextVar[str] = contextvars.ContextVar("relaybus_mcp_session", default="")


class RelayBusEventStore(EventStore):
    """`mcp.server.streamable_http.EventStore` on a bus: resumable streamable HTTP whose
    events every replica can replay. Topics are `{topic_prefix}.{key}` (a random key per
    stream); event ids are `{key}.{message id}`, so an id names its stream. A stream is
    closed when its response is stored: followers end, its keys expire `keep_s` later."""

    def __init__(self, bus: Bus, *, topic_prefix: str = "mcp.events", keep_s: float = 3600) -> None:
        self.bus, self.topic_prefix, self.keep_s = bus, topic_prefix, keep_s
        # session -> stream id -> key, for the streams open in this process (newest session last)
        self._open: OrderedDict[str, dict[StreamId, str]] = OrderedDict()
        self._unstored = 0  # events delivered live but not stored since Redis went away

    def topic(self, key: str) -> str:
        return f"{self.topic_prefix}.{key}"

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Append the event (None: a priming event) to its stream's topic; a response or
        error closes the stream, and the next event for that stream id starts a new one."""
        session = _session.get()
        streams = self._open.setdefault(session, {})
        self._open.move_to_end(session)
        while len(self._open) > MAX_SESSIONS:  # sessions that ended without a DELETE
            self._open.popitem(last=False)
        key = streams.setdefault(stream_id, secrets.token_hex(12))
        payload = (
            None if message is None else message.model_dump(mode="json", by_alias=True, exclude_unset=True)
        )
        answered = isinstance(message, JSONRPCResponse | JSONRPCError) and str(message.id) == stream_id
        if answered:
            streams.pop(stream_id, None)
            if not streams:
                self._open.pop(session, None)
        try:
            mid = await self.bus.publish(self.topic(key), payload, headers={STREAM_HEADER: stream_id})
            if answered:
                await self.bus.close_topic(self.topic(key), keep_s=self.keep_s)
        except TopicClosedError:  # answered already (the SDK primes a replayed stream again)
            if message is not None:
                raise
            newest = await self.bus.history(self.topic(key), limit=1)
            return f"{key}.{newest[-1].id if newest else '0'}"  # resuming from it replays nothing
        except BusUnavailableError as exc:
            # The client still gets the event live; only resuming past it is lost. A tool
            # call must not fail because the store is away (the tools say Redis is away).
            if not self._unstored:
                log.warning("relaybus mcp: events not stored while Redis is away (%s); delivered live", exc)
            self._unstored += 1
            return f"{key}.{new_id()}"  # unknown to every replica: a resumption from it is refused
        if self._unstored:
            log.info("relaybus mcp: events stored again (%d were delivered live only)", self._unstored)
            self._unstored = 0
        return f"{key}.{mid}"

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        """Send the events stored after `last_event_id` up to now (priming events are not
        sent); returns their stream id, or None for an id this store does not know."""
        parsed = EVENT_ID_RE.fullmatch(last_event_id)
        if parsed is None:
            return None
        newest = await self.bus.history(self.topic(parsed["key"]), limit=1)
        if not newest:
            return None
        found: StreamId | None = None
        async for event_id, message, stream_id in self._after(parsed["key"], parsed["mid"], newest[-1].id):
            found = stream_id
            if message is not None:
                await send_callback(EventMessage(message, event_id))
        return found

    async def events_after(
        self, last_event_id: EventId, *, idle_s: float | None = None
    ) -> AsyncIterator[tuple[EventId, JSONRPCMessage]]:
        """The events after `last_event_id`, replayed then live, until the stream is closed
        (its response was stored) or, with `idle_s`, no event came for that long (the
        replica running the request may have died: nothing would ever close the stream);
        nothing for an unknown id."""
        parsed = EVENT_ID_RE.fullmatch(last_event_id)
        newest = None if parsed is None else await self.bus.history(self.topic(parsed["key"]), limit=1)
        if parsed is None or not newest:
            return
        events = self._after(parsed["key"], parsed["mid"], newest[-1].id, live=True)
        try:
            while True:
                try:
                    event_id, message, _ = await asyncio.wait_for(anext(events), idle_s)
                except (StopAsyncIteration, TimeoutError):
                    return
                if message is not None:
                    yield event_id, message
        finally:
            await events.aclose()

    def knows(self, event_id: str) -> bool:
        """Whether `event_id` has the form of this store's ids."""
        return EVENT_ID_RE.fullmatch(event_id) is not None

    async def _after(
        self, key: str, mid: str, newest: str, *, live: bool = False
    ) -> AsyncGenerator[tuple[EventId, JSONRPCMessage | None, StreamId], None]:
        """Yield (event id, message, stream id) for the found `mid` (message None) and every
        event after it up to `newest` (the stream's newest message id when called) - with
        `live`, on until the stream is closed. Nothing if `mid` is not in the stream up to
        `newest`. Reads the stream from its start: a stream holds one request's events, and
        a resumption is rare."""
        seen = False
        follower = self.bus.follow(self.topic(key))
        try:
            async for stored in follower:
                stream_id = stored.headers.get(STREAM_HEADER, "")
                if seen:
                    yield f"{key}.{stored.id}", _message(stored), stream_id
                elif stored.id == mid:
                    seen = True
                    yield f"{key}.{stored.id}", None, stream_id
                if stored.id == newest and not (live and seen):
                    return
        finally:
            await follower.aclose()

    def forget(self, session: str) -> None:
        """Drop this process's open-stream keys of a session (it was deleted)."""
        self._open.pop(session, None)


def _message(stored: Message) -> JSONRPCMessage | None:
    if stored.payload is None:
        return None
    return jsonrpc_message_adapter.validate_python(stored.payload, by_name=False)


class Resumable:
    """ASGI middleware for an MCP streamable HTTP app using `store`: any replica answers a
    `GET` with a `Last-Event-ID` of the store (the client resuming a stream) from Redis -
    the missed events, then live ones as the replica running the request stores them,
    until its response, or until `idle_s` pass without an event (the replica running the
    request died; the client may resume again) - whichever replica the session lives on.
    It also tells the store
    which session each request belongs to (stream ids repeat across sessions)."""

    def __init__(
        self,
        app: ASGIApp,
        store: RelayBusEventStore,
        *,
        path: str = "/mcp",
        security: TransportSecuritySettings | None = None,
        idle_s: float = IDLE_S,
    ) -> None:
        self.app, self.store, self.path, self.idle_s = app, store, path, idle_s
        self.security = TransportSecurityMiddleware(security)  # the Host/Origin checks the app makes
        self._aliases: OrderedDict[str, str] = OrderedDict()  # session id -> the store's scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        session, last = headers.get(SESSION_HEADER), headers.get("last-event-id")
        if (
            scope["method"] == "GET"
            and scope["path"] == self.path
            and session
            and last
            and self.store.knows(last)
        ):
            refused = await self.security.validate_request(Request(scope, receive))
            resumed = EventSourceResponse(self._resume(last), headers={SESSION_HEADER: session})
            await (refused or resumed)(scope, receive, send)
            return
        if session is None:  # opening a session: its id is known once the answer starts
            await self._opening(scope, receive, send)
            return
        token = _session.set(self._aliases.get(session, session))
        try:
            await self.app(scope, receive, send)
        finally:
            _session.reset(token)
            if scope["method"] == "DELETE":
                self.store.forget(self._aliases.pop(session, session))

    async def _opening(self, scope: Scope, receive: Receive, send: Send) -> None:
        own = secrets.token_hex(8)

        async def noting(event: Message_) -> None:
            if event["type"] == "http.response.start":
                named = Headers(raw=event.get("headers", [])).get(SESSION_HEADER)
                if named:
                    self._aliases[named] = own
                    while len(self._aliases) > MAX_SESSIONS:
                        self._aliases.popitem(last=False)
            await send(event)

        token = _session.set(own)  # the session's tasks start here and keep it
        try:
            await self.app(scope, receive, noting)
        finally:
            _session.reset(token)

    async def _resume(self, last_event_id: str) -> AsyncIterator[dict[str, str]]:
        async for event_id, message in self.store.events_after(last_event_id, idle_s=self.idle_s):
            yield {
                "id": event_id,
                "event": "message",
                "data": message.model_dump_json(by_alias=True, exclude_unset=True),
            }


def _event_payload(event: ServerEvent) -> dict[str, str]:
    if isinstance(event, ResourceUpdated):
        return {"kind": "resource_updated", "uri": event.uri}
    return {"kind": _KINDS[type(event)]}


_KINDS: dict[type, str] = {
    ToolsListChanged: "tools_list_changed",
    PromptsListChanged: "prompts_list_changed",
    ResourcesListChanged: "resources_list_changed",
}
_EVENTS: dict[str, ServerEvent] = {
    "tools_list_changed": ToolsListChanged(),
    "prompts_list_changed": PromptsListChanged(),
    "resources_list_changed": ResourcesListChanged(),
}


def _event(payload: Any) -> ServerEvent | None:
    if not isinstance(payload, dict):
        return None
    kind = payload.get("kind")
    if kind == "resource_updated" and isinstance(payload.get("uri"), str):
        return ResourceUpdated(uri=payload["uri"])
    return _EVENTS.get(kind) if isinstance(kind, str) else None


class RelayBusSubscriptionBus:
    """`mcp.server.subscriptions.SubscriptionBus` on a bus: `publish` broadcasts the event
    on `topic`; each instance listens there (from its first subscriber on) and calls its
    listeners, so a server event reaches the listen streams of every replica. Like the
    SDK's own, delivery is fire-and-forget: a replica not listening at that moment misses
    the event (clients re-listen and refetch)."""

    def __init__(self, bus: Bus, *, topic: str = "mcp.server-events") -> None:
        self.bus, self.topic = bus, topic
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def publish(self, event: ServerEvent) -> None:
        """Deliver `event` to every subscribed listener, on every replica."""
        await self.bus.broadcast(self.topic, _event_payload(event))

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register `listener` (on the running loop) and return an idempotent unsubscribe."""
        token = object()
        self._listeners[token] = listener
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="relaybus-mcp-events")

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    async def aclose(self) -> None:
        """Stop listening (listeners stay registered; the next subscribe listens again)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        """Call the listeners for each event; after an outage, listen again (what was sent
        meanwhile is lost, as the contract allows), backing off up to 5 s."""
        pause = 0.1
        while True:
            try:
                async for broadcast in self.bus.listen(self.topic):
                    pause = 0.1
                    self._deliver(broadcast.payload)
            except BusUnavailableError as exc:
                log.warning("server events: %s; listening again in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _deliver(self, payload: Any) -> None:
        event = _event(payload)
        if event is None:
            log.warning("ignored a server event that is not one: %r", payload)
            return
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # fan-out boundary, as the SDK's own bus: isolate listeners
                log.exception("subscription listener raised; continuing")

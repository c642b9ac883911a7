"""relaybus as the backend of MCP servers (docs/protocol-backends.md): the SDK's EventStore and
SubscriptionBus on real Redis, and two `relaybus mcp --transport http` replicas sharing one
Redis, a client resuming on the other replica with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from mcp.server.streamable_http import EventMessage
from mcp.server.subscriptions import InMemorySubscriptionBus, ServerEvent
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged
from mcp_types import (
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)

from relaybus import Bus, RelayBusError
from relaybus.adapters.mcp import RelayBusEventStore, RelayBusSubscriptionBus
from relaybus.embedded import EmbeddedRedis, free_port

from .helpers import wait_for

SERVE = "from relaybus.cli import app; app()"
VERSION = "2025-11-25"  # the first protocol version with priming events


def progress(n: int) -> JSONRPCNotification:
    return JSONRPCNotification(
        jsonrpc="2.0", method="notifications/progress", params={"progressToken": "t", "progress": n}
    )


def answer(request_id: int) -> JSONRPCResponse:
    return JSONRPCResponse(jsonrpc="2.0", id=request_id, result={"ok": True})


async def replay(store: RelayBusEventStore, last_event_id: str) -> tuple[str | None, list[EventMessage]]:
    sent: list[EventMessage] = []

    async def send(event: EventMessage) -> None:
        sent.append(event)

    return await store.replay_events_after(last_event_id, send), sent


async def test_replay_sends_what_followed_in_order_and_names_the_stream(bus: Bus, raw: redis.Redis) -> None:
    store = RelayBusEventStore(bus)
    priming = await store.store_event("7", None)
    ids = [await store.store_event("7", progress(n)) for n in range(3)]
    other = await store.store_event("8", progress(99))  # another stream: never replayed with "7"
    done = await store.store_event("7", answer(7))
    assert priming.split(".")[0] == ids[0].split(".")[0] == done.split(".")[0] != other.split(".")[0]

    stream, sent = await replay(store, priming)  # priming events themselves are never sent
    assert stream == "7"
    assert [e.event_id for e in sent] == [*ids, done]
    assert [e.message for e in sent] == [progress(0), progress(1), progress(2), answer(7)]

    stream, sent = await replay(store, ids[1])
    assert stream == "7" and [e.event_id for e in sent] == [ids[2], done]
    stream, sent = await replay(store, done)  # the last one: nothing after it
    assert stream == "7" and sent == []

    # the response closed the stream: its keys expire (keep_s), the other stream's do not
    assert 0 < raw.ttl(bus.keys.stream(store.topic(done.split(".")[0]))) <= 3600
    assert raw.ttl(bus.keys.stream(store.topic(other.split(".")[0]))) == -1


async def test_unknown_event_ids_give_none_and_send_nothing(bus: Bus) -> None:
    store = RelayBusEventStore(bus)
    known = await store.store_event("1", progress(1))
    key = known.split(".")[0]
    for unknown in ["", "nonsense", "x" * 24 + ".01ABC", "0" * 24 + ".01ABC", f"{key}.01NOSUCHMESSAGE", key]:
        assert await replay(store, unknown) == (None, []), unknown


async def test_a_stream_id_used_again_after_its_answer_is_a_new_stream(bus: Bus) -> None:
    """Stream ids are request ids: a later request may reuse one. It must neither fail on the
    closed stream nor replay the earlier request's events; priming the answered stream again
    (the SDK does, after a replay) gives an id after which nothing is replayed."""
    store = RelayBusEventStore(bus)
    first = await store.store_event("1", None)
    await store.store_event("1", answer(1))
    again = await replay(store, first)
    assert again[0] == "1" and [e.message for e in again[1]] == [answer(1)]

    second = await store.store_event("1", progress(5))
    assert second.split(".")[0] != first.split(".")[0]
    assert await replay(store, second) == ("1", [])


async def test_events_after_replays_then_follows_until_the_answer(bus: Bus) -> None:
    """What a replica that does not run the request serves: the missed events, then each
    new one as the other replica stores it, ending with the response."""
    writer, reader = RelayBusEventStore(bus), RelayBusEventStore(bus)
    priming = await writer.store_event("3", None)
    await writer.store_event("3", progress(0))
    got: list[str] = []

    async def follow() -> None:
        async for event_id, message in reader.events_after(priming):
            got.append(event_id)
            assert isinstance(message, JSONRPCNotification | JSONRPCResponse)

    follower = asyncio.create_task(follow())
    await wait_for(lambda: len(got) == 1)
    later = [await writer.store_event("3", progress(n)) for n in (1, 2)]
    done = await writer.store_event("3", answer(3))
    await asyncio.wait_for(follower, 5)
    assert got[1:] == [*later, done]


async def test_subscription_events_reach_every_replica(bus: Bus, bare_bus: Bus) -> None:
    """Two SubscriptionBus instances on two buses (two replicas): an event published on
    either reaches the listeners of both, once each; an unsubscribed listener gets nothing."""
    a, b = RelayBusSubscriptionBus(bus), RelayBusSubscriptionBus(bare_bus)
    got_a: list[ServerEvent] = []
    got_b: list[ServerEvent] = []
    dropped: list[ServerEvent] = []
    a.subscribe(got_a.append)
    b.subscribe(got_b.append)
    unsubscribe = b.subscribe(dropped.append)
    unsubscribe()
    unsubscribe()  # idempotent
    try:
        # listening starts with the first subscriber; publish until both are there
        for _ in range(100):
            await a.publish(ToolsListChanged())
            await asyncio.sleep(0.02)
            if got_a and got_b:
                break
        got_a.clear(), got_b.clear()
        await b.publish(ResourceUpdated(uri="file:///notes.md"))
        await a.publish(ToolsListChanged())
        await wait_for(lambda: len(got_a) == 2 and len(got_b) == 2)
        await asyncio.sleep(0.1)  # nothing more arrives
        expected = [ResourceUpdated(uri="file:///notes.md"), ToolsListChanged()]
        assert got_a == expected and got_b == expected and dropped == []
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("kind", ["sdk", "relaybus"])
async def test_subscription_bus_contract(bus: Bus, kind: str) -> None:
    """The SubscriptionBus docstring's contract, run against the SDK's in-memory bus too: each
    listener gets each event once, a raising listener starves no other, unsubscribe is
    idempotent and ends delivery."""
    events: Any = InMemorySubscriptionBus() if kind == "sdk" else RelayBusSubscriptionBus(bus)
    got: list[ServerEvent] = []

    def broken(event: ServerEvent) -> None:
        raise RuntimeError("a broken listener")

    events.subscribe(broken)
    unsubscribe = events.subscribe(got.append)
    try:
        for _ in range(100):  # until listening (the relaybus bus starts with a subscriber)
            await events.publish(ToolsListChanged())
            await asyncio.sleep(0.02)
            if got:
                break
        got.clear()
        await events.publish(ResourceUpdated(uri="file:///a"))
        await wait_for(lambda: got == [ResourceUpdated(uri="file:///a")])
        unsubscribe()
        unsubscribe()
        await events.publish(ResourceUpdated(uri="file:///b"))
        await asyncio.sleep(0.1)
        assert got == [ResourceUpdated(uri="file:///a")]
    finally:
        if kind == "relaybus":
            await events.aclose()


async def test_server_events_flow_again_after_a_redis_restart(aof_server: EmbeddedRedis, prefix: str) -> None:
    """A listening replica whose Redis goes away listens again once it is back: events
    published after that reach its listeners (those sent meanwhile are lost, as the
    SubscriptionBus contract allows)."""
    fast = {"socket_timeout": 1.0, "connect_timeout": 0.5, "health_check_interval_s": 0.2}
    async with Bus.from_url(aof_server.url, prefix=prefix, **fast) as bus:
        events = RelayBusSubscriptionBus(bus)
        got: list[ServerEvent] = []
        events.subscribe(got.append)
        try:

            async def until_heard(event: ServerEvent, seconds: float = 15) -> None:
                deadline = asyncio.get_running_loop().time() + seconds
                while event not in got:
                    assert asyncio.get_running_loop().time() < deadline, f"{event} never arrived"
                    with contextlib.suppress(RelayBusError):
                        await events.publish(event)
                    await asyncio.sleep(0.1)

            await until_heard(ToolsListChanged())
            aof_server.kill()
            await asyncio.sleep(0.5)
            aof_server.start()
            await until_heard(ResourceUpdated(uri="file:///after"))
        finally:
            await events.aclose()


# -- two `relaybus mcp --transport http` replicas sharing one Redis ------------------


@contextlib.contextmanager
def replica(redis_url: str, prefix: str, port: int) -> Any:
    args = ["mcp", "--redis-url", redis_url, "--prefix", prefix, "--transport", "http", "--port", str(port)]
    process = subprocess.Popen([sys.executable, "-c", SERVE, *args])
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def up(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(200):
        with contextlib.suppress(httpx.TransportError):
            await client.get(url.removesuffix("/mcp") + "/")
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered")


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str | None, Any]]:
    """(id, JSON-RPC message or None for an empty data) per SSE event."""
    event_id, data = None, []
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "":
            if event_id is not None or data:
                body = "\n".join(data)
                yield event_id, jsonrpc_message_adapter.validate_json(body) if body else None
            event_id, data = None, []


async def open_session(client: httpx.AsyncClient, url: str) -> dict[str, str]:
    initialize = JSONRPCRequest(
        jsonrpc="2.0",
        id=0,
        method="initialize",
        params={"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    )
    opened = await client.post(url, headers=HEADERS, content=initialize.model_dump_json(by_alias=True))
    opened.raise_for_status()
    session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": VERSION}
    ready = JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized")
    sent = await client.post(url, headers=HEADERS | session, content=ready.model_dump_json(by_alias=True))
    assert sent.status_code == 202
    return session


async def call_and_drop(client: httpx.AsyncClient, url: str, session: dict[str, str], payload: str) -> str:
    """Call relaybus_request (request id 1: every session's first call) and drop the
    response stream after its priming event, the tool still waiting; the priming event id."""
    call = JSONRPCRequest(
        jsonrpc="2.0",
        id=1,
        method="tools/call",
        params={"name": "relaybus_request", "arguments": {"topic": "reviews", "payload": payload}},
    )
    body = call.model_dump_json(by_alias=True)
    async with client.stream("POST", url, headers=HEADERS | session, content=body) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for event_id, message in sse(stream):
            assert message is None and event_id  # the priming event comes first
            return event_id
    raise AssertionError("no priming event")


async def resume(
    client: httpx.AsyncClient, url: str, session: dict[str, str], last_event_id: str
) -> list[tuple[str | None, Any]]:
    headers = session | {"accept": "text/event-stream", "last-event-id": last_event_id}
    got = []
    async with client.stream("GET", url, headers=headers) as resumed:
        assert resumed.status_code == 200
        async for event in sse(resumed):
            got.append(event)
    return got


def only_result(events: list[tuple[str | None, Any]]) -> Any:
    """The reply payload of the one message among `events`, a response to request 1."""
    messages = [message for _, message in events if message is not None]
    assert len(messages) == 1 and isinstance(messages[0], JSONRPCResponse) and messages[0].id == 1
    ids = [event_id for event_id, _ in events]
    assert len(ids) == len(set(ids))
    return json.loads(messages[0].result["content"][0]["text"])["reply"]["payload"]


async def test_a_client_resumes_on_the_other_replica(redis_url: str, prefix: str, bus: Bus) -> None:
    """Tool calls waiting on replica A (relaybus_request, for a reply on the bus), from two
    sessions whose calls have the same request id; each client drops A's stream after the
    priming event and resumes on replica B with Last-Event-ID, and gets its own call's
    result from B once A's tool finishes: exactly once, nothing else."""
    port_a, port_b = free_port(), free_port()
    with replica(redis_url, prefix, port_a) as url_a, replica(redis_url, prefix, port_b) as url_b:
        async with httpx.AsyncClient(timeout=20) as client:
            await up(client, url_a)
            await up(client, url_b)
            sessions = [await open_session(client, url_a) for _ in range(2)]
            primed = [
                await call_and_drop(client, url_a, s, p)
                for s, p in zip(sessions, ["pr-1", "pr-2"], strict=True)
            ]
            resumers = [
                asyncio.create_task(resume(client, url_b, s, last))
                for s, last in zip(sessions, primed, strict=True)
            ]
            asked = [await answer_request(bus, "reviews") for _ in range(2)]
            results = await asyncio.wait_for(asyncio.gather(*resumers), 15)
            rebound = sessions[0] | {"last-event-id": primed[0], "host": "evil.example"}  # DNS rebinding
            assert (await client.get(url_b, headers=rebound)).status_code == 421
    assert sorted(m.payload for m in asked) == ["pr-1", "pr-2"]
    assert [only_result(events) for events in results] == ["re: pr-1", "re: pr-2"]
    assert await bus.topics() == ["reviews"]  # the streams live under a prefix of their own


async def answer_request(bus: Bus, topic: str, seconds: float = 10) -> Any:
    """Wait for a request on `topic` and reply "re: <its payload>"; the request."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        for message in await bus.read(topic, "responders", count=1, block_ms=200):
            await bus.reply(message, f"re: {message.payload}")
            await bus.ack(message)
            return message
    raise AssertionError("no request arrived")

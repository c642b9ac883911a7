"""Two replicas of an MCP server for real (docs/examples/mcp_replicas.py, the SDK's streamable
HTTP app on RelayBusEventStore): a tool call streaming progress from replica A resumes on
replica B with Last-Event-ID - each event stored after the id once, no gap - while A runs,
and after A is SIGKILLed (the resumed stream then ends after the replica's idle limit).
A server event published on one replica reaching another's listeners is
test_mcp_backend.py's test_subscription_events_reach_every_replica."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from mcp_types import JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

from relaybus import Bus
from relaybus.embedded import free_port

from .test_mcp_backend import HEADERS, open_session, sse, up

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "mcp_replicas.py"
IDLE_S = 1.5  # the replicas' idle limit for a resumed stream


@contextlib.contextmanager
def replica(redis_url: str, prefix: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = {**os.environ, "RELAYBUS_URL": redis_url, "RELAYBUS_PREFIX": prefix}
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", str(port), "--idle-s", str(IDLE_S)], env=env
    )
    try:
        yield f"http://127.0.0.1:{port}/mcp", process
    finally:
        process.terminate()
        process.wait(10)


def countdown(steps: int) -> str:
    call = JSONRPCRequest(
        jsonrpc="2.0",
        id=1,
        method="tools/call",
        params={"name": "countdown", "arguments": {"steps": steps}, "_meta": {"progressToken": "p"}},
    )
    return call.model_dump_json(by_alias=True)


async def start_and_drop(
    client: httpx.AsyncClient, url: str, session: dict[str, str], steps: int, seen: int, then: Any = None
) -> list[tuple[str, Any]]:
    """Call countdown on `url`, read its stream up to the `seen`th progress event, then
    call `then()` (kill the replica) and drop the stream; the (id, message) events read."""
    got: list[tuple[str, Any]] = []
    async with client.stream("POST", url, headers=HEADERS | session, content=countdown(steps)) as stream:
        async for event_id, message in sse(stream):
            assert event_id
            got.append((event_id, message))
            if sum(isinstance(m, JSONRPCNotification) for _, m in got) == seen:
                break
    if then is not None:
        then()
    return got


async def resume(
    client: httpx.AsyncClient, url: str, session: dict[str, str], last: str
) -> list[tuple[str, Any]]:
    headers = session | {"accept": "text/event-stream", "last-event-id": last}
    async with client.stream("GET", url, headers=headers) as resumed:
        assert resumed.status_code == 200
        return [(event_id or "", message) async for event_id, message in sse(resumed)]


def steps_of(events: list[tuple[str, Any]]) -> list[int]:
    return [m.params["progress"] for _, m in events if isinstance(m, JSONRPCNotification)]


async def stored_after(bus: Bus, last: str) -> list[str]:
    """The event ids stored in the stream of `last` after it, read from Redis."""
    key = last.split(".")[0]
    ids = [f"{key}.{m.id}" for m in await bus.history(f"mcp.events.{key}", limit=1000)]
    return ids[ids.index(last) + 1 :]


async def test_a_stream_resumes_on_the_other_replica_while_the_first_runs(
    redis_url: str, prefix: str, bus: Bus
) -> None:
    """The client drops A's stream after 3 progress events and resumes on B: the rest of
    the progress, live as A reports it, then the result; each event once, no gap."""
    with replica(redis_url, prefix) as (url_a, _), replica(redis_url, prefix) as (url_b, _):
        async with httpx.AsyncClient(timeout=20) as client:
            await up(client, url_a)
            await up(client, url_b)
            session = await open_session(client, url_a)
            before = await start_and_drop(client, url_a, session, steps=20, seen=3)
            after = await asyncio.wait_for(resume(client, url_b, session, before[-1][0]), 15)
    assert steps_of(before) == [1, 2, 3]
    assert steps_of(after) == list(range(4, 21))
    assert isinstance(after[-1][1], JSONRPCResponse) and after[-1][1].id == 1
    assert "counted 20" in after[-1][1].model_dump_json()
    assert [event_id for event_id, _ in after] == await stored_after(bus, before[-1][0])


async def test_after_the_first_replica_is_killed_the_rest_comes_once_then_the_stream_ends(
    redis_url: str, prefix: str, bus: Bus
) -> None:
    """A is SIGKILLed mid-stream, after the client read 3 progress events. Resuming on B
    after the first of them gives every event A stored after it, once and in order (at
    least the two the client read, more if A stored more before it died), then - nothing
    will ever close the stream - the resumed stream ends after B's idle limit, with no
    result (docs/protocol-backends.md)."""
    with replica(redis_url, prefix) as (url_a, a), replica(redis_url, prefix) as (url_b, _):
        async with httpx.AsyncClient(timeout=20) as client:
            await up(client, url_a)
            await up(client, url_b)
            session = await open_session(client, url_a)

            def kill_a() -> None:
                a.send_signal(signal.SIGKILL)
                a.wait(10)

            before = await start_and_drop(client, url_a, session, steps=50, seen=3, then=kill_a)
            last = before[1][0]  # [priming, progress 1, 2, 3]
            loop = asyncio.get_running_loop()
            started = loop.time()
            after = await asyncio.wait_for(resume(client, url_b, session, last), 15)
            took = loop.time() - started
    stored = await stored_after(bus, last)
    assert [event_id for event_id, _ in after] == stored  # every stored event once, nothing else
    assert len(stored) >= 2 and steps_of(after) == list(range(2, 2 + len(stored)))  # no gap, no duplicate
    assert not any(isinstance(m, JSONRPCResponse) for _, m in after)
    assert IDLE_S <= took < IDLE_S + 5  # ended by the idle limit, not by the client giving up

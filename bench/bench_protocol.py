"""Protocol backends, in one run on one private redis-server: the MCP event store's append
(store_event) and replay (replay_events_after) against a raw redis-py XADD/XRANGE of the
same JSON; and A2A event latency from replica A (save the task, publish its event) to a
subscriber on replica B, paced at a given rate - relaybus's task store and event stream
against the SDK's SQL ones on SQLite (a2a-sdk[sqlite]; its stream polls every 0.5 s)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from a2a.server.cluster import TaskEventStream, TaskVersion, VersionedEvent, VersionedTaskStore
from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import Task, TaskState, TaskStatus, TaskStatusUpdateEvent
from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCNotification
from rich.console import Console
from rich.table import Table

from relaybus import Bus
from relaybus.adapters.a2a import RelayBusEventStream, RelayBusTaskStore
from relaybus.adapters.mcp import RelayBusEventStore
from relaybus.embedded import EmbeddedRedis, free_port


def progress(n: int) -> JSONRPCNotification:
    return JSONRPCNotification(
        jsonrpc="2.0",
        method="notifications/progress",
        params={"progressToken": "t", "progress": n, "total": 1e6},
    )


async def store_costs(url: str, n: int) -> tuple[float, float]:
    """Seconds per event: store_event, then one replay of the whole stream."""
    async with Bus.from_url(url, prefix=f"b-{uuid.uuid4().hex[:8]}") as bus:
        store = RelayBusEventStore(bus)
        started = time.perf_counter()
        first = await store.store_event("1", None)
        for i in range(n):
            await store.store_event("1", progress(i))
        append = (time.perf_counter() - started) / (n + 1)
        sent: list[EventMessage] = []

        async def send(event: EventMessage) -> None:
            sent.append(event)

        started = time.perf_counter()
        await store.replay_events_after(first, send)
        replay = (time.perf_counter() - started) / n
        assert len(sent) == n
        return append, replay


async def raw_costs(url: str, n: int) -> tuple[float, float]:
    """The same with redis-py: one awaited XADD per event, then XRANGE pages of 500."""
    client = aioredis.Redis.from_url(url)
    key = f"b-{uuid.uuid4().hex[:8]}:raw"
    try:
        started = time.perf_counter()
        for i in range(n + 1):
            await client.xadd(key, {"d": progress(i).model_dump_json(by_alias=True, exclude_unset=True)})
        append = (time.perf_counter() - started) / (n + 1)
        started = time.perf_counter()
        got, after = 0, "-"
        while page := await client.xrange(key, min=after, count=500):
            for _, fields in page:
                json.loads(fields[b"d"])
            got += len(page)
            after = "(" + page[-1][0].decode()  # exclusive, Redis >= 6.2
        replay = (time.perf_counter() - started) / n
        assert got == n + 1
        return append, replay
    finally:
        await client.delete(key)
        await client.aclose()


Replica = tuple[VersionedTaskStore, TaskEventStream]


async def a2a_latency(a: Replica, b: Replica, n: int, rate: float, save: bool = True) -> list[float]:
    """Seconds from replica A starting to save a task update (then publishing its event) to
    the subscriber on replica B getting the event, `rate` updates a second; without `save`,
    from the publish."""
    (store, publisher), (_, subscriber) = a, b
    task_id, context = f"t-{uuid.uuid4().hex[:8]}", ServerCallContext()
    sent: dict[int, float] = {}
    delays: list[float] = []

    async def follow() -> None:
        async for event in subscriber.subscribe(task_id, after=TaskVersion.MISSING):
            version = int(event.version._value)
            delays.append(time.perf_counter() - sent[version])
            if version == n:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    version, start = TaskVersion.MISSING, time.perf_counter()
    for v in range(1, n + 1):
        await asyncio.sleep(max(0.0, start + v / rate - time.perf_counter()))
        state = TaskState.TASK_STATE_COMPLETED if v == n else TaskState.TASK_STATE_WORKING
        update = TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))
        sent[v] = time.perf_counter()
        if not save:
            version = TaskVersion(v)
            await publisher.publish(task_id, VersionedEvent(event=update, version=version))
            continue
        version = await store.save(
            Task(id=task_id, context_id="c", status=update.status),
            event=update,
            prev=None,
            prev_version=version,
            context=context,
        )
        await publisher.publish(task_id, VersionedEvent(event=update, version=version))
    await asyncio.wait_for(task, 30)
    return delays


async def relaybus_latency(url: str, n: int, rate: float, save: bool = True) -> list[float]:
    prefix = f"b-{uuid.uuid4().hex[:8]}"
    async with Bus.from_url(url, prefix=prefix) as a, Bus.from_url(url, prefix=prefix) as b:
        a_side = (RelayBusTaskStore(a), RelayBusEventStream(a))
        b_side = (RelayBusTaskStore(b), RelayBusEventStream(b))
        return await a2a_latency(a_side, b_side, n, rate, save)


async def sqlite_latency(n: int, rate: float) -> list[float] | None:
    """The same with the SDK's VersionedDatabaseTaskStore and DatabaseTaskEventStream on one
    SQLite file, an engine per replica; None without a2a-sdk[sqlite]."""
    try:
        from a2a.server.cluster import DatabaseTaskEventStream, VersionedDatabaseTaskStore
        from sqlalchemy.ext.asyncio import create_async_engine
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'a2a.db'}"
        engines = [create_async_engine(url), create_async_engine(url)]
        replicas = [(VersionedDatabaseTaskStore(e), DatabaseTaskEventStream(e)) for e in engines]
        await replicas[0][0].initialize()
        await replicas[0][1].initialize()
        try:
            return await a2a_latency(replicas[0], replicas[1], n, rate)
        finally:
            for engine in engines:
                await engine.dispose()


async def idle_followers(url: str, tasks: int, seconds: float = 5.0) -> tuple[int, int, float]:
    """`tasks` A2A subscribers on one bus, each waiting on its own task: the connections the
    server sees, the wake channels subscribed, and this process's CPU (share of one core)
    while nothing is published."""
    async with Bus.from_url(url, prefix=f"b-{uuid.uuid4().hex[:8]}") as bus:
        stream = RelayBusEventStream(bus)

        async def follow(task_id: str) -> None:
            async for _ in stream.subscribe(task_id, after=TaskVersion.MISSING):
                pass

        followers = [asyncio.create_task(follow(f"idle-{n}")) for n in range(tasks)]
        await asyncio.sleep(max(5.0, tasks / 1000))  # every follower has read and is waiting
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        share = (time.process_time() - cpu) / (time.perf_counter() - wall)
        clients = len(await bus._engine.ctx.redis.client_list())
        watched = len(
            await bus._engine.ctx.redis.pubsub_channels(f"{bus.keys.prefix}:*")
        )  # every follower waits
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        return clients, watched, share


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


async def main(url: str, n: int, rate: float, followers: int) -> None:
    ours = raw = (float("inf"), float("inf"))
    for _ in range(3):  # best of 3: this machine's rate swings between runs
        mine, base = await store_costs(url, n), await raw_costs(url, n)
        ours = (min(ours[0], mine[0]), min(ours[1], mine[1]))
        raw = (min(raw[0], base[0]), min(raw[1], base[1]))
    console = Console()
    table = Table(title=f"MCP event store, {n} events, best of 3 (µs per event)")
    for column in ("step", "RelayBusEventStore", "raw XADD/XRANGE", "ratio"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for label, a, b in (("append", ours[0], raw[0]), ("replay", ours[1], raw[1])):
        table.add_row(label, f"{a * 1e6:.1f}", f"{b * 1e6:.1f}", f"{b / a:.2f}")
    console.print(table)
    table = Table(title=f"A2A events, replica A -> subscriber on replica B, {rate:,.0f} a second")
    for column in ("backend", "events", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    runs: list[tuple[str, Callable[[], Awaitable[list[float] | None]]]] = [
        ("relaybus event stream (publish only)", lambda: relaybus_latency(url, n, rate, save=False)),
        ("relaybus (task store + event stream)", lambda: relaybus_latency(url, n, rate)),
        ("a2a-sdk SQL on SQLite (0.5 s polling)", lambda: sqlite_latency(min(n, 1000), rate)),
    ]
    for label, run in runs:
        got = await run()
        if got is None:
            table.add_row(label, "not installed", "", "", "")
            continue
        delays = sorted(got)
        p50, p99 = statistics.median(delays), delays[max(0, int(len(delays) * 0.99) - 1)]
        table.add_row(label, str(len(delays)), ms(p50), ms(p99), ms(delays[-1]))
    console.print(table)
    clients, watched, share = await idle_followers(url, followers)
    console.print(
        f"{followers:,} A2A subscribers (followed topics) on one bus, idle: {clients} connections "
        f"to the server in all, {watched:,} wake channels watched, {share:.1%} of a core"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5000, help="events per case")
    parser.add_argument("--rate", type=float, default=1000.0, help="A2A events per second")
    parser.add_argument("--followers", type=int, default=10_000, help="idle A2A subscribers on one bus")
    args = parser.parse_args()
    with EmbeddedRedis(port=free_port()) as server:
        asyncio.run(main(server.url, args.n, args.rate, args.followers))

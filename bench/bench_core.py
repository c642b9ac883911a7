"""Core hot-path benchmark: relaybus against raw redis-py, same run, same Redis.

docs/benchmarks.md states the targets as ratios to raw redis-py, because absolute
rates depend on the machine. So every relaybus figure here has a raw baseline
measured next to it, on one private redis-server that this script starts and
stops itself (no other Redis is ever touched). Each case runs REPEATS times and
the best run counts: on a small, noisy machine the best run is the one least
disturbed by neighbours. Within a run the publish cases alternate raw and relaybus
in SLICES slices, because the noise comes in bursts lasting seconds (a 2-core box
moving redis-server and the client between cores can halve the raw rate): whole
runs back to back gave ratios from 0.45 to 1.35 for the same code, slices 0.7-0.85.

The raw side is the strict form of what relaybus does: the same stream fields,
a payload encoded once up front, pipelining where relaybus may pipeline.

    python bench/bench_core.py            # full run, rich table
    python bench/bench_core.py -n 0.2     # a fifth of the messages, quick
    python bench/bench_core.py --json     # machine-readable
    python bench/bench_core.py --results core.json   # the table, and the JSON to a file
    python bench/bench_core.py --loop both   # asyncio's event loop, then uvloop's
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

from relaybus import Bus, Message
from relaybus.embedded import EmbeddedRedis, free_port

REPEATS = 3
SLICES = 10
BATCH = 100
GROUP = "bench"
PAYLOAD = {"agent": "reviewer-7", "task": "review", "pr": 42, "note": "looks fine " * 8}
PAYLOAD_JSON = orjson.dumps(PAYLOAD)
# case -> (messages at scale 1, slices per run, target for relaybus/raw or None)
# consume+ack runs whole: a slice would time one more worker start-up, not throughput
CASES = {
    "publish": (5_000, SLICES, 0.85),
    "publish_many": (20_000, SLICES, 0.8),
    "publish x64 tasks": (20_000, SLICES, 0.7),  # against raw pipelined XADD
    "consume+ack": (20_000, 1, None),
}

Run = Callable[[str, int], Awaitable[float]]  # (key or topic, messages) -> seconds


@dataclass
class Result:
    case: str
    n: int
    raw_msgs_s: int
    relaybus_msgs_s: int
    ratio: float
    target: float | None

    @classmethod
    def of(cls, case: str, n: int, raw_s: float, bus_s: float) -> Result:
        # same n on both sides, so relaybus/raw in msgs/s is raw/relaybus in seconds
        return cls(case, n, round(n / raw_s), round(n / bus_s), round(raw_s / bus_s, 3), CASES[case][2])


# -- 1. single awaited publish --------------------------------------------------


async def raw_publish(r: aioredis.Redis, key: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await r.xadd(key, {"v": "1", "m": PAYLOAD_JSON})
    return time.perf_counter() - start


async def bus_publish(bus: Bus, topic: str, n: int) -> float:
    await bus.publish(topic, PAYLOAD)  # first publish also registers the topic
    start = time.perf_counter()
    for _ in range(n):
        await bus.publish(topic, PAYLOAD)
    return time.perf_counter() - start


# -- 2. batched publish -----------------------------------------------------------


async def raw_publish_many(r: aioredis.Redis, key: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n // BATCH):
        async with r.pipeline(transaction=False) as pipe:
            for _ in range(BATCH):
                pipe.xadd(key, {"v": "1", "m": PAYLOAD_JSON})
            await pipe.execute()
    return time.perf_counter() - start


async def bus_publish_many(bus: Bus, topic: str, n: int) -> float:
    await bus.publish(topic, PAYLOAD)
    batch = [PAYLOAD] * BATCH
    start = time.perf_counter()
    for _ in range(n // BATCH):
        await bus.publish_many(topic, batch)
    return time.perf_counter() - start


# -- 3. 64 tasks publishing at once (raw: the pipelined XADD of case 2) ---------------

TASKS = 64


async def bus_publish_concurrently(bus: Bus, topic: str, n: int) -> float:
    await bus.publish(topic, PAYLOAD)

    async def one(count: int) -> None:
        for _ in range(count):
            await bus.publish(topic, PAYLOAD)

    start = time.perf_counter()
    await asyncio.gather(*(one(n // TASKS + (i < n % TASKS)) for i in range(TASKS)))
    return time.perf_counter() - start


# -- 4. consume + ack (streams pre-filled, only consumption is timed) ---------------


async def raw_consume(r: aioredis.Redis, key: str, n: int) -> float:
    await raw_publish_many(r, key, n)
    await r.xgroup_create(key, GROUP, id="0")
    start = time.perf_counter()
    got = await r.xreadgroup(GROUP, "c1", {key: ">"}, count=BATCH)
    done = 0
    while done < n:
        ids = []
        for _, entries in got or ():
            for entry_id, fields in entries:
                orjson.loads(fields[b"m"])  # a consumer looks at what it got
                ids.append(entry_id)
        done += len(ids)
        async with r.pipeline(transaction=False) as pipe:  # ack this batch, read the next
            pipe.xack(key, GROUP, *ids)
            pipe.xreadgroup(GROUP, "c1", {key: ">"}, count=BATCH)
            _, got = await pipe.execute()
    elapsed = time.perf_counter() - start
    await check_all_acked(r, key)
    return elapsed


async def bus_consume(url: str, prefix: str, topic: str, n: int) -> float:
    async with Bus.from_url(url, prefix=prefix) as bus:
        for _ in range(n // BATCH):
            await bus.publish_many(topic, [PAYLOAD] * BATCH)
        elapsed = await timed_consume(bus, topic, n)
        await check_all_acked(bus._engine.ctx.redis, bus.keys.stream(topic))
    return elapsed


async def timed_consume(bus: Bus, topic: str, n: int, **subscribe: Any) -> float:
    """Seconds for a concurrency-16 subscription to handle n messages already waiting."""
    handled, all_done = 0, asyncio.Event()

    @bus.subscribe(topic, group=GROUP, concurrency=16, **subscribe)
    async def handle(message: Message) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            all_done.set()

    start = time.perf_counter()
    runner = asyncio.create_task(bus.run())
    await all_done.wait()
    # the clock stops at the last handler: stop() may wait out a blocking read
    # (block_ms), which is not throughput. Its final ack batch is checked by callers.
    elapsed = time.perf_counter() - start
    await bus.stop()  # from here, not from a handler: stop waits for handlers
    await runner
    if handled != n:
        raise RuntimeError(f"consume {subscribe or 'defaults'}: {handled} handled, {n} published")
    return elapsed


async def check_all_acked(r: aioredis.Redis, key: str) -> None:
    pending = (await r.xpending(key, GROUP))["pending"]
    if pending:
        raise RuntimeError(f"{key}: {pending} messages left unacknowledged")


# -- driver ------------------------------------------------------------------------


async def best_pair(
    raw: Run,
    ours: Run,
    n: int,
    slices: int,
    fresh_name: Callable[[], str],
    drop: Callable[[str], Awaitable[None]],
) -> tuple[float, float]:
    """Best total seconds of REPEATS runs per side; within a run, raw and relaybus
    alternate in `slices` slices of n/slices messages. Each run writes to fresh
    keys, deleted afterwards."""
    best = [float("inf"), float("inf")]
    for _ in range(REPEATS):
        names, totals = (fresh_name(), fresh_name()), [0.0, 0.0]
        for _ in range(slices):
            for side, run in enumerate((raw, ours)):
                totals[side] += await run(names[side], n // slices)
        for side, name in enumerate(names):
            best[side] = min(best[side], totals[side])
            await drop(name)
    return best[0], best[1]


async def measure(url: str, scale: float) -> list[Result]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"  # the server is private; unique all the same
    counter = iter(range(1 << 30))
    unit = {case: BATCH * slices for case, (_, slices, _) in CASES.items()}  # whole batches per slice
    sizes = {
        case: max(unit[case], round(n * scale / unit[case]) * unit[case]) for case, (n, _, _) in CASES.items()
    }
    r = aioredis.Redis.from_url(url)
    async with Bus.from_url(url, prefix=prefix) as bus:

        def fresh_name() -> str:
            return f"{prefix}.t{next(counter)}"

        async def drop(name: str) -> None:
            await r.delete(name, bus.keys.stream(name), bus.keys.retry(name, GROUP))

        pairs: dict[str, tuple[Run, Run]] = {
            "publish": (partial(raw_publish, r), partial(bus_publish, bus)),
            "publish_many": (partial(raw_publish_many, r), partial(bus_publish_many, bus)),
            "publish x64 tasks": (partial(raw_publish_many, r), partial(bus_publish_concurrently, bus)),
            "consume+ack": (partial(raw_consume, r), partial(bus_consume, url, prefix)),
        }
        results = []
        for case, (raw, ours) in pairs.items():
            n, slices = sizes[case], CASES[case][1]
            seconds = await best_pair(raw, ours, n, slices, fresh_name, drop)
            results.append(Result.of(case, n, *seconds))
    await r.aclose()
    return results


def show(results: list[Result], console: Console, loop: str) -> None:
    table = Table(title=f"relaybus vs raw redis-py, {loop} event loop (best of {REPEATS})")
    for column in ("case", "N", "raw msgs/s", "relaybus msgs/s", "ratio", "target"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in results:
        if row.target is None:
            verdict = "report only"
        else:
            colour = "green" if row.ratio >= row.target else "red"
            verdict = f"[{colour}]>= {row.target}[/{colour}]"
        table.add_row(
            row.case,
            f"{row.n:,}",
            f"{row.raw_msgs_s:,}",
            f"{row.relaybus_msgs_s:,}",
            f"{row.ratio:.2f}",
            verdict,
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n", "--scale", type=float, default=1.0, help="multiply every message count by this (default 1.0)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help="also write the JSON to FILE (bench_targets.py judges the targets from it)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "both"],
        default="asyncio",
        help="event loop: asyncio's, uvloop's (the `uvloop` extra), or each in turn",
    )
    args = parser.parse_args()
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    measured: dict[str, list[Result]] = {}
    with EmbeddedRedis(port=free_port()) as server:
        for loop in loops:  # raw and relaybus on the same loop: each ratio is like for like
            with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
                measured[loop] = runner.run(measure(server.url, args.scale))
    results = {loop: [asdict(row) for row in rows] for loop, rows in measured.items()}
    document = json.dumps(
        {"scale": args.scale, "repeats": REPEATS, "slices": SLICES, "batch": BATCH, "results": results},
        indent=2,
    )
    if args.results:
        args.results.write_text(document)
    if args.json:
        print(document)
    else:
        for loop, rows in measured.items():
            show(rows, Console(), loop)


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop == "asyncio":
        return None
    import uvloop  # the `uvloop` extra

    return uvloop.new_event_loop


if __name__ == "__main__":
    main()

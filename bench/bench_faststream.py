"""consume+ack through handlers: relaybus against FastStream's Redis stream subscriber.

docs/benchmarks.md sets the target: relaybus >= 5x FastStream, measured in the
same run on the same Redis. This script starts one private redis-server of its
own (no other Redis is touched) and, for each side, pre-fills a fresh stream with
N messages, then times how long that side's handlers take to receive all of
them, with acknowledgement, through a consumer group:

- relaybus: `bench_core.timed_consume` (subscribe/run, concurrency 16, prefetch
  its default 2 x 16 = 32, acks batched by the worker). Pre-filled with
  `publish_many` in batches of 100.
- FastStream: `@broker.subscriber(stream=StreamSub(..., group=..., consumer=...))`,
  acks by its default ack policy (REJECT_ON_ERROR: XACK after the handler
  returns). Pre-filled through FastStream's own `broker.publish(..., stream=...)`
  (pipelined in batches of 100), so it decodes its own wire format. The
  broker's per-message logging is off (`logger=None`): relaybus logs nothing
  per message either. The handler's body is annotated `Any`, so FastStream does
  no pydantic validation, as relaybus does none without `model=`. The clock
  covers `broker.start()` as it covers relaybus's worker start-up.

Both clocks stop when the N-th handler call has run; the acks still in flight
then are waited for outside the clock, and every run is checked afterwards:
XPENDING of the group is 0 and each handler ran exactly N times. Each case runs
REPEATS times, alternating which side goes first, and the best run per side
counts (a 2-core, noisy machine: read the ratio, not the rates).

    python bench/bench_faststream.py          # full run, rich table
    python bench/bench_faststream.py -n 0.2   # a fifth of the messages, quick
    python bench/bench_faststream.py --json   # machine-readable
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import Any

import redis.asyncio as aioredis
from bench_core import BATCH, GROUP, PAYLOAD, check_all_acked, timed_consume  # bench/ is on sys.path
from faststream.redis import RedisBroker, StreamSub
from rich.console import Console
from rich.table import Table

from relaybus import Bus, Message
from relaybus.embedded import EmbeddedRedis, free_port

REPEATS = 3
N = 20_000
TARGET = 5.0
CONCURRENCY = 16  # what timed_consume gives relaybus
PREFETCH = 2 * CONCURRENCY  # relaybus's default prefetch: XREADGROUP COUNT per read
# case -> FastStream subscriber options (StreamSub keywords, plus max_workers). Both read up to
# PREFETCH entries per XREADGROUP, like relaybus. With handlers this cheap FastStream is fastest
# with one worker (its default): 16 workers add task-group and semaphore work per message and,
# on this machine, came out 15-20% slower. Both are shown; the faster is the fair baseline.
CASES: dict[str, dict[str, Any]] = {
    "FastStream 1 worker": {"max_records": PREFETCH, "max_workers": 1},
    "FastStream 16 workers": {"max_records": PREFETCH, "max_workers": CONCURRENCY},
}


@dataclass
class Result:
    case: str
    faststream_options: str
    n: int
    faststream_msgs_s: int
    relaybus_msgs_s: int
    ratio: float
    target: float


def describe(options: dict[str, Any]) -> str:
    return (
        f"StreamSub(group, consumer, max_records={options['max_records']}, no_ack=False), "
        f"max_workers={options['max_workers']}, ack_policy=REJECT_ON_ERROR (default), logger=None, "
        "handler(body: Any)"
    )


# -- FastStream -------------------------------------------------------------------------


async def faststream_consume(
    url: str, r: aioredis.Redis, stream: str, n: int, options: dict[str, Any]
) -> float:
    broker = RedisBroker(url, logger=None)
    handled, last_body, all_done = 0, None, asyncio.Event()
    sub = StreamSub(stream, group=GROUP, consumer="c1", max_records=options["max_records"])

    @broker.subscriber(stream=sub, max_workers=options["max_workers"])
    async def handle(body: Any) -> None:  # Any: no pydantic validation; relaybus's handler has
        # none either (no model=). dict[str, Any] here measured 3-5% slower
        nonlocal handled, last_body
        handled += 1
        last_body = body
        if handled == n:
            all_done.set()

    await broker.connect()
    for _ in range(n // BATCH):  # pre-fill through FastStream's own publisher, its own format
        async with r.pipeline(transaction=False) as pipe:
            for _ in range(BATCH):
                await broker.publish(PAYLOAD, stream=stream, pipeline=pipe)
            await pipe.execute()
    if await r.xlen(stream) != n:
        raise RuntimeError(f"{stream}: pre-fill wrote {await r.xlen(stream)} entries, not {n}")
    # group at 0: StreamSub with last_id '>' would create it at '$' and skip what is waiting
    await r.xgroup_create(stream, GROUP, id="0")
    try:
        start = time.perf_counter()
        await broker.start()
        await all_done.wait()
        elapsed = time.perf_counter() - start
        await settle(r, stream)  # acks of the last handlers may still be on their way
    finally:
        await broker.stop()
    await check_all_acked(r, stream)
    check_handled("FastStream", handled, n, last_body)
    return elapsed


async def settle(r: aioredis.Redis, key: str) -> None:
    """Wait (up to 10 s) for XPENDING to reach 0; check_all_acked reports it if not."""
    for _ in range(1000):
        if not (await r.xpending(key, GROUP))["pending"]:
            return
        await asyncio.sleep(0.01)


def check_handled(side: str, handled: int, n: int, last: Any) -> None:
    if handled != n:
        raise RuntimeError(f"{side}: handlers ran {handled} times for {n} messages")
    if last != PAYLOAD:
        raise RuntimeError(f"{side}: handler saw {last!r}, not the payload published")


# -- relaybus ---------------------------------------------------------------------------


async def relaybus_consume(url: str, prefix: str, topic: str, n: int) -> float:
    async with Bus.from_url(url, prefix=prefix) as bus:
        for _ in range(n // BATCH):
            await bus.publish_many(topic, [PAYLOAD] * BATCH)
        counted = count_handler_calls(bus)
        elapsed = await timed_consume(bus, topic, n)
        await check_all_acked(bus._engine.ctx.redis, bus.keys.stream(topic))
    check_handled("relaybus", counted["handled"], n, counted["last"])
    return elapsed


def count_handler_calls(bus: Bus) -> dict[str, Any]:
    """Wrap the handler timed_consume registers so its calls can be counted here
    (one more coroutine frame per message: a cost on relaybus's side, not FastStream's)."""
    counted: dict[str, Any] = {"handled": 0, "last": None}
    subscribe = bus.subscribe

    def counting_subscribe(*args: Any, **kwargs: Any) -> Any:
        register = subscribe(*args, **kwargs)

        def wrap(handler: Any) -> Any:
            async def counting(message: Message) -> None:
                counted["handled"] += 1
                counted["last"] = message.payload
                await handler(message)

            register(counting)
            return handler

        return wrap

    bus.subscribe = counting_subscribe  # type: ignore[method-assign]
    return counted


# -- driver -----------------------------------------------------------------------------


async def measure(url: str, n: int) -> list[Result]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"  # the server is private; unique all the same
    counter = iter(range(1 << 30))
    r = aioredis.Redis.from_url(url)
    results = []
    try:
        for case, options in CASES.items():
            best = {"faststream": float("inf"), "relaybus": float("inf")}
            for repeat in range(REPEATS):
                fs_key, topic = f"{prefix}.fs{next(counter)}", f"{prefix}.t{next(counter)}"
                runs = {
                    "faststream": lambda: faststream_consume(url, r, fs_key, n, options),  # noqa: B023
                    "relaybus": lambda: relaybus_consume(url, prefix, topic, n),  # noqa: B023
                }
                order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
                for side in order:
                    best[side] = min(best[side], await runs[side]())
                async with Bus.from_url(url, prefix=prefix) as bus:  # drop this repeat's keys
                    await r.delete(fs_key, bus.keys.stream(topic), bus.keys.retry(topic, GROUP))
            results.append(
                Result(
                    case,
                    describe(options),
                    n,
                    round(n / best["faststream"]),
                    round(n / best["relaybus"]),
                    round(best["faststream"] / best["relaybus"], 2),
                    TARGET,
                )
            )
    finally:
        await r.aclose()
    return results


def show(results: list[Result], console: Console) -> None:
    table = Table(title=f"consume+ack through handlers: relaybus vs FastStream (best of {REPEATS})")
    for column in ("case", "N", "FastStream msgs/s", "relaybus msgs/s", "ratio", "target"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in results:
        colour = "green" if row.ratio >= row.target else "red"
        table.add_row(
            row.case,
            f"{row.n:,}",
            f"{row.faststream_msgs_s:,}",
            f"{row.relaybus_msgs_s:,}",
            f"{row.ratio:.2f}",
            f"[{colour}]>= {row.target:g}[/{colour}]",
        )
    console.print(table)
    console.print(
        f"faststream {version('faststream')}, redis-py {version('redis')}, relaybus: "
        f"subscribe(group, concurrency={CONCURRENCY}), prefetch {PREFETCH} (default)"
    )
    for row in results:
        console.print(f"{row.case}: {row.faststream_options}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n", "--scale", type=float, default=1.0, help="multiply the message count by this (default 1.0)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    n = max(BATCH, round(N * args.scale / BATCH) * BATCH)
    with EmbeddedRedis(port=free_port()) as server:
        results = asyncio.run(measure(server.url, n))
    if args.json:
        print(
            json.dumps(
                {
                    "repeats": REPEATS,
                    "faststream": version("faststream"),
                    "results": [asdict(row) for row in results],
                },
                indent=2,
            )
        )
    else:
        show(results, Console())


if __name__ == "__main__":
    main()

"""What each delivery policy costs, against the core alone, in one run on one private
redis-server. Prints msgs/s and the ratio to the core (plugins disabled)."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from bench_core import timed_consume  # run as a script: bench/ is on sys.path
from rich.console import Console
from rich.table import Table

from relaybus import Bus
from relaybus.embedded import EmbeddedRedis, free_port

CORE = ["dlq", "dedup", "priority"]


async def rate(n: int, job: Callable[[int], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for i in range(n):
        await job(i)
    return n / (time.perf_counter() - started)


async def main(url: str, n: int) -> list[tuple[str, float, float]]:
    rows = []
    for label, fields, options in [
        ("publish, default plugins", {}, {}),
        ("publish, dedup_key", {}, {"dedup": True}),
        ("publish, priority=5", {}, {"priority": 5}),
        ("publish, delay=60", {}, {"delay": 60.0}),
    ]:
        best_core = best = 0.0
        for _ in range(3):
            async with (
                Bus.from_url(url, prefix=f"b-{uuid.uuid4().hex[:8]}", disabled_plugins=CORE) as core,
                Bus.from_url(url, prefix=f"b-{uuid.uuid4().hex[:8]}", **fields) as bus,
            ):
                best_core = max(best_core, await rate(n, lambda i: core.publish("t", {"i": i})))
                extra = {k: v for k, v in options.items() if k != "dedup"}
                dedup = bool(options.get("dedup"))
                best = max(
                    best,
                    await rate(
                        n,
                        lambda i, e=extra, d=dedup: bus.publish(  # type: ignore[misc]
                            "t", {"i": i}, dedup_key=f"k{i}" if d else None, **e
                        ),
                    ),
                )
        rows.append((label, best_core, best))
    for label, priority in [("consume, default plugins", 0), ("consume, with a priority lane", 5)]:
        async with (
            Bus.from_url(url, prefix=f"b-{uuid.uuid4().hex[:8]}", disabled_plugins=CORE) as core,
            Bus.from_url(url, prefix=f"b-{uuid.uuid4().hex[:8]}") as bus,
        ):
            for b in (core, bus):
                for start in range(0, n * 4, 500):
                    await b.publish_many("c", list(range(start, start + 500)))
            if priority:
                await bus.publish("c", "urgent", priority=priority)
            core_rate = n * 4 / await timed_consume(core, "c", n * 4)
            total = n * 4 + (1 if priority else 0)
            bus_rate = total / await timed_consume(bus, "c", total)
        rows.append((label, core_rate, bus_rate))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000, help="messages per publish case")
    args = parser.parse_args()
    with EmbeddedRedis(port=free_port()) as server:
        results = asyncio.run(main(server.url, args.n))
    table = Table(title="policy cost vs the core alone (plugins disabled), best of 3")
    for column in ("case", "core msgs/s", "with policy msgs/s", "ratio"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for label, core, policy in results:
        table.add_row(label, f"{core:,.0f}", f"{policy:,.0f}", f"{policy / core:.2f}")
    Console().print(table)

"""What the metrics plugin costs: consume and publish throughput with and without it, in one
run on one private redis-server, best of 3 (rounds alternate, so drift hits both sides)."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable

from bench_core import timed_consume  # run as a script: bench/ is on sys.path
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from relaybus import Bus
from relaybus.embedded import EmbeddedRedis, free_port
from relaybus_plugins.metrics import MetricsPlugin

ROUNDS = 3


def make(url: str, with_metrics: bool) -> Bus:
    """The default plugins either way; with metrics on a private registry, or without it."""
    bus = Bus.from_url(
        url,
        prefix=f"b-{uuid.uuid4().hex[:8]}",
        disabled_plugins=[] if with_metrics else ["metrics"],
    )
    if with_metrics:
        bus.plugins.register(MetricsPlugin(CollectorRegistry()), "metrics")
    return bus


async def consume_rate(url: str, n: int, with_metrics: bool) -> float:
    async with make(url, with_metrics) as bus:
        for start in range(0, n, 500):
            await bus.publish_many("c", list(range(start, min(n, start + 500))))
        return n / await timed_consume(bus, "c", n)


async def publish_rate(url: str, n: int, with_metrics: bool) -> float:
    async with make(url, with_metrics) as bus:
        started = time.perf_counter()
        for i in range(n):
            await bus.publish("p", {"i": i})
        return n / (time.perf_counter() - started)


async def main(url: str, n: int) -> list[tuple[str, float, float]]:
    rows = []
    cases: list[tuple[str, Callable[[str, int, bool], object]]] = [
        ("consume + ack (concurrency 16)", consume_rate),
        ("publish (awaited, one by one)", publish_rate),
    ]
    for label, job in cases:
        best = {False: 0.0, True: 0.0}
        for _ in range(ROUNDS):
            for with_metrics in (False, True):
                rate = await job(url, n, with_metrics)  # type: ignore[misc]
                best[with_metrics] = max(best[with_metrics], rate)
        rows.append((label, best[False], best[True]))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10_000, help="messages per round")
    args = parser.parse_args()
    with EmbeddedRedis(port=free_port()) as server:
        results = asyncio.run(main(server.url, args.n))
    table = Table(title=f"metrics plugin cost, {args.n:,} messages, best of {ROUNDS}")
    for column in ("case", "without msgs/s", "with metrics msgs/s", "ratio"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for label, without, with_metrics in results:
        table.add_row(label, f"{without:,.0f}", f"{with_metrics:,.0f}", f"{with_metrics / without:.2f}")
    Console().print(table)

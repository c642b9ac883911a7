"""Stream management costs, in one run on one private redis-server: consume throughput
with a filter against none, publish with max_queue_size against none, and how long a
pattern subscription takes to see a topic created after it started."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from bench_core import timed_consume  # run as a script: bench/ is on sys.path
from rich.console import Console
from rich.table import Table

from relaybus import Bus, Message
from relaybus.embedded import EmbeddedRedis, free_port

PAYLOAD = {"kind": "review", "lines": 420, "labels": ["api", "security"], "repo": "core"}
FILTERS = {
    "simple ($gt)": {"payload.lines": {"$gt": 10}},
    "compound ($and/$in/$regex)": {
        "$and": [
            {"payload.lines": {"$gte": 100}},
            {"payload.repo": {"$in": ["core", "api"]}},
            {"payload.kind": {"$regex": "^rev"}},
        ]
    },
}


def fresh() -> str:
    return f"b-{uuid.uuid4().hex[:8]}"


async def consume_rate(url: str, n: int, **subscribe: object) -> float:
    async with Bus.from_url(url, prefix=fresh()) as bus:
        for _ in range(0, n, 500):
            await bus.publish_many("c", [PAYLOAD] * 500)
        return n / await timed_consume(bus, "c", n, **subscribe)


async def publish_rate(url: str, n: int, **fields: object) -> float:
    async with Bus.from_url(url, prefix=fresh(), **fields) as bus:
        await bus.read("p", group="g", count=1, block_ms=1)  # a group, so the limit counts lag
        started = time.perf_counter()
        for _ in range(n):
            await bus.publish("p", PAYLOAD)
        return n / (time.perf_counter() - started)


async def discovery_delays(url: str, rounds: int) -> list[float]:
    """Seconds from the first publish to a new matching topic until its handler ran."""
    async with Bus.from_url(url, prefix=fresh()) as bus:
        arrived: dict[str, float] = {}
        got_one = asyncio.Event()

        @bus.subscribe("agents.*.events", group="g")
        async def handle(msg: Message) -> None:
            arrived[msg.topic] = time.perf_counter()
            got_one.set()

        runner = asyncio.create_task(bus.run())
        await asyncio.sleep(0.3)
        delays = []
        for i in range(rounds):
            topic = f"agents.a{i}.events"
            got_one.clear()
            sent = time.perf_counter()
            await bus.publish(topic, i)
            await got_one.wait()
            delays.append(arrived[topic] - sent)
            await asyncio.sleep(0.137 * (i % 4))  # land at different points of the polling cycle
        await bus.stop()
        await runner
        return delays


async def main(url: str, n: int, rounds: int) -> tuple[list[tuple[str, float, float]], list[float]]:
    rows = []
    for label, spec in FILTERS.items():
        base = best = 0.0
        for _ in range(3):  # alternate, best of 3: this machine's rate swings between runs
            base = max(base, await consume_rate(url, n))
            best = max(best, await consume_rate(url, n, filter=spec))
        rows.append((f"consume, filter {label}", base, best))
    base = best = 0.0
    for _ in range(3):
        base = max(base, await publish_rate(url, n))
        best = max(best, await publish_rate(url, n, max_queue_size=10 * n))
    rows.append(("publish, max_queue_size set", base, best))
    return rows, await discovery_delays(url, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5000, help="messages per case")
    parser.add_argument("--rounds", type=int, default=12, help="new topics for the discovery delay")
    args = parser.parse_args()
    with EmbeddedRedis(port=free_port()) as server:
        results, delays = asyncio.run(main(server.url, args.n, args.rounds))
    console = Console()
    table = Table(title="stream management costs, best of 3 (without vs with)")
    for column in ("case", "without msgs/s", "with msgs/s", "ratio"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for label, without, with_ in results:
        table.add_row(label, f"{without:,.0f}", f"{with_:,.0f}", f"{with_ / without:.2f}")
    console.print(table)
    console.print(
        f"pattern subscription discovery delay over {len(delays)} new topics: "
        f"median {statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
    )

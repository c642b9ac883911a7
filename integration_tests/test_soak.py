"""A bounded soak: producers and consumer processes at a steady rate for RELAYBUS_SOAK_S
seconds (60 by default, as in CI) on the newest Redis line. Counts reconcile exactly,
and neither the consumers' memory (RSS) nor Redis's grows without bound while retention
trims what was consumed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from relaybus import Bus
from relaybus.embedded import EmbeddedRedis, free_port

from .helpers import COUNTS, NEWEST, wait_for
from .test_chaos import PREFETCH, TOPIC, produce, reconcile, workers

pytestmark = pytest.mark.chaos
SOAK_S = float(os.environ.get("RELAYBUS_SOAK_S", "60"))


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(port=free_port(), executable=NEWEST) as s:
        yield s


def bus_memory(admin: redis.Redis, prefix: str) -> int:
    """Redis's used memory less the test's own bookkeeping (the hash of handled ids)."""
    return int(admin.info("memory")["used_memory"]) - int(admin.memory_usage(f"{prefix}:handled") or 0)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def test_a_bounded_soak_reconciles_and_stays_bounded(server: EmbeddedRedis, prefix: str) -> None:
    admin = redis.Redis.from_url(server.url)
    # the consumers trim consumed history often and short, so Redis's memory has a ceiling
    procs = workers(
        server.url,
        prefix,
        ["w0", "w1", "w2"],
        RELAYBUS_RETENTION_MAX_LEN="2000",
        RELAYBUS_CLEANUP_INTERVAL_S="2",
    )
    acked: list[str] = []
    poison: set[str] = set()
    refused: list[int] = []
    done = asyncio.Event()
    try:
        async with (
            Bus.from_url(server.url, prefix=prefix, retention_max_len=2000) as one,
            Bus.from_url(server.url, prefix=prefix, retention_max_len=2000) as two,
        ):  # as the consumers
            producing = [asyncio.create_task(produce(b, done, acked, poison, refused)) for b in (one, two)]
            await asyncio.sleep(min(15.0, SOAK_S / 4))  # warmed up: the baseline
            rss_start = [rss_kb(p.pid) for p in procs]
            memory_start = bus_memory(admin, prefix)
            await asyncio.sleep(SOAK_S - min(15.0, SOAK_S / 4))
            done.set()
            await asyncio.gather(*producing)
            await wait_for(
                lambda: admin.hlen(f"{prefix}:handled") + admin.xlen(one.keys.dlq(TOPIC)) >= len(acked), 60
            )
            await wait_for(lambda: admin.xpending(one.keys.stream(TOPIC), "chaos")["pending"] == 0, 30)
            rss_end = [rss_kb(p.pid) for p in procs]
            memory_end = bus_memory(admin, prefix)
            reconcile(
                f"soak {SOAK_S:.0f} s, 2 producers x 4 tasks, 3 consumer processes",
                admin,
                one,
                acked,
                poison,
                refused,
                in_flight_bound=PREFETCH,
            )  # reclaims of a stalled handler
            mib = 1024**2
            COUNTS.append(
                f"soak: consumer RSS {max(rss_start) // 1024} -> {max(rss_end) // 1024} MiB, "
                f"Redis used_memory less bookkeeping {memory_start // mib} -> {memory_end // mib} "
                f"MiB, {len(acked) / SOAK_S:.0f} msg/s"
            )
            assert max(e - s for s, e in zip(rss_start, rss_end, strict=True)) < 30 * 1024  # < 30 MiB growth
            assert memory_end < memory_start * 2 + 8 * 1024**2
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        admin.close()

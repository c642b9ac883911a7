"""The SQLite outbox: durable across restarts and crashes, ordered, bounded, one flusher."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relaybus import ConfigError, OutboxFullError, RelayBusError
from relaybus.outbox import Outbox

WRITER = """
import asyncio, os, signal, sys
from relaybus import OutboxFullError
from relaybus.outbox import Outbox

async def main(path, name, n, max_entries):
    outbox = Outbox(path, max_entries=max_entries, max_bytes=1 << 30)
    full = 0
    for i in range(n):
        try:
            await outbox.put("t", f"{name}-{i:04d}", f"{name}:{i}".encode())
        except OutboxFullError:
            full += 1
    print(full, flush=True)
    if name == "crash":
        os.kill(os.getpid(), signal.SIGKILL)  # no close(): as if the process died
    outbox.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def writer(path: Path, name: str, n: int, max_entries: int = 1_000_000) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), name, str(n), str(max_entries)],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", max_entries=10, max_bytes=1000)
    yield box
    box.close()


async def test_entries_come_back_in_order_with_their_options(outbox: Outbox) -> None:
    for n in range(5):
        await outbox.put("orders", f"m{n}", b"envelope-%d" % n, {"lane": n, "delay": None})
    entries = await outbox.entries()
    assert [e.message_id for e in entries] == ["m0", "m1", "m2", "m3", "m4"]
    assert entries[3].topic == "orders" and entries[3].data == b"envelope-3"
    assert entries[3].options == {"lane": 3, "delay": None}
    assert [e.message_id for e in await outbox.entries(limit=2)] == ["m0", "m1"]


async def test_delete_forgets_flushed_entries(outbox: Outbox) -> None:
    for n in range(4):
        await outbox.put("t", f"m{n}", b"x")
    first = await outbox.entries(limit=2)
    await outbox.delete(first)
    assert [e.message_id for e in await outbox.entries()] == ["m2", "m3"]
    assert await outbox.count() == 2


async def test_a_message_id_is_stored_once(outbox: Outbox) -> None:
    await outbox.put("t", "same", b"first")
    await outbox.put("t", "same", b"second")
    assert [(e.message_id, e.data) for e in await outbox.entries()] == [("same", b"first")]


async def test_reopened_file_keeps_what_was_left(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_entries=10, max_bytes=1000)
    await box.put("t", "a", b"1", {"dedup_key": "k"})
    await box.put("t", "b", b"2")
    box.close()
    again = Outbox(tmp_path / "o.db", max_entries=10, max_bytes=1000)
    try:
        entries = await again.entries()
        assert [(e.message_id, e.options) for e in entries] == [("a", {"dedup_key": "k"}), ("b", {})]
        await again.put("t", "c", b"3")
        assert [e.message_id for e in await again.entries()] == ["a", "b", "c"]
    finally:
        again.close()


async def test_entries_survive_a_killed_process(tmp_path: Path) -> None:
    proc = writer(tmp_path / "o.db", "crash", 50)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and out.strip() == "0"
    box = Outbox(tmp_path / "o.db", max_entries=100, max_bytes=10_000)
    try:
        assert [e.message_id for e in await box.entries(limit=100)] == [f"crash-{i:04d}" for i in range(50)]
    finally:
        box.close()


async def test_bound_on_entries(outbox: Outbox) -> None:
    for n in range(10):
        await outbox.put("t", f"m{n}", b"x")
    with pytest.raises(OutboxFullError, match="outbox_max_entries=10") as info:
        await outbox.put("t", "m10", b"x")
    assert isinstance(info.value, RelayBusError)
    assert await outbox.count() == 10
    await outbox.delete(await outbox.entries(limit=1))
    await outbox.put("t", "m10", b"x")
    assert (await outbox.entries(limit=100))[-1].message_id == "m10"


async def test_bound_on_bytes(outbox: Outbox) -> None:
    await outbox.put("t", "big", b"x" * 900)
    with pytest.raises(OutboxFullError, match="outbox_max_bytes=1000"):
        await outbox.put("t", "more", b"x" * 101)
    await outbox.put("t", "fits", b"x" * 100)
    assert [e.message_id for e in await outbox.entries()] == ["big", "fits"]


async def test_concurrent_puts_from_one_loop(outbox: Outbox) -> None:
    outbox.max_entries = 1000
    outbox.max_bytes = 100_000
    await asyncio.gather(*(outbox.put("t", f"m{n:03d}", b"x") for n in range(100)))
    assert sorted(e.message_id for e in await outbox.entries(limit=1000)) == [f"m{n:03d}" for n in range(100)]


def test_concurrent_writer_processes_keep_their_order_and_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    Outbox(path, max_entries=1, max_bytes=1).close()  # create the file before the race
    procs = [writer(path, f"w{k}", 50, max_entries=120) for k in range(4)]
    refused = sum(int(p.communicate(timeout=120)[0]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    box = Outbox(path, max_entries=120, max_bytes=1 << 30)
    try:
        ids = [e.message_id for e in asyncio.run(box.entries(limit=1000))]
    finally:
        box.close()
    assert len(ids) == 120 and refused == 80 and len(set(ids)) == 120
    for k in range(4):
        mine = [i for i in ids if i.startswith(f"w{k}-")]
        assert mine == sorted(mine)  # each writer's entries in the order it put them


def test_one_flusher_at_a_time(tmp_path: Path) -> None:
    a = Outbox(tmp_path / "o.db", max_entries=10, max_bytes=1000)
    b = Outbox(tmp_path / "o.db", max_entries=10, max_bytes=1000)
    try:
        with a.flushing() as a_turn:
            assert a_turn
            with b.flushing() as b_turn:
                assert not b_turn
        with b.flushing() as b_turn:
            assert b_turn
    finally:
        a.close()
        b.close()


def test_a_dead_flusher_releases_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\nfrom relaybus.outbox import Outbox\n"
                "o = Outbox(sys.argv[1], max_entries=1, max_bytes=1)\n"
                "with o.flushing() as mine:\n    print(mine, flush=True)\n    time.sleep(60)\n"
            ),
            str(tmp_path / "o.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    box = Outbox(tmp_path / "o.db", max_entries=1, max_bytes=1)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        with box.flushing() as mine:
            assert not mine
        holder.kill()
        holder.wait()
        with box.flushing() as mine:
            assert mine
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
        box.close()


async def test_a_batch_is_stored_all_or_none(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_entries=3, max_bytes=1 << 20)
    await box.put("t", "a", b"1")
    with pytest.raises(OutboxFullError, match="3 message\\(s\\) not stored"):
        await box.put_many("t", [("b", b"2", None), ("c", b"3", None), ("d", b"4", None)])
    assert [e.message_id for e in await box.entries()] == ["a"]
    await box.put_many("t", [("a", b"1", None), ("b", b"2", None), ("c", b"3", None)])  # a: stored already
    assert [e.message_id for e in await box.entries()] == ["a", "b", "c"]
    box.close()


def _not_a_database(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("not SQLite " * 100)
    return tmp_path / "notes.txt"


def _old_schema(tmp_path: Path) -> Path:
    import sqlite3

    db = sqlite3.connect(tmp_path / "o.db")
    db.execute("PRAGMA user_version=7")
    db.close()
    return tmp_path / "o.db"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: tmp / "missing" / "o.db", "cannot open it: No such file or directory"),
        (lambda tmp: tmp, "cannot open it: Is a directory"),
        (
            lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "o.db",
            "cannot open it: Not a directory",
        ),
        (_not_a_database, "file is not a database"),
        (_old_schema, "an outbox of schema 7, not 1"),
    ],
)
def test_an_outbox_path_that_cannot_be_used_is_one_config_error_naming_it_and_why(
    tmp_path: Path, make: Any, reason: str
) -> None:
    """Not SQLite's bare "unable to open database file" (a 59-line traceback in the CLI)."""
    path = make(tmp_path)
    with pytest.raises(ConfigError) as caught:
        Outbox(path, max_entries=1, max_bytes=1)
    assert str(caught.value) == f"outbox_path {path}: {reason}"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__

"""A durable local outbox: publishes accepted while Redis is unreachable, kept on disk
(SQLite, stdlib) until they are flushed, in order, to Redis.

- Durable: every `put` is its own transaction with `synchronous=FULL` (WAL journal),
  so an entry `put` returned for survives a crash of the process or the machine.
- Bounded: `max_entries` and `max_bytes` (of encoded envelopes); a `put` beyond
  either raises OutboxFullError and stores nothing. The check and the insert are one
  write transaction (`BEGIN IMMEDIATE`), so the bound holds across processes too.
- Ordered: entries come back in the order they were accepted, across processes.
- Idempotent: a message id is stored once; putting it again is a no-op.
- asyncio: the methods are coroutines; each runs its SQLite work (an fsync per put)
  in a worker thread, one at a time per Outbox, so the event loop never waits on disk.
- One flusher: `flushing()` takes an exclusive `flock` on `<path>.lock` without
  waiting; a second Outbox on the same file, in this process or another, is told it
  is not its turn. The OS drops the lock when its holder dies, so a crashed flusher
  never blocks the next one. (POSIX only, like `flock`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .errors import ConfigError, OutboxFullError

T = TypeVar("T")
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    data BLOB NOT NULL,
    size INTEGER NOT NULL,
    options TEXT NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One accepted publish: `data` is the encoded envelope, `options` what else the
    publish needs to be replayed (lane, delay, dedup key and window, ...)."""

    seq: int
    topic: str
    message_id: str
    data: bytes
    options: dict[str, Any]


class Outbox:
    """The outbox at `path`; a file left by an earlier process is picked up as it is."""

    def __init__(self, path: str | Path, *, max_entries: int, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:  # first by hand: SQLite says only "unable to open database file", not why
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise ConfigError(f"outbox_path {self.path}: cannot open it: {exc.strerror}") from None
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"an outbox of schema {version}, not {SCHEMA_VERSION}")
            self._db.execute(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            self._db.close()
            raise ConfigError(f"outbox_path {self.path}: {exc}") from None

    def __repr__(self) -> str:
        return f"<Outbox {self.path}>"

    async def _run(self, work: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work()

        return await asyncio.to_thread(locked)

    async def put(
        self, topic: str, message_id: str, data: bytes, options: dict[str, Any] | None = None
    ) -> None:
        """Store one publish durably; see `put_many`."""
        await self.put_many(topic, [(message_id, data, options)])

    async def put_many(self, topic: str, items: list[tuple[str, bytes, dict[str, Any] | None]]) -> None:
        """Store publishes (message id, encoded envelope, options) durably, all or none, in
        one transaction; returns once they are on disk. Raises OutboxFullError when they
        would exceed `max_entries` or `max_bytes`; an id already stored is skipped."""
        rows = [
            (message_id, data, orjson.dumps(options or {}).decode()) for message_id, data, options in items
        ]
        await self._run(lambda: self._put(topic, rows))

    def _put(self, topic: str, rows: list[tuple[str, bytes, str]]) -> None:
        db = self._db
        with db:  # commits on return, rolls back on an exception
            db.execute("BEGIN IMMEDIATE")  # the write lock: no other writer between check and insert
            new = [
                r
                for r in rows
                if not db.execute("SELECT 1 FROM entries WHERE message_id = ?", (r[0],)).fetchone()
            ]
            count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
            added = sum(len(data) for _, data, _ in new)
            if count + len(new) > self.max_entries or size + added > self.max_bytes:
                raise OutboxFullError(
                    f"the outbox {self.path} is full ({count} messages, {size} bytes; limits "
                    f"outbox_max_entries={self.max_entries}, outbox_max_bytes={self.max_bytes}): "
                    f"{len(new)} message(s) not stored"
                )
            db.executemany(
                "INSERT INTO entries (topic, message_id, data, size, options) VALUES (?, ?, ?, ?, ?)",
                [(topic, message_id, data, len(data), options) for message_id, data, options in new],
            )

    async def entries(self, limit: int = 100, skip_topics: Iterable[str] = ()) -> list[OutboxEntry]:
        """The oldest `limit` entries, in the order they were accepted, leaving out the
        topics in `skip_topics`."""
        skip = sorted(skip_topics)
        query = (
            "SELECT seq, topic, message_id, data, options FROM entries "
            f"WHERE topic NOT IN ({', '.join('?' * len(skip))}) ORDER BY seq LIMIT ?"
        )
        rows = await self._run(lambda: self._db.execute(query, (*skip, limit)).fetchall())
        return [
            OutboxEntry(seq, topic, mid, data, orjson.loads(options))
            for seq, topic, mid, data, options in rows
        ]

    async def delete(self, entries: Iterable[OutboxEntry | int]) -> None:
        """Forget flushed entries (by entry or `seq`)."""
        seqs = [(e.seq if isinstance(e, OutboxEntry) else e,) for e in entries]
        await self._run(lambda: self._db.executemany("DELETE FROM entries WHERE seq = ?", seqs))

    async def count(self) -> int:
        """How many entries wait to be flushed."""
        row = await self._run(lambda: self._db.execute("SELECT COUNT(*) FROM entries").fetchone())
        return int(row[0])

    @contextlib.contextmanager
    def flushing(self) -> Iterator[bool]:
        """Yields True when this Outbox may flush now (it holds the flush lock until
        the block ends), False when another one is flushing the same file."""
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._db.close()

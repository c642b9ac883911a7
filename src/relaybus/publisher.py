"""Writing messages to Redis: the plain XADD path, the script path, idempotent retries
after a lost reply, and the durable outbox while Redis is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError, ResponseError

from .connection import UNAVAILABLE
from .errors import BusUnavailableError, QueueFullError
from .message import id_time_ms
from .outbox import Outbox, OutboxEntry

if TYPE_CHECKING:
    from .bus import Bus

log = logging.getLogger("relaybus")
CHECK_MARGIN_MS = 2_000  # entry ids are server time; a message id is client time, skew-corrected
FLUSH_BATCH = 100
FLUSH_RUN_SPAN_MS = 60_000  # one flush script checks one window: entries made within a minute
MARK_TTL_MS = 7 * 86_400_000  # how long a flushed message is remembered as sent


def _now_ms() -> int:
    return int(time.time() * 1000)


def _run(entries: list[OutboxEntry]) -> list[OutboxEntry]:
    """The oldest entries that can go in one script call: one topic, made within a minute."""
    first = entries[0]
    limit = id_time_ms(first.message_id) + FLUSH_RUN_SPAN_MS
    run = [first]
    for e in entries[1:]:
        if e.topic != first.topic or id_time_ms(e.message_id) > limit:
            break
        run.append(e)
    return run


@dataclass(frozen=True, slots=True)
class Write:
    """One encoded message and what the publish script needs to append it."""

    data: bytes
    id: str
    lane: int = 0
    due_ms: int = 0
    dedup_key: str | None = None
    window_ms: int = 0

    @property
    def plain(self) -> bool:
        return self.lane == 0 and self.due_ms == 0 and self.dedup_key is None

    def options(self) -> dict[str, Any]:
        return {"lane": self.lane, "due_ms": self.due_ms, "dedup_key": self.dedup_key,
                "window_ms": self.window_ms}

    @classmethod
    def from_outbox(cls, entry: OutboxEntry) -> Write:
        return cls(entry.data, entry.message_id, **entry.options)


def unavailable(action: str, exc: BaseException) -> BusUnavailableError:
    """The error for a command that could not reach Redis (raise it `from None`)."""
    return BusUnavailableError(f"{action} failed, Redis unreachable: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _queue_full_as_error(topic: str, limit: int | None) -> Iterator[None]:
    try:
        yield
    except ResponseError as exc:
        words = str(exc).split()
        if not words or words[0] != "QUEUEFULL":
            raise
        raise QueueFullError(
            f"topic {topic!r} holds {words[1]} unconsumed messages and max_queue_size is {limit}: "
            f"the {words[2]} message(s) of this publish were not appended (overflow='reject')"
        ) from None


class Publisher:
    """Appends for one Bus. A failed attempt is retried with backoff for up to
    `publish_timeout_s`, each retry checking first whether the lost attempt was applied
    (by message id), so nothing is appended twice; then the outbox, if configured, takes
    the messages, and holds every later publish too until it is flushed, in order."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.config = bus.config
        self.outbox = (
            Outbox(self.config.outbox_path, max_entries=self.config.outbox_max_entries,
                   max_bytes=self.config.outbox_max_bytes)
            if self.config.outbox_path is not None else None
        )
        self.backlog = False  # the outbox holds entries: new publishes queue behind them
        self.skew_ms = 0  # server clock minus ours, measured at connect
        self._registered: set[str] = set()
        self.closed = False  # a publish still retrying when the bus closes gives up cleanly

    async def start(self) -> None:
        seconds, micros = await self.bus.redis.time()
        self.skew_ms = int(seconds) * 1000 + int(micros) // 1000 - int(time.time() * 1000)
        if self.outbox is not None:
            self.backlog = await self.outbox.count() > 0

    def close(self) -> None:
        self.closed = True
        if self.outbox is not None:
            self.outbox.close()

    async def write(self, topic: str, writes: list[Write]) -> list[str]:
        if self.backlog:
            return await self._to_outbox(topic, writes)
        started_ms = _now_ms()
        try:
            if self.config.max_queue_size is None and all(w.plain for w in writes):
                await self._append(topic, writes)
                ids = [w.id for w in writes]
            else:
                ids = await self._scripted(topic, writes)
        except BusUnavailableError as exc:
            await self.bus.health.failed(exc)
            return await self._retry(topic, writes, exc, started_ms)
        if self.bus.health.state != "connected":
            await self.bus.health.succeeded()
        return ids

    async def _retry(
        self, topic: str, writes: list[Write], error: BusUnavailableError, started_ms: int
    ) -> list[str]:
        deadline = time.monotonic() + self.config.publish_timeout_s
        pause = 0.05
        while time.monotonic() + pause < deadline and not self.closed:
            await asyncio.sleep(random.uniform(pause / 2, pause))
            if self.closed:
                break
            # every earlier attempt began after started_ms and was applied, if at all, by now
            window = (started_ms + self.skew_ms - CHECK_MARGIN_MS, _now_ms() + self.skew_ms + CHECK_MARGIN_MS)
            try:
                ids = await self._scripted(topic, writes, check=window)
            except BusUnavailableError as exc:
                error, pause = exc, min(pause * 2, 1.0)
                continue
            await self.bus.health.succeeded()
            return ids
        if self.outbox is None:
            raise error
        return await self._to_outbox(topic, writes)

    async def _to_outbox(self, topic: str, writes: list[Write]) -> list[str]:
        assert self.outbox is not None
        if self.closed:
            raise BusUnavailableError(f"publish to {topic!r}: the bus was closed while Redis was "
                                      "unreachable; nothing was stored")
        await self.outbox.put_many(topic, [(w.id, w.data, w.options()) for w in writes])  # all or none
        self.backlog = True
        log.warning("relaybus: Redis unreachable, %d message(s) for %r kept in the outbox %s",
                    len(writes), topic, self.outbox.path)
        return [w.id for w in writes]

    async def flush(self) -> int:
        """Send what the outbox holds, oldest first; returns how many went. Idempotent:
        an entry whose earlier send was applied is not appended again."""
        if self.outbox is None or not self.backlog:
            return 0
        sent, refused = 0, set[str]()
        with self.outbox.flushing() as mine:
            if not mine:
                return 0  # another Bus (maybe another process) is flushing this outbox
            while entries := await self.outbox.entries(FLUSH_BATCH, skip_topics=refused):
                run = _run(entries)
                writes = [Write.from_outbox(e) for e in run]
                # the publish attempts before an entry reached the outbox ended within
                # publish_timeout_s + one attempt (connect + command) of its creation; earlier
                # flush attempts left sent markers (MARK_TTL_MS), as they may be resumed much later
                cfg = self.config
                span_ms = int((cfg.publish_timeout_s + cfg.connect_timeout + cfg.socket_timeout) * 1000)
                window = (id_time_ms(run[0].message_id) + self.skew_ms - CHECK_MARGIN_MS,
                          id_time_ms(run[-1].message_id) + self.skew_ms + span_ms + CHECK_MARGIN_MS)
                try:
                    await self._scripted(run[0].topic, writes, check=window, mark=True)
                except (QueueFullError, ResponseError) as exc:
                    # this topic waits (its order kept) for the next flush; the others go on
                    log.warning("relaybus: outbox entries for %r refused (%s: %s); retrying later",
                                run[0].topic, type(exc).__name__, exc)
                    refused.add(run[0].topic)
                    continue
                await self.outbox.delete(run)
                sent += len(run)
            self.backlog = bool(refused)
        if sent:
            log.info("relaybus: flushed %d message(s) from the outbox", sent)
        return sent

    async def _append(self, topic: str, writes: list[Write]) -> None:
        """The fast path: plain XADDs, one round trip; the first publish of a topic
        from this Bus also records it in the topic registry."""
        stream, redis = self.bus.keys.stream(topic), self.bus.redis
        try:
            if len(writes) == 1 and topic in self._registered:
                await redis.execute_command("XADD", stream, "*", "v", "1", "m", writes[0].data)
                return
            async with redis.pipeline(transaction=False) as pipe:
                if topic not in self._registered:
                    pipe.sadd(self.bus.keys.registry, topic)
                for w in writes:
                    pipe.execute_command("XADD", stream, "*", "v", "1", "m", w.data)
                await pipe.execute()
        except UNAVAILABLE as exc:
            raise unavailable(f"publish to {topic!r}", exc) from None
        self._registered.add(topic)

    async def _scripted(
        self, topic: str, writes: list[Write], check: tuple[int, int] | None = None, mark: bool = False
    ) -> list[str]:
        """Dedup, lanes, delay, max_queue_size and the written-already check (in the window
        `check` of entry-id times, with sent markers set when `mark`): one script call."""
        keys = self.bus.keys
        call_keys = [keys.stream(topic), keys.delayed(topic), keys.lanes(topic), keys.counters(topic),
                     keys.lane(topic)]
        check_from, check_to = (max(1, check[0]), check[1]) if check else (0, 0)
        args: list[Any] = [self.config.max_queue_size or 0, self.config.overflow, check_from, check_to,
                           MARK_TTL_MS if mark else 0]
        for w in writes:
            call_keys += [keys.dedup(topic, w.dedup_key) if w.dedup_key else call_keys[0],
                          keys.sent(topic, w.id) if check or mark else call_keys[0]]
            args += [w.data, w.id, w.window_ms if w.dedup_key else 0, w.due_ms, w.lane]
        script = self.bus.streams.publish_script
        try:
            with _queue_full_as_error(topic, self.config.max_queue_size):
                if topic in self._registered:
                    replies = await script(keys=call_keys, args=args)
                else:
                    replies = await self._register_and_run(script, call_keys, args, topic)
        except UNAVAILABLE as exc:
            raise unavailable(f"publish to {topic!r}", exc) from None
        self._registered.add(topic)
        return [r.decode() if isinstance(r, bytes) else r for r in replies]

    async def _register_and_run(self, script: Any, keys: list[str], args: list[Any], topic: str) -> Any:
        """SADD to the registry and EVALSHA in one round trip; loads the script and runs
        it again if the server did not have it (NOSCRIPT: a restarted or new server)."""
        for _ in range(2):
            async with self.bus.redis.pipeline(transaction=False) as pipe:
                pipe.sadd(self.bus.keys.registry, topic)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                _, reply = await pipe.execute(raise_on_error=False)
            if not isinstance(reply, NoScriptError):
                break
            await self.bus.redis.script_load(script.script)
        if isinstance(reply, Exception):
            raise reply
        return reply

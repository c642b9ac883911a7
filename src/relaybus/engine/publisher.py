"""Publishing: messages made and passed through `on_publish`, then written - the plain
append, the script path, idempotent retries after a lost reply, and the durable outbox
while Redis is unreachable."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.exceptions import ResponseError

import relaybus.hookspecs as hookspecs  # "from .. import" reads as the facade to test_layering

from ..connection import UNAVAILABLE, unavailable
from ..errors import BusUnavailableError, QueueFullError, RedisFullError, ReplicationError, TopicClosedError
from ..keys import validate_topic
from ..message import encode, id_time_ms, made
from ..options import PublishParams
from ..outbox import Outbox, OutboxEntry
from .context import Context
from .groups import redis_full
from .scripts import Call

log = logging.getLogger("relaybus")
CHECK_MARGIN_MS = 2_000  # entry ids are server time; a message id is client time, skew-corrected
FLUSH_BATCH = 100
FLUSH_RUN_SPAN_MS = 60_000  # one flush script checks one window: entries made within a minute
MARK_TTL_MS = 7 * 86_400_000  # how long a flushed message is remembered as sent
# How long a retried message's sent marker (and the topic's fence) fences off its earlier
# attempts: bytes of an attempt the client gave up on can still reach Redis late (a slow
# proxy, retransmission; Linux gives up retransmitting after ~15 minutes)
FENCE_TTL_MS = 20 * 60_000
MAX_REGISTERED = 10_000  # topic registration times kept per bus (engine/publisher.py `_registered`)


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


@dataclass(slots=True)  # not frozen: its __init__ would set each field through object.__setattr__
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
        return {
            "lane": self.lane,
            "due_ms": self.due_ms,
            "dedup_key": self.dedup_key,
            "window_ms": self.window_ms,
        }

    @classmethod
    def from_outbox(cls, entry: OutboxEntry) -> Write:
        return cls(entry.data, entry.message_id, **entry.options)


def _refusal(exc: ResponseError, topic: str, limit: int | None) -> Exception:
    """A publish script refused for max_queue_size, by a full Redis, for a closed topic,
    or as an attempt a later one superseded: the error saying so (each refusal comes
    before the script's first append: nothing was appended); any other error as it is."""
    if redis_full(exc):
        return RedisFullError(
            f"publish to {topic!r}: Redis's memory is full (maxmemory with noeviction), nothing "
            "was appended; consumers acking and cleanup trimming free it, or raise maxmemory"
        )
    words = str(exc).split()
    if words and words[0] == "CLOSED":
        return TopicClosedError(
            f"publish to {topic!r}: the topic is closed (close_topic); nothing was appended"
        )
    if words and words[0] == "STALE":  # only when this host's clock went back: try again later
        return BusUnavailableError(
            f"publish to {topic!r}: a later attempt of it was refused; this attempt appended nothing"
        )
    if not words or words[0] != "QUEUEFULL":
        return cast(Exception, exc)  # redis-py's exceptions are untyped here
    return QueueFullError(
        f"topic {topic!r} holds {words[1]} unconsumed messages and max_queue_size is {limit}: "
        f"the {words[2]} message(s) of this publish were not appended (overflow='reject')"
    )


class Publisher:
    """Appends for one Bus. A failed attempt is retried with backoff for up to
    `publish_timeout_s`, each retry checking first whether an earlier attempt was applied
    (by message id) and fencing the ids off, so that an earlier attempt arriving late
    appends nothing either (scripts/publish.lua); then the outbox, if configured, takes
    the messages, and holds every later publish too until it is flushed, in order."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.outbox = (
            Outbox(
                self.config.outbox_path,
                max_entries=self.config.outbox_max_entries,
                max_bytes=self.config.outbox_max_bytes,
            )
            if self.config.outbox_path is not None
            else None
        )
        self.backlog = False  # the outbox holds entries: new publishes queue behind them
        self.skew_ms = 0  # server clock minus ours, measured at connect
        # topic -> when this Bus last registered it: registered again once that is older
        # than health_check_interval_s (a registry lost to eviction), and with every publish
        # while the connection is not `connected` or after it reconnected (Redis may have
        # restarted empty: the topic is registered in the round trip that meets it)
        self._registered: dict[str, float] = {}
        self._reconnects = 0  # health.reconnects when _registered was last trusted
        self.closed = False  # a publish still retrying when the bus closes gives up cleanly

    async def start(self) -> None:
        seconds, micros = await self.ctx.redis.time()
        self.skew_ms = int(seconds) * 1000 + int(micros) // 1000 - int(time.time() * 1000)
        if self.outbox is not None:
            self.backlog = await self.outbox.count() > 0

    def close(self) -> None:
        self.closed = True
        if self.outbox is not None:
            self.outbox.close()

    async def publish(self, topic: str, payloads: Sequence[Any], params: PublishParams) -> list[str]:
        """Make the messages, let `on_publish` change them, write them; their ids."""
        validate_topic(topic)
        ttl = params.ttl if params.ttl is not None else self.config.default_ttl
        now = time.time()
        messages = made(
            topic,
            payloads,
            now,
            now + ttl if ttl is not None else None,
            priority=params.priority,
            dedup_key=params.dedup_key,
            headers=params.headers,
            sender=params.sender,
            correlation_id=params.correlation_id,
            reply_to=params.reply_to,
        )
        hooks = self.ctx.plugins.call
        if hooks.implemented(hookspecs.on_publish):
            messages = [await hooks(hookspecs.on_publish, self.ctx.bus, m) for m in messages]
        due_ms = int((time.time() + params.delay) * 1000) if params.delay is not None else 0
        window_ms = max(1, int((params.dedup_window or self.config.dedup_window_s) * 1000))
        writes = [
            Write(
                encode(m, self.config.max_message_bytes),
                m.id,
                m.lane,
                due_ms,
                m.dedup_key,
                window_ms if m.dedup_key else 0,
            )
            for m in messages
        ]
        ids = await self.write(topic, writes)
        await hooks(hookspecs.on_published, self.ctx.bus, topic, messages, ids)
        return ids

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
            await self.ctx.health.failed(exc)
            return await self._retry(topic, writes, exc, started_ms)
        if self.ctx.health.state != "connected":
            await self.ctx.health.succeeded()
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
            # every earlier attempt began after started_ms; one applied before this retry
            # runs is in the window up to now, one arriving after it finds the fence
            window = (started_ms + self.skew_ms - CHECK_MARGIN_MS, "+")
            try:
                ids = await self._scripted(topic, writes, check=window)
            except BusUnavailableError as exc:
                error, pause = exc, min(pause * 2, 1.0)
                continue
            await self.ctx.health.succeeded()
            return ids
        if self.outbox is None:
            raise error
        return await self._to_outbox(topic, writes)

    async def _to_outbox(self, topic: str, writes: list[Write]) -> list[str]:
        assert self.outbox is not None
        if self.closed:
            raise BusUnavailableError(
                f"publish to {topic!r}: the bus was closed while Redis was unreachable; nothing was stored"
            )
        await self.outbox.put_many(topic, [(w.id, w.data, w.options()) for w in writes])  # all or none
        started, self.backlog = not self.backlog, True
        # once per backlog, not per publish: an outage can queue thousands
        log.log(
            logging.WARNING if started else logging.DEBUG,
            "relaybus: Redis unreachable, %d message(s) for %r kept in the outbox %s%s",
            len(writes),
            topic,
            self.outbox.path,
            "; later publishes queue behind them until it is flushed" if started else "",
        )
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
                window = (
                    id_time_ms(run[0].message_id) + self.skew_ms - CHECK_MARGIN_MS,
                    id_time_ms(run[-1].message_id) + self.skew_ms + span_ms + CHECK_MARGIN_MS,
                )
                try:
                    await self._scripted(run[0].topic, writes, check=window, mark_ms=MARK_TTL_MS)
                except TopicClosedError:  # never deliverable: said loudly, then gone
                    log.error(
                        "relaybus: %d outbox message(s) for %r dropped: the topic was closed "
                        "(close_topic) before they could be sent: %s",
                        len(run),
                        run[0].topic,
                        ", ".join(e.message_id for e in run),
                    )
                    self.ctx.counters["outbox_dropped_closed"] += len(run)
                    await self.outbox.delete(run)
                    continue
                except (QueueFullError, RedisFullError, ResponseError) as exc:
                    # this topic waits (its order kept) for the next flush; the others go on
                    log.warning(
                        "relaybus: outbox entries for %r refused (%s: %s); retrying later",
                        run[0].topic,
                        type(exc).__name__,
                        exc,
                    )
                    refused.add(run[0].topic)
                    continue
                await self.outbox.delete(run)
                sent += len(run)
            self.backlog = bool(refused)
        if sent:
            log.info("relaybus: flushed %d message(s) from the outbox", sent)
        return sent

    async def _append(self, topic: str, writes: list[Write]) -> None:
        """The fast path: one append.lua call."""
        keys, scripts = self.ctx.keys, self.ctx.scripts
        try:
            call_keys = [
                keys.stream(topic),
                keys.wake(topic),
                keys.fence(topic),
                keys.sent(topic),
                keys.closed(topic),
            ]
            await self._send(topic, (scripts.append, call_keys, [w.data for w in writes]))
        except ResponseError as exc:
            raise _refusal(exc, topic, self.config.max_queue_size) from None
        except UNAVAILABLE as exc:
            raise unavailable(f"publish to {topic!r}", exc, self.config.url) from None

    async def _scripted(
        self,
        topic: str,
        writes: list[Write],
        check: tuple[int, int | str] | None = None,
        mark_ms: int = FENCE_TTL_MS,
    ) -> list[str]:
        """Dedup, lanes, delay, max_queue_size, and for a later attempt (`check`: the window
        of entry-id times an earlier one would be in) the written-already check and the
        fence, its sent markers kept `mark_ms`: one script call."""
        keys = self.ctx.keys
        call_keys = [
            keys.stream(topic),
            keys.delayed(topic),
            keys.lanes(topic),
            keys.counters(topic),
            keys.lane(topic),
            keys.sent(topic),
            keys.fence(topic),
        ]
        check_from, check_to = (max(1, check[0]), check[1]) if check else (0, 0)
        args: list[Any] = [
            self.config.max_queue_size or 0,
            self.config.overflow,
            check_from,
            check_to,
            mark_ms,
            _now_ms() if check else 0,
            FENCE_TTL_MS,
        ]
        for w in writes:
            call_keys.append(keys.dedup(topic, w.dedup_key) if w.dedup_key else call_keys[0])
            args += [w.data, w.id, w.window_ms if w.dedup_key else 0, w.due_ms, w.lane]
        call_keys += [keys.closed(topic), keys.wake(topic)]
        try:
            replies = await self._send(topic, (self.ctx.scripts.publish, call_keys, args))
        except ResponseError as exc:
            raise _refusal(exc, topic, self.config.max_queue_size) from None
        except UNAVAILABLE as exc:
            raise unavailable(f"publish to {topic!r}", exc, self.config.url) from None
        return [r.decode() if isinstance(r, bytes) else r for r in replies]

    async def _send(self, topic: str, call: Call) -> Any:
        """One write-script call in one round trip - with the topic's registration when due
        (see `_registered`) and, with `min_replicas_acked`, a WAIT on the same connection.
        Raises ReplicationError when fewer replicas confirm in time."""
        scripts, wanted, health = self.ctx.scripts, self.config.min_replicas_acked, self.ctx.health
        if health.state != "connected" or health.reconnects != self._reconnects:
            self._registered.clear()
            self._reconnects = health.reconnects
        now = time.monotonic()
        first = now - self._registered.get(topic, -math.inf) > self.config.health_check_interval_s
        if not first and not wanted:
            reply = await scripts.call(*call)
        else:
            head: list[Call] = [("SADD", [self.ctx.keys.registry], [topic])] if first else []
            tail: list[Call] = [("WAIT", [], [wanted, self.config.replica_ack_timeout_ms])] if wanted else []
            replies = await scripts.run([*head, call], tail)
            for failed in replies:
                if isinstance(failed, Exception):
                    raise failed
            reply = replies[len(head)]
            if wanted and int(replies[-1]) < wanted:
                raise ReplicationError(
                    f"publish to {topic!r}: {int(replies[-1])} of {wanted} replica(s) confirmed it within "
                    f"{self.config.replica_ack_timeout_ms} ms (min_replicas_acked); it is written on the "
                    "master and may or may not survive a failover - publishing it again makes a second "
                    "message unless it has a dedup_key"
                )
        if first:
            self._registered[topic] = now
            while len(self._registered) > MAX_REGISTERED:  # the oldest is registered again if used
                del self._registered[next(iter(self._registered))]
        return reply

    def forget(self, topic: str) -> None:
        """Drop a closed topic's registration time: its name leaves the registry once its
        keys expire, and is registered again if it is published after that."""
        self._registered.pop(topic, None)

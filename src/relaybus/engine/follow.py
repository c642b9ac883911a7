"""Resumable streams (`Bus.follow`, `Bus.close_topic`; docs/streams.md): every follower
reads a topic's stream whole, from a position of its own, with no consumer group, and
waits on the bus's doorbell - never a connection or a blocking read of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

from redis.exceptions import ResponseError

from ..connection import UNAVAILABLE
from ..errors import BusUnavailableError, DecodeError, RelayBusError
from ..message import Message, decode
from .context import Context
from .groups import PROMOTE_LIMIT
from .reader import UNARMED_RETRY_S

log = logging.getLogger("relaybus")
BATCH = 500  # entries one read returns: a long replay goes in pages, one round trip each
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.05, 2.0
DRAINED, UNARMED, CLOSED = 1, 2, 3  # states scripts/follow.lua returns
ENTRY_ID_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def check_position(after: Any) -> str:
    """'' for the oldest retained entry, else the entry id `after` names."""
    if after is None:
        return ""
    if not isinstance(after, str) or not ENTRY_ID_RE.fullmatch(after):
        raise ValueError(
            f"after must be None or a stream entry id such as '1700000000000-0' "
            f"(a Message.entry_id), got {after!r}"
        )
    return after


def _keys(ctx: Context, topic: str) -> list[str]:
    keys = ctx.keys
    return [
        keys.stream(topic),
        keys.delayed(topic),
        keys.retry(topic),
        keys.lane(topic),
        keys.lanes(topic),
        keys.wake(topic),
        keys.closed(topic),
    ]


async def follow(ctx: Context, topic: str, after: str) -> AsyncGenerator[Message, None]:
    """What the topic's stream holds after `after`, then each new entry as it is stored,
    until the topic is closed and read to its end. Subscribed to the wake channel before
    the first read, and each read that finds nothing arms the wake key in the same step
    (scripts/follow.lua), so no publish between a read and the wait goes unheard. Rides
    out an outage: it reads again, from where it was, once Redis answers."""
    rung = asyncio.Event()

    def watcher(_topic: str, _certain: bool) -> None:
        rung.set()

    await ctx.doorbell.watch([topic], watcher)
    keys, cursor, pause = _keys(ctx, topic), after, MIN_BACKOFF_S
    try:
        while True:
            rung.clear()
            try:
                next_due, state, entries = await ctx.scripts.call(
                    ctx.scripts.follow, keys, [cursor, BATCH, int(time.time() * 1000), PROMOTE_LIMIT]
                )
            except UNAVAILABLE as exc:
                if ctx.doorbell.closed:
                    raise BusUnavailableError("follow() was reading when the bus was closed") from None
                await ctx.health.failed(exc)
                await asyncio.sleep(random.uniform(pause / 2, pause))
                pause = min(pause * 2, MAX_BACKOFF_S)
                continue
            except ResponseError as exc:
                if str(exc).startswith("LANES"):
                    raise RelayBusError(
                        f"follow({topic!r}): the topic has priority lanes (messages published with "
                        "priority > 0 while the priority plugin is on); a follower reads one ordered "
                        "stream, so publish to a followed topic with priority 0 (docs/streams.md)"
                    ) from None
                raise
            if pause > MIN_BACKOFF_S:
                pause = MIN_BACKOFF_S
                await ctx.health.succeeded()
            for entry_id, fields in entries:
                cursor = entry_id.decode()
                try:
                    message = decode(dict(zip(fields[::2], fields[1::2], strict=True)), cursor, topic)
                except DecodeError as exc:  # written by a foreign client: said, and passed over
                    ctx.counters["undecodable"] += 1
                    log.warning("relaybus follow(%r): skipping entry %s: %s", topic, cursor, exc)
                    continue
                yield message
            if state == CLOSED:
                return
            if not entries:
                await _wait(ctx, rung, state, next_due)
    finally:
        ctx.doorbell.unwatch([topic], watcher)


async def _wait(ctx: Context, rung: asyncio.Event, state: int, next_due: Any) -> None:
    """Until the topic rings (or the doorbell lost its connection: rings may have gone
    unheard), a delayed entry falls due, or - the wake key refused - a while."""
    left: float | None = None
    if next_due is not None:
        left = max(0.0, float(next_due) / 1000 - time.time())
    if state == UNARMED:
        left = UNARMED_RETRY_S if left is None else min(left, UNARMED_RETRY_S)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(rung.wait(), left)
    if ctx.doorbell.closed:
        raise BusUnavailableError("follow() was waiting when the bus was closed")


async def close(ctx: Context, topic: str, keep_s: float) -> int:
    """Mark the topic closed and let its keys expire `keep_s` later; how many delayed
    publishes not yet due it dropped (scripts/close_topic.lua). The topic is noted in
    `keys.closing` (a key of its own, outside the topic's hash slot) for `forget_expired`."""
    keys = ctx.keys
    call_keys = [
        keys.closed(topic),
        keys.stream(topic),
        keys.delayed(topic),
        keys.retry(topic),
        keys.lane(topic),
        keys.lanes(topic),
        keys.wake(topic),
        keys.counters(topic),
        keys.dlq(topic),
    ]
    keep_ms, now_ms = max(1, int(keep_s * 1000)), int(time.time() * 1000)
    dropped = int(await ctx.scripts.call(ctx.scripts.close_topic, call_keys, [keep_ms, now_ms]))
    await ctx.scripts.call("ZADD", [keys.closing], [now_ms + keep_ms, topic])
    if dropped:
        log.warning("relaybus: close_topic(%r) dropped %d delayed message(s) not yet due", topic, dropped)
    return dropped


FORGET_BATCH = 1000  # closed topics looked at per cleanup, oldest deadline first


async def forget_expired(ctx: Context) -> int:
    """Take closed topics whose keys have expired out of the registry (and `keys.closing`);
    how many. A topic closed again meanwhile (its marker is back) waits for its new
    deadline; one published again after it expired (its stream is back) stays registered.
    A name removed in a race with a new publish is registered again by that publisher
    within `health_check_interval_s` (engine/publisher.py)."""
    keys = ctx.keys
    due = await ctx.scripts.call(
        "ZRANGEBYSCORE", [keys.closing], ["-inf", int(time.time() * 1000), "LIMIT", 0, FORGET_BATCH]
    )
    forgotten = 0
    for member in due:
        topic = member.decode() if isinstance(member, bytes) else member
        if await ctx.scripts.call("EXISTS", [keys.closed(topic)], []):
            continue  # closed again with a later deadline: ZADD moved its score on
        if not await ctx.scripts.call("EXISTS", [keys.stream(topic)], []):
            await ctx.scripts.call("SREM", [keys.registry], [topic])
            forgotten += 1
        await ctx.scripts.call("ZREM", [keys.closing], [topic])
    return forgotten

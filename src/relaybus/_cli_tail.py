"""`relaybus tail`: watch topics without consuming, or consume them as a group."""

from __future__ import annotations

import asyncio
import fnmatch
import functools
from collections.abc import Callable

from ._cli_common import outlasting, pause
from .bus import Bus
from .errors import DecodeError
from .keys import lanes_in
from .message import Message

POLL_S = 0.25  # how often a follow looks for new entries
DISCOVER_EVERY = 4  # polls between looks for new topics and priority lanes
BATCH = 1000  # entries read per stream per poll

Show = Callable[[Message], None]


async def matching(bus: Bus, pattern: str) -> list[str]:
    return [t for t in await bus.topics() if fnmatch.fnmatchcase(t, pattern)]


def no_match(bus: Bus, pattern: str) -> ValueError:
    return ValueError(f"no topic under prefix {bus.config.prefix!r} matches {pattern!r}")


async def consume(
    bus: Bus, pattern: str, group: str, count: int, follow: asyncio.Event | None, show: Show
) -> None:
    """Read as `group` and ack what was shown: `count` messages at most, or with `follow`
    until that event is set (then `count` is the batch size), waiting out a Redis outage.
    A failed ack is tried again, not the read: what was shown is not shown again."""
    remaining = count
    while follow is None or not follow.is_set():
        topics = await outlasting(bus, follow, functools.partial(matching, bus, pattern))
        if topics is None:
            return
        if not topics and not follow:
            raise no_match(bus, pattern)
        got = 0
        for topic in topics:
            read = functools.partial(bus.read, topic, group, count=count if follow else remaining)
            messages = await outlasting(bus, follow, read)
            if messages is None:
                return
            for message in messages:
                show(message)
            if messages and await outlasting(bus, follow, functools.partial(bus.ack, *messages)) is None:
                return  # Ctrl-C while Redis was away: these stay pending to the group
            got += len(messages)
            remaining -= len(messages)
            if remaining <= 0 and not follow:
                return
        if not follow and not got:
            return
        if not got and follow is not None:
            await pause(follow, POLL_S)


async def watch(bus: Bus, pattern: str, count: int, follow: asyncio.Event | None, show: Show) -> None:
    """Show the latest `count` messages of the matching topics (merged, oldest first), then
    with `follow` every new one as it is appended, until that event is set, waiting out a
    Redis outage: the cursors move only past what was shown, so after one it goes on with
    what was appended meanwhile. Reads history only: no group, no acks."""

    async def start() -> tuple[dict[str, bytes], list[Message]]:
        topics = await matching(bus, pattern)
        if not topics and not follow:
            raise no_match(bus, pattern)
        cursors = await _positions(bus, topics, {}, first=True)  # before the history: nothing falls between
        latest = sorted(
            [m for t in topics for m in await bus.history(t, limit=count)], key=lambda m: (m.created_at, m.id)
        )[-count:]
        return cursors, latest

    started = await outlasting(bus, follow, start)
    if started is None:
        return
    cursors, latest = started
    for message in latest:
        show(message)
    if follow is None:
        return
    shown = {m.id for m in latest}  # entries appended between the positions and the history
    polls = 0
    while not follow.is_set():
        polls += 1
        poll = functools.partial(_poll, bus, pattern, cursors, discover=polls % DISCOVER_EVERY == 0)
        if (polled := await outlasting(bus, follow, poll)) is None:
            return
        cursors, appended = polled
        for message in appended:
            if message.id not in shown:
                show(message)
        shown.clear()
        await pause(follow, POLL_S)


async def _poll(
    bus: Bus, pattern: str, cursors: dict[str, bytes], discover: bool
) -> tuple[dict[str, bytes], list[Message]]:
    """One look: with `discover`, for new topics and lanes first; then what was appended
    after the cursors, and the cursors past it. `cursors` is left as it was, so a look
    that fails half-way skips nothing."""
    if discover:
        cursors = await _positions(bus, await matching(bus, pattern), cursors, first=False)
    return await _appended(bus, cursors)


async def _positions(bus: Bus, topics: list[str], known: dict[str, bytes], first: bool) -> dict[str, bytes]:
    """Where to read on from in every stream (topic and priority lanes) of `topics`: on the
    first look, after its last entry; a stream found later, from its beginning (all new)."""
    out = dict(known)
    for topic in topics:
        lanes = lanes_in(await bus.redis.smembers(bus.keys.lanes(topic)))
        for key in (bus.keys.lane(topic, n) for n in [0, *lanes]):
            if key not in out:
                last = await bus.redis.xrevrange(key, count=1) if first else []
                out[key] = last[0][0] if last else b"0-0"
    return out


async def _appended(bus: Bus, cursors: dict[str, bytes]) -> tuple[dict[str, bytes], list[Message]]:
    """Entries appended after each cursor, in entry-time order, and the cursors past them
    (a new dict)."""
    found: list[tuple[int, str, Message]] = []
    advanced = dict(cursors)
    for key, cursor in cursors.items():
        entries = await bus.redis.xrange(key, min=b"(" + cursor, count=BATCH)
        for entry_id, fields in entries:
            advanced[key] = entry_id
            try:
                message = bus.groups.to_message((entry_id, fields), None, key)
            except DecodeError:
                continue
            found.append((int(entry_id.split(b"-")[0]), message.id, message))
    found.sort(key=lambda f: (f[0], f[1]))
    return advanced, [m for _, _, m in found]

"""`relaybus tail`: watch topics without consuming, or consume them as a group."""

from __future__ import annotations

import asyncio
import fnmatch
import functools
from collections.abc import Callable

from ._cli_common import outlasting, pause
from .bus import Bus
from .message import Message

POLL_S = 0.25  # how often a follow looks for new entries
DISCOVER_EVERY = 4  # polls between looks for new topics
BATCH = 1000  # messages read per topic per poll

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
    Redis outage: the positions move only past what was shown, so after one it goes on with
    what was appended meanwhile. Reads history only: no group, no acks."""

    async def start() -> tuple[dict[str, str | None], list[Message]]:
        topics = await matching(bus, pattern)
        if not topics and not follow:
            raise no_match(bus, pattern)
        positions: dict[str, str | None] = {}
        found: list[Message] = []
        for topic in topics:
            latest = await bus.history(topic, limit=count)
            positions[topic] = _newest(latest, None)  # what comes after it is new
            found += latest
        return positions, sorted(found, key=lambda m: (m.created_at, m.id))[-count:]

    started = await outlasting(bus, follow, start)
    if started is None:
        return
    positions, latest = started
    for message in latest:
        show(message)
    if follow is None:
        return
    polls = 0
    while not follow.is_set():
        polls += 1
        poll = functools.partial(_poll, bus, pattern, positions, discover=polls % DISCOVER_EVERY == 0)
        if (polled := await outlasting(bus, follow, poll)) is None:
            return
        positions, appended = polled
        for message in appended:
            show(message)
        await pause(follow, POLL_S)


async def _poll(
    bus: Bus, pattern: str, positions: dict[str, str | None], discover: bool
) -> tuple[dict[str, str | None], list[Message]]:
    """One look: with `discover`, for new topics first (read from their beginning: all of
    it is new); then what was stored after each topic's position (`history_after`, every
    priority lane), in entry-time order, and the positions past it. `positions` is left
    as it was, so a look that fails half-way skips nothing."""
    advanced = dict(positions)
    if discover:
        advanced |= {t: None for t in await matching(bus, pattern) if t not in advanced}
    found: list[Message] = []
    for topic, after in advanced.items():
        appended = await bus.history_after(topic, after, limit=BATCH)
        advanced[topic] = _newest(appended, after)
        found += appended
    found.sort(key=lambda m: (_entry(m.entry_id)[0], m.id))
    return advanced, found


def _entry(entry_id: str | None) -> tuple[int, int]:
    ms, _, seq = (entry_id or "0-0").partition("-")
    return int(ms), int(seq)


def _newest(messages: list[Message], position: str | None) -> str | None:
    """The newest entry id among `messages` (of every lane), or `position` if none."""
    return max((m.entry_id for m in messages), key=_entry, default=position)

"""`relaybus tail`: watch topics without consuming, or consume them as a group."""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import functools
from collections.abc import Callable

from ._cli_common import outlasting, pause
from .bus import Bus
from .message import Message

POLL_S = 0.25  # how often a follow looks for new entries
DISCOVER_EVERY = 4  # polls between looks for new topics
BATCH = 1000  # messages read per topic per poll
LAST_SEQ = 2**64 - 1  # the largest sequence number of an entry id

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

    async def start() -> tuple[dict[str, Position], list[Message]]:
        topics = await matching(bus, pattern)
        if not topics and not follow:
            raise no_match(bus, pattern)
        positions: dict[str, Position] = {}
        found: list[Message] = []
        for topic in topics:
            latest = await bus.history(topic, limit=count)
            positions[topic] = Position().past(latest)  # what comes after it is new
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


def _entry(entry_id: str | None) -> tuple[int, int]:
    ms, _, seq = (entry_id or "0-0").partition("-")
    return int(ms), int(seq)


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a watch is in one topic: the newest entry id shown, and the messages shown
    from that millisecond. Priority lanes number their entries each on their own, so a
    message stored a moment later in another lane may carry an id from the same
    millisecond, below the newest: a look reads the whole millisecond again and skips
    what was shown, so it misses none (docs/cli.md, "tail")."""

    newest: str | None = None  # None: nothing shown; all of the topic is new
    shown: frozenset[str] = frozenset()  # message ids shown from newest's millisecond

    def rewound(self) -> str | None:
        ms = _entry(self.newest)[0]
        return f"{ms - 1}-{LAST_SEQ}" if ms else None

    def past(self, messages: list[Message]) -> Position:
        newest = max((m.entry_id for m in messages), key=_entry, default=self.newest)
        ms = _entry(newest)[0]
        shown = {m.id for m in messages if _entry(m.entry_id)[0] == ms}
        return Position(newest, frozenset(shown | (self.shown if _entry(self.newest)[0] == ms else set())))


async def _appended(bus: Bus, topic: str, position: Position) -> tuple[Position, list[Message]]:
    """What the topic stored after `position`, every lane, in entry order; and the
    position past it."""
    page = await bus.history_after(topic, position.rewound(), limit=BATCH)
    fresh = [m for m in page if m.id not in position.shown]
    if len(page) >= BATCH and not fresh:  # one millisecond held more than a page: step past it
        page = fresh = await bus.history_after(topic, position.newest, limit=BATCH)
    return position.past(page), fresh


async def _poll(
    bus: Bus, pattern: str, positions: dict[str, Position], discover: bool
) -> tuple[dict[str, Position], list[Message]]:
    """One look: with `discover`, for new topics first (read from their beginning: all of
    it is new); then what was stored after each topic's position, merged in entry-time
    order, and the positions past it. `positions` is left as it was, so a look that fails
    half-way skips nothing."""
    advanced = dict(positions)
    if discover:
        advanced |= {t: Position() for t in await matching(bus, pattern) if t not in advanced}
    found: list[Message] = []
    for topic, position in advanced.items():
        advanced[topic], appended = await _appended(bus, topic, position)
        found += appended
    found.sort(key=lambda m: (_entry(m.entry_id)[0], m.id))
    return advanced, found

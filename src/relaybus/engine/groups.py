"""Consumer-group operations on a topic's streams, shared by pull reads and the run loop."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import OutOfMemoryError, ResponseError

from ..keys import Keys, lanes_in
from ..message import Message, decode, encode
from .scripts import Call, Scripts

Entry = tuple[bytes, dict[bytes, bytes] | None]
Fetched = tuple[str, Entry]  # (the stream it came from, the entry)
PROMOTE_LIMIT = 100  # due delayed members moved per read, so one read stays short


def _fields(flat: Sequence[bytes] | None) -> dict[bytes, bytes] | None:
    if not flat:
        return None
    if len(flat) == 4:  # what relaybus writes: v, m
        return {flat[0]: flat[1], flat[2]: flat[3]}
    return dict(zip(flat[::2], flat[1::2], strict=True))


def group_lost(exc: BaseException) -> bool:
    """The stream or group was deleted under a reader (NOGROUP, as Valkey 9 says it for a
    blocked read too, or Redis 7's UNBLOCKED)."""
    text = str(exc)
    return isinstance(exc, ResponseError) and ("NOGROUP" in text or "no longer exists" in text)


def redis_full(exc: BaseException) -> bool:
    """Redis refused a write because maxmemory is reached under noeviction (6.2 reports it
    inside a script error)."""
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "-OOM command not allowed" in str(exc)
    )


def _entries(raw: Sequence[Any]) -> list[Entry]:
    """XCLAIM's and XAUTOCLAIM's entries as Redis sends them: [id, [field, value, ...]],
    or nil for one deleted while pending (Redis 6.2; kept as (None, None), see _live)."""
    return [(e[0], _fields(e[1])) if e is not None else (None, None) for e in raw]  # type: ignore[misc]


async def _unless_no_group(reply: Awaitable[Any]) -> Any:
    """A claim-side reply, or None where the group is missing on that stream (a lane
    that appeared after the group was made holds nothing pending for it yet)."""
    try:
        return await reply
    except ResponseError as exc:
        if group_lost(exc):
            return None
        raise


def _id_order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _live(claimed: Sequence[Entry]) -> list[Entry]:
    """Claimed entries that still exist: Redis 6.2 answers an entry deleted while
    pending with nil - keeping its id pending - where 7.x leaves it out."""
    return [entry for entry in claimed if entry[0] is not None]


def _sid(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(slots=True)
class Fetch:
    """What one read.lua call found: entries, when the topic's next delayed entry falls
    due (epoch seconds), and whether the group's streams were drained (the topic's
    wake key is then set: a ring follows anything new)."""

    entries: list[Fetched]
    next_due: float | None
    drained: bool
    armed: bool = True  # drained and the wake key set; False: Redis refused it (memory full)
    idle: bool = False  # a probe found entries idle in some consumer (claim them)
    own: bool = False  # a probe found entries pending for this very consumer
    pending: bool = False  # a probe found entries pending in some consumer of the group
    delivered: dict[bytes, int] | None = None  # a claiming read: claimed entries' delivery counts


class Groups:
    """Reads, claims and settles entries of a topic's streams for one consumer group.

    A topic has a main stream (lane 0), a stream per priority lane in use, and per
    group a retry stream only that group reads; all share the topic's hash tag, so
    one script can read them in order.
    """

    def __init__(self, keys: Keys, scripts: Scripts) -> None:
        self.keys = keys
        self.scripts = scripts
        self._groups: set[tuple[str, str]] = set()  # (topic, group) known to exist
        self._lost: set[tuple[str, str]] = set()  # made once, then found gone

    async def sources(self, topic: str, group: str) -> list[str]:
        """The streams a group reads for a topic, most urgent first: its retry stream,
        the priority lanes in use (9 down to 1), the topic stream."""
        lanes = lanes_in(await self.scripts.call("SMEMBERS", [self.keys.lanes(topic)], []))[::-1]
        return [
            self.keys.retry(topic, group),
            *(self.keys.lane(topic, n) for n in lanes),
            self.keys.stream(topic),
        ]

    def forget_group(self, topic: str, group: str) -> None:
        """After NOGROUP: the stream or group was deleted under us (or Redis restarted
        empty). The next read makes it again - from the oldest entry, whatever `start`
        said at first, so nothing published meanwhile is skipped."""
        self._groups.discard((topic, group))
        self._lost.add((topic, group))

    def read_keys(self, topic: str, group: str) -> list[str]:
        """read.lua's KEYS for a group on a topic."""
        keys = self.keys
        return [
            keys.delayed(topic),
            keys.stream(topic),
            keys.retry(topic),
            keys.lane(topic),
            keys.lanes(topic),
            keys.retry(topic, group),
            keys.wake(topic),
        ]

    def read_call(
        self,
        topic: str,
        group: str,
        consumer: str,
        count: int,
        start: str,
        idle_ms: int = 0,
        own: bool = False,
        keys: list[str] | None = None,
    ) -> Call:
        """One read.lua call (count 0: only probe, also for entries idle past `idle_ms`
        and, with `own`, for this consumer's own pending ones; a read with `idle_ms` first
        claims entries idle past it in any consumer), creating the group on its first use
        from this bus: `earliest` starts at the oldest retained entry, `latest` after the
        newest."""
        if (topic, group) in self._groups:
            create = ""
        else:
            create = "0" if start == "earliest" or (topic, group) in self._lost else "$"
        return (
            self.scripts.read,
            keys or self.read_keys(topic, group),
            [
                group,
                consumer,
                count,
                int(time.time() * 1000),
                PROMOTE_LIMIT,
                create,
                idle_ms,
                "1" if own else "",
            ],
        )

    def read_reply(self, topic: str, group: str, reply: Any) -> Fetch:
        """A read.lua reply; raises the error it carries (NOGROUP forgets the group)."""
        if isinstance(reply, BaseException):
            if group_lost(reply):
                self.forget_group(topic, group)
            raise reply
        self._groups.add((topic, group))
        due, drained, flat = reply[0], reply[1], reply[2:]
        next_due = float(due) / 1000 if due else None
        if flat and isinstance(flat[0], int):  # a probe: {due, drained, idle, own, pending}
            return Fetch(
                [], next_due, bool(drained), drained != 2, bool(flat[0]), bool(flat[1]), bool(flat[2])
            )
        delivered = None
        if flat and isinstance(flat[0], list):  # a claiming read: the claimed entries' counts
            counts, flat = flat[0], flat[1:]
            delivered = dict(zip(counts[::2], counts[1::2], strict=True))
        entries: list[Fetched] = []
        for key, batch in zip(flat[::2], flat[1::2], strict=True):
            source = _sid(key)
            entries += [(source, (entry[0], _fields(entry[1]))) for entry in batch]
        return Fetch(entries, next_due, bool(drained), drained != 2, delivered=delivered)

    async def read(
        self, topic: str, group: str, consumer: str, count: int, start: str, idle_ms: int = 0
    ) -> Fetch:
        (reply,) = await self.scripts.run([self.read_call(topic, group, consumer, count, start, idle_ms)])
        return self.read_reply(topic, group, reply)

    async def claim_idle(
        self,
        topic: str,
        group: str,
        consumer: str,
        min_idle_ms: int,
        count: int,
        cursors: dict[str, str],
    ) -> tuple[dict[str, str], list[tuple[str, Entry]]]:
        """XAUTOCLAIM entries idle in any consumer, over each of the group's streams.

        Returns the cursors to continue from; empty once every stream was scanned.
        """
        out: list[tuple[str, Entry]] = []
        left: dict[str, str] = {}
        for key in await self.sources(topic, group):
            start = cursors.get(key, "0-0") if cursors else "0-0"
            if cursors and key not in cursors:
                continue
            if len(out) >= count:
                left[key] = start
                continue
            reply = await _unless_no_group(
                self.scripts.call(
                    "XAUTOCLAIM", [key], [group, consumer, min_idle_ms, start, "COUNT", count - len(out)]
                )
            )
            if reply is None:
                continue
            out.extend((key, entry) for entry in _live(_entries(reply[1])))
            if _sid(reply[0]) != "0-0":
                left[key] = _sid(reply[0])
        return left, out

    async def claim_own(
        self, topic: str, group: str, consumer: str, count: int, after: dict[str, str]
    ) -> tuple[list[tuple[str, Entry]], dict[bytes, int]]:
        """Take back this consumer's own pending entries (left by an earlier run), paging
        past the ids in `after`, which it updates; an empty result means all were seen.
        Also returns each entry's delivery count, this delivery included."""
        out: list[tuple[str, Entry]] = []
        counts: dict[bytes, int] = {}
        for key in await self.sources(topic, group):
            if len(out) >= count:
                break
            pending = await _unless_no_group(
                self.scripts.call(
                    "XPENDING", [key], [group, after.get(key, "-"), "+", count - len(out), consumer]
                )
            )
            ids = [p[0] for p in pending or ()]
            if ids:
                after[key] = "(" + _sid(ids[-1])
                claimed = await self._claim(key, group, consumer, 0, ids)
                out.extend((key, entry) for entry in claimed)
                # XPENDING's delivery counts as they are once XCLAIM has counted one more
                counts.update((p[0], int(p[3]) + 1) for p in pending)
        return out, counts

    async def _claim(
        self, key: str, group: str, consumer: str, min_idle_ms: int, ids: list[bytes]
    ) -> list[Entry]:
        """XCLAIM the ids; on Redis 6.2 the ids of entries deleted while pending come back
        as (None, None) and stay pending: when every id not returned is such a one, ack them."""
        claimed = _entries(await self.scripts.call("XCLAIM", [key], [group, consumer, min_idle_ms, *ids]))
        live = _live(claimed)
        gone = set(ids) - {entry[0] for entry in live}
        if gone and len(gone) == len(claimed) - len(live):
            await self.scripts.call("XACK", [key], [group, *gone])
        return live

    async def delivery_counts(
        self, group: str, consumer: str, claimed: Sequence[tuple[str, Entry]]
    ) -> dict[bytes, int]:
        """How often each entry XAUTOCLAIM handed over has been delivered (XPENDING),
        by entry id; XAUTOCLAIM itself does not say."""
        by_key: dict[str, list[bytes]] = {}
        for key, (entry_id, _) in claimed:
            by_key.setdefault(key, []).append(entry_id)
        counts: dict[bytes, int] = {}
        for key, ids in by_key.items():
            pending = await self.scripts.call(
                "XPENDING",
                [key],
                [group, min(ids, key=_id_order), max(ids, key=_id_order), len(ids) * 4 + 10, consumer],
            )
            counts.update((p[0], int(p[3])) for p in pending)
        return counts

    async def heartbeat(self, consumer: str, held: dict[tuple[str, str], list[bytes]]) -> None:
        """Reset the idle time of entries this consumer still works on, per (stream,
        group) (XCLAIM JUSTID: not a delivery), so a slow handler is not reclaimed."""
        if not held:
            return
        # one round trip; an error reply (a group deleted meanwhile) is left: nothing to keep
        await self.scripts.run(
            [("XCLAIM", [key], [group, consumer, 0, *ids, "JUSTID"]) for (key, group), ids in held.items()]
        )

    async def dead_letter(
        self,
        source: str,
        entry_id: bytes | str,
        group: str,
        topic: str,
        body: list[Any],
        reason: str,
        error: BaseException | None,
        attempts: int,
        reply: tuple[str, bytes] | None = None,
    ) -> bool:
        """Move a pending entry to the topic DLQ and ack it, atomically. `body` is
        ["m", envelope] or ["raw", fields-as-JSON]. False: it was no longer pending
        (another consumer settled it first). `reply`: (inbox key, failure reply) appended
        in the same script - only where the inbox is on the same server (no Cluster)."""
        fields = [
            "v",
            "1",
            *body,
            "reason",
            reason,
            "error_type",
            type(error).__name__ if error else "",
            "error",
            str(error)[:2000] if error else "",
            "attempts",
            str(attempts),
            "original_entry",
            entry_id,
            "group",
            group,
            "dead_at",
            f"{time.time():.6f}",
        ]
        told = [] if reply is None else [reply[1]]
        moved = await self.scripts.call(
            self.scripts.dead_letter,
            [source, self.keys.dlq(topic), *([] if reply is None else [reply[0]])],
            [group, entry_id, *told, *fields],
        )
        return moved is not None

    async def schedule_retry(self, message: Message, group: str, delay: float) -> bool:
        """Ack a pending entry and park it in the delayed set for this group's retry stream."""
        assert message.entry_id is not None and message.stream_key is not None
        nxt = message.model_copy(update={"attempt": message.attempt + 1})
        member = group.encode() + b"|" + encode(nxt)
        due_ms = int((time.time() + delay) * 1000)
        done = await self.scripts.call(
            self.scripts.retry,
            [message.stream_key, self.keys.delayed(message.topic), self.keys.wake(message.topic)],
            [group, message.entry_id, due_ms, member],
        )
        return bool(done)


def message_of(keys: Keys, entry: Entry, group: str | None, source: str) -> Message:
    """Decode one entry of `source`; raises DecodeError for anything that is not an
    envelope of that stream's topic."""
    entry_id, fields = entry
    message = decode(fields, _sid(entry_id), keys.topic_of(source))
    # where it was delivered from: not wire fields, so nothing to validate
    message.__dict__.update(group=group, stream_key=source)
    return message

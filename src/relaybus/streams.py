"""Consumer-group operations shared by pull reads (`Bus.read`) and the run loop."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable, Sequence
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from .keys import Keys
from .message import Message, decode, encode

Entry = tuple[bytes, dict[bytes, bytes] | None]
PROMOTE_LIMIT = 100  # due delayed members moved per read, so one read stays short


def load_script(redis: aioredis.Redis, name: str) -> AsyncScript:
    """A script from scripts/; those that look at consumer groups get groups.lua first."""
    folder = files("relaybus") / "scripts"
    text = (folder / f"{name}.lua").read_text()
    if "(groups.lua is prepended" in text:
        text = (folder / "groups.lua").read_text() + text
    return redis.register_script(text)


def _fields(flat: Sequence[bytes] | None) -> dict[bytes, bytes] | None:
    if not flat:
        return None
    return dict(zip(flat[::2], flat[1::2], strict=True))


def group_lost(exc: ResponseError) -> bool:
    """The stream or group was deleted under a reader (NOGROUP, or Redis 7's UNBLOCKED)."""
    text = str(exc)
    return "NOGROUP" in text or "no longer exists" in text


def _counts_after_claim(pending: Iterable[dict[str, Any]]) -> dict[bytes, int]:
    """XPENDING's delivery counts as they are once XCLAIM has counted one more."""
    return {p["message_id"]: int(p["times_delivered"]) + 1 for p in pending}


async def _unless_no_group(reply: Awaitable[Any]) -> Any:
    """A claim-side reply, or None where the group is missing on that stream (a lane
    that appeared after the group was made holds nothing pending for it yet)."""
    try:
        return await reply
    except ResponseError as exc:
        if group_lost(exc):
            return None
        raise


def _sid(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Streams:
    """Reads, claims and settles entries of a topic's streams for one consumer group.

    A topic has a main stream (lane 0), a stream per priority lane in use, and per
    group a retry stream only that group reads; all share the topic's hash tag, so
    one script can read them in order.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._groups: set[tuple[str, str]] = set()
        self._read = load_script(redis, "read")
        self.dead_letter_script = load_script(redis, "dead_letter")
        self.retry_script = load_script(redis, "retry")
        self.replay_script = load_script(redis, "replay")
        self.publish_script = load_script(redis, "publish")
        self.trim_script = load_script(redis, "trim")

    async def sources(self, topic: str, group: str) -> list[str]:
        """The streams a group reads for a topic, most urgent first: its retry stream,
        the priority lanes in use (9 down to 1), the topic stream."""
        lanes = sorted((int(n) for n in await self.redis.smembers(self.keys.lanes(topic))), reverse=True)
        return [self.keys.retry(topic, group), *(self.keys.lane(topic, n) for n in lanes),
                self.keys.stream(topic)]

    async def ensure_group(self, topic: str, group: str, start: str = "earliest") -> None:
        """Create the group on first use; `earliest` starts at the oldest retained entry."""
        if (topic, group) in self._groups:
            return
        for key in (self.keys.retry(topic, group), self.keys.stream(topic)):
            # a retry stream only ever holds this group's entries: always from the start
            # (lanes get the group from read.lua when they first appear)
            first = "0" if start == "earliest" or key != self.keys.stream(topic) else "$"
            try:
                await self.redis.xgroup_create(key, group, id=first, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups.add((topic, group))

    def forget_group(self, topic: str, group: str) -> None:
        """After NOGROUP: the stream or group was deleted under us; recreate on next use."""
        self._groups.discard((topic, group))

    async def read_new(
        self, topic: str, group: str, consumer: str, count: int, block_ms: int
    ) -> list[tuple[str, Entry]]:
        """Up to `count` new entries: retry stream, lanes 9..1, then the topic stream.

        The scripted read never over-delivers; only when it finds nothing does a
        blocking XREADGROUP wait on the topic stream.
        """
        stream = self.keys.stream(topic)
        keys = [self.keys.delayed(topic), stream, self.keys.retry(topic), self.keys.lane(topic),
                self.keys.lanes(topic), self.keys.retry(topic, group)]
        try:
            now_ms = int(time.time() * 1000)
            flat = await self._read(keys=keys, args=[group, consumer, count, now_ms, PROMOTE_LIMIT])
            out = [
                (_sid(key), (entry[0], _fields(entry[1])))
                for key, entries in zip(flat[::2], flat[1::2], strict=True)
                for entry in entries
            ]
            if out or block_ms <= 0:
                return out
            got = await self.redis.xreadgroup(
                group, consumer, {stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if group_lost(exc):
                self.forget_group(topic, group)
            raise
        return [(stream, entry) for _, entries in got or () for entry in entries]

    async def claim_idle(
        self, topic: str, group: str, consumer: str, min_idle_ms: int, count: int,
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
            reply = await _unless_no_group(self.redis.xautoclaim(
                key, group, consumer, min_idle_ms, start_id=start, count=count
            ))
            if reply is None:
                continue
            out.extend((key, entry) for entry in reply[1])
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
            pending = await _unless_no_group(self.redis.xpending_range(
                key, group, min=after.get(key, "-"), max="+", count=count, consumername=consumer
            ))
            ids = [p["message_id"] for p in pending or ()]
            if ids:
                after[key] = "(" + _sid(ids[-1])
                claimed = await self.redis.xclaim(key, group, consumer, 0, ids)
                out.extend((key, entry) for entry in claimed)
                counts.update(_counts_after_claim(pending))
        return out, counts

    async def claim_from_others(
        self, topic: str, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> tuple[list[tuple[str, Entry]], dict[bytes, int]]:
        """Entries other consumers left idle; never this consumer's own (pull reads).
        Also returns each entry's delivery count, this delivery included."""
        out: list[tuple[str, Entry]] = []
        counts: dict[bytes, int] = {}
        for key in await self.sources(topic, group):
            pending = await _unless_no_group(self.redis.xpending_range(
                key, group, min="-", max="+", count=count - len(out), idle=min_idle_ms
            ))
            others = [p for p in pending or () if _sid(p["consumer"]) != consumer]
            if others:
                ids = [p["message_id"] for p in others]
                claimed = await self.redis.xclaim(key, group, consumer, min_idle_ms, ids)
                out.extend((key, entry) for entry in claimed)
                counts.update(_counts_after_claim(others))
            if len(out) >= count:
                break
        return out, counts

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
            pending = await self.redis.xpending_range(
                key, group, min=min(ids), max=max(ids), count=len(ids) * 4 + 10,
                consumername=consumer,
            )
            counts.update((p["message_id"], int(p["times_delivered"])) for p in pending)
        return counts

    async def heartbeat(self, group: str, consumer: str, held: Iterable[tuple[str, bytes]]) -> None:
        """Reset the idle time of entries this consumer still works on (XCLAIM JUSTID),
        so a slow handler is not reclaimed by another consumer under its feet."""
        by_key: dict[str, list[bytes]] = {}
        for key, entry_id in held:
            by_key.setdefault(key, []).append(entry_id)
        if not by_key:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, ids in by_key.items():
                pipe.xclaim(key, group, consumer, 0, ids, justid=True)
            await pipe.execute()

    async def dead_letter(
        self, source: str, entry_id: bytes | str, group: str, topic: str, body: list[Any],
        reason: str, error: BaseException | None, attempts: int,
    ) -> bool:
        """Move a pending entry to the topic DLQ and ack it, atomically. `body` is
        ["m", envelope] or ["raw", fields-as-JSON]. False: it was no longer pending
        (another consumer settled it first)."""
        fields = [
            "v", "1", *body,
            "reason", reason,
            "error_type", type(error).__name__ if error else "",
            "error", str(error)[:2000] if error else "",
            "attempts", str(attempts),
            "original_entry", entry_id,
            "group", group,
            "dead_at", f"{time.time():.6f}",
        ]
        moved = await self.dead_letter_script(
            keys=[source, self.keys.dlq(topic)], args=[group, entry_id, *fields]
        )
        return moved is not None

    async def schedule_retry(self, message: Message, group: str, delay: float) -> bool:
        """Ack a pending entry and park it in the delayed set for this group's retry stream."""
        assert message.entry_id is not None and message.stream_key is not None
        nxt = message.model_copy(update={"attempt": message.attempt + 1})
        member = group.encode() + b"|" + encode(nxt)
        due_ms = int((time.time() + delay) * 1000)
        done = await self.retry_script(
            keys=[message.stream_key, self.keys.delayed(message.topic)],
            args=[group, message.entry_id, due_ms, member],
        )
        return bool(done)

    def to_message(self, entry: Entry, group: str | None, source: str) -> Message:
        """Decode one entry; raises DecodeError for anything that is not an envelope."""
        entry_id, fields = entry
        message = decode(fields, _sid(entry_id))
        message.group = group
        message.stream_key = source
        return message



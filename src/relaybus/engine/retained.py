"""What a topic retains, read and managed: its history, its dead letters (list, replay,
purge), trimming (only what every group consumed, by age and length) and the retention
stored on the topic that cleanup trims by."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from redis.exceptions import ResponseError

from ..errors import DecodeError
from ..keys import lanes_in, validate_group
from ..message import DEAD_UNDECODABLE, Message, decode, encode
from .context import Context
from .groups import message_of

log = logging.getLogger("relaybus.retention")
REPLAY_BATCH = 200
KEPT_NAMED = 10  # undecodable dead letters a replay's warning names by entry id
FOREIGN = DEAD_UNDECODABLE  # a dead letter that is no message (never replayed): its size and why
FOREIGN_MAX = 300  # characters of that header
log = logging.getLogger("relaybus")


async def history(ctx: Context, topic: str, limit: int) -> list[Message]:
    """The latest `limit` retained messages of a topic, every lane, oldest first (by entry
    time; within one millisecond by message id); undecodable entries are skipped."""
    keys, scripts = ctx.keys, ctx.scripts
    lanes = lanes_in(await scripts.call("SMEMBERS", [keys.lanes(topic)], []))
    streams = [keys.lane(topic, n) for n in [0, *lanes]]
    replies = await scripts.run([("XREVRANGE", [key], ["+", "-", "COUNT", limit]) for key in streams])
    found: list[tuple[int, str, Message]] = []
    for key, reply in zip(streams, replies, strict=True):
        for entry_id, fields in _raised(reply):
            try:
                message = message_of(keys, (entry_id, pairs(fields)), None, key)
            except DecodeError:
                continue
            found.append((int(entry_id.split(b"-")[0]), message.id, message))
    found.sort(key=lambda f: (f[0], f[1]))
    return [message for _, _, message in found[-limit:]]


async def history_after(ctx: Context, topic: str, after: str | None, limit: int) -> list[Message]:
    """The first `limit` retained messages stored after `after` (an entry id), every lane,
    by entry id; other lanes' messages sharing the last one's entry id come too, so paging
    on from it skips none. Undecodable entries are skipped and paged past."""
    keys, scripts = ctx.keys, ctx.scripts
    start = b"(" + (after or "0-0").encode()
    lanes = lanes_in(await scripts.call("SMEMBERS", [keys.lanes(topic)], []))
    found: list[tuple[tuple[int, ...], Message]] = []
    for key in [keys.lane(topic, n) for n in [0, *lanes]]:
        cursor, got = start, 0
        while got < limit:  # pages on past undecodable entries, so a page of them stalls no one
            entries = await scripts.call("XRANGE", [key], [cursor, "+", "COUNT", limit])
            for entry_id, fields in entries:
                try:
                    message = message_of(keys, (entry_id, pairs(fields)), None, key)
                except DecodeError:
                    continue
                found.append((tuple(int(p) for p in entry_id.split(b"-")), message))
                got += 1
            if len(entries) < limit:
                break
            cursor = b"(" + entries[-1][0]
    found.sort(key=lambda f: f[0])
    if len(found) > limit:  # never split messages that share the last entry id
        found = [f for f in found if f[0] <= found[limit - 1][0]]
    return [message for _, message in found]


async def consumer_groups(ctx: Context, topic: str) -> list[str]:
    """The groups of every lane of a topic, by name; a lane that does not exist has none."""
    keys, scripts = ctx.keys, ctx.scripts
    lanes = lanes_in(await scripts.call("SMEMBERS", [keys.lanes(topic)], []))
    replies = await scripts.run([("XINFO GROUPS", [keys.lane(topic, n)], []) for n in [0, *lanes]])
    names: set[str] = set()
    for reply in replies:
        if isinstance(reply, ResponseError) and "no such key" in str(reply):
            continue  # that stream does not exist (yet)
        names |= {pairs(group)[b"name"].decode() for group in _raised(reply)}
    return sorted(names)


async def dead_letters(ctx: Context, topic: str, limit: int) -> list[Message]:
    entries = await ctx.scripts.call("XRANGE", [ctx.keys.dlq(topic)], ["-", "+", "COUNT", limit])
    return [dead_letter_message(topic, eid, pairs(fields)) for eid, fields in entries]


async def replay_dead_letters(ctx: Context, topic: str, ids: Iterable[str] | None) -> int:
    """Each chosen dead letter back to the retry stream of the group it died in, with a
    fresh attempt count, deleted from the DLQ in the same script; returns how many. One
    that does not decode stays in the DLQ, logged, and stops none of the others."""
    keys, scripts = ctx.keys, ctx.scripts
    wanted = set(ids) if ids is not None else None
    dlq = keys.dlq(topic)
    replayed, cursor = 0, "-"
    kept: list[str] = []  # undecodable: left in the DLQ
    while True:
        entries = await scripts.call("XRANGE", [dlq], [cursor, "+", "COUNT", REPLAY_BATCH])
        batch: list[Any] = []
        for eid, fields in entries:
            message = dead_letter_message(topic, eid, pairs(fields))
            if wanted is not None and not {message.id, message.entry_id} & wanted:
                continue
            if FOREIGN in message.headers:
                kept.append(eid.decode())
                continue
            message.attempt = 1
            batch += [eid, message.headers["x-dead-group"], encode(message)]
        if batch:
            replayed += await scripts.call(scripts.replay, [dlq, keys.retry(topic), keys.wake(topic)], batch)
        if len(entries) < REPLAY_BATCH:
            break
        cursor = "(" + entries[-1][0].decode()
    if kept:
        named = ", ".join(kept[:KEPT_NAMED]) + (", ..." if len(kept) > KEPT_NAMED else "")
        log.warning(
            "%d dead letter(s) of topic %r do not decode: not replayed, they stay in the DLQ "
            "(listing the dead letters shows why): %s",
            len(kept),
            topic,
            named,
        )
    return replayed


async def purge_dead_letters(ctx: Context, topic: str) -> int:
    scripts = ctx.scripts
    return int(await scripts.call(scripts.purge, [ctx.keys.dlq(topic)], []))


def pairs(reply: Any) -> dict[Any, Any]:
    """Fields and values as Redis sends them - [field, value, ...], or a map where the
    connection speaks RESP3 (redis-py's default since 8) - as a dict."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _raised(reply: Any) -> Any:
    """A reply of `Scripts.run`, its error raised."""
    if isinstance(reply, Exception):
        raise reply
    return reply


def dead_letter_message(topic: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Message:
    """A DLQ entry as a Message whose `x-dead-*` headers say why it died. Its `m` is decoded
    as a stream entry's is, so whatever is listed as a message can be replayed. One that
    cannot be - dead-lettered undecodable, or written by another client - is listed as its
    fields' text under the header FOREIGN (its size and why), with its entry id as id."""
    info = {k.decode(): v.decode(errors="replace") for k, v in fields.items() if k not in (b"m", b"raw")}
    headers = {f"x-dead-{k.replace('_', '-')}": v for k, v in info.items() if k != "v"}
    eid = entry_id.decode()
    try:
        if b"m" in fields:
            message = decode({b"v": fields.get(b"v", b""), b"m": fields[b"m"]}, eid, topic)
            validate_group(info.get("group", ""))  # where replay sends it back to
            message.headers = {**message.headers, **headers}
            return message
        payload, why = {"raw": _raw_fields(fields.get(b"raw", b"{}"))}, info.get("error", "")
    except (DecodeError, ValueError) as exc:  # one must not hide, nor stop, the others
        payload = {
            "raw": {
                k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in fields.items()
                if k in (b"m", b"raw")
            }
        }
        why = str(exc)
    size = sum(len(v) for k, v in fields.items() if k in (b"m", b"raw"))
    return Message(
        id=eid,
        topic=topic,
        payload=payload,
        entry_id=eid,
        headers={**headers, FOREIGN: f"{size} bytes: {why}"[:FOREIGN_MAX]},
    )


def _raw_fields(raw: bytes) -> dict[str, str]:
    """The `raw` of an undecodable entry's dead letter: its fields as text (wire-format.md)."""
    fields = orjson.loads(raw)
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise ValueError("its 'raw' is not a JSON object of text")
    return fields


async def trim(ctx: Context, topic: str, keep_s: float | None, keep_len: int | None) -> int:
    """Trim a topic's streams (topic, lanes, retry streams), never past what every
    group consumed."""
    keys = ctx.keys
    main = keys.stream(topic)
    names = [pairs(g)[b"name"].decode() for g in await _groups_of(ctx, main)]
    lanes = lanes_in(await ctx.scripts.call("SMEMBERS", [keys.lanes(topic)], []))
    # a lane's entries also wait for topic-stream groups that have not read the lane yet
    streams = [(keys.lane(topic, n), main) for n in [0, *lanes]]
    streams += [(keys.retry(topic, g), keys.retry(topic, g)) for g in names]
    return await _trim(ctx, streams, keep_s, keep_len, consumed_only=True)


async def trim_dead_letters(ctx: Context, topic: str, keep_s: float | None, keep_len: int | None) -> int:
    dlq = ctx.keys.dlq(topic)
    return await _trim(ctx, [(dlq, dlq)], keep_s, keep_len, consumed_only=False)


async def _trim(
    ctx: Context,
    streams: list[tuple[str, str]],
    keep_s: float | None,
    keep_len: int | None,
    consumed_only: bool,
) -> int:
    """Trim each (stream, stream whose groups must also have consumed it)."""
    args = [
        -1 if keep_s is None else int(keep_s * 1000),
        -1 if keep_len is None else keep_len,
        "1" if consumed_only else "0",
    ]
    scripts, removed = ctx.scripts, 0
    for key, required in streams:
        removed += int(await scripts.call(scripts.trim, [key, required], args))
    return removed


async def _groups_of(ctx: Context, stream: str) -> list[list[Any]]:
    """XINFO GROUPS as Redis sends it: per group, its fields and values (see pairs)."""
    try:
        return list(await ctx.scripts.call("XINFO GROUPS", [stream], []))
    except ResponseError as exc:
        if "no such key" in str(exc):
            return []
        raise


class Retention(BaseModel):
    """What cleanup keeps of a topic, stored on the topic (None: no limit). `pinned`: set
    with `set_retention`, so what buses declare from their configuration leaves it alone."""

    model_config = ConfigDict(frozen=True)

    keep_s: float | None = None
    keep_len: int | None = None
    dlq_keep_s: float | None = None
    dlq_keep_len: int | None = None
    pinned: bool = False


async def set_retention(ctx: Context, topic: str, wanted: Retention, at_least: bool) -> Retention:
    """Store `wanted` as the topic's retention (pinned), or with `at_least` raise each
    stored limit to at least it, unless pinned; returns what is stored."""
    limits = [_ms(wanted.keep_s), _int(wanted.keep_len), _ms(wanted.dlq_keep_s), _int(wanted.dlq_keep_len)]
    stored = await ctx.scripts.call(
        ctx.scripts.retention, [ctx.keys.retention(topic)], ["at_least" if at_least else "set", *limits]
    )
    return _parsed(topic, stored[0], stored[1:])


async def retention(ctx: Context, topic: str) -> Retention | None:
    """The topic's stored retention; None when nothing is stored."""
    stored = pairs(await ctx.scripts.call("HGETALL", [ctx.keys.retention(topic)], []))
    if not stored:
        return None
    return _parsed(topic, stored.get(b"set"), [stored.get(name.encode()) for name in _FIELDS])


_FIELDS = ("keep_ms", "keep_len", "dlq_keep_ms", "dlq_keep_len")


def _ms(seconds: float | None) -> int:
    return -1 if seconds is None else int(seconds * 1000)


def _int(count: int | None) -> int:
    return -1 if count is None else count


def _parsed(topic: str, pinned: Any, values: list[Any]) -> Retention:
    """A stored value that is no integer (written by hand) counts as no limit: safe."""
    limits: list[int | None] = []
    for name, value in zip(_FIELDS, values, strict=True):
        try:
            number: int | None = int(value) if value is not None else None
        except ValueError:
            log.warning(
                "relaybus: retention %s of topic %r is %r, no integer: taken as no limit", name, topic, value
            )
            number = None
        limits.append(None if number is None or number < 0 else number)
    keep_ms, keep_len, dlq_keep_ms, dlq_keep_len = limits
    return Retention(
        keep_s=None if keep_ms is None else keep_ms / 1000,
        keep_len=keep_len,
        dlq_keep_s=None if dlq_keep_ms is None else dlq_keep_ms / 1000,
        dlq_keep_len=dlq_keep_len,
        pinned=pinned in (b"1", "1"),
    )

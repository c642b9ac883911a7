"""What a topic retains, read and managed: its history, its dead letters (list, replay,
purge) and trimming (only what every group consumed, by age and length)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
from redis.exceptions import ResponseError

from ..errors import DecodeError
from ..keys import lanes_in, validate_group
from ..message import Message, decode, encode
from .context import Context
from .groups import Groups

REPLAY_BATCH = 200
KEPT_NAMED = 10  # undecodable dead letters a replay's warning names by entry id
FOREIGN = "x-dead-undecodable"  # a dead letter that is no message (never replayed): its size and why
FOREIGN_MAX = 300  # characters of that header
log = logging.getLogger("relaybus")


async def history(ctx: Context, groups: Groups, topic: str, limit: int) -> list[Message]:
    """The latest `limit` retained messages of a topic, every lane, oldest first (by entry
    time; within one millisecond by message id); undecodable entries are skipped."""
    keys, redis = ctx.keys, ctx.redis
    lanes = lanes_in(await redis.smembers(keys.lanes(topic)))
    found: list[tuple[int, str, Message]] = []
    for key in [keys.lane(topic, n) for n in [0, *lanes]]:
        for entry_id, fields in await redis.xrevrange(key, count=limit):
            try:
                message = groups.to_message((entry_id, fields), None, key)
            except DecodeError:
                continue
            found.append((int(entry_id.split(b"-")[0]), message.id, message))
    found.sort(key=lambda f: (f[0], f[1]))
    return [message for _, _, message in found[-limit:]]


async def dead_letters(ctx: Context, topic: str, limit: int) -> list[Message]:
    entries = await ctx.redis.xrange(ctx.keys.dlq(topic), count=limit)
    return [dead_letter_message(topic, eid, fields) for eid, fields in entries]


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
        entries = await ctx.redis.xrange(dlq, min=cursor, count=REPLAY_BATCH)
        batch: list[Any] = []
        for eid, fields in entries:
            message = dead_letter_message(topic, eid, fields)
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
        log.warning("%d dead letter(s) of topic %r do not decode: not replayed, they stay in the DLQ "
                    "(listing the dead letters shows why): %s", len(kept), topic, named)
    return replayed


async def purge_dead_letters(ctx: Context, topic: str) -> int:
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.xlen(ctx.keys.dlq(topic))
        pipe.delete(ctx.keys.dlq(topic))
        length, _ = await pipe.execute()
    return int(length)


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
        payload = {"raw": {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()
                           if k in (b"m", b"raw")}}
        why = str(exc)
    size = sum(len(v) for k, v in fields.items() if k in (b"m", b"raw"))
    return Message(id=eid, topic=topic, payload=payload, entry_id=eid,
                   headers={**headers, FOREIGN: f"{size} bytes: {why}"[:FOREIGN_MAX]})


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
    names = [g["name"].decode() for g in await _groups_of(ctx, main)]
    lanes = lanes_in(await ctx.redis.smembers(keys.lanes(topic)))
    # a lane's entries also wait for topic-stream groups that have not read the lane yet
    streams = [(keys.lane(topic, n), main) for n in [0, *lanes]]
    streams += [(keys.retry(topic, g), keys.retry(topic, g)) for g in names]
    return await _trim(ctx, streams, keep_s, keep_len, consumed_only=True)


async def trim_dead_letters(ctx: Context, topic: str, keep_s: float | None, keep_len: int | None) -> int:
    dlq = ctx.keys.dlq(topic)
    return await _trim(ctx, [(dlq, dlq)], keep_s, keep_len, consumed_only=False)


async def _trim(
    ctx: Context, streams: list[tuple[str, str]], keep_s: float | None, keep_len: int | None,
    consumed_only: bool,
) -> int:
    """Trim each (stream, stream whose groups must also have consumed it)."""
    args = [-1 if keep_s is None else int(keep_s * 1000), -1 if keep_len is None else keep_len,
            "1" if consumed_only else "0"]
    scripts, removed = ctx.scripts, 0
    for key, required in streams:
        removed += int(await scripts.call(scripts.trim, [key, required], args))
    return removed


async def _groups_of(ctx: Context, stream: str) -> list[dict[str, Any]]:
    try:
        return list(await ctx.redis.xinfo_groups(stream))
    except ResponseError as exc:
        if "no such key" in str(exc):
            return []
        raise

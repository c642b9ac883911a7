"""The message envelope and its wire codec (see docs/wire-format.md)."""

from __future__ import annotations

import array
import dataclasses
import itertools
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson
import re2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import DecodeError, MessageTooLargeError, RelayBusError
from .keys import validate_topic

WIRE_VERSION = b"1"
# How deep a payload may nest arrays and objects (`[{"a": 1}]` is 2 deep). With the envelope
# around it that is 200 levels: the most pydantic-core, relaybus's decoder, reads. orjson
# writes up to 254, so without this check publish accepted what no reader could decode.
MAX_PAYLOAD_DEPTH = 199
# The header of a dead letter that is no message (docs/wire-format.md): its size and why.
# It is listed, never replayed.
DEAD_UNDECODABLE = "x-dead-undecodable"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> 2 chars


class _IdMaker:
    """ULID-format ids (48-bit ms time + 80 random bits), monotonic within a process.

    Made by the client so a message has its id before Redis answers: an outbox entry
    or a retried publish keeps it, and it doubles as the idempotency key.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_rand = 0
        self._prefix = ""

    def __call__(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                rand = self._last_rand = self._last_rand + 1
                prefix = self._prefix
            else:
                rand = self._last_rand = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
                self._last_ms = ms
                # the first 10 characters are the time's: made once a millisecond
                prefix = self._prefix = "".join([_PAIRS[ms >> shift & 1023] for shift in range(40, -1, -10)])
        p = _PAIRS  # unrolled: a publish's hottest line after the round trip
        return (
            prefix
            + p[rand >> 70 & 1023]
            + p[rand >> 60 & 1023]
            + p[rand >> 50 & 1023]
            + p[rand >> 40 & 1023]
            + p[rand >> 30 & 1023]
            + p[rand >> 20 & 1023]
            + p[rand >> 10 & 1023]
            + p[rand & 1023]
        )


new_id = _IdMaker()
_CROCKFORD_VALUE = {c: n for n, c in enumerate(_CROCKFORD)}


def id_time_ms(message_id: str) -> int:
    """When a relaybus message id was made (ms since the epoch, the client's clock);
    0 for an id not made by relaybus, so a search from it covers everything."""
    try:
        value = 0
        for char in message_id[:10]:
            value = value * 32 + _CROCKFORD_VALUE[char]
    except KeyError:
        return 0
    return value if len(message_id) == 26 else 0


class Message(BaseModel):
    """One message as publishers, handlers, `read`, `history` and the DLQ see it."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=False, allow_inf_nan=False)

    id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    topic: str
    payload: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=0, le=9)
    created_at: float = Field(default_factory=time.time)
    expires_at: float | None = None
    dedup_key: str | None = None
    attempt: int = Field(default=1, ge=1)
    sender: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    # Where this copy was delivered from; not part of the wire envelope.
    entry_id: str | None = Field(default=None, exclude=True)
    group: str | None = Field(default=None, exclude=True)
    # The priority lane an on_publish plugin chose; without one everything is lane 0.
    lane: int = Field(default=0, ge=0, le=9, exclude=True)
    stream_key: str | None = Field(default=None, exclude=True)  # the stream to ack against

    def expired(self, now: float | None = None) -> bool:
        """Whether its `expires_at` has passed.

        Args:
            now: The time to compare with (seconds since the epoch); None: now.
        """
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def payload_json(self, *, sort_keys: bool = False) -> bytes:
        """The payload as JSON, or the error a publish gives a payload JSON cannot carry
        (not serialisable, nested too deep).

        Args:
            sort_keys: object keys sorted: one text for equal payloads, to hash (the
                dedup plugin's `dedup_from_payload`).
        """
        return to_json(self.payload, self.topic, orjson.OPT_SORT_KEYS if sort_keys else 0)


# the fields a publish sets (`model_fields_set` of a message made by `made`)
_MADE_SET = frozenset(
    {
        "topic",
        "payload",
        "headers",
        "priority",
        "created_at",
        "expires_at",
        "dedup_key",
        "sender",
        "correlation_id",
        "reply_to",
    }
)
_set = object.__setattr__


def made(
    topic: str,
    payloads: Sequence[Any],
    created_at: float,
    expires_at: float | None,
    *,
    priority: Any,
    headers: Any,
    dedup_key: Any,
    sender: Any,
    correlation_id: Any,
    reply_to: Any,
) -> list[Message]:
    """The messages of one publish. What the caller gave beside the payloads is validated
    once, by making the first message the usual way, and only when it differs from the
    defaults; the rest - the topic (validated by the caller), ids and times - the bus made
    itself, so each message is set up as `model_construct` would, without its per-field
    Python loop (profiled: validation was a fifth of an awaited publish's CPU)."""
    headers = headers or {}
    if not (
        type(priority) is int
        and priority == 0
        and headers == {}
        and dedup_key is None
        and sender is None
        and correlation_id is None
        and reply_to is None
    ):
        first = Message(
            topic=topic,
            payload=payloads[0] if payloads else None,
            headers=headers,
            priority=priority,
            created_at=created_at,
            expires_at=expires_at,
            dedup_key=dedup_key,
            sender=sender,
            correlation_id=correlation_id,
            reply_to=reply_to,
        )
        priority, headers, dedup_key = first.priority, first.headers, first.dedup_key
        sender, correlation_id, reply_to = first.sender, first.correlation_id, first.reply_to
    messages = []
    for payload in payloads:
        message = object.__new__(Message)
        _set(
            message,
            "__dict__",
            {  # in the fields' order, as validation leaves it
                "id": new_id(),
                "topic": topic,
                "payload": payload,
                "headers": dict(headers),
                "priority": priority,
                "created_at": created_at,
                "expires_at": expires_at,
                "dedup_key": dedup_key,
                "attempt": 1,
                "sender": sender,
                "correlation_id": correlation_id,
                "reply_to": reply_to,
                "entry_id": None,
                "group": None,
                "lane": 0,
                "stream_key": None,
            },
        )
        _set(message, "__pydantic_fields_set__", set(_MADE_SET))
        _set(message, "__pydantic_extra__", None)
        _set(message, "__pydantic_private__", None)
        messages.append(message)
    return messages


# Fields written to the wire; defaults are left out to keep entries small.
_WIRE_DEFAULTS: dict[str, Any] = {
    "headers": {},
    "priority": 0,
    "expires_at": None,
    "dedup_key": None,
    "attempt": 1,
    "sender": None,
    "correlation_id": None,
    "reply_to": None,
}


def _non_finite(value: Any, path: str) -> str | None:
    """Where in `value` a number JSON cannot carry is: a float NaN or infinite (orjson writes
    those as null), an int beyond 64 bits (orjson refuses it)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, int) and not isinstance(value, bool):
        return None if -(1 << 63) <= value < (1 << 64) else path
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # orjson writes these too
        items: Any = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if found := _non_finite(item, f"{path}[{key!r}]"):
            return found
    return None


def encode(message: Message, max_bytes: int | None = None) -> bytes:
    """Envelope JSON for the stream field `m`; refuses payloads that are not JSON. A new
    message (with `max_bytes`: publish, reply, broadcast) must also fit `max_bytes` and nest
    at most MAX_PAYLOAD_DEPTH deep; a decoded one written back (a retry, a dead letter, a
    replay) is as decode read it, so it needs neither check."""
    fields = message.__dict__  # the values as they are; no attribute lookups per field
    body: dict[str, Any] = {
        "id": fields["id"],
        "topic": fields["topic"],
        "payload": fields["payload"],
        "created_at": fields["created_at"],
    }
    for name, default in _WIRE_DEFAULTS.items():
        value = fields[name]
        if value != default:
            body[name] = value
    data = to_json(body, message.topic)
    if b"null" in data and (where := _non_finite(message.payload, "payload")):  # only then walk it
        raise RelayBusError(
            f"{where} of a message for topic {message.topic!r} is not a finite number: "
            "JSON has no NaN or infinity (it would arrive as null)"
        )
    if max_bytes is not None:
        if _too_deep(data):
            raise _depth_error(message.topic)
        if len(data) > max_bytes:
            raise MessageTooLargeError(
                f"message for topic {message.topic!r} is {len(data)} bytes encoded; "
                f"max_message_bytes is {max_bytes}"
            )
    return data


def to_json(value: Any, topic: str, option: int = 0) -> bytes:
    """`value` - a payload of a message for `topic`, or an envelope around one - as JSON
    (orjson `option`s), or the error a publish gives for a payload JSON cannot carry: not
    serialisable, or deeper than orjson writes. Plugins that serialise a payload (dedup)
    call it too, so such a payload gets the same error wherever it is found."""
    try:
        return orjson.dumps(value, option=option)
    except TypeError as exc:
        if str(exc) == _ORJSON_TOO_DEEP:
            raise _depth_error(topic) from None
        raise RelayBusError(f"payload for topic {topic!r} is not JSON-serialisable: {exc}") from None


_ORJSON_TOO_DEEP = "Recursion limit reached"  # what orjson raises past the levels it writes
_NOT_OPENERS = bytes(set(range(256)) - set(b"[{"))
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1 as signed bytes
_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"')


def _too_deep(data: bytes) -> bool:
    """Whether the envelope `data` carries a payload nested deeper than MAX_PAYLOAD_DEPTH.
    Only a text with more '[' and '{' than that can; for that one the brackets outside
    strings are counted, in C (re, translate, accumulate), not by a walk in Python. On the
    text, not the payload: orjson writes tuples as arrays, and its own limit differs
    between releases."""
    if len(data) <= 2 * MAX_PAYLOAD_DEPTH or len(data.translate(None, _NOT_OPENERS)) <= MAX_PAYLOAD_DEPTH:
        return False
    steps = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS).translate(_STEPS)
    return max(itertools.accumulate(array.array("b", steps))) > MAX_PAYLOAD_DEPTH + 1  # + the envelope


def _depth_error(topic: str) -> RelayBusError:
    return RelayBusError(
        f"payload for topic {topic!r} nests deeper than {MAX_PAYLOAD_DEPTH} levels "
        "of arrays and objects, the most a reader decodes (docs/wire-format.md)"
    )


def decode(fields: dict[bytes, bytes] | None, entry_id: str | None, topic: str | None = None) -> Message:
    """A stream entry (or, with no entry id, a broadcast) back into a Message, validated
    once, here; raises DecodeError on anything foreign - including an entry of the
    stream of `topic` whose envelope names another topic."""
    if not fields or fields.get(b"v") != WIRE_VERSION or (raw := fields.get(b"m")) is None:
        raise DecodeError(_not_an_envelope(fields, entry_id))
    try:
        message: Message = _validate_json(raw)  # JSON to model in one pass (pydantic-core)
        if not _LOCAL.isdisjoint(message.model_fields_set):  # fields the reader sets, never the wire
            raise DecodeError(
                f"{_where(entry_id)} does not decode: its envelope sets "
                f"{sorted(_LOCAL & message.model_fields_set)}, which no envelope has"
            )
        # pydantic-core reads NaN, 1e400 and ints past 64 bits where orjson, writing the
        # message again (a retry, a dead letter), could not: refused here, looked for only
        # where the raw text has what such a number needs
        if _SUSPECT.search(raw) and (where := _non_finite(message.payload, "payload")):
            raise DecodeError(f"{_where(entry_id)} does not decode: {where} is a number JSON cannot carry")
        if topic is None:
            validate_topic(message.topic)
        elif message.topic != topic:
            raise DecodeError(
                f"{_where(entry_id)} in a stream of topic {topic!r} names topic {message.topic!r}"
            )
    except ValidationError as exc:
        if any("recursion limit exceeded" in e["msg"] for e in exc.errors(include_url=False)):
            raise DecodeError(
                f"{_where(entry_id)} does not decode: its JSON nests more than "
                f"{MAX_PAYLOAD_DEPTH + 1} levels deep (the envelope and a payload of at "
                f"most {MAX_PAYLOAD_DEPTH}: docs/wire-format.md)"
            ) from None
        raise DecodeError(f"{_where(entry_id)} does not decode: {exc}") from None
    except ValueError as exc:
        raise DecodeError(f"{_where(entry_id)} does not decode: {exc}") from None
    message.__dict__["entry_id"] = entry_id  # not a wire field: nothing to validate
    return message


_validate_json = Message.__pydantic_validator__.validate_json
_LOCAL = frozenset(name for name, field in Message.model_fields.items() if field.exclude)
_SUSPECT = re2.compile(rb"NaN|Infinity|[0-9]{19}|[eE]\+?[0-9]{3}")  # re2: a fifth of re's time


def _where(entry_id: str | None) -> str:
    return f"entry {entry_id}" if entry_id else "broadcast"


def _not_an_envelope(fields: dict[bytes, bytes] | None, entry_id: str | None) -> str:
    if not fields:
        return f"{_where(entry_id)} has no fields (deleted or empty)"
    if fields.get(b"v") != WIRE_VERSION:
        return f"{_where(entry_id)} has wire version {fields.get(b'v')!r}, expected b'1'"
    return f"{_where(entry_id)} has no 'm' field"

"""The envelope, ids, the wire codec and the keyspace, without a server."""

from __future__ import annotations

import json
import math
import re
import time

import orjson
import pytest

from relaybus import DecodeError, Message, MessageTooLargeError, RelayBusError
from relaybus.keys import Keys, is_pattern, validate_pattern, validate_topic
from relaybus.message import MAX_PAYLOAD_DEPTH, decode, encode, id_time_ms, made, new_id


def test_ids_are_unique_sortable_and_ulid_shaped() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 and i.isalnum() and i.isupper() for i in ids[:10])


def test_an_id_carries_the_time_it_was_made_and_counts_up_within_a_millisecond() -> None:
    before = int(time.time() * 1000)
    ids = [new_id() for _ in range(1_000)]
    assert before <= id_time_ms(ids[0]) <= id_time_ms(ids[-1]) <= int(time.time() * 1000)
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    values = [sum(crockford.index(c) << 5 * (25 - n) for n, c in enumerate(i)) for i in ids]
    same_ms = [
        (a, b) for a, b, x, y in zip(values, values[1:], ids, ids[1:], strict=False) if x[:10] == y[:10]
    ]
    assert same_ms and all(b == a + 1 for a, b in same_ms)  # the random part counts up by one


EVERY_FIELD = {
    "priority": 7,
    "headers": {"h": "v"},
    "dedup_key": "d",
    "sender": "s",
    "correlation_id": "c",
    "reply_to": "r",
}
NO_FIELD = dict.fromkeys(EVERY_FIELD) | {"priority": 0}


@pytest.mark.parametrize("fields", [NO_FIELD, EVERY_FIELD, {**NO_FIELD, "headers": {}}])
def test_the_publish_fast_path_makes_what_validation_makes(fields: dict[str, object]) -> None:
    """`made` skips validation of what the bus made: its messages are what the model
    makes from the same fields - the same values, fields set, order and behaviour."""
    fast = made("a.b", [{"n": 1}, [2]], 1.5, 9.5, **fields)
    for message, payload in zip(fast, [{"n": 1}, [2]], strict=True):
        given = {**fields, "headers": fields["headers"] or {}}
        slow = Message(id=message.id, topic="a.b", payload=payload, created_at=1.5, expires_at=9.5, **given)
        assert message == slow and repr(message) == repr(slow)
        assert message.model_fields_set == slow.model_fields_set - {"id"}
        assert message.model_dump() == slow.model_dump() and encode(message) == encode(slow)
        assert message.model_copy(update={"lane": 3}).lane == 3
    assert fast[0].headers is not fast[1].headers  # each its own dict
    fast[0].priority = 9  # assignable, as a validated one is
    assert fast[0].priority == 9 and fast[1].priority == fields["priority"]


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("priority", 10, "less than or equal to 9"),
        ("priority", "high", "valid integer"),
        ("headers", {"h": 1}, "valid string"),
        ("sender", 5, "valid string"),
    ],
)
def test_the_publish_fast_path_still_validates_what_the_caller_gave(
    field: str, value: object, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        made("t", [1], 1.0, None, **{**NO_FIELD, field: value})


def test_codec_round_trip_keeps_every_field() -> None:
    original = Message(
        topic="a.b",
        payload={"x": [1, 2.5, None, "é"]},
        headers={"h": "v"},
        priority=7,
        expires_at=123.5,
        dedup_key="d",
        attempt=3,
        sender="s",
        correlation_id="c",
        reply_to="r",
    )
    decoded = decode({b"v": b"1", b"m": encode(original)}, "1-0")
    assert decoded.model_dump() == original.model_dump()
    assert decoded.entry_id == "1-0"


def test_wire_leaves_defaults_out() -> None:
    body = orjson.loads(encode(Message(topic="t", payload=1)))
    assert set(body) == {"id", "topic", "payload", "created_at"}


@pytest.mark.parametrize(
    "fields",
    [
        None,
        {},
        {b"x": b"y"},
        {b"v": b"2", b"m": b"{}"},
        {b"v": b"1"},
        {b"v": b"1", b"m": b"nope"},
        {b"v": b"1", b"m": b"[1]"},
        {b"v": b"1", b"m": b'{"topic": "t", "priority": 99}'},
        {b"v": b"1", b"m": b'{"topic": "bad topic!"}'},
    ],
)
def test_foreign_entries_raise_decode_error(fields: dict[bytes, bytes] | None) -> None:
    with pytest.raises(DecodeError):
        decode(fields, "9-0")


def test_non_json_payload_is_refused_clearly() -> None:
    with pytest.raises(RelayBusError, match="not JSON-serialisable"):
        encode(Message(topic="t", payload={"s": {1, 2}}))


def test_size_limit() -> None:
    with pytest.raises(MessageTooLargeError, match="max_message_bytes is 100"):
        encode(Message(topic="t", payload="x" * 200), max_bytes=100)


def test_priority_range_is_validated() -> None:
    with pytest.raises(ValueError, match="priority"):
        Message(topic="t", priority=10)


@pytest.mark.parametrize("topic", ["", "a b", "x" * 201, "t*", "t{x}", "a/b"])
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(ValueError, match="invalid topic"):
        validate_topic(topic)


def test_patterns() -> None:
    assert is_pattern("agents.*.events") and not is_pattern("agents.a.events")
    assert validate_pattern("a.?.[bc]") == "a.?.[bc]"
    with pytest.raises(ValueError, match="invalid topic pattern"):
        validate_pattern("a b*")


def test_every_key_of_a_topic_shares_its_hash_tag() -> None:
    keys = Keys("rb")
    topic_keys = [
        keys.stream("o.n"),
        keys.delayed("o.n"),
        keys.dlq("o.n"),
        keys.retry("o.n", "g"),
        keys.dedup("o.n", "k"),
        keys.counters("o.n"),
    ]
    assert all(k.startswith("rb:{o.n}:") for k in topic_keys)
    assert keys.stream("o.n") == "rb:{o.n}:stream"
    with pytest.raises(ValueError, match="invalid prefix"):
        Keys("a{b}")


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (math.nan, "payload "),
        ({"a": [1.0, math.inf]}, "payload['a'][1]"),
        ([{"x": -math.inf}], "payload[0]['x']"),
    ],
)
def test_a_non_finite_float_is_refused_naming_where(payload: object, where: str) -> None:
    with pytest.raises(RelayBusError, match=re.escape(where)):
        encode(Message(topic="t", payload=payload))


def test_none_and_finite_floats_still_encode() -> None:
    assert b'"payload":{"a":null,"b":1.5}' in encode(Message(topic="t", payload={"a": None, "b": 1.5}))


def nested(depth: int, kind: str = "list", leaf: object = 1) -> object:
    """`leaf` inside `depth` levels of `kind` ("mixed": dicts, lists and tuples in turn)."""
    value = leaf
    for level in range(depth):
        kind_here = ("dict", "list", "tuple")[level % 3] if kind == "mixed" else kind
        value = {"dict": lambda v: {"a": v}, "list": lambda v: [v], "tuple": lambda v: (v,)}[kind_here](value)
    return value


@pytest.mark.parametrize("kind", ["list", "dict", "tuple", "mixed"])
def test_the_deepest_payload_a_publish_accepts_decodes_and_one_deeper_is_refused(kind: str) -> None:
    """One limit: a new message (encode with max_bytes) nested MAX_PAYLOAD_DEPTH deep is
    written and decodes unchanged; one level more is refused naming the limit - tuples
    too, which orjson writes without counting them (so a count of its own would miss them)."""
    deepest = Message(topic="t", payload=nested(MAX_PAYLOAD_DEPTH, kind))
    decoded = decode({b"v": b"1", b"m": encode(deepest, max_bytes=1 << 20)}, "1-0", "t")
    assert decoded.payload == orjson.loads(orjson.dumps(deepest.payload))  # tuples come back as lists
    for too_deep in (
        nested(MAX_PAYLOAD_DEPTH + 1, kind),
        nested(MAX_PAYLOAD_DEPTH, kind, leaf=[]),
        nested(2_000, kind),
    ):
        with pytest.raises(RelayBusError, match=f"nests deeper than {MAX_PAYLOAD_DEPTH} levels of arrays"):
            encode(Message(topic="t", payload=too_deep), max_bytes=1 << 20)


def test_a_wide_payload_is_not_a_deep_one() -> None:
    """Many brackets (in strings too) are no depth: a thousand objects in a list encode."""
    wide = [{"text": "[[[{{{" * 50, "n": [i]} for i in range(1_000)]
    data = encode(Message(topic="t", payload=wide), max_bytes=1 << 20)
    assert decode({b"v": b"1", b"m": data}, "1-0").payload == wide


def test_an_envelope_deeper_than_a_reader_decodes_is_refused_naming_the_limit() -> None:
    deep = json.dumps({"id": "x", "topic": "t", "created_at": 1, "payload": nested(MAX_PAYLOAD_DEPTH + 1)})
    with pytest.raises(DecodeError, match=f"nests more than {MAX_PAYLOAD_DEPTH + 1} levels deep"):
        decode({b"v": b"1", b"m": deep.encode()}, "1-0", "t")


def test_what_a_reader_decodes_is_written_back_whatever_its_depth() -> None:
    """A retry, a dead letter, a replay re-encode (no max_bytes) what decode read: the
    decoder reads an empty array one level past the limit, and that is written back too."""
    payload = nested(MAX_PAYLOAD_DEPTH, leaf=[])
    raw = json.dumps({"id": "x", "topic": "t", "created_at": 1, "payload": payload})
    message = decode({b"v": b"1", b"m": raw.encode()}, "1-0", "t")
    assert decode({b"v": b"1", b"m": encode(message)}, "1-0", "t").payload == message.payload

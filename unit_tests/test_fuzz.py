"""Fuzzing the pure logic with hypothesis: arbitrary input causes no crash, only the
documented errors, and nothing is written that cannot be read back.

Each property test states its property in its docstring. Inputs that broke a property
when it was written (and were fixed) have a test of their own next to it, with the
exact minimal input.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from relaybus import BusConfig, ConfigError, DecodeError, Message, RelayBusError
from relaybus._cli_common import parse_headers, parse_json
from relaybus.adapters._tools import Allowlist, TopicNotAllowedError
from relaybus.adapters.langchain import HistoryArgs, PublishArgs, ReadArgs, StatsArgs
from relaybus.arguments import choice, count, ids, seconds
from relaybus.errors import FilterError
from relaybus.keys import (
    PATTERN_RE,
    PREFIX_RE,
    TOPIC_RE,
    Keys,
    lanes_in,
    registered_topics,
    validate_group,
    validate_pattern,
    validate_topic,
)
from relaybus.message import WIRE_VERSION, decode, encode
from relaybus.redact import redact_url
from relaybus_plugins.filters import ROOTS, compile_filter

FUZZ = settings(max_examples=200, deadline=None)

# -- strategies -------------------------------------------------------------------------

TOPIC_ALPHABET = "ABCXYZabcxyz0189._:-"  # a sample of keys.TOPIC_RE's alphabet, all its punctuation
NEAR_TOPIC_ALPHABET = TOPIC_ALPHABET + "{}*?[] /\n\t\x00é😀"  # ...and what must be refused
INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson writes (JSON has no limit)

json_scalars = st.one_of(
    st.none(), st.booleans(), INT64, st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)
topics = st.text(TOPIC_ALPHABET, min_size=1, max_size=200)
near_topics = st.one_of(st.text(NEAR_TOPIC_ALPHABET, max_size=210), st.text(max_size=20))
anything = st.one_of(
    json_values,
    st.binary(max_size=8),
    st.floats(),
    st.tuples(st.integers()),
    st.sets(st.integers(), max_size=2),
)


def fields_of(data: bytes) -> dict[bytes, bytes]:
    """The stream entry relaybus writes for an encoded envelope."""
    return {b"v": WIRE_VERSION, b"m": data}


def json_kind(value: Any) -> Any:
    """The value with each number tagged by its type: 1 and 1.0 compare unequal."""
    if isinstance(value, list):
        return ["list", [json_kind(v) for v in value]]
    if isinstance(value, dict):
        return ["dict", {k: json_kind(v) for k, v in value.items()}]
    return [type(value).__name__, value]


# -- 1. the wire codec ------------------------------------------------------------------


@FUZZ
@given(
    payload=json_values,
    topic=topics,
    priority=st.integers(0, 9),
    headers=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
def test_codec_round_trips_any_json_payload(
    payload: Any, topic: str, priority: int, headers: dict[str, str]
) -> None:
    """Any JSON payload (finite floats, 64-bit ints), any valid topic, priority 0-9 and text
    headers survive encode then decode unchanged, number types included."""
    original = Message(topic=topic, payload=payload, priority=priority, headers=headers)
    decoded = decode(fields_of(encode(original)), "1-0", topic)
    assert (decoded.id, decoded.topic, decoded.priority, decoded.headers) == (
        original.id,
        topic,
        priority,
        headers,
    )
    assert decoded.payload == payload
    assert json_kind(decoded.payload) == json_kind(payload)
    assert decoded.entry_id == "1-0"


NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
poisoned = st.recursive(
    NON_FINITE,
    lambda inner: st.one_of(
        st.tuples(st.lists(json_values, max_size=2), inner, st.lists(json_values, max_size=2)).map(
            lambda t: [*t[0], t[1], *t[2]]
        ),
        st.tuples(
            st.dictionaries(st.text(max_size=4), json_values, max_size=2), st.text(max_size=4), inner
        ).map(lambda t: {**t[0], t[1]: t[2]}),
        st.tuples(inner, json_values).map(tuple),
    ),
    max_leaves=6,
)


@FUZZ
@given(payload=poisoned, topic=topics)
def test_non_finite_floats_are_refused_not_written_as_null(payload: Any, topic: str) -> None:
    """A NaN or infinity anywhere in a payload raises RelayBusError; orjson would write null."""
    with pytest.raises(RelayBusError, match="not a finite number"):
        encode(Message(topic=topic, payload=payload))


@dataclasses.dataclass
class _Point:
    x: float


def test_non_finite_float_inside_a_dataclass_payload_is_refused() -> None:
    """Minimal input: payload=_Point(x=nan) is encoded as {"x":null} instead of raising."""
    with pytest.raises(RelayBusError, match="not a finite number"):
        encode(Message(topic="t", payload=_Point(math.nan)))


# -- 2. decoding whatever is in a stream ------------------------------------------------

ENVELOPE_KEYS = [
    "id",
    "topic",
    "payload",
    "created_at",
    "headers",
    "priority",
    "expires_at",
    "dedup_key",
    "attempt",
    "sender",
    "correlation_id",
    "reply_to",
]
envelope_values = st.one_of(json_values, topics, st.integers(-2, 12), st.floats(0, 2e9))
# well-formed envelopes as another client might write them, some with a key changed or added
good_envelopes = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=64),
        "topic": st.sampled_from(["t", "tasks.review", "bad topic"]),
        "created_at": st.one_of(st.floats(0, 2e9), st.integers(0, 2**40)),
    },
    optional={
        "payload": json_values,
        "headers": st.dictionaries(st.text(max_size=3), st.text(max_size=3)),
        "priority": st.integers(-1, 10),
        "expires_at": st.none() | st.floats(0, 2e9),
        "dedup_key": st.none() | st.text(max_size=4),
        "attempt": st.integers(0, 5),
        "sender": st.none() | st.text(max_size=4),
        "reply_to": st.none() | topics,
    },
)
good_envelopes = st.one_of(
    good_envelopes,
    st.tuples(
        good_envelopes, st.one_of(st.sampled_from(ENVELOPE_KEYS), st.text(max_size=4)), envelope_values
    ).map(lambda t: {**t[0], t[1]: t[2]}),
)
envelopes = st.one_of(
    good_envelopes,
    good_envelopes,
    st.dictionaries(st.sampled_from(ENVELOPE_KEYS) | st.text(max_size=4), envelope_values),
).map(orjson.dumps)
raw_values = st.one_of(
    st.binary(max_size=40), envelopes, envelopes, envelopes.map(lambda b: b[: len(b) // 2])
)  # cut short
raw_fields = st.one_of(
    st.dictionaries(st.sampled_from([b"v", b"m", b"x", b""]) | st.binary(max_size=3), raw_values, max_size=4),
    st.builds(lambda m, v: {b"v": v, b"m": m}, raw_values, st.sampled_from([b"1", b"1", b"2", b"", b"1 "])),
    st.builds(
        lambda m, extra: {**extra, b"v": b"1", b"m": m},
        raw_values,
        st.dictionaries(st.binary(max_size=3), st.binary(max_size=3), max_size=2),
    ),
)
stream_topics = st.one_of(st.none(), st.sampled_from(["t", "tasks.review"]), topics)
# (fields, the topic of the stream they were read from; None: a broadcast)
stream_entries = st.one_of(
    st.tuples(st.none() | raw_fields, stream_topics),
    good_envelopes.flatmap(
        lambda e: st.tuples(st.just(fields_of(orjson.dumps(e))), st.sampled_from([e["topic"], None]))
    ),
)


@FUZZ
@given(entry=stream_entries, entry_id=st.one_of(st.none(), st.text(max_size=8)))
def test_any_stream_entry_decodes_or_raises_decode_error(
    entry: tuple[dict[bytes, bytes] | None, str | None], entry_id: str | None
) -> None:
    """Arbitrary entry fields (and arbitrary b"m" bytes under b"v": b"1") decode to a
    Message of the stream's topic or raise DecodeError, nothing else; what decodes is
    written back (a retry, a dead letter) as an envelope that decodes to the same message."""
    fields, topic = entry
    try:
        message = decode(fields, entry_id, topic)
    except DecodeError:
        return
    assert isinstance(message, Message) and message.entry_id == entry_id
    assert message.topic == topic if topic is not None else TOPIC_RE.fullmatch(message.topic)
    again = decode(fields_of(encode(message)), entry_id, message.topic)
    assert again.model_dump() == message.model_dump()


@pytest.mark.parametrize(
    "envelope",
    [
        b'{"id":"x","topic":"t","created_at":0,"payload":18446744073709551616}',  # 2**64: valid JSON
        b'{"id":"x","topic":"t","created_at":0,"payload":1e400}',  # valid JSON, parsed as inf
        b'{"id":"x","topic":"t","created_at":0,"payload":NaN}',  # not JSON at all, yet decoded
        b'{"id":"x","topic":"t","created_at":1e400}',  # re-encoded as "created_at":null: undecodable
    ],
    ids=["int-2**64", "payload-1e400", "payload-NaN", "created_at-1e400"],
)
def test_what_decodes_can_be_written_back(envelope: bytes) -> None:
    """Expected: decode raises DecodeError (then the entry is dead-lettered raw), or the
    decoded message re-encodes to an envelope that decodes again."""
    try:
        message = decode(fields_of(envelope), "1-0", "t")
    except DecodeError:
        return
    assert decode(fields_of(encode(message)), "1-0", "t").model_dump() == message.model_dump()


# -- 3. names ---------------------------------------------------------------------------


@FUZZ
@given(text=st.one_of(near_topics, st.integers(), st.none(), st.binary(max_size=4)))
def test_name_validators_return_the_name_or_raise_value_error(text: Any) -> None:
    """validate_topic/validate_pattern/validate_group return their argument or raise
    ValueError; an accepted topic matches TOPIC_RE and has no '{' or '}' (the hash tag)."""
    for validate, regex in (
        (validate_topic, TOPIC_RE),
        (validate_pattern, PATTERN_RE),
        (validate_group, PREFIX_RE),
    ):
        try:
            assert validate(text) is text
        except ValueError:
            assert not isinstance(text, str) or not regex.fullmatch(text)
            continue
        assert isinstance(text, str) and regex.fullmatch(text)
        if validate is not validate_pattern:
            assert "{" not in text and "}" not in text and 1 <= len(text) <= 200


@FUZZ
@given(prefix=near_topics, topic=topics)
def test_keys_hash_tag_is_the_topic(prefix: str, topic: str) -> None:
    """Keys(prefix) is built or raises ValueError; every key of a valid topic starts with
    the prefix and carries exactly the topic as its hash tag."""
    try:
        keys = Keys(prefix)
    except ValueError:
        assert not PREFIX_RE.fullmatch(prefix)
        return
    for key in (
        keys.stream(topic),
        keys.lane(topic, 3),
        keys.retry(topic, "g"),
        keys.dlq(topic),
        keys.delayed(topic),
        keys.wake(topic),
        keys.channel(topic),
    ):
        assert key.startswith(prefix + ":") and key.count("{") == key.count("}") == 1
        assert Keys.topic_of(key) == topic


# -- 4. what Redis sets hold ------------------------------------------------------------

members = st.lists(
    st.one_of(
        st.binary(max_size=12),
        topics.map(str.encode),
        near_topics.map(str.encode),
        st.sampled_from([b"0", b"1", b"9", b"10", b" 1", b"01", b"\xff"]),
    ),
    max_size=12,
)


@FUZZ
@given(members=members)
def test_registry_and_lane_members_never_raise(members: list[bytes]) -> None:
    """registered_topics() keeps exactly the members that are topic names (sorted, once);
    lanes_in() keeps exactly the lanes 1-9; neither raises on anything else."""
    names = registered_topics(members)
    assert names == sorted(set(names))
    assert all(TOPIC_RE.fullmatch(n) and validate_topic(n) for n in names)
    assert set(names) == {m.decode() for m in members if TOPIC_RE.fullmatch(m.decode(errors="replace"))}
    lanes = lanes_in(members)
    assert lanes == sorted(lanes) and all(type(n) is int and 1 <= n <= 9 for n in lanes)
    assert lanes == sorted(int(m) for m in members if m in {str(n).encode() for n in range(1, 10)})


# -- 5. filters -------------------------------------------------------------------------

OPERATORS = [
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$all",
    "$exists",
    "$size",
    "$regex",
    "$options",
    "$not",
    "$where",
]
field_paths = st.one_of(
    st.sampled_from(sorted(ROOTS)),
    st.builds(
        lambda root, rest: ".".join([root, *rest]),
        st.sampled_from(["payload", "headers", "id", "nope"]),
        st.lists(st.sampled_from(["a", "b", "0", "1", "", "²"]), max_size=3),
    ),
    st.text(max_size=8),
)
operands = st.one_of(json_values, st.sampled_from(["^a", "b$", "(a", r"(a)\1", "ims", "x", "[", "\\"]))
conditions = st.recursive(
    st.one_of(operands, st.dictionaries(st.sampled_from(OPERATORS), operands, max_size=3)),
    lambda inner: st.dictionaries(st.sampled_from(OPERATORS), inner, min_size=1, max_size=2),
    max_leaves=6,
)
filter_specs = st.recursive(
    st.dictionaries(
        st.one_of(field_paths, st.sampled_from(["$and", "$or", "$nor", "$not"])), conditions, max_size=3
    ),
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(["$and", "$or", "$nor"]), st.lists(inner, max_size=3), max_size=2),
        st.builds(lambda spec: {"$not": spec}, inner),
    ),
    max_leaves=8,
)
documents = st.builds(
    Message,
    topic=topics,
    payload=json_values,
    priority=st.integers(0, 9),
    headers=st.dictionaries(st.sampled_from(["a", "b", "tenant"]), st.text(max_size=4), max_size=2),
    sender=st.none() | st.text(max_size=4),
    expires_at=st.none() | st.floats(0, 2e9),
)


@FUZZ
@given(spec=st.one_of(filter_specs, json_values), messages=st.lists(documents, min_size=1, max_size=3))
def test_filter_specs_compile_or_raise_filter_error_and_matchers_never_raise(
    spec: Any, messages: list[Message]
) -> None:
    """Any JSON-like spec compiles or raises FilterError (a ValueError); a compiled filter
    returns a bool for any message with a JSON payload and never raises."""
    try:
        test = compile_filter(spec)
    except FilterError as exc:
        assert isinstance(exc, ValueError) and str(exc).startswith("invalid filter at ")
        return
    for message in messages:
        assert type(test(message)) is bool


def _nested(depth: int, leaf: Any, wrap: Any) -> Any:
    for _ in range(depth):
        leaf = wrap(leaf)
    return leaf


@pytest.mark.parametrize(
    "spec",
    [
        {"payload": {"$size": math.inf}},  # OverflowError: cannot convert float infinity to integer
        {"payload": {"$size": math.nan}},  # ValueError: cannot convert float NaN to integer
        {"payload." + "1" * 4301: 1},  # ValueError: Exceeds the limit (4300 digits) for integer string
        {"payload": _nested(2000, {"$gt": 1}, lambda c: {"$not": c})},  # RecursionError: depth unbounded
        {"payload": _nested(2000, 1, lambda v: [v])},  # RecursionError in the JSON check of $eq
        {"payload": {"$regex": "\ud800"}},  # UnicodeEncodeError from re2 (a lone surrogate)
    ],
    ids=[
        "size-inf",
        "size-nan",
        "4301-digit-path-segment",
        "2000-deep-field-not",
        "2000-deep-eq-value",
        "regex-lone-surrogate",
    ],
)
def test_bad_filter_specs_raise_filter_error(spec: Any) -> None:
    """Expected: FilterError naming the problem, as for every other malformed spec."""
    with pytest.raises(FilterError):
        compile_filter(spec)


def test_nesting_bound_covers_field_level_not() -> None:
    """Minimal input: {"payload": {"$not": {"$not": ... {"$gt": 1}}}} with 40 $not levels
    compiles; the same depth of top-level $and raises FilterError 'nested deeper than 32'."""
    with pytest.raises(FilterError, match="nested deeper than 32"):
        compile_filter({"payload": _nested(40, {"$gt": 1}, lambda c: {"$not": c})})


# -- 6. configuration -------------------------------------------------------------------

NUMERIC_FIELDS = [
    "claim_idle_ms",
    "max_attempts",
    "retry_backoff_s",
    "max_connections",
    "socket_timeout",
    "min_replicas_acked",
]
numbers = st.one_of(
    st.integers(2, 10**6),
    st.floats(0.5, 100),
    st.integers(2, 10**6),
    st.floats(0.5, 100),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.integers(-5, 300).map(str),
    st.lists(st.integers(), max_size=1),
)
PASSWORD_LETTERS = "abcdefghijklmnopqrstuvwxyzQRSTUVWXYZ"
passwords = st.text(PASSWORD_LETTERS, min_size=6, max_size=12).map(lambda s: "Pw" + s)
# No 'P' anywhere else, so the password cannot appear in an output except as itself. No
# character whose NFKC form holds one of '/?#@:' either: that case is the test below.
URL_CHARS = "abcxyzABCXYZ019.-_:/@?#=,[]%+ é\u00a0ﬁ"


def mostly(usual: list[str], odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """One of the usual strings three times in four, else the odd strategy's."""
    return st.one_of(st.sampled_from(usual), st.sampled_from(usual), st.sampled_from(usual), odd)


schemes = mostly(
    ["redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"],
    st.one_of(st.sampled_from(["http", ""]), st.text("rdis+", max_size=8)),
)
hosts = mostly(
    ["localhost", "127.0.0.1", "[::1]", "example.com", "h1:1,h2:2"], st.text(URL_CHARS, max_size=12)
)
ports = mostly(
    ["", ":6379"], st.one_of(st.sampled_from([":0", ":99999", ":x", ":"]), st.text(URL_CHARS, max_size=4))
)
tails = mostly(
    ["", "/0", "/2", "/svc", "/svc/1"],
    st.one_of(st.sampled_from(["/svc/x", "?db=1", "?password=x", "#f"]), st.text(URL_CHARS, max_size=12)),
)
users = st.one_of(st.just(""), st.text("abcxyzQRS019._-", max_size=6))


@st.composite
def urls_with_password(draw: st.DrawFn) -> tuple[str, str]:
    password = draw(passwords)
    url = f"{draw(schemes)}://{draw(users)}:{password}@{draw(hosts)}{draw(ports)}{draw(tails)}"
    return url, password


def _assert_no_password(password: str, *outputs: str) -> None:
    for output in outputs:
        assert password not in output


@FUZZ
@given(
    numeric=st.dictionaries(st.sampled_from(NUMERIC_FIELDS), numbers, max_size=2),
    url=st.one_of(st.text(max_size=40), urls_with_password()),
    allow_insecure=st.booleans(),
)
def test_config_builds_or_raises_config_error_and_never_shows_a_password(
    numeric: dict[str, Any], url: str | tuple[str, str], allow_insecure: bool
) -> None:
    """BusConfig.build with arbitrary numeric fields and URL text builds or raises
    ConfigError, nothing else; a URL's password is in neither repr/str(config), its
    model_dump_json(), redact_url(url) nor str(ConfigError)."""
    url, password = url if isinstance(url, tuple) else (url, None)
    try:
        config = BusConfig.build(url=url, allow_insecure=allow_insecure, **numeric)
    except ConfigError as exc:
        if password is not None:
            _assert_no_password(password, str(exc), repr(exc))
        return
    for name, value in numeric.items():
        assert getattr(config, name) == value or getattr(config, name) == type(getattr(config, name))(value)
    if password is not None:
        assert config.password is not None
        _assert_no_password(
            password,
            repr(config),
            str(config),
            config.model_dump_json(),
            str(config.model_dump()),
            redact_url(url),
        )


def test_password_not_shown_for_a_url_urlsplit_refuses() -> None:
    """Minimal input: url='redis://:Pwabcdef@\\uff20' (FULLWIDTH COMMERCIAL AT, NFKC '@').
    Observed: ConfigError "... netloc ':Pwabcdef@\\uff20' contains invalid characters under
    NFKC normalization", and redact_url raises ValueError with the same text. Expected: the
    problem named without the password."""
    url = "redis://:Pwabcdef@\uff20"
    with pytest.raises(ConfigError) as caught:
        BusConfig.build(url=url)
    assert "Pwabcdef" not in str(caught.value)
    try:
        assert "Pwabcdef" not in redact_url(url)
    except ValueError as exc:
        assert "Pwabcdef" not in str(exc)


# -- 7. argument checks -----------------------------------------------------------------

# Ints beyond float range are the test below; everything else of every type is fair game.
argument_values = st.one_of(
    anything,
    st.integers(-(2**1000), 2**1000),
    st.floats(),
    st.none(),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=3),
    st.text(max_size=4),
)


@FUZZ
@given(
    value=argument_values,
    positive=st.booleans(),
    at_most=st.floats(min_value=0),
    least=st.integers(-3, 3),
    allowed=st.lists(st.text(max_size=3), max_size=3),
)
def test_argument_checks_return_or_raise_value_or_type_error(
    value: Any, positive: bool, at_most: float, least: int, allowed: list[str]
) -> None:
    """arguments.seconds/count/choice/ids return a checked value or raise ValueError or
    TypeError (and only for input that is indeed wrong), for any input of any type."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    try:
        got = seconds("s", value, positive=positive, at_most=at_most)
        assert type(got) is float and math.isfinite(got) and 0 <= got <= at_most and (got > 0 or not positive)
    except TypeError as exc:
        assert not number and str(exc).startswith("s must be")
    except ValueError as exc:
        assert number and str(exc).startswith("s must be")
    whole = type(value) is int
    try:
        assert count("n", value, least=least) == value >= least and whole
    except TypeError:
        assert not whole
    except ValueError:
        assert whole and value < least
    for options in (allowed, [*allowed, value] if isinstance(value, str) else allowed):
        try:
            assert choice("c", value, options) in options
        except ValueError:
            assert value not in options
    try:
        got_ids = ids("i", value)
        assert got_ids is None or (all(isinstance(i, str) for i in got_ids) and not isinstance(value, str))
    except TypeError:
        assert value is not None


def test_seconds_refuses_a_huge_int_with_value_error() -> None:
    """Minimal input: seconds('ttl', 2**1024). Observed: OverflowError 'int too large to
    convert to float'. Expected: ValueError 'ttl must be a finite number of seconds ...'."""
    with pytest.raises(ValueError, match="ttl"):
        seconds("ttl", 2**1024)


# -- 8. the CLI's payload and header arguments ------------------------------------------

cli_texts = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=30),  # lone surrogates: undecodable argv bytes
    json_values.map(lambda v: orjson.dumps(v).decode()),
    json_values.map(lambda v: orjson.dumps(v).decode()[:-1]),
    st.sampled_from(["NaN", "Infinity", "1e400", "-1e400", "1" * 30, "[" * 2000, "", " ", "{'a': 1}"]),
)


@FUZZ
@given(text=cli_texts, topic=topics)
def test_cli_payload_parses_or_raises_value_error_and_is_publishable(text: str, topic: str) -> None:
    """parse_json (the CLI's payload argument) returns a value or raises ValueError naming
    the argument; a payload it accepts is one encode() writes and decodes unchanged."""
    try:
        payload = parse_json(text, "the payload")
    except ValueError as exc:
        assert str(exc).startswith("the payload is not valid JSON")
        return
    message = Message(topic=topic, payload=payload)
    assert decode(fields_of(encode(message)), None, topic).payload == payload


@FUZZ
@given(pairs=st.one_of(st.none(), st.lists(st.text("ab=c\n", max_size=6) | st.text(max_size=6), max_size=4)))
def test_cli_headers_parse_or_raise_value_error(pairs: list[str] | None) -> None:
    """parse_headers returns key=value pairs (non-empty keys) or raises ValueError."""
    try:
        headers = parse_headers(pairs)
    except ValueError as exc:
        assert "invalid --header" in str(exc)
        return
    assert all(key and f"{key}={value}" in (pairs or []) for key, value in headers.items())


# -- 9. agent tools ---------------------------------------------------------------------

TOOL_ARGS: list[type[BaseModel]] = [PublishArgs, ReadArgs, HistoryArgs, StatsArgs]
tool_inputs = st.dictionaries(
    st.one_of(
        st.sampled_from(["topic", "payload", "priority", "group", "count", "wait_seconds", "limit"]),
        st.text(max_size=5),
    ),
    st.one_of(json_values, st.floats(), st.sampled_from(["3", "1.5", "tasks.review", "", "nan"])),
    max_size=5,
)


@FUZZ
@given(args=tool_inputs)
def test_agent_tool_arguments_validate_or_raise_validation_error(args: dict[str, Any]) -> None:
    """The LangChain tools' argument models (the same Annotated types as the MCP tools')
    validate any dict or raise pydantic's ValidationError; what validates is in range."""
    for model in TOOL_ARGS:
        try:
            parsed = model.model_validate(args)
        except ValidationError:
            continue
        values = parsed.model_dump()
        assert 0 <= values.get("priority", 0) <= 9
        assert 1 <= values.get("count", 1) <= 100 and 0 <= values.get("wait_seconds", 0) <= 30
        assert 1 <= values.get("limit", 1) <= 200


@FUZZ
@given(patterns=st.one_of(st.none(), st.lists(near_topics, max_size=3)), topic=near_topics)
def test_allowlist_admits_only_valid_allowed_topics(patterns: list[str] | None, topic: str) -> None:
    """Allowlist(patterns) is built or raises ValueError; check(topic) returns a valid topic
    the list allows, or raises ValueError (bad name) or TopicNotAllowedError."""
    try:
        allow = Allowlist(patterns)
    except ValueError:
        assert patterns is not None and not all(PATTERN_RE.fullmatch(p) for p in patterns)
        return
    try:
        assert allow.check(topic) == topic
    except TopicNotAllowedError:
        assert TOPIC_RE.fullmatch(topic) and not allow.allows(topic)
        return
    except ValueError:
        assert not TOPIC_RE.fullmatch(topic)
        return
    assert TOPIC_RE.fullmatch(topic) and allow.allows(topic)
    assert patterns is None or any(p == topic or "*" in p or "?" in p or "[" in p for p in patterns)


def test_allowlist_refuses_a_plain_string() -> None:
    """Minimal input: Allowlist("tasks.*"). Observed: patterns ['t','a','s','k','s','.','*'],
    so allows("admin.secrets") is True. Expected: TypeError (as arguments.ids does for a
    string), or the string taken as one pattern; never every topic."""
    try:
        allow = Allowlist("tasks.*")
    except TypeError:
        return
    assert not allow.allows("admin.secrets")

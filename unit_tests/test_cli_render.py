"""The CLI's pure helpers: argument parsing and what people see."""

from __future__ import annotations

import orjson
import pytest
from rich.console import Console

from relaybus import Message
from relaybus._cli_common import one_line, parse_headers, parse_json
from relaybus._cli_render import age, clock, dead_letters_view, message_line, payload_text, size, stats_view
from relaybus.engine.retained import FOREIGN
from relaybus.stats import BusStats, GroupStats, MemoryStats, ServerStats, TopicStats


def rendered(thing: object, width: int = 80) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(thing)
    return console.export_text()


def test_parse_json_and_headers() -> None:
    assert parse_json('{"a": [1, null]}', "the payload") == {"a": [1, None]}
    with pytest.raises(ValueError, match="the payload is not valid JSON"):
        parse_json("{a: 1}", "the payload")
    assert parse_headers(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in ("novalue", "=v"):
        with pytest.raises(ValueError, match="use key=value"):
            parse_headers([bad])


def test_one_line_joins_a_multi_line_error() -> None:
    assert one_line(ValueError("two\n  lines ")) == "two lines"
    assert one_line(TimeoutError()) == "TimeoutError"


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB"), (3 * 1024**4, "3072.0 GiB")],
)
def test_size(n: int, text: str) -> None:
    assert size(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (0.25, "0.2s"), (90, "1.5m"), (7200, "2.0h"), (86_400 * 3, "3.0d")]
)
def test_age(seconds: float | None, text: str) -> None:
    assert age(seconds) == text


def test_payload_text_is_compact_json_cut_to_width() -> None:
    assert payload_text({"a": 1}) == '{"a":1}'
    assert payload_text("x" * 50, 10) == '"xxxxxxxx…'


def test_message_line_shows_what_is_unusual() -> None:
    plain = message_line(Message(topic="t", payload=[1])).plain
    assert plain.endswith(" t " + plain.split()[3] + " [1]")
    unusual = message_line(Message(topic="t", payload=1, priority=4, attempt=2, headers={"k": "v"})).plain
    assert "priority=4 attempt=2 k=v 1" in unusual


def test_stats_view() -> None:
    memory = MemoryStats(used_memory=2048, maxmemory=0, maxmemory_policy="noeviction", pressure=None)
    group = GroupStats(name="workers", consumers=2, pending=3, lag=None, oldest_pending_age_s=75)
    topic = TopicStats(
        topic="orders.new",
        length=10,
        lanes={0: 10},
        delayed=1,
        dlq_length=2,
        memory_bytes=4096,
        groups=[group],
        counts={"expired": 4, "dropped": 1},
    )
    server = ServerStats(
        redis_version="7.2.4",
        server_name="valkey",
        server_version="9.1.2",
        connected_clients=5,
        memory=memory,
    )
    # built without validation: the view reads only these fields, whatever else BusStats grows
    stats = BusStats.model_construct(prefix="p", topics=[topic], server=server, recommendations=["do X"])
    text = rendered(stats_view(stats))
    assert "orders.new" in text and "4.0 KiB" in text and "4/0/1" in text
    assert "workers" in text and "1.2m" in text and " ? " in text  # unknown lag
    assert "Valkey 9.1.2, 5 clients, 2.0 KiB used (no maxmemory)" in text and "! do X" in text
    empty = BusStats.model_construct(prefix="p", topics=[], server=server, recommendations=[])
    assert "no topics under this prefix" in rendered(stats_view(empty))


def test_dead_letters_view_fits_80_columns() -> None:
    dead = Message(
        topic="t",
        payload={"n": 1},
        headers={
            "x-dead-reason": "rejected",
            "x-dead-error-type": "Reject",
            "x-dead-error": "bad input",
            "x-dead-group": "g",
            "x-dead-attempts": "3",
            "x-dead-dead-at": "1700000000.5",
        },
    )
    text = rendered(dead_letters_view("t", [dead]))
    assert dead.id in text and "group g, attempt 3" in text and "rejected: Reject: bad input" in text
    assert max(len(line) for line in text.splitlines()) <= 80


MARKUP = ["[/]", "[bold red]x", ":smile:", "[link=http://x]y[/link]"]


@pytest.mark.parametrize("text", MARKUP)
def test_values_from_redis_are_shown_as_written(text: str) -> None:
    """An id, a topic, a header, a group name, a reason another client wrote: text, never
    markup or an emoji code (`[/]` made tail and dlq list fail)."""
    message = Message(id=text, topic="t", payload=text, headers={text: text})
    assert f"t {text} {text}={text} {orjson.dumps(text).decode()}" in message_line(message).plain
    dead = Message(
        id=text,
        topic="t",
        payload=1,
        headers={"x-dead-reason": text, "x-dead-group": text, "x-dead-dead-at": text, FOREIGN: text},
    )
    shown = rendered(dead_letters_view("t", [dead]), width=200)
    assert shown.count(text) == 5  # id, reason, group, time, why it is no message
    assert f"group {text}, attempt ?" in shown and f"not replayable ({text})" in shown
    group = GroupStats(name=text, consumers=1, pending=0, lag=0, oldest_pending_age_s=None)
    topic = TopicStats(
        topic="t", length=1, lanes={0: 1}, delayed=0, dlq_length=0, memory_bytes=1, groups=[group], counts={}
    )
    server = ServerStats(
        redis_version=text,
        server_name="redis",
        server_version=text,
        connected_clients=1,
        memory=MemoryStats(used_memory=1, maxmemory=0, maxmemory_policy=text, pressure=None),
    )
    stats = BusStats.model_construct(prefix="p", topics=[topic], server=server, recommendations=[text])
    for width in (200, 30):  # tables, and the narrow list
        assert rendered(stats_view(stats), width).count(text) >= 4, width


@pytest.mark.parametrize("when", [1e17, -1e17, 1e300, 253402300800.0 * 1e6])
def test_a_time_no_calendar_has_is_shown_as_the_number(when: float) -> None:
    assert clock(when) == str(when)
    assert message_line(Message(topic="t", payload=1, created_at=when)).plain.startswith(f"{when} t ")


@pytest.mark.parametrize("dead_at", ["1e17", "nan", "inf", "soon"])
def test_a_dead_letter_time_no_calendar_has_is_shown_as_written(dead_at: str) -> None:
    dead = Message(topic="t", payload=1, headers={"x-dead-dead-at": dead_at})
    assert dead_at in rendered(dead_letters_view("t", [dead]), width=120)


def test_a_time_is_local_with_milliseconds() -> None:
    assert clock(0.25).endswith(".250") and len(clock(0.25)) == len("1970-01-01 00:00:00.250")

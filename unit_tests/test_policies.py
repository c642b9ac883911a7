"""Pure policy logic of the built-in plugins."""

from __future__ import annotations

import pytest

from relaybus import BusConfig, FailureDecision, Message, RelayBusError
from relaybus.message import MAX_PAYLOAD_DEPTH, encode
from relaybus_plugins import dedup, dlq, priority


class FakeBus:
    def __init__(self, **fields: object) -> None:
        self.config = BusConfig.build(**fields)


def test_backoff_doubles_is_capped_and_jittered() -> None:
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)]:
        delays = [dlq.backoff(attempt, 1.0, 30.0) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full / 10  # jittered, not a constant


def test_dlq_retries_until_max_attempts_then_dead_letters() -> None:
    bus = FakeBus(max_attempts=3, retry_backoff_s=0.5)
    error = RuntimeError("x")
    assert dlq.on_failure(bus, Message(topic="t", attempt=1), error).action == "retry"
    assert dlq.on_failure(bus, Message(topic="t", attempt=2), error).action == "retry"
    assert dlq.on_failure(bus, Message(topic="t", attempt=3), error) == FailureDecision.dead_letter(
        "failed 3 times (max_attempts)"
    )


def test_payload_key_ignores_key_order_and_respects_values() -> None:
    a = dedup.payload_key(Message(topic="t", payload={"a": 1, "b": [1, 2]}))
    b = dedup.payload_key(Message(topic="t", payload={"b": [1, 2], "a": 1}))
    c = dedup.payload_key(Message(topic="t", payload={"a": 1, "b": [2, 1]}))
    assert a == b != c


def test_payload_key_of_a_payload_json_cannot_carry_is_the_core_error() -> None:
    """Past the 254 levels orjson writes, or not JSON at all: the error a publish gives."""
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    cases = [(deep, f"nests deeper than {MAX_PAYLOAD_DEPTH} levels"), ({1, 2}, "not JSON-serialisable")]
    for payload, text in cases:
        message = Message(topic="t", payload=payload)
        with pytest.raises(RelayBusError) as from_plugin:
            dedup.payload_key(message)
        with pytest.raises(RelayBusError) as from_core:
            encode(message, max_bytes=1 << 20)
        assert str(from_plugin.value) == str(from_core.value) and text in str(from_plugin.value)


def test_dedup_plugin_only_acts_when_configured_and_no_key_given() -> None:
    message = Message(topic="t", payload=1)
    assert dedup.on_publish(FakeBus(), message) is None
    derived = dedup.on_publish(FakeBus(dedup_from_payload=True), message)
    assert derived is not None and derived.dedup_key == dedup.payload_key(message)
    explicit = Message(topic="t", payload=1, dedup_key="mine")
    assert dedup.on_publish(FakeBus(dedup_from_payload=True), explicit) is None


def test_priority_plugin_picks_the_lane() -> None:
    changed = priority.on_publish(FakeBus(), Message(topic="t", priority=6))
    assert changed is not None and changed.lane == 6
    assert priority.on_publish(FakeBus(), Message(topic="t")) is None

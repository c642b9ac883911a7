"""SyncBus drives the one Bus from plain threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from relaybus import Message, SyncBus


def test_sync_round_trip(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        mid = bus.publish("sync.t", {"a": 1})
        ids = bus.publish_many("sync.t", [2, 3])
        msgs = bus.read("sync.t", "g", count=10)
        assert [m.id for m in msgs] == [mid, *ids]
        assert bus.ack(*msgs) == 3
        assert [m.payload for m in bus.history("sync.t")] == [{"a": 1}, 2, 3]
        assert bus.topics() == ["sync.t"]


def test_sync_run_and_stop(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        bus.publish_many("sync.run", [1, 2, 3])
        seen: list[int] = []

        @bus.subscribe("sync.run", group="g")
        def handle(msg: Message) -> None:
            seen.append(msg.payload)

        runner = threading.Thread(target=bus.run)
        runner.start()
        deadline = time.monotonic() + 5
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        bus.stop()
        runner.join(5)
        assert not runner.is_alive() and seen == [1, 2, 3]


def test_sync_stream_management(relaybus_sync_bus: SyncBus) -> None:
    bus = relaybus_sync_bus  # the testing kit's, on this test's Redis line
    bus.publish_many("m", [1, 2, 3])
    got = bus.read("m", group="g", count=3)
    bus.ack(*got[:2])
    assert bus.dead_letter(got[2], "by hand")
    assert bus.trim("m", keep_len=0) == 3
    assert bus.trim_dead_letters("m", keep_len=0) == 1
    stats = bus.stats(["m"])
    assert (stats.topics[0].length, stats.topics[0].dlq_length) == (0, 0)
    assert bus.memory().used_memory > 0
    assert bus.broadcast("m", "nobody listens") == 0


def test_sync_listen_hears_broadcasts_until_the_loop_is_left(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """SyncBus.listen is Bus.listen without `async for`: it yields what matches any
    pattern, and leaving the loop unsubscribes (Redis counts no pattern afterwards)."""
    got: list[Message] = []
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        with pytest.raises(ValueError, match="at least one topic or pattern"):
            bus.listen()

        def listen() -> None:
            for message in bus.listen("alerts.*", "audit.?"):
                got.append(message)
                if len(got) == 2:
                    break

        listener = threading.Thread(target=listen)
        listener.start()
        until(lambda: raw.execute_command("PUBSUB", "NUMPAT") == 2)  # subscribed: earlier ones are lost
        assert bus.broadcast("alerts.cpu", {"load": 0.9}) == 1
        assert bus.broadcast("other.cpu", {"load": 0.1}) == 0
        bus.broadcast("audit.x", "y")
        listener.join(5)
        assert not listener.is_alive()
        assert [(m.topic, m.payload) for m in got] == [("alerts.cpu", {"load": 0.9}), ("audit.x", "y")]
    until(lambda: raw.execute_command("PUBSUB", "NUMPAT") == 0)  # the connection closes after the loop


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "not within 5 s"
        time.sleep(0.02)

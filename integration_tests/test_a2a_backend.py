"""relaybus as the backend of A2A agents (docs/protocol-backends.md): the SDK's TaskEventStream
on real Redis - replay after a version then live, version order, destroy."""

from __future__ import annotations

import asyncio

import redis
from a2a.server.cluster import TaskVersion, VersionedEvent
from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

from relaybus import Bus
from relaybus.adapters.a2a import RelayBusEventStream

from .helpers import wait_for


def status(task_id: str, state: int) -> TaskStatusUpdateEvent:
    return TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))


def versioned(event: object, version: int) -> VersionedEvent:
    return VersionedEvent(event=event, version=TaskVersion(version))  # type: ignore[arg-type]


async def collect(stream: RelayBusEventStream, task_id: str, after: int, into: list[VersionedEvent]) -> None:
    async for event in stream.subscribe(task_id, after=TaskVersion(after)):
        into.append(event)


async def test_subscribers_replay_after_a_version_then_follow_until_destroyed(
    bus: Bus, bare_bus: Bus, raw: redis.Redis
) -> None:
    """Two replicas: events published on one reach subscribers on the other - the stored
    ones newer than `after`, then each new one; destroy ends them and the keys expire."""
    a, b = RelayBusEventStream(bus), RelayBusEventStream(bare_bus)
    working = TaskState.TASK_STATE_WORKING
    for v in (1, 2, 3):
        await a.publish("t-1", versioned(status("t-1", working), v))
    from_start: list[VersionedEvent] = []
    from_two: list[VersionedEvent] = []
    subscribers = [
        asyncio.create_task(collect(b, "t-1", 0, from_start)),
        asyncio.create_task(collect(b, "t-1", 2, from_two)),
    ]
    await wait_for(lambda: len(from_start) == 3 and len(from_two) == 1)
    await a.publish("t-1", versioned(status("t-1", TaskState.TASK_STATE_COMPLETED), 4))
    await a.destroy("t-1")
    await asyncio.wait_for(asyncio.gather(*subscribers), 5)
    assert [e.version for e in from_start] == [TaskVersion(v) for v in (1, 2, 3, 4)]
    assert [e.version for e in from_two] == [TaskVersion(v) for v in (3, 4)]
    assert from_two[-1].event == status("t-1", TaskState.TASK_STATE_COMPLETED)
    assert 0 < raw.ttl(bus.keys.stream(a.topic("t-1"))) <= 600
    late: list[VersionedEvent] = []  # after destroy: what is kept is replayed, then the end
    await asyncio.wait_for(collect(b, "t-1", 3, late), 5)
    assert [e.version for e in late] == [TaskVersion(4)]


async def test_every_event_kind_round_trips(bus: Bus) -> None:
    stream = RelayBusEventStream(bus)
    message = Message(message_id="m", role=Role.ROLE_AGENT, parts=[Part(text="hello")], task_id="t-2")
    events = [
        Task(id="t-2", context_id="c", status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED)),
        message,
        TaskArtifactUpdateEvent(
            task_id="t-2", context_id="c", artifact=Artifact(artifact_id="a", parts=[Part(text="x")])
        ),
        status("t-2", TaskState.TASK_STATE_COMPLETED),
    ]
    for v, event in enumerate(events, 1):
        await stream.publish("t-2", versioned(event, v))
    await stream.destroy("t-2")
    got: list[VersionedEvent] = []
    await asyncio.wait_for(collect(stream, "t-2", 0, got), 5)
    assert [e.event for e in got] == events
    assert [type(e.event) for e in got] == [type(e) for e in events]


async def test_versions_only_increase(bus: Bus) -> None:
    """An event stored after a newer one (two replicas publishing at once) is skipped:
    a subscriber sees each version once, in order."""
    stream = RelayBusEventStream(bus)
    for v in (1, 3, 2, 3, 4):
        await stream.publish("t-3", versioned(status("t-3", TaskState.TASK_STATE_WORKING), v))
    await stream.destroy("t-3")
    got: list[VersionedEvent] = []
    await asyncio.wait_for(collect(stream, "t-3", 0, got), 5)
    assert [e.version for e in got] == [TaskVersion(v) for v in (1, 3, 4)]


async def test_any_task_id_gets_a_topic_of_its_own(bus: Bus) -> None:
    stream = RelayBusEventStream(bus)
    odd = ["task/with spaces", "ünïcode", "x" * 500]
    topics = {stream.topic(t) for t in odd} | {stream.topic("plain-id_1")}
    assert len(topics) == 4 and stream.topic("plain-id_1") == "a2a.events.plain-id_1"
    for v, task_id in enumerate(odd, 1):
        await stream.publish(task_id, versioned(status(task_id, TaskState.TASK_STATE_WORKING), v))
        await stream.destroy(task_id)
        got: list[VersionedEvent] = []
        await asyncio.wait_for(collect(stream, task_id, 0, got), 5)
        assert [e.event.task_id for e in got] == [task_id]  # type: ignore[union-attr]

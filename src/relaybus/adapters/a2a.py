"""relaybus as the backend of A2A agents on several replicas (extra `a2a`, a2a-sdk >= 1.3;
docs/protocol-backends.md).

`RelayBusEventStream(bus)` is the SDK's `TaskEventStream` for `DefaultRequestHandlerV2`:
each task's events are a topic that every replica follows (`bus.follow`) - replay after a
version, then live, pushed by the bus's doorbell instead of the SQL stream's 0.5 s poll;
`destroy` closes the topic (`bus.close_topic`), which ends its subscribers and lets its
keys expire. Built on the public Bus API only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator
from typing import Any

from a2a.server.cluster import TaskEventStream, TaskVersion, VersionedEvent
from a2a.server.events.event_queue import Event
from a2a.types.a2a_pb2 import (
    Message,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskStatusUpdateEvent,
)
from google.protobuf import json_format

from ..bus import Bus

__all__ = ["RelayBusEventStream"]

SAFE_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_FIELDS: dict[type, str] = {
    Task: "task",
    Message: "message",
    TaskStatusUpdateEvent: "status_update",
    TaskArtifactUpdateEvent: "artifact_update",
}


class RelayBusEventStream(TaskEventStream):
    """`a2a.server.cluster.TaskEventStream` on a bus. A task's events go to topic
    `{topic_prefix}.{task id}` (a task id that is no topic name: `h.` and its SHA-256);
    a subscriber gets them in version order, each version once, newer than `after`."""

    def __init__(self, bus: Bus, *, topic_prefix: str = "a2a.events", keep_s: float = 600) -> None:
        self.bus, self.topic_prefix, self.keep_s = bus, topic_prefix, keep_s

    def topic(self, task_id: str) -> str:
        if SAFE_ID_RE.fullmatch(task_id):
            return f"{self.topic_prefix}.{task_id}"
        return f"{self.topic_prefix}.h.{hashlib.sha256(task_id.encode()).hexdigest()}"

    async def publish(self, task_id: str, event: VersionedEvent) -> None:
        """Append the event (with its version) to the task's topic, for every replica."""
        wrapped = StreamResponse(**{_FIELDS[type(event.event)]: event.event})
        payload = {"version": _value(event.version), "event": json_format.MessageToDict(wrapped)}
        await self.bus.publish(self.topic(task_id), payload)

    async def subscribe(self, task_id: str, *, after: TaskVersion) -> AsyncGenerator[VersionedEvent, None]:
        """The task's stored events newer than `after`, then each new one as it is published,
        until the task's stream is destroyed. Versions only increase: an event stored after a
        newer one (two replicas publishing at once, e.g. a cancel) is skipped."""
        last = after
        follower = self.bus.follow(self.topic(task_id))
        try:
            async for stored in follower:
                version = TaskVersion(stored.payload["version"])
                if not version.is_after(last):
                    continue
                last = version
                response = json_format.ParseDict(stored.payload["event"], StreamResponse())
                yield VersionedEvent(event=_event(response), version=version)
        finally:
            await follower.aclose()

    async def destroy(self, task_id: str) -> None:
        """End the task's subscribers once they have read its events; its keys expire
        `keep_s` later (a late resubscriber still replays until then)."""
        await self.bus.close_topic(self.topic(task_id), keep_s=self.keep_s)


def _value(version: TaskVersion) -> Any:
    """The value a TaskVersion wraps (the SDK gives no accessor; its own SQL stream reads
    it the same way)."""
    return version._value


def _event(response: StreamResponse) -> Event:
    which = response.WhichOneof("payload")
    if which is None:
        raise ValueError("a stored A2A event carries no payload")
    event: Event = getattr(response, which)
    return event

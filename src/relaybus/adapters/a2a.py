"""relaybus as the backend of A2A agents on several replicas (extra `a2a`, a2a-sdk >= 1.3;
docs/protocol-backends.md), for `DefaultRequestHandlerV2(task_store=, event_stream=,
push_config_store=)`.

`RelayBusEventStream(bus)` is the SDK's `TaskEventStream`: each task's events are a topic
that every replica follows (`bus.follow`) - replay after a version, then live, pushed by
the bus's doorbell instead of the SQL stream's 0.5 s poll; `destroy` closes the topic
(`bus.close_topic`), which ends its subscribers and lets its keys expire.
`RelayBusTaskStore(bus)` is its `VersionedTaskStore` and `RelayBusPushConfigStore(bus)`
its `PushNotificationConfigStore`, both on versioned records (`relaybus.records`): a
compare-and-set in one script. Built on the public Bus API only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncGenerator
from typing import Any

from a2a.server.cluster import (
    ConcurrentTaskModificationError,
    StoredTask,
    TaskEventStream,
    TaskVersion,
    VersionedEvent,
    VersionedTaskStore,
)
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.owner_resolver import OwnerResolver, resolve_user_scope
from a2a.server.tasks import PushNotificationConfigStore
from a2a.server.tasks.push_notification_config_store import normalize_push_notification_config
from a2a.types.a2a_pb2 import (
    ListTasksRequest,
    ListTasksResponse,
    Message,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE
from a2a.utils.errors import InvalidParamsError
from a2a.utils.task import (
    ListTasksCursor,
    decode_list_tasks_cursor,
    decode_page_token,
    encode_list_tasks_cursor,
)
from google.protobuf import json_format

from ..bus import Bus
from ..records import Records, VersionConflictError

__all__ = ["RelayBusEventStream", "RelayBusPushConfigStore", "RelayBusTaskStore"]

TERMINAL = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_REJECTED,
    }
)
NOT_TERMINAL = frozenset(TaskState.Name(s) for s in TaskState.values() if s not in TERMINAL)

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
        """Append the event (with its version) to the task's topic, for every replica. An
        event that ends the task (a terminal state) also destroys the stream: the SDK does
        not call `destroy` itself, and nothing may follow such an event."""
        wrapped = StreamResponse(**{_FIELDS[type(event.event)]: event.event})
        payload = {"version": _value(event.version), "event": json_format.MessageToDict(wrapped)}
        await self.bus.publish(self.topic(task_id), payload)
        if isinstance(event.event, Task | TaskStatusUpdateEvent) and event.event.status.state in TERMINAL:
            await self.destroy(task_id)

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


class RelayBusTaskStore(VersionedTaskStore):
    """`a2a.server.cluster.VersionedTaskStore` on versioned records: one namespace per
    owner (`owner_resolver`, the SDK's default: the user name), a record per task whose
    tag is the task's state. `save` is one compare-and-set script: on the version, or -
    moving a task to CANCELED - on the stored task being there and not terminal."""

    def __init__(
        self, bus: Bus, *, namespace: str = "a2a.tasks", owner_resolver: OwnerResolver = resolve_user_scope
    ) -> None:
        self.bus, self.namespace, self.owner_resolver = bus, namespace, owner_resolver

    def _records(self, context: ServerCallContext) -> Records:
        return Records(self.bus, f"{self.namespace}.{_digest(self.owner_resolver(context))}")

    async def save(
        self,
        task: Task,
        *,
        event: Event | None,
        prev: Task | None,
        prev_version: TaskVersion,
        context: ServerCallContext,
    ) -> TaskVersion:
        """Persist `task`; its new version. ConcurrentTaskModificationError when
        `prev_version` is not the stored one (MISSING: when a task is stored), or, for a
        move to CANCELED, when the stored task is absent or terminal. (`event` goes to the
        event stream, which the handler publishes to itself.)"""
        del event, prev
        records, state = self._records(context), task.status.state
        value, tag = json_format.MessageToDict(task), TaskState.Name(state)
        try:
            if state == TaskState.TASK_STATE_CANCELED:
                version = await records.put(task.id, value, tag=tag, when_tag_in=NOT_TERMINAL)
            else:
                expected = 0 if prev_version.is_missing else int(_value(prev_version))
                version = await records.put(task.id, value, tag=tag, version=expected)
        except VersionConflictError:
            raise ConcurrentTaskModificationError(task.id) from None
        return TaskVersion(version)

    async def get(self, task_id: str, context: ServerCallContext) -> StoredTask | None:
        record = await self._records(context).get(task_id)
        if record is None:
            return None
        return StoredTask(json_format.ParseDict(record.value, Task()), TaskVersion(record.version))

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        """The owner's tasks, filtered, newest status first, paged - as the SDK's in-memory
        store does (its page tokens too). Reads the owner's whole namespace."""
        tasks = [
            json_format.ParseDict(r.value, Task()) for r in (await self._records(context).all()).values()
        ]
        if params.context_id:
            tasks = [t for t in tasks if t.context_id == params.context_id]
        if params.status:
            tasks = [t for t in tasks if t.status.state == params.status]
        if params.HasField("status_timestamp_after"):
            after_ns = params.status_timestamp_after.ToNanoseconds()
            tasks = [t for t in tasks if _sort_key(t)[0] and t.status.timestamp.ToNanoseconds() >= after_ns]
        tasks.sort(key=_sort_key, reverse=True)
        start = 0
        if params.page_token:
            cursor = decode_list_tasks_cursor(params.page_token)
            if cursor is None:  # a token naming the first task of the page (older SDKs)
                first = decode_page_token(params.page_token)
                start = next((i for i, t in enumerate(tasks) if t.id == first), -1)
                if start < 0:
                    raise InvalidParamsError(f"Invalid page token: {params.page_token}")
            else:
                start = next((i for i, t in enumerate(tasks) if _sort_key(t) < cursor.sort_key()), len(tasks))
        size = params.page_size or DEFAULT_LIST_TASKS_PAGE_SIZE
        end = start + size
        last = _sort_key(tasks[end - 1]) if end < len(tasks) else None
        return ListTasksResponse(
            next_page_token=None
            if last is None
            else encode_list_tasks_cursor(
                ListTasksCursor(timestamp_ns=last[1] if last[0] else None, task_id=last[2])
            ),
            tasks=tasks[start:end],
            total_size=len(tasks),
            page_size=size,
        )

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        await self._records(context).delete(task_id)


class RelayBusPushConfigStore(PushNotificationConfigStore):
    """`a2a.server.tasks.PushNotificationConfigStore` on versioned records: one namespace
    per task, a record per (owner, config id). `get_info` gives the caller's configs,
    `get_info_for_dispatch` every owner's; both ordered by config id."""

    def __init__(
        self, bus: Bus, *, namespace: str = "a2a.push", owner_resolver: OwnerResolver = resolve_user_scope
    ) -> None:
        self.bus, self.namespace, self.owner_resolver = bus, namespace, owner_resolver

    def _records(self, task_id: str) -> Records:
        return Records(self.bus, f"{self.namespace}.{_digest(task_id)}")

    async def set_info(
        self, task_id: str, notification_config: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        stored = normalize_push_notification_config(task_id, notification_config)
        key = json.dumps([self.owner_resolver(context), stored.id])
        await self._records(task_id).put(key, json_format.MessageToDict(stored))
        return stored

    async def get_info(self, task_id: str, context: ServerCallContext) -> list[TaskPushNotificationConfig]:
        return await self._configs(task_id, self.owner_resolver(context))

    async def get_info_for_dispatch(self, task_id: str) -> list[TaskPushNotificationConfig]:
        return await self._configs(task_id, None)

    async def delete_info(
        self, task_id: str, context: ServerCallContext, config_id: str | None = None
    ) -> None:
        owner, records = self.owner_resolver(context), self._records(task_id)
        for key in await records.all():
            mine, config = json.loads(key)
            if mine == owner and config_id in (None, config):
                await records.delete(key)

    async def _configs(self, task_id: str, owner: str | None) -> list[TaskPushNotificationConfig]:
        found = []
        for key, record in (await self._records(task_id).all()).items():
            mine, config = json.loads(key)
            if owner in (None, mine):
                found.append((config, json_format.ParseDict(record.value, TaskPushNotificationConfig())))
        return [c for _, c in sorted(found, key=lambda f: (f[0], f[1].task_id))]


def _sort_key(task: Task) -> tuple[bool, int, str]:
    """The SDK's ListTasks order: (has a status timestamp, the timestamp, id), descending."""
    stamped = task.HasField("status") and task.status.HasField("timestamp")
    return stamped, task.status.timestamp.ToNanoseconds() if stamped else 0, task.id


def _digest(name: str) -> str:
    """A namespace-safe name for any owner or task id."""
    return hashlib.sha256(name.encode()).hexdigest()[:32]


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

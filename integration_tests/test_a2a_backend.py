"""relaybus as the backend of A2A agents (docs/protocol-backends.md) on real Redis: the SDK's
TaskEventStream (replay after a version then live, version order, destroy), VersionedTaskStore
(compare-and-set, the CANCELED rule, owners, list as the SDK's own store) and
PushNotificationConfigStore (as the SDK's own store)."""

from __future__ import annotations

import asyncio

import pytest
import redis
from a2a.auth.user import User
from a2a.server.cluster import (
    ConcurrentTaskModificationError,
    LegacyTaskStoreAdapter,
    TaskVersion,
    VersionedEvent,
)
from a2a.server.context import ServerCallContext
from a2a.server.tasks import InMemoryPushNotificationConfigStore, InMemoryTaskStore
from a2a.types.a2a_pb2 import (
    Artifact,
    ListTasksRequest,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from google.protobuf.timestamp_pb2 import Timestamp

from relaybus import Bus, TopicClosedError
from relaybus.adapters.a2a import RelayBusEventStream, RelayBusPushConfigStore, RelayBusTaskStore

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
    await a.publish("t-1", versioned(status("t-1", TaskState.TASK_STATE_INPUT_REQUIRED), 4))
    await a.destroy("t-1")
    await asyncio.wait_for(asyncio.gather(*subscribers), 5)
    assert [e.version for e in from_start] == [TaskVersion(v) for v in (1, 2, 3, 4)]
    assert [e.version for e in from_two] == [TaskVersion(v) for v in (3, 4)]
    assert from_two[-1].event == status("t-1", TaskState.TASK_STATE_INPUT_REQUIRED)
    assert 0 < raw.ttl(bus.keys.stream(a.topic("t-1"))) <= 600
    late: list[VersionedEvent] = []  # after destroy: what is kept is replayed, then the end
    await asyncio.wait_for(collect(b, "t-1", 3, late), 5)
    assert [e.version for e in late] == [TaskVersion(4)]


async def test_a_terminal_event_ends_the_stream_by_itself(bus: Bus, raw: redis.Redis) -> None:
    """The SDK never calls destroy: an event with a terminal state does it, so subscribers
    end and the keys expire; nothing can be published after it."""
    stream = RelayBusEventStream(bus)
    got: list[VersionedEvent] = []
    subscriber = asyncio.create_task(collect(stream, "t-4", 0, got))
    await stream.publish("t-4", versioned(status("t-4", TaskState.TASK_STATE_WORKING), 1))
    await stream.publish("t-4", versioned(status("t-4", TaskState.TASK_STATE_FAILED), 2))
    await asyncio.wait_for(subscriber, 5)
    assert [e.version for e in got] == [TaskVersion(1), TaskVersion(2)]
    assert 0 < raw.ttl(bus.keys.stream(stream.topic("t-4"))) <= 600
    with pytest.raises(TopicClosedError):
        await stream.publish("t-4", versioned(status("t-4", TaskState.TASK_STATE_WORKING), 3))


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


# -- the task store and the push config store ------------------------------------------


class Named(User):
    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self.name


def as_user(name: str) -> ServerCallContext:
    return ServerCallContext(user=Named(name))


ALICE, BOB = as_user("alice"), as_user("bob")


def task(task_id: str, state: int, *, context_id: str = "c", at_s: int | None = None) -> Task:
    made = Task(id=task_id, context_id=context_id, status=TaskStatus(state=state))
    if at_s is not None:
        made.status.timestamp.FromSeconds(at_s)
    return made


async def save(
    store: RelayBusTaskStore, made: Task, prev: TaskVersion, who: ServerCallContext = ALICE
) -> TaskVersion:
    return await store.save(made, event=None, prev=None, prev_version=prev, context=who)


async def test_save_is_a_compare_and_set_on_the_version(bus: Bus) -> None:
    store = RelayBusTaskStore(bus)
    working = TaskState.TASK_STATE_WORKING
    v1 = await save(store, task("t", TaskState.TASK_STATE_SUBMITTED), TaskVersion.MISSING)
    v2 = await save(store, task("t", working), v1)
    assert v2.is_after(v1)
    for stale in (v1, TaskVersion.MISSING, TaskVersion(99)):  # an old one, "first write", a made-up one
        with pytest.raises(ConcurrentTaskModificationError):
            await save(store, task("t", TaskState.TASK_STATE_COMPLETED), stale)
    stored = await store.get("t", ALICE)
    assert stored is not None and stored.version == v2 and stored.task == task("t", working)
    await store.delete("t", ALICE)
    assert await store.get("t", ALICE) is None


async def test_two_replicas_racing_to_save_one_version_exactly_one_wins(bus: Bus, bare_bus: Bus) -> None:
    a, b = RelayBusTaskStore(bus), RelayBusTaskStore(bare_bus)
    for n in range(30):
        version = await save(a, task(f"r{n}", TaskState.TASK_STATE_WORKING), TaskVersion.MISSING)
        results = await asyncio.gather(
            save(a, task(f"r{n}", TaskState.TASK_STATE_COMPLETED), version),
            save(b, task(f"r{n}", TaskState.TASK_STATE_FAILED), version),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, TaskVersion)]
        assert len(won) == 1 and all(
            isinstance(r, ConcurrentTaskModificationError) for r in results if r not in won
        )
        stored = await b.get(f"r{n}", ALICE)
        assert stored is not None and stored.version == won[0]


async def test_a_cancel_overwrites_a_running_task_whatever_its_version(bus: Bus) -> None:
    """The docstring's CANCELED rule: no version check against a non-terminal task; refused
    for a terminal or absent one."""
    store = RelayBusTaskStore(bus)
    canceled = TaskState.TASK_STATE_CANCELED
    v1 = await save(store, task("run", TaskState.TASK_STATE_WORKING), TaskVersion.MISSING)
    await save(store, task("run", TaskState.TASK_STATE_INPUT_REQUIRED), v1)
    v3 = await save(store, task("run", canceled), v1)  # stale, yet it wins
    assert v3 == TaskVersion(3)
    for state in (TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_REJECTED, canceled):
        v = await save(store, task(f"done-{state}", TaskState.TASK_STATE_WORKING), TaskVersion.MISSING)
        v = await save(store, task(f"done-{state}", state), v)  # a cancel too: the task is running
        with pytest.raises(ConcurrentTaskModificationError):
            await save(store, task(f"done-{state}", canceled), v)
    with pytest.raises(ConcurrentTaskModificationError):
        await save(store, task("absent", canceled), TaskVersion.MISSING)
    with pytest.raises(ConcurrentTaskModificationError):  # and the owner's scope holds for it too
        await save(store, task("run", canceled), v3, BOB)


async def test_tasks_are_scoped_to_their_owner(bus: Bus) -> None:
    store = RelayBusTaskStore(bus)
    await save(store, task("mine", TaskState.TASK_STATE_WORKING), TaskVersion.MISSING, ALICE)
    assert await store.get("mine", BOB) is None
    assert list((await store.list(ListTasksRequest(), BOB)).tasks) == []
    await store.delete("mine", BOB)  # not Bob's to delete
    assert await store.get("mine", ALICE) is not None
    v = await save(store, task("mine", TaskState.TASK_STATE_WORKING), TaskVersion.MISSING, BOB)  # Bob's own
    assert v == TaskVersion(1)


LISTS = [
    ListTasksRequest(),
    ListTasksRequest(context_id="c2"),
    ListTasksRequest(status=TaskState.TASK_STATE_WORKING),
    ListTasksRequest(page_size=3),
    ListTasksRequest(status_timestamp_after=Timestamp(seconds=1_700_000_050)),
]


async def test_list_answers_as_the_sdks_own_store(bus: Bus) -> None:
    """The same tasks in the SDK's in-memory store and ours: the same answers to filters,
    the same pages, page after page."""
    ours, theirs = RelayBusTaskStore(bus), LegacyTaskStoreAdapter(InMemoryTaskStore())
    states = [TaskState.TASK_STATE_WORKING, TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_SUBMITTED]
    for n in range(11):
        made = task(
            f"t{n:02}",
            states[n % 3],
            context_id=f"c{n % 2 + 1}",
            at_s=None if n % 5 == 0 else 1_700_000_000 + 10 * (n % 7),
        )
        for store in (ours, theirs):
            await store.save(made, event=None, prev=None, prev_version=TaskVersion.MISSING, context=ALICE)
    for request in LISTS:
        pages = 0
        while True:
            a, b = await ours.list(request, ALICE), await theirs.list(request, ALICE)
            assert a == b, request
            pages += 1
            if not a.next_page_token:
                break
            request = ListTasksRequest(page_size=request.page_size, page_token=a.next_page_token)
        assert pages == (4 if request.page_size == 3 else 1)


async def test_push_configs_answer_as_the_sdks_own_store(bus: Bus) -> None:
    ours, theirs = RelayBusPushConfigStore(bus), InMemoryPushNotificationConfigStore()

    def config(config_id: str, url: str) -> TaskPushNotificationConfig:
        return TaskPushNotificationConfig(id=config_id, url=url)

    def ids(configs: list[TaskPushNotificationConfig]) -> list[tuple[str, str, str]]:
        return sorted((c.task_id, c.id, c.url) for c in configs)

    for store in (ours, theirs):
        assert (
            await store.set_info("t1", config("", "https://a/1"), ALICE)
        ).id == "t1"  # an empty id: the task's
        await store.set_info("t1", config("x", "https://a/x"), ALICE)
        await store.set_info("t1", config("x", "https://a/x2"), ALICE)  # the same id: replaced
        await store.set_info("t1", config("y", "https://b/y"), BOB)
        await store.set_info("t2", config("z", "https://a/z"), ALICE)
    for who in (ALICE, BOB):
        assert ids(await ours.get_info("t1", who)) == ids(await theirs.get_info("t1", who))
    assert ids(await ours.get_info_for_dispatch("t1")) == ids(await theirs.get_info_for_dispatch("t1"))
    assert len(await ours.get_info_for_dispatch("t1")) == 3
    for store in (ours, theirs):
        await store.delete_info("t1", ALICE, "x")
    assert ids(await ours.get_info_for_dispatch("t1")) == ids(await theirs.get_info_for_dispatch("t1"))
    for store in (ours, theirs):
        await store.delete_info("t1", BOB)
    assert ids(await ours.get_info_for_dispatch("t1")) == ids(await theirs.get_info_for_dispatch("t1"))
    assert ids(await ours.get_info_for_dispatch("t1")) == [("t1", "t1", "https://a/1")]

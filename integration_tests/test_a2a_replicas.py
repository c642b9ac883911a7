"""Two A2A `DefaultRequestHandlerV2` replicas (the official SDK) sharing relaybus stores on one
Redis, each with its own bus: a streaming task started on replica A is resubscribed on
replica B, which serves the snapshot and then the rest of the task's events, live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event, EventQueue
from a2a.server.request_handlers import DefaultRequestHandlerV2
from a2a.server.tasks import TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatusUpdateEvent,
)

from relaybus import Bus
from relaybus.adapters.a2a import RelayBusEventStream, RelayBusPushConfigStore, RelayBusTaskStore

STEPS = 6


class Steps(AgentExecutor):
    """Adds STEPS artifacts, waiting at the third until `go` is set, then completes."""

    def __init__(self, go: asyncio.Event) -> None:
        self.go = go

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None and context.task_id and context.context_id
        if context.current_task is None:
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        for n in range(STEPS):
            if n == 2:
                await self.go.wait()
            await updater.add_artifact([Part(text=f"step {n}")], artifact_id=f"a{n}")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def replica(bus: Bus, executor: AgentExecutor) -> DefaultRequestHandlerV2:
    card = AgentCard(name="steps", version="1", capabilities=AgentCapabilities(streaming=True))
    return DefaultRequestHandlerV2(
        agent_executor=executor,
        task_store=RelayBusTaskStore(bus),
        agent_card=card,
        event_stream=RelayBusEventStream(bus),
        push_config_store=RelayBusPushConfigStore(bus),
    )


def artifacts(events: list[Event]) -> list[str]:
    return [e.artifact.artifact_id for e in events if isinstance(e, TaskArtifactUpdateEvent)]


async def test_a_task_started_on_a_is_followed_to_its_end_on_b(bus: Bus, bare_bus: Bus) -> None:
    go, context = asyncio.Event(), ServerCallContext()
    a, b = replica(bus, Steps(go)), replica(bare_bus, Steps(asyncio.Event()))
    ask = SendMessageRequest(message=Message(message_id="m1", role=Role.ROLE_USER, parts=[Part(text="go")]))
    on_a: AsyncGenerator[Event, None] = a.on_message_send_stream(ask, context)
    seen_on_a: list[Event] = []
    async for event in on_a:  # until the agent waits, two steps in
        seen_on_a.append(event)
        if artifacts(seen_on_a) == ["a0", "a1"]:
            break
    task_id = next(e.id for e in seen_on_a if isinstance(e, Task))

    on_b: list[Event] = []

    async def resubscribe() -> None:
        async for event in b.on_subscribe_to_task(SubscribeToTaskRequest(id=task_id), context):
            on_b.append(event)
            if isinstance(event, Task):
                go.set()  # B has its snapshot: let the agent on A go on

    await asyncio.wait_for(resubscribe(), 15)
    await on_a.aclose()
    snapshot = on_b[0]
    assert isinstance(snapshot, Task) and [x.artifact_id for x in snapshot.artifacts] == ["a0", "a1"]
    assert artifacts(on_b[1:]) == [f"a{n}" for n in range(2, STEPS)]  # the rest, each once, in order
    last = on_b[-1]
    assert isinstance(last, TaskStatusUpdateEvent) and last.status.state == TaskState.TASK_STATE_COMPLETED
    got_a = await a.on_get_task(GetTaskRequest(id=task_id), context)
    got_b = await b.on_get_task(GetTaskRequest(id=task_id), context)
    assert got_a == got_b and got_a is not None and got_a.status.state == TaskState.TASK_STATE_COMPLETED
    assert len(got_a.artifacts) == STEPS

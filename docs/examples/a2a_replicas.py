"""An A2A agent on three replicas sharing one Redis (docs/protocol-backends.md).

Each replica is the SDK's `DefaultRequestHandlerV2` with relaybus's task store, event
stream and push config store, on its own bus. Serve one replica over HTTP (JSON-RPC at /,
its card at /.well-known/agent-card.json):

    RELAYBUS_URL=redis://localhost:6379/0 python a2a_replicas.py --port 9001

Without --port it runs three replicas in this process and shows what sharing gives: a
streaming task started on replica A, whose client lost A's stream, resubscribed on
replica B (the snapshot, then the rest of its events live), and read on replica C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

import uvicorn
from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import EventQueue
from a2a.server.request_handlers import DefaultRequestHandlerV2
from a2a.server.routes.agent_card_routes import create_agent_card_routes
from a2a.server.routes.jsonrpc_routes import create_jsonrpc_routes
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
)
from starlette.applications import Starlette

from relaybus import Bus
from relaybus.adapters.a2a import RelayBusEventStream, RelayBusPushConfigStore, RelayBusTaskStore

CARD = AgentCard(name="chapters", version="1", capabilities=AgentCapabilities(streaming=True))


class Chapters(AgentExecutor):
    """Writes six chapters, one artifact each, then completes the task."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None and context.task_id and context.context_id
        if context.current_task is None:
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        for n in range(1, 7):
            await asyncio.sleep(0.1)
            await updater.add_artifact([Part(text=f"chapter {n}")], artifact_id=f"chapter-{n}")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError("chapters cannot be canceled")


def replica(bus: Bus) -> DefaultRequestHandlerV2:
    """One replica's request handler: its tasks, events and push configs in Redis."""
    return DefaultRequestHandlerV2(
        agent_executor=Chapters(),
        agent_card=CARD,
        task_store=RelayBusTaskStore(bus),
        event_stream=RelayBusEventStream(bus),
        push_config_store=RelayBusPushConfigStore(bus),
    )


def app(bus: Bus) -> Starlette:
    """One replica over HTTP: the SDK's JSON-RPC routes and agent card."""
    return Starlette(routes=[*create_agent_card_routes(CARD), *create_jsonrpc_routes(replica(bus), "/")])


async def serve(url: str, prefix: str, port: int) -> None:
    async with Bus.from_url(url, prefix=prefix) as bus:
        await uvicorn.Server(uvicorn.Config(app(bus), host="127.0.0.1", port=port, log_config=None)).serve()


async def three_replicas(url: str, prefix: str) -> dict[str, list[str]]:
    """Start a task on A, drop A's stream after the first chapter, resubscribe on B, read
    the task on C; the chapters each saw."""
    async with contextlib.AsyncExitStack() as stack:
        buses = [await stack.enter_async_context(Bus.from_url(url, prefix=prefix)) for _ in range(3)]
        a, b, c = (replica(bus) for bus in buses)
        context = ServerCallContext()
        ask = SendMessageRequest(
            message=Message(message_id="m1", role=Role.ROLE_USER, parts=[Part(text="write")])
        )

        on_a, task_id = [], ""
        stream = a.on_message_send_stream(ask, context)
        async for event in stream:
            task_id = event.id if isinstance(event, Task) else task_id
            if isinstance(event, TaskArtifactUpdateEvent):
                on_a.append(event.artifact.artifact_id)
                break  # the client loses replica A here; the agent runs on
        await stream.aclose()

        snapshot, live = [], []
        async for event in b.on_subscribe_to_task(SubscribeToTaskRequest(id=task_id), context):
            if isinstance(event, Task):  # first: the task as stored, then its later events
                snapshot = [artifact.artifact_id for artifact in event.artifacts]
            elif isinstance(event, TaskArtifactUpdateEvent):
                live.append(event.artifact.artifact_id)
        task = await c.on_get_task(GetTaskRequest(id=task_id), context)
        assert task is not None
        return {
            "on A": on_a,
            "on B, snapshot": snapshot,
            "on B, live": live,
            "on C": [artifact.artifact_id for artifact in task.artifacts],
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="serve one replica over HTTP on this port")
    arguments = parser.parse_args()
    redis_url = os.environ.get("RELAYBUS_URL", "redis://localhost:6379/0")
    prefix = os.environ.get("RELAYBUS_PREFIX", "relaybus")
    if arguments.port:
        asyncio.run(serve(redis_url, prefix, arguments.port))
    else:
        for where, chapters in asyncio.run(three_replicas(redis_url, prefix)).items():
            print(f"{where}: {', '.join(chapters) or '-'}")

"""Two agents hand work over relaybus — runnable offline, no LLM or API key needed.

A planner agent, driven by a scripted stand-in for a tool-calling chat model, uses the
relaybus toolkit: it tries a topic it is not allowed to use (and reads the refusal),
hands a review task to a reviewer agent, then waits for the verdict on the reply topic.
The reviewer is any program on the bus; here, a few lines of relaybus. The planner's run
events go to `agents.events`, where a monitor in another process could follow them.

    python docs/examples/agent_handoff.py          # an embedded redis-server
    RELAYBUS_URL=redis://localhost:6379/0 python docs/examples/agent_handoff.py
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool

from relaybus import Bus
from relaybus.adapters.langchain import RelayBusCallbackHandler, RelayBusToolkit


class ScriptedToolModel(FakeMessagesListChatModel):
    """A fake chat model that answers with the scripted messages (tool calls included)
    in turn; `bind_tools` accepts the tools as a real model would."""

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> ScriptedToolModel:
        return self


def call(name: str, **args: Any) -> ToolCall:
    return ToolCall(name=name, args=args, id=f"call-{name}-{args.get('topic', '')}", type="tool_call")


PLANNER_SCRIPT = [
    AIMessage(
        content="",
        tool_calls=[
            call("relaybus_publish", topic="payments.refund", payload={"order": 17}),
            call(
                "relaybus_publish",
                topic="tasks.review",
                payload={"module": "parser", "reply_to": "reviews.done"},
            ),
        ],
    ),
    AIMessage(
        content="",
        tool_calls=[
            call("relaybus_read", topic="reviews.done", group="planner", wait_seconds=10),
        ],
    ),
    AIMessage(content="The parser review is back; refunds are not mine to send."),
]


async def run_agent(
    model: ScriptedToolModel, tools: list[BaseTool], task: str, config: RunnableConfig
) -> list[BaseMessage]:
    """The classic loop: ask the model, run the tools it calls, repeat until it answers."""
    by_name = {t.name: t for t in tools}
    bound = model.bind_tools(tools)
    transcript: list[BaseMessage] = [HumanMessage(task)]
    while True:
        reply = await bound.ainvoke(transcript, config)
        transcript.append(reply)
        if not isinstance(reply, AIMessage) or not reply.tool_calls:
            return transcript
        for tool_call in reply.tool_calls:
            transcript.append(await by_name[tool_call["name"]].ainvoke(tool_call, config))


async def reviewer(bus: Bus) -> None:
    """Another agent: takes one review task and publishes its verdict where it was asked."""
    while not (tasks := await bus.read("tasks.review", group="reviewers", count=1, block_ms=200)):
        pass
    task = tasks[0]
    await bus.publish(
        task.payload["reply_to"],
        {"module": task.payload["module"], "verdict": "approve"},
        correlation_id=task.id,
        sender="reviewer",
    )
    await bus.ack(task)


def describe(message: BaseMessage) -> str:
    if isinstance(message, AIMessage) and message.tool_calls:
        return "calls " + ", ".join(f"{c['name']}({c['args']})" for c in message.tool_calls)
    status = f"[{message.status}] " if isinstance(message, ToolMessage) else ""
    return f"{status}{message.content}"


async def main(url: str, prefix: str) -> list[BaseMessage]:
    async with (
        Bus.from_url(url, prefix=prefix) as planner_bus,
        Bus.from_url(url, prefix=prefix) as reviewer_bus,
    ):
        tools = RelayBusToolkit(
            bus=planner_bus, allowed_topics=["tasks.*", "reviews.*"], new_groups=["planner"]
        ).get_tools()  # the one group its reads may make
        events = RelayBusCallbackHandler(bus=planner_bus, topic="agents.events")
        review = asyncio.create_task(reviewer(reviewer_bus))
        transcript = await run_agent(
            ScriptedToolModel(responses=PLANNER_SCRIPT),
            tools,
            "Get the parser reviewed.",
            {"callbacks": [events], "tags": ["planner"]},
        )
        await review
        for message in transcript:
            print(f"{message.type:>5}: {describe(message)}")
        seen = Counter(m.payload["event"] for m in await planner_bus.history("agents.events", limit=200))
        print("events on agents.events:", dict(seen))
    return transcript


if __name__ == "__main__":
    prefix = os.environ.get("RELAYBUS_PREFIX", "relaybus-example")
    if url := os.environ.get("RELAYBUS_URL"):
        asyncio.run(main(url, prefix))
    else:
        from relaybus.embedded import EmbeddedRedis

        with EmbeddedRedis() as server:
            asyncio.run(main(server.url, prefix))

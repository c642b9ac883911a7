"""Two LangGraph agents hand work to each other over relaybus with request/reply.

The writer drafts a change and asks the reviewer through the `relaybus_request` tool;
the reviewer, a LangGraph agent of its own subscribed to "agents.reviewer", answers
with `bus.reply`. Both use offline fake chat models (scripted answers), so this runs
without an API key: swap in a real chat model and nothing else changes.

    python docs/examples/langgraph_handoff.py            # RELAYBUS_URL, else localhost
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from relaybus import Bus, Message
from relaybus.adapters.langchain import RelayBusCallbackHandler, RelayBusToolkit


class ScriptedModel(GenericFakeChatModel):
    """An offline chat model answering from a script; tools are accepted and ignored."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self


def script(*answers: AIMessage) -> Iterator[AIMessage]:
    return iter(answers)


def reviewer_agent() -> Any:
    return create_agent(
        ScriptedModel(messages=script(AIMessage(content="approve: the retry loop now backs off"))), tools=[]
    )


def writer_agent(bus: Bus) -> Any:
    tools = RelayBusToolkit(bus=bus, allowed_topics=["agents.*"]).get_tools()
    ask = {
        "name": "relaybus_request",
        "id": "ask-1",
        "args": {"topic": "agents.reviewer", "payload": {"draft": "retry with backoff"}, "timeout_s": 30},
    }
    return create_agent(
        ScriptedModel(
            messages=script(
                AIMessage(content="", tool_calls=[ask]), AIMessage(content="Merged: the reviewer approved.")
            )
        ),
        tools=tools,
    )


async def main(url: str | None = None, prefix: str = "handoff") -> list[str]:
    """Run the hand-off; returns the transcript (also printed)."""
    url = url or os.environ.get("RELAYBUS_URL", "redis://localhost:6379/0")
    transcript: list[str] = []
    async with (
        Bus.from_url(url, prefix=prefix) as reviewer_bus,
        Bus.from_url(url, prefix=prefix) as writer_bus,
    ):

        @reviewer_bus.subscribe("agents.reviewer", group="reviewers")
        async def review(request: Message) -> None:
            result = await reviewer_agent().ainvoke({"messages": [("user", str(request.payload))]})
            verdict = result["messages"][-1].content
            transcript.append(f"reviewer: {verdict}")
            await reviewer_bus.reply(request, {"verdict": verdict})

        running = asyncio.create_task(reviewer_bus.run())
        try:
            events = RelayBusCallbackHandler(writer_bus, "agents.events", include_io=False)
            result = await writer_agent(writer_bus).ainvoke(
                {"messages": [("user", "Make the retry loop back off, then get it reviewed.")]},
                config={"callbacks": [events]},
            )
            for message in result["messages"][1:]:
                transcript.append(f"writer ({message.type}): {message.content or message.tool_calls}")
        finally:
            await reviewer_bus.stop()
            await running
    for line in transcript:
        print(line)
    return transcript


if __name__ == "__main__":
    asyncio.run(main())

"""relaybus under real LangGraph agents (offline scripted chat models): the async
callback handler called from LangGraph's worker threads and their loops, the toolkit
in a ToolNode and in create_agent, and the docs' two-agent hand-off example."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from relaybus import Bus
from relaybus.adapters.langchain import RelayBusCallbackHandler, RelayBusToolkit

# the example and these tests use no API LangGraph deprecates (create_react_agent is: create_agent)
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "langgraph_handoff.py"


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_handoff", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@tool
def add(a: int, b: int) -> int:
    """Add two numbers (a sync tool: LangGraph runs it in a worker thread)."""
    return a + b


def calls(*tool_calls: dict[str, Any]) -> AIMessage:
    return AIMessage(content="", tool_calls=list(tool_calls))


async def test_the_async_handler_under_a_langgraph_agent_logs_no_warning_and_publishes_every_event(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    """LangGraph calls async handlers from worker threads on loops of their own: every
    event still reaches the bus (handed to the bus's loop), nothing is logged, and the
    graph's nodes - nested chains carrying the whole state - are left out."""
    scripted = example().ScriptedModel(
        messages=iter([calls({"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}), AIMessage(content="3")])
    )
    handler = RelayBusCallbackHandler(bus, "agent.events")
    with caplog.at_level(logging.WARNING):
        result = await create_agent(scripted, [add]).ainvoke(
            {"messages": [("user", "1 + 2?")]}, config={"callbacks": [handler]}
        )
    assert result["messages"][-1].content == "3"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("relaybus")] == []
    events = [m.payload for m in await bus.history("agent.events", limit=100)]
    assert [e["event"] for e in events] == [
        "chain_start",
        "chat_model_start",
        "chat_model_end",
        "tool_start",
        "tool_end",
        "chat_model_start",
        "chat_model_end",
        "chain_end",
    ]
    assert events[4]["output"] == 3 or "3" in json.dumps(events[4]["output"])
    assert all(len(json.dumps(e)) <= 16_384 for e in events)


@pytest.mark.timeout(30)
async def test_a_sync_prompt_step_with_nested_chains_returns_and_publishes_its_events(bus: Bus) -> None:
    """create_react_agent's prompt is a sync step that LangGraph invokes on the running
    loop - the bus's - from `ainvoke`: with every nested chain published (as the guide
    suggests for tracing a graph) the run returns, and the prompt step's events are
    published in order with the rest. Still on the deprecated create_react_agent, which
    users may run until LangGraph 2: create_agent has no such step (system_prompt is a
    message), so it cannot show this case."""
    from langgraph.prebuilt import create_react_agent
    from langgraph.warnings import LangGraphDeprecatedSinceV10

    scripted = example().ScriptedModel(messages=iter([AIMessage(content="hi")]))
    handler = RelayBusCallbackHandler(bus, "agent.events", nested_chains=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangGraphDeprecatedSinceV10)
        agent = create_react_agent(scripted, [add], prompt="Be brief.")
    result = await agent.ainvoke({"messages": [("user", "hello")]}, config={"callbacks": [handler]})
    assert result["messages"][-1].content == "hi"
    events = [m.payload for m in await bus.history("agent.events", limit=100)]
    prompt = [e["event"] for e in events if e.get("name") == "Prompt"]
    assert prompt == ["chain_start", "chain_end"]
    assert events[0]["parent_run_id"] is None and events[-1]["run_id"] == events[0]["run_id"]
    assert events[-1]["event"] == "chain_end"


async def test_the_toolkit_in_a_tool_node(bus: Bus) -> None:
    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode(RelayBusToolkit(bus=bus, allowed_topics=["tasks.*"]).get_tools()))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    out = await graph.compile().ainvoke(
        {
            "messages": [
                calls(
                    {
                        "name": "relaybus_publish",
                        "args": {"topic": "tasks.review", "payload": {"pr": 1}},
                        "id": "p1",
                    },
                    {"name": "relaybus_publish", "args": {"topic": "payments.x", "payload": 1}, "id": "p2"},
                )
            ]
        }
    )
    sent, refused = out["messages"][1:]
    assert isinstance(sent, ToolMessage) and sent.tool_call_id == "p1"
    assert json.loads(str(sent.content))["id"] == (await bus.history("tasks.review"))[0].id
    assert refused.status == "error" and "not allowed" in str(refused.content)


async def test_the_toolkit_in_create_agent(bus: Bus) -> None:
    publish = {
        "name": "relaybus_publish",
        "id": "p1",
        "args": {"topic": "tasks.review", "payload": {"pr": 9}},
    }
    scripted = example().ScriptedModel(messages=iter([calls(publish), AIMessage(content="sent")]))
    agent = create_agent(scripted, RelayBusToolkit(bus=bus, allowed_topics=["tasks.*"]).get_tools())
    result = await agent.ainvoke({"messages": [("user", "send pr 9 for review")]})
    assert result["messages"][-1].content == "sent"
    assert [m.payload for m in await bus.history("tasks.review")] == [{"pr": 9}]


async def test_the_two_agent_handoff_example(
    redis_url: str, prefix: str, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        transcript = await example().main(redis_url, prefix)
    assert transcript[0] == "reviewer: approve: the retry loop now backs off"
    assert '"verdict":"approve: the retry loop now backs off"' in transcript[2]  # the writer's tool result
    assert transcript[-1] == "writer (ai): Merged: the reviewer approved."
    [request] = await bus.history("agents.reviewer")
    assert request.payload == {"draft": "retry with backoff"} and request.reply_to
    events = [m.payload for m in await bus.history("agents.events", limit=100)]
    assert "tool_end" in {e["event"] for e in events}
    assert not any("output" in e or "messages" in e for e in events)  # include_io=False
    assert [r.getMessage() for r in caplog.records if r.name.startswith("relaybus")] == []

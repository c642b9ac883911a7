"""Run events published by the LangChain callback handlers, read back from a real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from langchain_core.callbacks import adispatch_custom_event
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel
from langchain_core.tools import StructuredTool, tool
from pydantic import ConfigDict

from relaybus import Bus, SyncBus
from relaybus.adapters.langchain import RelayBusCallbackHandler, SyncRelayBusCallbackHandler
from relaybus.embedded import EmbeddedRedis, free_port

from .faultproxy import FaultProxy
from .helpers import wait_for

TOPIC = "langchain.events"


def _double(x: int) -> int:
    """Double a number."""
    return 2 * x


async def _adouble(x: int) -> int:
    return 2 * x


# invoke runs the function; ainvoke the coroutine, with its callbacks on the loop (awaited).
# A tool with a function only is run whole in LangChain's worker thread even under ainvoke,
# and the handler hands those events over without waiting (sync_double's test flushes).
double = StructuredTool.from_function(func=_double, coroutine=_adouble, name="double")
sync_double = tool("double")(_double)


@tool
def explode(x: int) -> int:
    """Always fails."""
    raise RuntimeError(f"cannot handle {x}")


class Shelf(BaseRetriever):
    """A retriever over a fixed list of documents, for retriever events."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Any]:
        from langchain_core.documents import Document

        return [Document(page_content=f"about {query}", metadata={"page": 1})]


def model(text: str = "hello there world", **message: Any) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(content=text, **message)]))


async def events(bus: Bus) -> list[dict[str, Any]]:
    return [m.payload for m in await bus.history(TOPIC, limit=1000)]


def by_event(evts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["event"]: e for e in evts}


async def test_chat_model_run_start_and_end_with_text_usage_tags_metadata(bus: Bus) -> None:
    usage = {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}
    handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC)
    reply = await model(usage_metadata=usage).ainvoke(
        "hi", config={"callbacks": [handler], "tags": ["planner"], "metadata": {"agent": "a1"}}
    )
    evts = await events(bus)
    assert [e["event"] for e in evts] == ["chat_model_start", "chat_model_end"]
    start, end = evts
    assert start["run_id"] == end["run_id"] and start["parent_run_id"] is None
    assert start["name"] == end["name"] == "GenericFakeChatModel"
    assert start["tags"] == end["tags"] == ["planner"]
    assert start["metadata"]["agent"] == end["metadata"]["agent"] == "a1"
    assert start["messages"] == [[{"type": "human", "content": "hi"}]]
    assert end["text"] == reply.content == "hello there world"
    assert end["usage"] == usage
    assert end["duration_s"] >= 0 and end["ts"] >= start["ts"]


async def test_streamed_tokens_are_published_only_when_asked(bus: Bus) -> None:
    quiet = RelayBusCallbackHandler(bus=bus, topic=TOPIC)
    [_ async for _ in model().astream("hi", config={"callbacks": [quiet]})]
    assert "llm_new_token" not in {e["event"] for e in await events(bus)}

    chatty = RelayBusCallbackHandler(bus=bus, topic="langchain.tokens", publish_tokens=True)
    [_ async for _ in model().astream("hi", config={"callbacks": [chatty]})]
    tokens = [
        m.payload for m in await bus.history("langchain.tokens") if m.payload["event"] == "llm_new_token"
    ]
    assert "".join(t["token"] for t in tokens) == "hello there world"
    assert {t["name"] for t in tokens} == {"GenericFakeChatModel"}


async def test_tool_inside_a_chain_has_the_chain_as_parent(bus: Bus) -> None:
    handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC, nested_chains=True)
    prepare: Runnable[int, dict[str, int]] = RunnableLambda(lambda n: {"x": n + 1}, name="prepare")
    chain = prepare | double
    assert await chain.ainvoke(4, config={"callbacks": [handler]}) == 10
    evts = await events(bus)
    assert [e["event"] for e in evts] == [
        "chain_start",
        "chain_start",
        "chain_end",
        "tool_start",
        "tool_end",
        "chain_end",
    ]
    sequence, lambda_start, tool_start, tool_end = evts[0], evts[1], evts[3], evts[4]
    assert sequence["parent_run_id"] is None and sequence["name"] == "RunnableSequence"
    assert lambda_start["name"] == "prepare" and lambda_start["parent_run_id"] == sequence["run_id"]
    assert tool_start["name"] == "double" and tool_start["parent_run_id"] == sequence["run_id"]
    assert tool_start["input"] == {"x": 5}
    assert tool_end["run_id"] == tool_start["run_id"] and tool_end["output"] == 10
    assert tool_end["duration_s"] >= 0
    assert evts[5]["run_id"] == sequence["run_id"] and evts[5]["outputs"] == 10


async def test_errors_are_events_with_type_and_message(bus: Bus) -> None:
    handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC)
    wrap: Runnable[int, dict[str, int]] = RunnableLambda(lambda n: {"x": n})
    failing = wrap | explode
    with pytest.raises(RuntimeError):
        await failing.ainvoke(1, config={"callbacks": [handler]})
    got = by_event(await events(bus))
    assert got["tool_error"]["error_type"] == "RuntimeError"
    assert got["tool_error"]["error"] == "cannot handle 1" and got["tool_error"]["duration_s"] >= 0
    assert got["chain_error"]["run_id"] == got["tool_error"]["parent_run_id"]


async def test_retriever_and_custom_events(bus: Bus) -> None:
    handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC)
    docs = await Shelf().ainvoke("redis", config={"callbacks": [handler]})
    assert docs[0].page_content == "about redis"

    async def step(x: int) -> int:
        await adispatch_custom_event("progress", {"done": x})
        return x

    await RunnableLambda(step, name="step").ainvoke(7, config={"callbacks": [handler]})
    got = by_event(await events(bus))
    assert got["retriever_start"]["query"] == "redis" and got["retriever_start"]["name"] == "Shelf"
    assert got["retriever_end"]["documents"] == [{"page_content": "about redis", "metadata": {"page": 1}}]
    custom = got["custom_event"]
    assert (custom["custom_name"], custom["data"]) == ("progress", {"done": 7})
    assert custom["run_id"] == got["chain_start"]["run_id"]


def test_sync_handler_on_a_sync_bus(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        handler = SyncRelayBusCallbackHandler(bus=bus, topic=TOPIC)
        assert model("ok").invoke("hi", config={"callbacks": [handler]}).content == "ok"
        evts = [m.payload for m in bus.history(TOPIC)]
    assert [e["event"] for e in evts] == ["chat_model_start", "chat_model_end"]
    assert evts[1]["text"] == "ok" and evts[0]["run_id"] == evts[1]["run_id"]


def test_each_handler_takes_its_own_kind_of_bus(redis_url: str) -> None:
    sync_bus = SyncBus.from_url(redis_url)
    try:
        with pytest.raises(TypeError, match="SyncRelayBusCallbackHandler"):
            RelayBusCallbackHandler(bus=sync_bus, topic=TOPIC)  # type: ignore[arg-type]
    finally:
        sync_bus.close()
    with pytest.raises(TypeError, match="RelayBusCallbackHandler"):
        SyncRelayBusCallbackHandler(bus=Bus.from_url(redis_url), topic=TOPIC)  # type: ignore[arg-type]


async def test_a_bus_error_is_logged_and_the_run_goes_on(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    closed = Bus.from_url(redis_url, prefix=prefix)  # never connected: every publish fails
    handler = RelayBusCallbackHandler(bus=closed, topic=TOPIC)
    with caplog.at_level(logging.WARNING, logger="relaybus.adapters.langchain"):
        reply = await model("still fine").ainvoke("hi", config={"callbacks": [handler]})
    assert reply.content == "still fine"
    assert any("on_chat_model_start" in r.message and "not connected" in r.message for r in caplog.records)


async def test_raise_errors_lets_a_bus_error_end_the_run(redis_url: str, prefix: str) -> None:
    closed = Bus.from_url(redis_url, prefix=prefix)
    handler = RelayBusCallbackHandler(bus=closed, topic=TOPIC, raise_errors=True)
    with pytest.raises(Exception, match="not connected"):
        await model().ainvoke("hi", config={"callbacks": [handler]})


async def test_events_are_dropped_not_waited_for_while_redis_is_down(
    server_factory: type[EmbeddedRedis], prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the health check finds Redis down, a run does not wait publish_timeout_s per
    event: the events are dropped, counted and logged, and the run goes on."""
    with server_factory(port=free_port()) as server:
        async with Bus.from_url(
            server.url,
            prefix=prefix,
            publish_timeout_s=1.0,
            health_check_interval_s=0.1,
            socket_timeout=1.0,
        ) as bus:
            handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC)
            server.kill()
            await wait_for(lambda: bus.health.state == "disconnected")
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="relaybus.adapters.langchain"):
                for _ in range(3):  # six events: start and end of three runs
                    reply = await model("fine").ainvoke("hi", config={"callbacks": [handler]})
                    assert reply.content == "fine"
            assert time.monotonic() - started < 2.0  # waiting would take >= 6 x publish_timeout_s
            assert handler.options.dropped == 6
            assert any("Redis unreachable" in r.message for r in caplog.records)


async def test_nested_chains_are_left_out_by_default(bus: Bus) -> None:
    """A nested chain (a LangGraph node: the whole state each time) publishes nothing by
    default; the root chain and the tool inside do."""
    prepare: Runnable[int, dict[str, int]] = RunnableLambda(lambda n: {"x": n + 1}, name="prepare")
    await (prepare | double).ainvoke(4, config={"callbacks": [RelayBusCallbackHandler(bus=bus, topic=TOPIC)]})
    evts = await events(bus)
    assert [e["event"] for e in evts] == ["chain_start", "tool_start", "tool_end", "chain_end"]
    assert evts[0]["name"] == "RunnableSequence"


async def test_chosen_events_only(bus: Bus) -> None:
    handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC, events=["tool", "chain_error"])
    prepare: Runnable[int, dict[str, int]] = RunnableLambda(lambda n: {"x": n + 1}, name="prepare")
    await (prepare | double).ainvoke(4, config={"callbacks": [handler]})
    assert [e["event"] for e in await events(bus)] == ["tool_start", "tool_end"]
    with pytest.raises(ValueError, match=r"unknown event\(s\) \['tool_begin'\]"):
        RelayBusCallbackHandler(bus=bus, events=["tool_begin"])
    with pytest.raises(TypeError, match="not one string"):
        RelayBusCallbackHandler(bus=bus, events="tool")


async def test_inputs_and_outputs_can_be_left_out(bus: Bus) -> None:
    handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC, include_io=False)
    await sync_double.ainvoke({"x": 21}, config={"callbacks": [handler]})
    await handler.flush()  # a sync tool's callbacks run in LangChain's worker thread, handed over
    start, end = await events(bus)
    assert "input" not in start and "output" not in end
    assert start["name"] == "double" and end["duration_s"] >= 0


async def test_an_event_larger_than_its_cap_is_cut_to_a_preview(bus: Bus) -> None:
    handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC, max_event_bytes=2048)
    echo: Runnable[str, str] = RunnableLambda(lambda text: text, name="echo")
    await echo.ainvoke("x" * 50_000, config={"callbacks": [handler]})
    for event in await events(bus):
        assert len(json.dumps(event)) <= 2048 + 64  # the cap, counted as orjson writes it
        assert event["truncated"] > 50_000
    with pytest.raises(ValueError, match="max_event_bytes"):
        RelayBusCallbackHandler(bus=bus, max_event_bytes=10)


def in_order(evts: list[dict[str, Any]]) -> bool:
    """Each run's start before its end, and a child's start after its parent's."""
    seen: dict[str, int] = {}
    for i, e in enumerate(evts):
        if e["event"].endswith("_start"):
            if e["parent_run_id"] and e["parent_run_id"] not in seen:
                return False
            seen[e["run_id"]] = i
        elif e["run_id"] not in seen:
            return False
    return True


@pytest.mark.timeout(30)
async def test_a_sync_invoke_on_the_bus_loop_thread_returns_and_every_event_follows(bus: Bus) -> None:
    """A sync `invoke` from a coroutine on the bus's loop (LangChain then blocks that
    thread while the async handler runs elsewhere): the run returns instead of waiting
    forever for the blocked loop; its events are published once the loop is free, in
    order, none lost - `flush()` waits for them."""
    handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC, nested_chains=True)
    prepare: Runnable[int, dict[str, int]] = RunnableLambda(lambda n: {"x": n + 1}, name="prepare")
    assert (prepare | double).invoke(4, config={"callbacks": [handler]}) == 10
    await handler.flush()
    evts = await events(bus)
    assert [e["event"] for e in evts] == [
        "chain_start",
        "chain_start",
        "chain_end",
        "tool_start",
        "tool_end",
        "chain_end",
    ]
    assert in_order(evts) and evts[-1]["outputs"] == 10


@pytest.mark.timeout(30)
async def test_closing_the_bus_publishes_the_events_still_handed_over(
    redis_url: str, prefix: str, bus: Bus
) -> None:
    """Closing the bus right after a sync run on its loop thread loses none of the run's
    events: close waits for the ones still queued."""
    async with Bus.from_url(redis_url, prefix=prefix) as closing:
        handler = RelayBusCallbackHandler(bus=closing, topic=TOPIC)
        for x in range(5):
            assert double.invoke({"x": x}, config={"callbacks": [handler]}) == 2 * x
    assert [e.get("output") for e in await events(bus)] == [None, 0, None, 2, None, 4, None, 6, None, 8]


@pytest.mark.timeout(30)
async def test_events_awaited_on_the_loop_come_after_those_handed_to_it(bus: Bus) -> None:
    """A sync run on the loop thread, then an async one: the async run's events, awaited,
    are published after every event the sync run handed over; nothing to flush."""
    handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC)
    assert double.invoke({"x": 1}, config={"callbacks": [handler]}) == 2
    assert await double.ainvoke({"x": 2}, config={"callbacks": [handler]}) == 4
    assert [(e["event"], e.get("output")) for e in await events(bus)] == [
        ("tool_start", None),
        ("tool_end", 2),
        ("tool_start", None),
        ("tool_end", 4),
    ]


@pytest.mark.timeout(30, method="thread")  # a hang holds the loop SyncBus.close() needs: end the run
def test_a_sync_run_on_the_sync_bus_loop_thread_returns_and_publishes_every_event(
    redis_url: str, prefix: str
) -> None:
    """A sync run on a SyncBus's own loop thread (a coroutine handler, say), its parallel
    branches in worker threads: no callback there waits for the busy loop, every event
    is published, each run's start before its end."""
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        handler = SyncRelayBusCallbackHandler(bus=bus, topic=TOPIC, nested_chains=True)
        fan: Runnable[int, dict[str, int]] = RunnableParallel(
            a=RunnableLambda(lambda n: n + 1, name="a"), b=RunnableLambda(lambda n: n * 2, name="b")
        )

        async def on_the_loop() -> dict[str, int]:
            return fan.invoke(5, config={"callbacks": [handler]})

        assert bus.bus.loop is not None
        assert asyncio.run_coroutine_threadsafe(on_the_loop(), bus.bus.loop).result() == {"a": 6, "b": 10}
        handler.flush()
        evts = [m.payload for m in bus.history(TOPIC)]
    assert sorted(e["event"] for e in evts) == ["chain_end"] * 3 + ["chain_start"] * 3
    assert evts[0]["parent_run_id"] is None and evts[-1]["run_id"] == evts[0]["run_id"]
    assert in_order(evts) and evts[-1]["outputs"] == {"a": 6, "b": 10}


@pytest.mark.timeout(60)
async def test_a_run_cancelled_while_its_event_is_sent_neither_loses_nor_repeats_it(
    server_factory: type[EmbeddedRedis], prefix: str
) -> None:
    """The run awaiting its event is cancelled while the publish is on the wire: the
    event is published once, and the handler's later events still follow it."""
    with server_factory(port=free_port()) as server:
        async with (
            FaultProxy("127.0.0.1", server.port) as proxy,
            Bus.from_url(proxy.url, prefix=prefix, publish_timeout_s=10) as bus,
        ):
            handler = RelayBusCallbackHandler(bus=bus, topic=TOPIC)
            proxy.set("delay", 0.5)
            run = asyncio.create_task(model("one").ainvoke("hi", config={"callbacks": [handler]}))
            await asyncio.sleep(0.2)  # chat_model_start is on its way
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            proxy.set("pass")
            assert (await model("two").ainvoke("hi", config={"callbacks": [handler]})).content == "two"
            evts = await events(bus)
    assert [(e["event"], e.get("text")) for e in evts] == [
        ("chat_model_start", None),
        ("chat_model_start", None),
        ("chat_model_end", "two"),
    ]

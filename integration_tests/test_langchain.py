"""The LangChain toolkit against a real Redis: what a model sees when it calls the tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool

from relaybus import Bus, Message, SyncBus
from relaybus.adapters.langchain import RelayBusToolkit

from .helpers import running


def tools_of(
    bus: Bus | SyncBus, allowed: list[str] | None = None, new_groups: list[str] | None = None
) -> dict[str, BaseTool]:
    return {
        t.name: t for t in RelayBusToolkit(bus=bus, allowed_topics=allowed, new_groups=new_groups).get_tools()
    }


def call(name: str, **args: object) -> dict[str, object]:
    return {"name": name, "args": args, "id": f"call-{name}", "type": "tool_call"}


@pytest.fixture
def sync_bus(redis_url: str, prefix: str) -> Iterator[SyncBus]:
    with SyncBus.from_url(redis_url, prefix=prefix) as b:
        yield b


def test_toolkit_offers_the_five_tools_with_schemas_naming_the_allowed_topics(bus: Bus) -> None:
    tools = tools_of(bus, ["tasks.*"])
    assert list(tools) == [
        "relaybus_publish",
        "relaybus_request",
        "relaybus_read",
        "relaybus_history",
        "relaybus_stats",
    ]
    assert set(tools["relaybus_publish"].args) == {"topic", "payload", "priority"}
    assert set(tools["relaybus_request"].args) == {"topic", "payload", "timeout_s"}
    assert set(tools["relaybus_read"].args) == {"topic", "group", "count", "wait_seconds"}
    assert set(tools["relaybus_history"].args) == {"topic", "limit"}
    assert tools["relaybus_stats"].args == {}
    assert "Allowed topics: tasks.*" in tools["relaybus_publish"].description


def test_a_bad_allowlist_pattern_fails_when_the_toolkit_is_built(bus: Bus) -> None:
    with pytest.raises(ValueError, match="invalid topic pattern"):
        RelayBusToolkit(bus=bus, allowed_topics=["tasks/*"])


async def test_publish_then_read_round_trip_and_read_acks(bus: Bus) -> None:
    tools = tools_of(bus, ["tasks.*"], new_groups=["reviewers"])
    published = await tools["relaybus_publish"].ainvoke(
        call("relaybus_publish", topic="tasks.review", payload={"pr": 42}, priority=5)
    )
    assert isinstance(published, ToolMessage) and published.status == "success"
    sent = json.loads(published.content)  # type: ignore[arg-type]
    assert sent["topic"] == "tasks.review"

    got = json.loads(await tools["relaybus_read"].ainvoke({"topic": "tasks.review", "group": "reviewers"}))
    assert got["topic"] == "tasks.review"
    [message] = got["messages"]
    assert (message["id"], message["payload"], message["priority"]) == (sent["id"], {"pr": 42}, 5)
    assert "attempt" not in message and "headers" not in message  # defaults left out: compact

    again = json.loads(await tools["relaybus_read"].ainvoke({"topic": "tasks.review", "group": "reviewers"}))
    assert again["messages"] == []
    stats = await bus.stats(["tasks.review"])
    assert [(g.name, g.pending) for g in stats.topics[0].groups] == [("reviewers", 0)]  # acked


async def test_a_topic_outside_the_allowlist_is_a_tool_error_the_agent_reads(bus: Bus) -> None:
    publish = tools_of(bus, ["tasks.*", "reviews.done"])["relaybus_publish"]
    result = await publish.ainvoke(call("relaybus_publish", topic="payments.refund", payload={"x": 1}))
    assert isinstance(result, ToolMessage) and result.status == "error"
    assert result.tool_call_id == "call-relaybus_publish"
    assert "'payments.refund' is not allowed" in result.content
    assert "tasks.*, reviews.done" in result.content
    assert await bus.topics() == []  # nothing was published

    history = tools_of(bus, ["tasks.*"])["relaybus_history"]
    plain = await history.ainvoke({"topic": "payments.refund"})  # without a tool call: the text
    assert "not allowed" in plain


async def test_bus_errors_and_bad_arguments_are_tool_errors_too(bus: Bus) -> None:
    tools = tools_of(bus)
    bad_name = await tools["relaybus_publish"].ainvoke(call("relaybus_publish", topic="no spaces", payload=1))
    assert bad_name.status == "error" and "invalid topic 'no spaces'" in bad_name.content
    bad_priority = await tools["relaybus_publish"].ainvoke(
        call("relaybus_publish", topic="tasks.x", payload=1, priority=12)
    )
    assert bad_priority.status == "error"
    assert "priority" in bad_priority.content and "less than or equal to 9" in bad_priority.content
    bad_group = await tools["relaybus_read"].ainvoke(call("relaybus_read", topic="tasks.x", group="a b"))
    assert bad_group.status == "error" and "invalid group" in bad_group.content
    assert await bus.topics() == []


async def keys_of(bus: Bus) -> set[str]:
    return {k.decode() async for k in bus._engine.ctx.redis.scan_iter(match=f"{bus.keys.prefix}:*")}


async def test_a_read_makes_no_group_or_topic_nothing_would_clean(bus: Bus) -> None:
    """A model's made-up group is refused (it would never read again, so retention would
    keep everything after it for good); a topic that does not exist is not created by a
    read, even one that waits; a group `new_groups` names is made and then read."""
    await bus.publish("tasks.review", {"pr": 1})
    await bus.ack(*await bus.read("tasks.review", "workers"))  # the group the workers read
    tools = tools_of(bus, ["tasks.*"], new_groups=["agents-*"])
    read = tools["relaybus_read"]
    made_up = await read.ainvoke(call("relaybus_read", topic="tasks.review", group="ghosts"))
    assert made_up.status == "error"
    assert made_up.content == (
        "relaybus_read failed: no consumer group 'ghosts' reads topic 'tasks.review', "
        "and this agent may not make one; its groups: workers"
    )
    stats = await bus.stats(["tasks.review"])
    assert [g.name for g in stats.topics[0].groups] == ["workers"]

    await bus.publish("tasks.review", {"pr": 2})
    await bus.ack(*await bus.read("tasks.review", "workers"))
    assert await bus.trim("tasks.review", keep_len=0) == 2  # consumed by every group: nothing pinned

    before = await keys_of(bus)
    for wait in (0, 0.3):
        nothing = json.loads(
            await read.ainvoke({"topic": "tasks.nobody", "group": "agents-1", "wait_seconds": wait})
        )
        assert nothing == {"topic": "tasks.nobody", "messages": []}
    assert await keys_of(bus) == before and await bus.topics() == ["tasks.review"]

    await bus.publish("tasks.review", {"pr": 3})
    mine = json.loads(await read.ainvoke({"topic": "tasks.review", "group": "agents-1"}))
    assert [m["payload"] for m in mine["messages"]] == [{"pr": 3}]
    assert "Only groups that exist can be read, and new ones named agents-*." in read.description


async def test_history_is_the_latest_messages_oldest_first(bus: Bus) -> None:
    for n in range(5):
        await bus.publish("tasks.log", {"n": n})
    history = tools_of(bus, ["tasks.*"])["relaybus_history"]
    got = json.loads(await history.ainvoke({"topic": "tasks.log", "limit": 3}))
    assert [m["payload"]["n"] for m in got["messages"]] == [2, 3, 4]
    assert json.loads(await history.ainvoke({"topic": "tasks.log"}))["messages"][0]["payload"] == {"n": 0}


async def test_stats_report_only_allowed_topics(bus: Bus) -> None:
    await bus.publish("tasks.review", 1)
    await bus.publish("payments.refund", 2)
    stats = tools_of(bus, ["tasks.*"])["relaybus_stats"]
    got = json.loads(await stats.ainvoke({}))
    assert [t["topic"] for t in got["topics"]] == ["tasks.review"]
    everything = json.loads(await tools_of(bus)["relaybus_stats"].ainvoke({}))
    assert [t["topic"] for t in everything["topics"]] == ["payments.refund", "tasks.review"]


async def test_read_waits_for_a_message_when_asked(bus: Bus) -> None:
    """Also on a topic that does not exist yet: the read waits for it to appear."""
    read = tools_of(bus, new_groups=["g"])["relaybus_read"]

    async def publish_later() -> str:
        await asyncio.sleep(0.3)
        return await bus.publish("replies.a", {"ok": True})

    waiting = asyncio.create_task(read.ainvoke({"topic": "replies.a", "group": "g", "wait_seconds": 5}))
    mid = await publish_later()
    got = json.loads(await waiting)
    assert [m["id"] for m in got["messages"]] == [mid]
    nothing = json.loads(await read.ainvoke({"topic": "replies.a", "group": "g", "wait_seconds": 0.2}))
    assert nothing["messages"] == []


def test_sync_invoke_with_a_sync_bus(sync_bus: SyncBus) -> None:
    tools = tools_of(sync_bus, ["tasks.*"], new_groups=["g"])
    sent = json.loads(tools["relaybus_publish"].invoke({"topic": "tasks.sync", "payload": "hello"}))
    got = json.loads(tools["relaybus_read"].invoke({"topic": "tasks.sync", "group": "g"}))
    assert [(m["id"], m["payload"]) for m in got["messages"]] == [(sent["id"], "hello")]
    refused = tools["relaybus_read"].invoke(call("relaybus_read", topic="other", group="g"))
    assert refused.status == "error" and "'other' is not allowed" in refused.content


async def test_ainvoke_with_a_sync_bus(sync_bus: SyncBus) -> None:
    tools = tools_of(sync_bus, ["tasks.*"])
    sent = json.loads(await tools["relaybus_publish"].ainvoke({"topic": "tasks.sync", "payload": 7}))
    got = json.loads(await tools["relaybus_history"].ainvoke({"topic": "tasks.sync"}))
    assert [m["id"] for m in got["messages"]] == [sent["id"]]


def test_sync_invoke_with_an_async_bus_says_to_use_ainvoke(redis_url: str, prefix: str) -> None:
    publish = tools_of(Bus.from_url(redis_url, prefix=prefix))["relaybus_publish"]
    with pytest.raises(RuntimeError, match="call it with ainvoke, or build the toolkit with a SyncBus"):
        publish.invoke({"topic": "tasks.x", "payload": 1})


async def test_a_server_refusal_is_a_tool_error(server_factory: type, prefix: str) -> None:
    """A full Redis (noeviction) refuses writes with redis-py's OOM error: the agent reads it."""
    with server_factory(args=["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]) as server:
        async with Bus.from_url(server.url, prefix=prefix, publish_timeout_s=0) as full:
            tools = tools_of(full)
            filler = "x" * 200_000
            refused = None
            for _ in range(40):
                result = await tools["relaybus_publish"].ainvoke(
                    call("relaybus_publish", topic="big", payload=filler)
                )
                if result.status == "error":
                    refused = result
                    break
            assert refused is not None, "Redis never refused a write"
            assert "OOM" in refused.content or "maxmemory" in refused.content


async def test_request_tool_returns_the_answer_or_an_error_the_model_can_read(
    bus: Bus, redis_url: str, prefix: str
) -> None:
    tools = tools_of(bus, ["tasks.*"])
    async with Bus.from_url(redis_url, prefix=prefix) as reviewer:

        @reviewer.subscribe("tasks.review", group="reviewers")
        async def review(msg: Message) -> None:
            await reviewer.reply(msg, {"verdict": "approve", "pr": msg.payload["pr"]})

        async with running(reviewer):
            answer = json.loads(
                await tools["relaybus_request"].ainvoke(
                    {"topic": "tasks.review", "payload": {"pr": 3}, "timeout_s": 10}
                )
            )
    assert answer["topic"] == "tasks.review" and answer["reply"]["payload"] == {"verdict": "approve", "pr": 3}
    silent = await tools["relaybus_request"].ainvoke(
        call("relaybus_request", topic="tasks.nobody", payload={}, timeout_s=0.2)
    )
    assert isinstance(silent, ToolMessage) and silent.status == "error"
    assert "no reply to the request on 'tasks.nobody' within 0.2 s" in str(silent.content)
    refused = await tools["relaybus_request"].ainvoke(
        call("relaybus_request", topic="payments.x", payload={})
    )
    assert refused.status == "error" and "not allowed" in str(refused.content)

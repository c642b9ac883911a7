"""The adapters' pure logic: the topic allowlist, what a model sees of a message, run events."""

from __future__ import annotations

import uuid

import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from relaybus import Message
from relaybus.adapters._langchain_callbacks import _RunEvents
from relaybus.adapters._tools import Allowlist, MessageView, TopicNotAllowedError


def test_allowlist_globs_exact_names_and_default() -> None:
    allow = Allowlist(["tasks.*", "notes", "agent-?"])
    assert allow.allows("tasks.review") and allow.allows("tasks.review.urgent")
    assert allow.allows("notes") and allow.allows("agent-1")
    assert not allow.allows("notes.x") and not allow.allows("agent-12") and not allow.allows("tasks")
    assert Allowlist(None).allows("anything") and not Allowlist([]).allows("anything")


def test_allowlist_check_validates_then_refuses_with_the_patterns() -> None:
    allow = Allowlist(["tasks.*"])
    assert allow.check("tasks.a") == "tasks.a"
    with pytest.raises(TopicNotAllowedError, match=r"'x' is not allowed .* allowed topics: tasks\.\*"):
        allow.check("x")
    with pytest.raises(ValueError, match="invalid topic"):
        allow.check("tasks.*")  # a pattern is not a topic
    with pytest.raises(ValueError, match="invalid topic pattern"):
        Allowlist(["tasks/*"])


def test_tool_descriptions_name_the_allowed_topics() -> None:
    assert Allowlist(["a.*", "b"]).tool_description("relaybus_publish").endswith("Allowed topics: a.*, b.")
    assert "Allowed" not in Allowlist(None).tool_description("relaybus_read")
    assert "Allowed" not in Allowlist(["a.*"]).tool_description("relaybus_stats")


def test_message_view_leaves_defaults_out() -> None:
    plain = MessageView.of(Message(id="m1", topic="t", payload={"a": 1}, created_at=0.0))
    assert plain.model_dump(exclude_defaults=True) == {
        "id": "m1",
        "payload": {"a": 1},
        "created_at": "1970-01-01T00:00:00.000+00:00",
    }
    rich = MessageView.of(
        Message(
            topic="t",
            payload=None,
            priority=3,
            attempt=2,
            headers={"k": "v"},
            correlation_id="c",
            reply_to="r",
        )
    )
    assert {"priority", "attempt", "headers", "correlation_id", "reply_to", "payload"} <= set(
        rich.model_dump(exclude_defaults=True)
    )


def test_run_events_pair_ends_with_starts() -> None:
    events = _RunEvents()
    run, parent = uuid.uuid4(), uuid.uuid4()
    start = events.on_chat_model_start(
        {"id": ["x", "MyModel"]}, [[]], run_id=run, parent_run_id=parent, tags=["t"], metadata={"m": 1}
    )
    assert (start["event"], start["name"]) == ("chat_model_start", "MyModel")
    assert start["parent_run_id"] == str(parent)
    result = LLMResult(
        generations=[
            [ChatGeneration(message=AIMessage("hi", tool_calls=[{"name": "f", "args": {}, "id": "1"}]))]
        ],
        llm_output={"token_usage": {"total": 5}},
    )
    end = events.on_llm_end(result, run_id=run, parent_run_id=parent)
    assert end["event"] == "chat_model_end" and end["text"] == "hi" and end["usage"] == {"total": 5}
    assert end["tool_calls"][0]["name"] == "f"
    assert end["tags"] == ["t"] and end["metadata"] == {"m": 1} and end["duration_s"] >= 0
    assert events.runs == {}  # nothing kept after the end
    orphan = events.on_tool_error(RuntimeError("boom"), run_id=uuid.uuid4())
    assert orphan["event"] == "tool_error" and "duration_s" not in orphan and orphan["error"] == "boom"

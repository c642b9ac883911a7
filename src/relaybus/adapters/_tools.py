"""The five agent tools' logic, shared by the LangChain and MCP adapters.

Both adapters give a model the same tools with the same argument schemas, the same
topic allowlist and the same compact results; only how errors reach the model differs
(LangChain's ToolException, MCP's ToolError), so that mapping stays in the adapters.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import RedisError

from ..bus import Bus
from ..errors import RelayBusError
from ..keys import is_pattern, validate_group, validate_pattern, validate_topic
from ..message import Message

# What an agent gets back as a readable tool error instead of a failed run: the bus's
# own errors, bad names and arguments, and a server refusal (full memory, READONLY,
# NOPERM) that reaches us as redis-py's error.
AGENT_ERRORS = (RelayBusError, ValueError, RedisError)
TOPIC_POLL_S = 0.2  # how often a read waiting on a topic that does not exist yet looks for it

Topic = Annotated[
    str, Field(description="Topic name, e.g. 'tasks.review': letters, digits and '. _ - :', no wildcards.")
]
Payload = Annotated[
    Any, Field(description='The message body: any JSON value, usually an object such as {"pr": 42}.')
]
Priority = Annotated[int, Field(ge=0, le=9, description="0 (default) to 9; higher is delivered first.")]
Group = Annotated[
    str,
    Field(
        description="Consumer group name, e.g. 'reviewers'. Agents sharing a group split the messages; "
        "each group gets every message once."
    ),
]
Count = Annotated[int, Field(ge=1, le=100, description="Most messages to take (1-100).")]
WaitSeconds = Annotated[
    float, Field(ge=0, le=30, description="Seconds to wait for a first message when none is waiting (0-30).")
]
Limit = Annotated[int, Field(ge=1, le=200, description="How many of the latest messages (1-200).")]
TimeoutSeconds = Annotated[
    float, Field(gt=0, le=300, description="Seconds to wait for the answer (default 30, at most 300).")
]

DESCRIPTIONS = {
    "relaybus_publish": (
        "Send a message to other agents on a relaybus topic. Returns the new message's id as JSON, "
        'e.g. {"id":"01J...","topic":"tasks.review"}.'
    ),
    "relaybus_read": (
        "Take the next messages waiting for your consumer group on a topic; they are acknowledged, "
        "so the group will not get them again. Returns JSON "
        '{"topic":...,"messages":[{"id":...,"payload":...,"created_at":...}]}; an empty list means '
        "nothing is waiting."
    ),
    "relaybus_history": (
        "Look at the latest messages of a topic, oldest first, without consuming them. Returns JSON "
        '{"topic":...,"messages":[...]}.'
    ),
    "relaybus_request": (
        "Ask another agent and wait for its answer: sends the payload to the topic as a request and "
        'returns the reply as JSON {"topic":...,"reply":{"id":...,"payload":...,"created_at":...}}. '
        "An error if no answer comes within timeout_s seconds."
    ),
    "relaybus_stats": (
        "Bus statistics as JSON: per topic and group the queue length, pending and lag, dead letters, "
        "and the Redis server's memory. Use it to see where work is piling up."
    ),
}


class TopicNotAllowedError(RelayBusError):
    """The agent asked for a topic its allowlist does not cover."""


class GroupNotAllowedError(RelayBusError):
    """The agent asked to read a consumer group that does not exist and it may not make."""


def _patterns(patterns: Iterable[str] | None, what: str) -> list[str] | None:
    if isinstance(patterns, str):  # its characters would be the patterns, '*' among them
        raise TypeError(f"{what} must be a list of patterns, not one string: use [{patterns!r}]")
    try:
        return None if patterns is None else [validate_pattern(p) for p in patterns]
    except ValueError as exc:  # says "topic pattern": name the argument it came from
        raise ValueError(f"{what}: {exc}") from None


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) if is_pattern(p) else name == p for p in patterns)


class Allowlist:
    """What an agent may use: glob patterns (`*`, `?`, `[...]`) naming its topics (None:
    every topic), and those naming the consumer groups its reads may create (None: none -
    a group that never reads again would stop retention of its topic for good)."""

    def __init__(
        self, patterns: Iterable[str] | None = None, new_groups: Iterable[str] | None = None
    ) -> None:
        self.patterns = _patterns(patterns, "allowed topics")
        self.new_groups = _patterns(new_groups, "new groups") or []

    def allows(self, topic: str) -> bool:
        return self.patterns is None or _matches(topic, self.patterns)

    def may_create(self, group: str) -> bool:
        return _matches(group, self.new_groups)

    def check(self, topic: str) -> str:
        """The topic, validated and allowed, or an error the model can act on."""
        validate_topic(topic)
        if not self.allows(topic):
            raise TopicNotAllowedError(
                f"topic {topic!r} is not allowed for this agent; allowed topics: {self.describe()}"
            )
        return topic

    def describe(self) -> str:
        if self.patterns is None:
            return "any topic"
        return ", ".join(self.patterns) or "none"

    def tool_description(self, name: str) -> str:
        """The tool's description, telling the model which topics it may use."""
        text = DESCRIPTIONS[name]
        if name == "relaybus_read":
            text += " Only groups that exist can be read" + (
                f", and new ones named {', '.join(self.new_groups)}." if self.new_groups else "."
            )
        if name == "relaybus_stats" or self.patterns is None:
            return text
        return f"{text} Allowed topics: {self.describe()}."


class MessageView(BaseModel):
    """A message as a model sees it: what it needs to act, defaults left out."""

    id: str
    payload: Any
    created_at: str
    priority: int = 0
    attempt: int = 1
    headers: dict[str, str] | None = None
    sender: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None

    @classmethod
    def of(cls, m: Message) -> MessageView:
        return cls(
            id=m.id,
            payload=m.payload,
            priority=m.priority,
            attempt=m.attempt,
            headers=m.headers or None,
            sender=m.sender,
            correlation_id=m.correlation_id,
            reply_to=m.reply_to,
            created_at=datetime.fromtimestamp(m.created_at, UTC).isoformat(timespec="milliseconds"),
        )


class Published(BaseModel):
    id: str = Field(description="The message id; replies and history show the same id.")
    topic: str


class Messages(BaseModel):
    topic: str
    messages: list[MessageView]


class Replied(BaseModel):
    topic: str
    reply: MessageView


async def publish(bus: Bus, allow: Allowlist, topic: str, payload: Any, priority: int = 0) -> Published:
    return Published(id=await bus.publish(allow.check(topic), payload, priority=priority), topic=topic)


async def read(
    bus: Bus, allow: Allowlist, topic: str, group: str, count: int = 10, wait_seconds: float = 0
) -> Messages:
    """Read and ack at once: a tool result is the agent's only copy, so the group moves on
    (at-most-once for the agent, unlike a handler, which acks after it succeeded).
    A model's read makes nothing in Redis that nothing would clean: a topic that does not
    exist is waited for (up to `wait_seconds`), never created; a group that does not exist
    is made only when `allow.new_groups` names it."""
    allow.check(topic)
    validate_group(group)
    deadline = time.monotonic() + wait_seconds
    while topic not in await bus.topics():  # the registry, as cleanup and stats know topics
        left = deadline - time.monotonic()
        if left <= 0:
            return Messages(topic=topic, messages=[])
        await asyncio.sleep(min(TOPIC_POLL_S, left))
    groups = await bus.consumer_groups(topic)
    if group not in groups and not allow.may_create(group):
        raise GroupNotAllowedError(
            f"no consumer group {group!r} reads topic {topic!r}, and this agent may not make one; "
            f"its groups: {', '.join(sorted(groups)) or 'none'}"
        )
    left_ms = int((deadline - time.monotonic()) * 1000)
    got = await bus.read(topic, group, count=count, block_ms=max(0, left_ms))
    if got:
        await bus.ack(*got)
    return Messages(topic=topic, messages=[MessageView.of(m) for m in got])


async def request(bus: Bus, allow: Allowlist, topic: str, payload: Any, timeout_s: float = 30) -> Replied:
    reply = await bus.request(allow.check(topic), payload, timeout=timeout_s)
    return Replied(topic=topic, reply=MessageView.of(reply))


async def history(bus: Bus, allow: Allowlist, topic: str, limit: int = 20) -> Messages:
    messages = await bus.history(allow.check(topic), limit)
    return Messages(topic=topic, messages=[MessageView.of(m) for m in messages])


async def stats(bus: Bus, allow: Allowlist) -> dict[str, Any]:
    """Bus statistics, reporting only the topics the agent may use."""
    allowed = None if allow.patterns is None else await topics(bus, allow)
    return (await bus.stats(allowed)).model_dump(mode="json")


async def topics(bus: Bus, allow: Allowlist) -> list[str]:
    return [t for t in await bus.topics() if allow.allows(t)]


def explain_invalid(error: ValidationError) -> str:
    """Which argument was wrong and why, in one line a model can act on (no input echo,
    no documentation links)."""
    return "invalid arguments: " + "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
        for e in error.errors(include_url=False, include_input=False)
    )


def compact_json(value: Any) -> str:
    return orjson.dumps(value).decode()

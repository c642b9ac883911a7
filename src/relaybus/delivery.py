"""What hooks receive about a delivery: the subscription, and the decision on failure."""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, TypeAdapter

from . import arguments
from .keys import is_pattern, validate_group, validate_pattern, validate_topic
from .message import Message

Handler = Callable[[Message], Awaitable[None] | None]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class FailureDecision:
    """What to do with a message whose handler raised; returned by `on_failure`.

    `retry` re-delivers after `delay` seconds, `dead_letter` moves it to the topic's
    DLQ, `drop` acknowledges it and counts it. Each is executed atomically by the core.
    """

    action: Literal["retry", "dead_letter", "drop"]
    delay: float = 0.0
    reason: str = ""

    @classmethod
    def retry(cls, delay: float) -> FailureDecision:
        """Deliver it again later, with the next attempt number.

        Args:
            delay: Seconds to wait first; below 0 counts as 0.
        """
        return cls("retry", delay=max(0.0, delay))

    @classmethod
    def dead_letter(cls, reason: str) -> FailureDecision:
        """Move it to the topic's DLQ.

        Args:
            reason: Why, kept in the dead letter's headers.
        """
        return cls("dead_letter", reason=reason)

    @classmethod
    def drop(cls, reason: str) -> FailureDecision:
        """Acknowledge it without handling it, and count it.

        Args:
            reason: Why, for logs and `on_settled`.
        """
        return cls("drop", reason=reason)

    def __str__(self) -> str:
        """As a log line says it: "retried in 2.0 s", "dead-lettered: rejected"."""
        if self.action == "retry":
            return f"retried in {self.delay:.1f} s"
        return f"{'dead-lettered' if self.action == 'dead_letter' else 'dropped'}: {self.reason}"


@dataclass(slots=True, eq=False, weakref_slot=True)
class Subscription:
    """One `subscribe` call: which topics, which group, how many handlers at once, and
    the options plugins declared (`options`; typed: `option(Model)`)."""

    topics: tuple[str, ...]
    group: str
    handler: Handler
    concurrency: int = 1
    prefetch: int = 0
    filter: Any = None
    model: Any = None
    start: Literal["earliest", "latest"] = "earliest"
    options: dict[str, Any] = field(default_factory=dict)
    _typed: dict[type[BaseModel], BaseModel] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("subscribe needs at least one topic or pattern")
        for name in self.topics:
            validate_pattern(name) if is_pattern(name) else validate_topic(name)
        validate_group(self.group)
        arguments.count("concurrency", self.concurrency)
        arguments.count("prefetch", self.prefetch, least=0)
        arguments.choice("start", self.start, ("earliest", "latest"))
        if self.model is not None:
            try:
                TypeAdapter(self.model)
            except Exception:
                raise TypeError(
                    f"model must be a type pydantic validates (a BaseModel, a dataclass, "
                    f"list[int], ...), got {self.model!r}"
                ) from None
        if self.prefetch == 0:
            self.prefetch = self.concurrency * 2

    def option(self, model: type[M]) -> M:
        """A plugin's options, typed: `subscription.option(MyOptions).my_field`, for the
        model its `subscription_options` returns. Validated once per subscription and kept
        with it, so a model's private attributes can hold what the plugin prepares for this
        subscription (the filters plugin keeps its compiled filter there).

        Args:
            model: The pydantic model the plugin's `subscription_options` returns; the
                subscription's options named by its fields are validated against it.

        Returns:
            The validated model instance, the same one at every call.
        """
        found = self._typed.get(model)
        if found is None:
            given = {k: v for k, v in self.options.items() if k in model.model_fields}
            found = self._typed[model] = model.model_validate(given)
        return cast(M, found)

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(t for t in self.topics if is_pattern(t))

    def matches(self, topic: str) -> bool:
        """Whether a message on `topic` is for this subscription.

        Args:
            topic: A topic name (not a pattern).
        """
        return any(fnmatch.fnmatchcase(topic, t) if is_pattern(t) else topic == t for t in self.topics)

    @property
    def name(self) -> str:
        return getattr(self.handler, "__qualname__", repr(self.handler))

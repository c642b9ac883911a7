"""The keywords a publish takes, defined once: `Bus.publish` spells them out (with their
defaults); `publish_many`, `SyncBus` and the adapters take them as `**options` typed by
`PublishOptions`, so a type checker catches a misspelt one everywhere and they cannot
drift. The facade checks them once into a `PublishParams`, which is what it hands the
engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from .arguments import seconds


class PublishOptions(TypedDict, total=False):
    priority: int  # 0-9, larger is more urgent
    ttl: float | None  # seconds until it expires
    delay: float | None  # seconds before it is delivered
    dedup_key: str | None  # idempotency key, per topic
    headers: dict[str, str] | None
    sender: str | None
    correlation_id: str | None
    reply_to: str | None
    dedup_window: float | None  # seconds; default dedup_window_s


# not frozen: its __init__ would set each field through object.__setattr__, three times
# the cost (3 us a publish, a tenth of one among 64 publishing tasks); nothing changes it
@dataclass(slots=True, kw_only=True)
class PublishParams:
    """The keywords of one publish, checked when made (an unknown one is a TypeError
    naming it); the same fields as PublishOptions, with the same defaults."""

    priority: int = 0
    ttl: float | None = None
    delay: float | None = None
    dedup_key: str | None = None
    headers: dict[str, str] | None = None
    sender: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    dedup_window: float | None = None

    def __post_init__(self) -> None:
        if self.dedup_window is not None:
            seconds("dedup_window", self.dedup_window, positive=True)
        if self.delay is not None:
            seconds("delay", self.delay)
        if self.ttl is not None:
            seconds("ttl", self.ttl, positive=True)
        if self.dedup_key is not None and (not isinstance(self.dedup_key, str) or not self.dedup_key):
            raise ValueError(f"dedup_key must be a non-empty string, got {self.dedup_key!r}")

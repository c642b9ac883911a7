"""The keywords a publish takes, defined once: `Bus.publish` spells them out (with their
defaults); `publish_many`, `SyncBus` and the engine take them as `**options` typed by
this, so a type checker catches a misspelt one everywhere and they cannot drift."""

from __future__ import annotations

from typing import TypedDict


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

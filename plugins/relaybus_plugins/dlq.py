"""Retries and dead-lettering: a failed message is retried after a backoff that doubles
each attempt (`retry_backoff_s`, capped at `retry_backoff_max_s`, with jitter) until it
has been delivered `max_attempts` times; then it moves to the topic's DLQ."""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field

from relaybus import Bus, FailureDecision, Message, hookimpl


class DlqSettings(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    max_attempts: int = Field(5, ge=1, description="Deliveries before a failing message is dead-lettered.")
    retry_backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles each attempt.")
    retry_backoff_max_s: float = Field(300.0, ge=0, description="Cap on the retry delay.")


def backoff(attempt: int, first: float, cap: float) -> float:
    """Delay before delivery `attempt + 1`: first x 2^(attempt-1), capped, then jittered
    into [d/2, d] so a burst of failures does not come back as one burst."""
    delay: float = min(cap, first * 2.0 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


@hookimpl
def plugin_settings() -> type[BaseModel]:
    return DlqSettings


@hookimpl
def on_failure(bus: Bus, message: Message, error: BaseException) -> FailureDecision:
    config = bus.config.settings(DlqSettings)
    if message.attempt >= config.max_attempts:
        return FailureDecision.dead_letter(f"failed {message.attempt} times (max_attempts)")
    return FailureDecision.retry(backoff(message.attempt, config.retry_backoff_s, config.retry_backoff_max_s))

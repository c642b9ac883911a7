"""Retries and dead-lettering: a failed message is retried after a backoff that doubles
each attempt (`retry_backoff_s`, capped at `retry_backoff_max_s`, with jitter) until it
has been delivered `max_attempts` times; then it moves to the topic's DLQ."""

from __future__ import annotations

import random

from relaybus import Bus, FailureDecision, Message, hookimpl


def backoff(attempt: int, first: float, cap: float) -> float:
    """Delay before delivery `attempt + 1`: first x 2^(attempt-1), capped, then jittered
    into [d/2, d] so a burst of failures does not come back as one burst."""
    delay: float = min(cap, first * 2.0 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


@hookimpl
def on_failure(bus: Bus, message: Message, error: BaseException) -> FailureDecision:
    config = bus.config
    if message.attempt >= config.max_attempts:
        return FailureDecision.dead_letter(f"failed {message.attempt} times (max_attempts)")
    return FailureDecision.retry(backoff(message.attempt, config.retry_backoff_s,
                                         config.retry_backoff_max_s))

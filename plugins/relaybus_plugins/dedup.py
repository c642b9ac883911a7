"""Dedup: with `dedup_from_payload`, a message published without a `dedup_key` gets one
derived from its payload (dedup keys are per topic), so the same payload inside the
window is appended once. The check-and-append itself is the core's publish script (atomic)."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

from relaybus import Bus, Message, hookimpl


class DedupSettings(BaseModel):
    dedup_from_payload: bool = Field(
        False, description="Derive a dedup key from the payload when none is given."
    )


def payload_key(message: Message) -> str:
    """A stable key for a JSON payload: sha256 of its canonical (sorted-keys) form. A
    payload JSON cannot carry gets the error a publish gives it (too deep, not JSON)."""
    canonical = message.payload_json(sort_keys=True)
    return "payload:" + hashlib.sha256(canonical).hexdigest()


@hookimpl
def plugin_settings() -> type[BaseModel]:
    return DedupSettings


@hookimpl
def on_publish(bus: Bus, message: Message) -> Message | None:
    if message.dedup_key is not None or not bus.config.settings(DedupSettings).dedup_from_payload:
        return None
    return message.model_copy(update={"dedup_key": payload_key(message)})

"""Priority: a message's `priority` (0-9) picks its lane, and consumers read the
highest lane first. Disabled, every message is appended to the topic stream in order."""

from __future__ import annotations

from relaybus import Bus, Message, hookimpl


@hookimpl
def on_publish(bus: Bus, message: Message) -> Message | None:
    if message.priority == message.lane:
        return None
    return message.model_copy(update={"lane": message.priority})

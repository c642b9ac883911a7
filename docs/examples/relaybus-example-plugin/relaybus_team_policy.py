"""relaybus-team-policy: an example third-party relaybus plugin.

- `on_publish`: every message gets an `origin` header (`<host>:<pid>` of the publisher)
  unless the caller set one, so a consumer can tell where a message came from.
- `on_subscribe`: a consumer group must be named `team-<something>`; any other group is
  refused when `subscribe` is called, before anything is read.
- `on_cleanup` (async): on every cleanup, each topic holding dead letters is reported as a
  warning on the `relaybus_team_policy` logger.

It imports only relaybus's public API (`from relaybus import ...`), like the built-ins.
"""

from __future__ import annotations

import logging
import os
import socket

from relaybus import Bus, ConfigError, Message, Subscription, hookimpl

ORIGIN_HEADER = "origin"
GROUP_PREFIX = "team-"
HOST = socket.gethostname()

log = logging.getLogger("relaybus_team_policy")


def origin() -> str:
    return f"{HOST}:{os.getpid()}"  # the pid at publish time, so it stays right after a fork


@hookimpl
def on_publish(message: Message) -> Message | None:
    """Stamp the origin header; None (no change) when the caller set one."""
    if ORIGIN_HEADER in message.headers:
        return None
    return message.model_copy(update={"headers": {**message.headers, ORIGIN_HEADER: origin()}})


@hookimpl
def on_subscribe(subscription: Subscription) -> None:
    """Refuse a group outside the team- naming scheme. A RelayBusError (ConfigError here)
    reaches the caller of `subscribe` as it is; any other exception would arrive as a
    PluginError naming this plugin."""
    if not subscription.group.startswith(GROUP_PREFIX):
        raise ConfigError(
            f"team_policy: group {subscription.group!r} refused; consumer groups must be "
            f"named {GROUP_PREFIX}<name>"
        )


@hookimpl
async def on_cleanup(bus: Bus) -> None:
    """An async hook: the bus awaits the coroutine this returns."""
    stats = await bus.stats()
    for topic in stats.topics:
        if topic.dlq_length:
            log.warning("topic %r holds %d dead letter(s)", topic.topic, topic.dlq_length)

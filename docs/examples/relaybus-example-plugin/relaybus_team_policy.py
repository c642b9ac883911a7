"""relaybus-team-policy: an example third-party relaybus plugin.

- `on_publish`: every message gets an `origin` header (`<host>:<pid>` of the publisher)
  unless the caller set one, so a consumer can tell where a message came from.
- `on_subscribe`: a consumer group must be named `<team_group_prefix><something>`
  (`team-` unless configured); any other group is refused when `subscribe` is called,
  before anything is read.
- `plugin_settings`: declares that setting, `team_group_prefix` - a `Bus.from_url`
  keyword or the `RELAYBUS_TEAM_GROUP_PREFIX` variable, checked by the model below.
- `on_cleanup` (async): on every cleanup, each topic holding dead letters is reported as a
  warning on the `relaybus_team_policy` logger.

It imports only relaybus's public API (`from relaybus import ...`), like the built-ins.
"""

from __future__ import annotations

import logging
import os
import socket

from pydantic import BaseModel, Field

from relaybus import Bus, ConfigError, Message, Subscription, hookimpl

ORIGIN_HEADER = "origin"
HOST = socket.gethostname()


class TeamPolicySettings(BaseModel):
    team_group_prefix: str = Field(
        "team-",
        min_length=1,
        pattern=r"^[a-z]+-$",
        description="What every consumer group's name must start with.",
    )


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
def plugin_settings() -> type[BaseModel]:
    """This plugin's settings: fields of the bus's configuration, validated by the model."""
    return TeamPolicySettings


@hookimpl
def on_subscribe(bus: Bus, subscription: Subscription) -> None:
    """Refuse a group outside the naming scheme. A RelayBusError (ConfigError here)
    reaches the caller of `subscribe` as it is; any other exception would arrive as a
    PluginError naming this plugin."""
    prefix = bus.config.settings(TeamPolicySettings).team_group_prefix
    if not subscription.group.startswith(prefix):
        raise ConfigError(
            f"team_policy: group {subscription.group!r} refused; consumer groups must be named {prefix}<name>"
        )


@hookimpl
async def on_cleanup(bus: Bus) -> None:
    """An async hook: the bus awaits the coroutine this returns."""
    stats = await bus.stats()
    for topic in stats.topics:
        if topic.dlq_length:
            log.warning("topic %r holds %d dead letter(s)", topic.topic, topic.dlq_length)

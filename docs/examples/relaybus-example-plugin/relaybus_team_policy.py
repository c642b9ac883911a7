"""relaybus-team-policy: an example third-party relaybus plugin.

- `on_publish`: every message gets an `origin` header (`<host>:<pid>` of the publisher)
  unless the caller set one, so a consumer can tell where a message came from.
- `on_subscribe`: a consumer group must be named `<team_group_prefix><something>`
  (`team-` unless configured); any other group is refused when `subscribe` is called,
  before anything is read.
- `plugin_settings`: declares its settings, `team_group_prefix` and `team_alerts_topic` -
  `Bus.from_url` keywords or `RELAYBUS_TEAM_...` variables, checked by the model below,
  read back typed with `bus.config.settings(TeamPolicySettings)`.
- `subscription_options` and `filter`: `subscribe(..., skip_own=True)` keeps a handler from
  the messages its own process published; the option is read back typed with
  `subscription.option(TeamOptions)`.
- `on_dead_letter` (async, with `bus`): each dead letter is announced on the
  `team_alerts_topic` of the bus that moved it.
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
    team_alerts_topic: str = Field("team.alerts", description="Where dead letters are announced.")


class TeamOptions(BaseModel):
    """Keywords this plugin adds to `subscribe`."""

    skip_own: bool = False  # skip the messages this process published


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
def subscription_options() -> type[BaseModel]:
    """This plugin's keywords of `subscribe`, validated by the model."""
    return TeamOptions


@hookimpl(specname="filter")  # a hook named like a builtin, mapped by name
def skip_own(message: Message, subscription: Subscription) -> bool:
    """With skip_own, a message stamped with this process's origin is not handled here."""
    if not subscription.option(TeamOptions).skip_own:
        return True
    return message.headers.get(ORIGIN_HEADER) != origin()


@hookimpl
async def on_dead_letter(bus: Bus, message: Message, reason: str) -> None:
    """Announce a dead letter on the bus that moved it (an observer: raising here would be
    logged and change nothing)."""
    topic = bus.config.settings(TeamPolicySettings).team_alerts_topic
    if message.topic != topic:  # never an alert about an alert
        await bus.publish(topic, {"topic": message.topic, "id": message.id, "reason": reason})


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

"""Retention: what cleanup keeps of a topic is stored on the topic (`bus.set_retention`),
so whichever process runs cleanup trims each topic by the topic's retention, never by its
own settings. A bus declares its `retention_s` / `retention_max_len` / `dlq_retention_s` /
`dlq_max_len` on each topic it publishes to or subscribes to by name: every stored limit
is raised to at least its own (no limit wins), unless the topic's retention was pinned
with `set_retention`. A topic with none stored keeps all its history. The core's trim
never removes an entry some consumer group has not acknowledged, so this plugin cannot
lose a message whatever it is configured to; dedup keys expire on their own (Redis TTL).
Under memory pressure (`memory_pressure_ratio` of maxmemory) all consumed history goes;
an eviction policy other than `noeviction` is warned about once per bus."""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ResponseError

from relaybus import Bus, Message, RelayBusError, Subscription, hookimpl

log = logging.getLogger("relaybus.retention")
_warned: weakref.WeakSet[Bus] = weakref.WeakSet()
TEN_YEARS_S = 10 * 365 * 86_400  # the longest duration the bus takes (set_retention, trim)


class RetentionSettings(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    retention_s: float | None = Field(
        86_400.0,
        ge=0,
        le=TEN_YEARS_S,
        description="Consumed history kept this long (seconds); None: no age limit.",
    )
    retention_max_len: int | None = Field(
        100_000, ge=0, description="Consumed history kept per stream (entries); None: no length limit."
    )
    dlq_retention_s: float | None = Field(
        None,
        ge=0,
        le=TEN_YEARS_S,
        description="Dead letters kept this long (seconds); None: until replayed or purged.",
    )
    dlq_max_len: int | None = Field(None, ge=0, description="Dead letters kept per topic; None: no limit.")


@dataclass
class _Uses:
    """What one bus knows of the topics it uses."""

    topics: set[str] = field(default_factory=set)  # published to or subscribed to by name
    declared: set[str] = field(default_factory=set)  # declared at a publish already
    told: set[str] = field(default_factory=set)  # warned that the topic keeps other than its settings


_uses: weakref.WeakKeyDictionary[Bus, _Uses] = weakref.WeakKeyDictionary()
Limits = tuple[float | None, int | None, float | None, int | None]  # keep_s, keep_len, dlq_*


def _of(bus: Bus) -> _Uses:
    return _uses.setdefault(bus, _Uses())


@hookimpl
def plugin_settings() -> type[BaseModel]:
    return RetentionSettings


@hookimpl
def on_subscribe(bus: Bus, subscription: Subscription) -> None:
    _of(bus).topics.update(
        t for t in subscription.topics if t not in subscription.patterns
    )  # declared at cleanup


@hookimpl
async def on_published(bus: Bus, topic: str, messages: list[Message], ids: list[str]) -> None:
    uses = _of(bus)
    if topic in uses.declared:
        return
    uses.topics.add(topic)  # each cleanup declares it from now on
    if bus.health.state != "connected":  # an outbox publish: the next cleanup declares it
        return
    uses.declared.add(topic)  # tried once here, even if it fails: cleanup tries again
    await _declare(bus, topic, uses)


async def _declare(bus: Bus, topic: str, uses: _Uses) -> None:
    """This bus's settings onto the topic's stored retention (never lowering it)."""
    kept = bus.config.settings(RetentionSettings)
    own: Limits = (kept.retention_s, kept.retention_max_len, kept.dlq_retention_s, kept.dlq_max_len)
    stored = await bus.set_retention(
        topic, keep_s=own[0], keep_len=own[1], dlq_keep_s=own[2], dlq_keep_len=own[3], at_least=True
    )
    keeps: Limits = (stored.keep_s, stored.keep_len, stored.dlq_keep_s, stored.dlq_keep_len)
    if kept.model_fields_set and keeps != _stored_as(own) and topic not in uses.told:
        uses.told.add(topic)  # set explicitly, yet not what the topic keeps: said once per topic
        why = (
            "pinned with set_retention"
            if stored.pinned
            else "another bus, or this one before, asked for more"
        )
        log.warning(
            "relaybus: topic %r keeps %s (%s), not this bus's retention settings %s",
            topic,
            _shown(keeps),
            why,
            _shown(own),
        )


def _stored_as(limits: Limits) -> Limits:
    """Seconds as stored: whole milliseconds."""
    keep_s, keep_len, dlq_keep_s, dlq_keep_len = limits
    return (
        None if keep_s is None else int(keep_s * 1000) / 1000,
        keep_len,
        None if dlq_keep_s is None else int(dlq_keep_s * 1000) / 1000,
        dlq_keep_len,
    )


def _shown(limits: Limits) -> str:
    names = ("keep_s", "keep_len", "dlq_keep_s", "dlq_keep_len")
    return ", ".join(f"{name}={limit}" for name, limit in zip(names, limits, strict=True))


@hookimpl
async def on_cleanup(bus: Bus) -> None:
    config = bus.config
    memory = await bus.memory()
    if memory.maxmemory_policy != "noeviction" and bus not in _warned:
        _warned.add(bus)
        log.warning(
            "Redis maxmemory-policy is %r: under memory pressure Redis may evict whole "
            "streams (messages lost); set it to 'noeviction'",
            memory.maxmemory_policy,
        )
    pressed = memory.pressure is not None and memory.pressure >= config.memory_pressure_ratio
    if pressed:
        log.warning(
            "Redis memory at %.0f%% of maxmemory: trimming all consumed history", 100 * (memory.pressure or 0)
        )
    uses, refused = _of(bus), []
    for topic in sorted(uses.topics):  # again each time: Redis may have restarted empty
        try:
            await _declare(bus, topic, uses)
        except ResponseError as exc:  # a foreign key in the topic's place: that topic alone
            refused.append(f"declaring on {topic!r}: {exc}")
    for topic in await bus.topics():
        try:
            await _trim(bus, topic, pressed)
        except ResponseError as exc:
            refused.append(f"trimming {topic!r}: {exc}")
    if refused:
        raise RelayBusError(
            f"retention failed for {len(refused)} topic(s), the others were done: " + "; ".join(refused[:3])
        )


async def _trim(bus: Bus, topic: str, pressed: bool) -> None:
    """The topic by its stored retention; under memory pressure, all consumed history."""
    kept = await bus.retention(topic)
    if pressed:
        await bus.trim(topic, keep_s=0, keep_len=0)
    elif kept is not None:
        await bus.trim(topic, keep_s=kept.keep_s, keep_len=kept.keep_len)
    if kept is not None and (kept.dlq_keep_s is not None or kept.dlq_keep_len is not None):
        await bus.trim_dead_letters(topic, keep_s=kept.dlq_keep_s, keep_len=kept.dlq_keep_len)

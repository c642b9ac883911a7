"""Retention: on every cleanup, trim each topic's consumed history to `retention_s` /
`retention_max_len` and its dead letters to `dlq_retention_s` / `dlq_max_len`. The core's
trim never removes an entry some consumer group has not acknowledged, so this plugin
cannot lose a message whatever it is configured to; dedup keys expire on their own
(Redis TTL). Under memory pressure (`memory_pressure_ratio` of maxmemory) all consumed
history goes; an eviction policy other than `noeviction` is warned about once per bus."""

from __future__ import annotations

import logging
import weakref

from pydantic import BaseModel, ConfigDict, Field

from relaybus import Bus, hookimpl

log = logging.getLogger("relaybus.retention")
_warned: weakref.WeakSet[Bus] = weakref.WeakSet()


class RetentionSettings(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    retention_s: float | None = Field(
        86_400.0, ge=0, description="Consumed history kept this long (seconds); None: no age limit."
    )
    retention_max_len: int | None = Field(
        100_000, ge=0, description="Consumed history kept per stream (entries); None: no length limit."
    )
    dlq_retention_s: float | None = Field(
        None, ge=0, description="Dead letters kept this long (seconds); None: until replayed or purged."
    )
    dlq_max_len: int | None = Field(None, ge=0, description="Dead letters kept per topic; None: no limit.")


@hookimpl
def plugin_settings() -> type[BaseModel]:
    return RetentionSettings


@hookimpl
async def on_cleanup(bus: Bus) -> None:
    config, kept = bus.config, bus.config.settings(RetentionSettings)
    memory = await bus.memory()
    if memory.maxmemory_policy != "noeviction" and bus not in _warned:
        _warned.add(bus)
        log.warning("Redis maxmemory-policy is %r: under memory pressure Redis may evict whole "
                    "streams (messages lost); set it to 'noeviction'", memory.maxmemory_policy)
    pressed = memory.pressure is not None and memory.pressure >= config.memory_pressure_ratio
    keep_s, keep_len = (0.0, 0) if pressed else (kept.retention_s, kept.retention_max_len)
    if pressed:
        log.warning("Redis memory at %.0f%% of maxmemory: trimming all consumed history",
                    100 * (memory.pressure or 0))
    dlq = kept.dlq_retention_s is not None or kept.dlq_max_len is not None
    for topic in await bus.topics():
        await bus.trim(topic, keep_s=keep_s, keep_len=keep_len)
        if dlq:
            await bus.trim_dead_letters(topic, keep_s=kept.dlq_retention_s, keep_len=kept.dlq_max_len)

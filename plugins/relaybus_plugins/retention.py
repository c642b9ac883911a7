"""Retention: on every cleanup, trim each topic's consumed history to `retention_s` /
`retention_max_len` and its dead letters to `dlq_retention_s` / `dlq_max_len`. The core's
trim never removes an entry some consumer group has not acknowledged, so this plugin
cannot lose a message whatever it is configured to; dedup keys expire on their own
(Redis TTL). Under memory pressure (`memory_pressure_ratio` of maxmemory) all consumed
history goes; an eviction policy other than `noeviction` is warned about once per bus."""

from __future__ import annotations

import logging
import weakref

from relaybus import Bus, hookimpl

log = logging.getLogger("relaybus.retention")
_warned: weakref.WeakSet[Bus] = weakref.WeakSet()


@hookimpl
async def on_cleanup(bus: Bus) -> None:
    config = bus.config
    memory = await bus.memory()
    if memory.maxmemory_policy != "noeviction" and bus not in _warned:
        _warned.add(bus)
        log.warning("Redis maxmemory-policy is %r: under memory pressure Redis may evict whole "
                    "streams (messages lost); set it to 'noeviction'", memory.maxmemory_policy)
    pressed = memory.pressure is not None and memory.pressure >= config.memory_pressure_ratio
    keep_s, keep_len = (0.0, 0) if pressed else (config.retention_s, config.retention_max_len)
    if pressed:
        log.warning("Redis memory at %.0f%% of maxmemory: trimming all consumed history",
                    100 * (memory.pressure or 0))
    dlq = config.dlq_retention_s is not None or config.dlq_max_len is not None
    for topic in await bus.topics():
        await bus.trim(topic, keep_s=keep_s, keep_len=keep_len)
        if dlq:
            await bus.trim_dead_letters(topic, keep_s=config.dlq_retention_s, keep_len=config.dlq_max_len)

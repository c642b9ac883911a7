"""What the engine needs, built once at connect: the engine is handed this, never the Bus."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from ..config import BusConfig
from ..connection import Health
from ..keys import Keys
from ..plugins import PluginManager
from .doorbell import Doorbell
from .scripts import Scripts

log = logging.getLogger("relaybus")


@dataclass(eq=False)
class Context:
    """One connected bus as the engine sees it."""

    bus: Any  # the Bus, handed to hooks as `bus`; Any: the engine may not import it, calls nothing on it
    config: BusConfig
    keys: Keys
    redis: aioredis.Redis  # the command pool: every command that returns promptly
    dedicated: Callable[[], aioredis.Redis]  # a client of one connection of its own (pub/sub)
    scripts: Scripts
    health: Health
    plugins: PluginManager
    doorbell: Doorbell
    consumer: str  # this bus's consumer name in groups
    counters: Counter[str] = field(default_factory=Counter)

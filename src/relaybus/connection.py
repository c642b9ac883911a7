"""Client factory: one pooled redis-py asyncio client per Bus."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .config import BusConfig
from .errors import PluginError

# No CLIENT SETINFO on each new connection: one round trip less, and one command less
# for a least-privilege ACL user to be granted (docs/security.md).
try:
    import redis.driver_info  # noqa: F401 - redis-py >= 8 names it driver_info

    NO_SETINFO: dict[str, Any] = {"driver_info": None}
except ImportError:
    NO_SETINFO = {"lib_name": None, "lib_version": None}

# What "Redis could not be reached" looks like from redis-py.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def make_client(
    config: BusConfig, plugin_options: Iterable[Mapping[str, Any] | None] = ()
) -> aioredis.Redis:
    """A pooled client that never resends a command by itself (see the comment below).

    `plugin_options` are the `redis_connection_options` answers (TLS, ACL, ...): the
    core adds no credentials or TLS settings of its own, so with no plugin only what
    the URL says (`rediss://`, `user:password@`) reaches redis-py.
    """
    options: dict[str, Any] = {
        "max_connections": config.max_connections,
        "socket_timeout": config.socket_timeout,
        "socket_connect_timeout": config.connect_timeout,
        # No transparent command retries: a resent XADD whose first reply was lost
        # would append twice. Readers retry on their own; publish raises instead.
        "retry": Retry(NoBackoff(), retries=0),
        "health_check_interval": 30,
        "decode_responses": False,
        **NO_SETINFO,
    }
    core = frozenset(options)
    added: dict[str, Any] = {}
    for answer in plugin_options:
        for name, value in (answer or {}).items():
            if name in core:
                raise PluginError(f"redis_connection_options: {name!r} is set by the core, not a plugin")
            if name in added and added[name] != value:
                raise PluginError(f"redis_connection_options: plugins disagree on {name!r}")
            added[name] = value
    return aioredis.Redis.from_url(config.url, **options, **added)

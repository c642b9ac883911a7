"""Client factory: one pooled redis-py asyncio client per Bus."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .config import BusConfig

# What "Redis could not be reached" looks like from redis-py.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def make_client(config: BusConfig) -> aioredis.Redis:
    """A pooled client that never resends a command by itself (see the comment below)."""
    options: dict[str, Any] = {
        "max_connections": config.max_connections,
        "socket_timeout": config.socket_timeout,
        "socket_connect_timeout": config.connect_timeout,
        # No transparent command retries: a resent XADD whose first reply was lost
        # would append twice. Readers retry on their own; publish raises instead.
        "retry": Retry(NoBackoff(), retries=0),
        "health_check_interval": 30,
        "decode_responses": False,
    }
    if config.username:
        options["username"] = config.username
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    if config.url.startswith("rediss://"):
        options.update(
            ssl_ca_certs=config.ssl_ca_certs,
            ssl_certfile=config.ssl_certfile,
            ssl_keyfile=config.ssl_keyfile,
            ssl_check_hostname=config.ssl_check_hostname,
        )
    return aioredis.Redis.from_url(config.url, **options)


"""Client factory: one pooled redis-py asyncio client per Bus."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis import exceptions as redis_exceptions
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisClusterException, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from .config import BusConfig, loopback
from .errors import BusUnavailableError, ConfigError, PluginError
from .redact import redact_text, redact_url

# No CLIENT SETINFO on each new connection: one round trip less, and one command less
# for a least-privilege ACL user to be granted (docs/security.md).
try:
    import redis.driver_info  # noqa: F401 - redis-py >= 8 names it driver_info

    NO_SETINFO: dict[str, Any] = {"driver_info": None}
except ImportError:
    NO_SETINFO = {"lib_name": None, "lib_version": None}

# What "Redis could not be reached" looks like from redis-py: on a Cluster also no node
# answering (RedisClusterUnreachableError, redis-py >= 8.2; older ones raise the connection
# error itself), or a slot without one (a failover under way) - no ConnectionError there.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    SlotNotCoveredError,
    *filter(None, [getattr(redis_exceptions, "RedisClusterUnreachableError", None)]),
)


def unavailable(action: str, exc: BaseException, url: str | None = None) -> BusUnavailableError:
    """The error for a command that could not reach Redis (raise it `from None`), naming
    the bus's `url` (redacted; a Cluster's lists its seed nodes, where redis-py names one
    node) - or, on a Cluster, found every connection to a node busy: redis-py's cluster
    client cannot wait for one (docs/scaling.md), and that is no outage."""
    if isinstance(exc, MaxConnectionsError):
        return BusUnavailableError(
            f"{action} failed: every connection to a Redis Cluster node is busy "
            "(max_connections per node); raise max_connections"
        )
    at = f" at {redact_url(url)}" if url else ""
    return BusUnavailableError(
        f"{action} failed, Redis unreachable{at}: {redact_text(f'{type(exc).__name__}: {exc}')}"
    )


class _SentinelBlockingPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):  # type: ignore[misc]
    """Connections to whichever server Sentinel names master, waited for like the
    standalone pool's (redis-py's own Sentinel pool raises when all are busy).

    The URL's check for a password over plain TCP sees only the sentinels; the master
    they name is checked here, each time it is asked for (`guard_password`)."""

    def __init__(self, *args: Any, guard_password: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard_password = guard_password

    async def get_master_address(self) -> tuple[str, int]:
        try:
            host, port = await super().get_master_address()
        except MasterNotFoundError as exc:  # each sentinel named by host:port, not a client's repr
            text = str(exc)
            for sentinel in self.sentinel_manager.sentinels:
                where = sentinel.connection_pool.connection_kwargs
                text = text.replace(str(sentinel), f"{where.get('host')}:{where.get('port')}")
            raise MasterNotFoundError(text) from None
        if self._guard_password and self.connection_kwargs.get("password") is not None and not loopback(host):
            raise ConfigError(
                f"Sentinel names {host}:{port} as master of {self.service_name!r}: a password over plain "
                "TCP to a remote host is refused; use rediss+sentinel://, or set allow_insecure=True"
            )
        return host, port


def make_client(
    config: BusConfig,
    plugin_options: Iterable[Mapping[str, Any] | None] = (),
    max_connections: int | None = None,
) -> aioredis.Redis | RedisCluster:
    """A pooled client that never resends a command by itself (see the comment below),
    of `max_connections` (default: the config's). A command finding every connection
    busy waits for one (never an error): each holder returns its connection within a
    socket_timeout, as nothing the bus sends blocks in Redis.

    `plugin_options` are the `redis_connection_options` answers (TLS, ACL, ...): the
    core adds no credentials or TLS settings of its own, so with no plugin only what
    the URL says (`rediss://`, `user:password@`) reaches redis-py.

    A Cluster client keeps `max_connections` per node; it cannot wait for a free one
    (redis-py raises MaxConnectionsError), which docs/scaling.md states.
    """
    options: dict[str, Any] = {
        "max_connections": max_connections or config.max_connections,
        "socket_timeout": config.socket_timeout,
        "socket_connect_timeout": config.connect_timeout,
        # No transparent command retries: a resent XADD whose first reply was lost
        # would append twice. Readers retry on their own; publish retries checking
        # by message id first (publisher.py).
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
    where = config.deployment
    if where.kind == "standalone":
        pool = aioredis.BlockingConnectionPool.from_url(config.url, timeout=None, **options, **added)
        return aioredis.Redis.from_pool(pool)
    url_options = {"username": where.username, "password": where.password, "ssl": where.tls}
    options.update({k: v for k, v in url_options.items() if v is not None and k not in added})
    if where.kind == "cluster":
        options.pop("health_check_interval")  # per node, by redis-py itself
        # Maintenance notifications (Redis Software's endpoint moves) are on by default for
        # a cluster: every new connection sends CLIENT MAINT_NOTIFICATIONS, which Redis 6.2
        # logs as an ACL denial for a least-privilege user (docs/scaling.md) and open-source
        # clusters never use.
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in where.nodes],
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
            **options,
            **added,
        )
    # Sentinels answer only SENTINEL commands: the same timeouts and TLS; their own
    # credentials (sentinel_username/sentinel_password), never the master's.
    secret = config.sentinel_password
    sentinel = Sentinel(
        list(where.nodes),
        sentinel_kwargs={
            "socket_timeout": config.socket_timeout,
            "socket_connect_timeout": config.connect_timeout,
            "ssl": where.tls,
            "username": config.sentinel_username,
            "password": secret.get_secret_value() if secret is not None else None,
            **{k: v for k, v in added.items() if k.startswith("ssl_")},
        },
    )
    pool = _SentinelBlockingPool(
        where.service,
        sentinel,
        db=where.db,
        timeout=None,
        guard_password=not (where.tls or config.allow_insecure),
        **options,
        **added,
    )
    return aioredis.Redis.from_pool(pool)


@contextlib.contextmanager
def slot_map_read() -> Iterator[None]:
    """Reading a Cluster's slot map while some slot has no master (a failover under way)
    fails in redis-py with RedisClusterException: Redis unavailable, as CLUSTERDOWN is."""
    try:
        yield
    except RedisClusterException as exc:
        raise RedisConnectionError(f"Redis Cluster unavailable: {exc}") from None


async def open_pubsub(
    client: aioredis.Redis | RedisCluster, home: str | None = None, **options: Any
) -> PubSub:
    """A pub/sub connection of `client`. On a Cluster classic pub/sub reaches every node,
    so any master will do: the one owning the key `home`, else a random one - from the
    slots as the cluster tells them now (asked again each time, so a reconnect after a
    failover finds a live node)."""
    if not isinstance(client, RedisCluster):
        return client.pubsub(**options)
    with slot_map_read():
        await client.initialize()
        await client.nodes_manager.initialize()
    node = client.get_node_from_key(home) if home else random.choice(client.get_primaries())
    return client.pubsub(node=node, **options)


ConnectionState = Literal["connected", "degraded", "disconnected"]


class Health:
    """What a Bus knows about its connection: a command failing makes it `degraded`,
    the periodic health check failing `disconnected`; any success `connected` again.
    Errors are kept redacted, as they may appear in stats and logs."""

    def __init__(
        self, on_change: Callable[[str, str, str | None], Awaitable[None]], secret: SecretStr | None = None
    ) -> None:
        self._secret = secret.get_secret_value() if secret is not None else None
        self.state: ConnectionState = "disconnected"
        self.connected_since: float | None = None
        self.failures = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self._on_change = on_change

    async def succeeded(self) -> None:
        if self.state != "connected":
            if self.connected_since is not None:
                self.reconnects += 1
            self.connected_since = time.time()
            await self._set("connected", None)

    async def failed(self, error: BaseException, state: ConnectionState = "degraded") -> None:
        if isinstance(error, MaxConnectionsError):  # our own pool, not the connection
            return
        self.failures += 1
        text = redact_text(f"{type(error).__name__}: {error}")
        if self._secret:
            text = text.replace(self._secret, "***")
        self.last_error = text[:500]
        if state == "disconnected" or self.state == "connected":
            await self._set(state, self.last_error)

    async def _set(self, state: ConnectionState, error: str | None) -> None:
        old, self.state = self.state, state
        if old != state:
            await self._on_change(old, state, error)

"""A Cluster node's exhausted pool is reported as what it is, never as an outage."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from relaybus.connection import Health, unavailable


async def test_an_exhausted_cluster_pool_is_not_called_redis_unreachable() -> None:
    changes: list[tuple[str, str]] = []

    async def record(old: str, new: str, error: str | None) -> None:
        changes.append((old, new))

    health = Health(record)
    await health.succeeded()
    await health.failed(MaxConnectionsError("Too many connections"))
    assert health.state == "connected" and health.failures == 0
    message = str(unavailable("publish()", MaxConnectionsError("Too many connections")))
    assert "busy" in message and "unreachable" not in message
    await health.failed(RedisConnectionError("refused"))
    assert health.state == "degraded"
    assert "Redis unreachable" in str(unavailable("publish()", RedisConnectionError("refused")))

"""What `Bus.stats()` and `Bus.memory()` report: plain pydantic models, safe to serialise."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from redis.asyncio.cluster import RedisCluster

from .keys import Keys, lanes_in

if TYPE_CHECKING:
    import redis.asyncio as aioredis


LAG_SCAN = 10_000  # where Redis does not report a lag, stats count at most this many entries


class GroupStats(BaseModel):
    """One consumer group of a topic, over the topic stream, its lanes and its retry stream."""

    name: str
    consumers: int
    pending: int = Field(description="Delivered, not yet acknowledged.")
    lag: int | None = Field(
        description="Not yet delivered; None when Redis < 7 and more than 10,000 (see docs)."
    )
    oldest_pending_age_s: float | None = Field(description="Age of the oldest pending entry.")


class TopicStats(BaseModel):
    topic: str
    length: int = Field(description="Entries retained in the topic stream and its priority lanes.")
    lanes: dict[int, int] = Field(description="Entries per priority lane in use (0: the topic stream).")
    delayed: int = Field(description="Delayed publishes and scheduled retries not yet due.")
    dlq_length: int
    memory_bytes: int = Field(description="MEMORY USAGE of the topic's keys.")
    groups: list[GroupStats]
    counts: dict[str, int] = Field(
        description="Since the topic began: expired, filtered, dropped, dropped_overflow."
    )


class MemoryStats(BaseModel):
    used_memory: int
    maxmemory: int = Field(description="0: no limit.")
    maxmemory_policy: str
    pressure: float | None = Field(description="used_memory / maxmemory; None without a limit.")


class ServerStats(BaseModel):
    redis_version: str = Field(
        description="INFO's redis_version: on Valkey, the Redis version it "
        "is compatible with (7.2.4 on Valkey 9)."
    )
    server_name: str = Field(description="redis or valkey (INFO's server_name; Redis has none).")
    server_version: str = Field(description="The server's own version: valkey_version on Valkey.")
    connected_clients: int
    memory: MemoryStats


class ConnectionStats(BaseModel):
    state: str = Field(description="connected, degraded (a command failed) or disconnected.")
    uptime_s: float | None = Field(description="Since the connection was last (re)established.")
    failures: int
    reconnects: int
    last_error: str | None = Field(description="Redacted.")
    outbox_pending: int | None = Field(description="Messages waiting in the outbox; None: no outbox.")


class BusStats(BaseModel):
    prefix: str
    topics: list[TopicStats]
    server: ServerStats
    connection: ConnectionStats
    counters: dict[str, int] = Field(description="This Bus object's own counts since it was made.")
    recommendations: list[str]


def memory_from_info(infos: list[dict[str, Any]]) -> MemoryStats:
    """One server's INFO, or each Cluster master's: summed, with the pressure of the
    fullest (a full master refuses writes whatever the others hold)."""
    used = sum(int(i.get("used_memory", 0)) for i in infos)
    limit = sum(int(i.get("maxmemory", 0)) for i in infos)
    pressures = [
        int(i.get("used_memory", 0)) / int(i["maxmemory"]) for i in infos if int(i.get("maxmemory", 0))
    ]
    policies = sorted({str(i.get("maxmemory_policy", "unknown")) for i in infos}) or ["unknown"]
    return MemoryStats(
        used_memory=used,
        maxmemory=limit,
        maxmemory_policy=",".join(policies),
        pressure=max(pressures) if pressures else None,
    )


def server_from_info(infos: list[dict[str, Any]]) -> ServerStats:
    """One server's INFO, or each Cluster master's: the oldest version, clients summed."""
    names = sorted({str(i.get("server_name", "redis")) for i in infos}) or ["redis"]
    return ServerStats(
        redis_version=min(str(i.get("redis_version", "")) for i in infos),
        server_name=",".join(names),
        server_version=min(str(i.get("valkey_version") or i.get("redis_version", "")) for i in infos),
        connected_clients=sum(int(i.get("connected_clients", 0)) for i in infos),
        memory=memory_from_info(infos),
    )


async def server_info(
    redis: aioredis.Redis | RedisCluster, section: str | None = None
) -> list[dict[str, Any]]:
    """INFO of the server, or of every Cluster master."""
    if isinstance(redis, RedisCluster):
        replies = await redis.info(section, target_nodes=RedisCluster.PRIMARIES)
        return (
            list(replies.values())
            if isinstance(replies, dict) and all(isinstance(v, dict) for v in replies.values())
            else [replies]
        )
    return [await redis.info(section)]


def recommendations(memory: MemoryStats, pressure_ratio: float, topics: list[TopicStats]) -> list[str]:
    out = []
    if memory.maxmemory_policy != "noeviction":
        out.append(
            f"maxmemory-policy is {memory.maxmemory_policy!r}: Redis may evict stream keys, "
            "losing messages; set it to 'noeviction'"
        )
    if memory.pressure is not None and memory.pressure >= pressure_ratio:
        out.append(
            f"memory at {memory.pressure:.0%} of maxmemory: cleanup is dropping all consumed "
            "history; raise maxmemory, lower retention, or consume faster"
        )
    for t in topics:
        if t.dlq_length:
            out.append(f"topic {t.topic!r} has {t.dlq_length} dead letters: inspect, replay or purge")
    return out


def _id_ms(entry_id: bytes | str | None) -> int | None:
    if not entry_id:
        return None
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-")[0])


def _group(info: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((g for g in info if g["name"].decode() == name), None)


def _before(a: bytes, b: bytes) -> bool:
    """Stream id order."""
    return tuple(map(int, a.split(b"-"))) < tuple(map(int, b.split(b"-")))


def _ok(reply: Any) -> Any:
    """A pipelined reply, or None where the key or group does not exist (yet)."""
    return None if isinstance(reply, Exception) else reply


async def topic_stats(redis: aioredis.Redis, keys: Keys, topic: str) -> TopicStats:
    """Everything about one topic in three pipelined round trips."""
    lanes = lanes_in(await redis.smembers(keys.lanes(topic)))
    streams = [keys.lane(topic, lane) for lane in [0, *lanes]]
    async with redis.pipeline(transaction=False) as pipe:
        for key in streams:
            pipe.xlen(key)
            pipe.xinfo_groups(key)
            pipe.xrange(key, count=1)
        pipe.zcard(keys.delayed(topic))
        pipe.xlen(keys.dlq(topic))
        pipe.hgetall(keys.counters(topic))
        replies = await pipe.execute(raise_on_error=False)
    lengths = [int(n) for n in replies[0 : 3 * len(streams) : 3]]
    infos = [_ok(r) or [] for r in replies[1 : 3 * len(streams) : 3]]
    firsts = [r[0][0] if r else None for r in replies[2 : 3 * len(streams) : 3]]
    delayed, dlq_length, counts = replies[3 * len(streams) :]
    names = sorted({g["name"].decode() for info in infos for g in info})

    key_set = [
        *streams,
        keys.delayed(topic),
        keys.dlq(topic),
        keys.counters(topic),
        *(keys.retry(topic, name) for name in names),
    ]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xinfo_groups(keys.retry(topic, name))
            for key in [*streams, keys.retry(topic, name)]:
                pipe.xpending(key, name)
        for key in key_set:
            pipe.memory_usage(key)
        more = await pipe.execute(raise_on_error=False)
    width = len(streams) + 2

    now_ms = int(time.time() * 1000)
    groups = []
    for n, name in enumerate(names):
        chunk = more[n * width : (n + 1) * width]
        mine = [_group(info, name) for info in infos]
        lag: int | None = 0
        retry = (keys.retry(topic, name), _group(_ok(chunk[0]) or [], name), 0, None)
        for key, info, length, first in [*zip(streams, mine, lengths, firsts, strict=True), retry]:
            if info is None or (first is not None and _before(info["last-delivered-id"], first)):
                # a lane this group has not read yet, or trimmed past it: all of it is ahead
                ahead: int | None = length
            elif info.get("lag") is None:  # Redis < 7, or a lag Redis cannot tell: count
                after = await redis.xrange(key, min=b"(" + info["last-delivered-id"], count=LAG_SCAN + 1)
                ahead = len(after) if len(after) <= LAG_SCAN else None
            else:
                ahead = int(info["lag"])
            lag = None if lag is None or ahead is None else lag + ahead
        pending = [p for p in (_ok(r) for r in chunk[1:]) if p]
        oldest = [_id_ms(p["min"]) for p in pending if p["pending"]]
        groups.append(
            GroupStats(
                name=name,
                consumers=max((int(i["consumers"]) for i in mine if i is not None), default=0),
                pending=sum(int(p["pending"]) for p in pending),
                lag=lag,
                oldest_pending_age_s=(now_ms - min(o for o in oldest if o is not None)) / 1000
                if oldest
                else None,
            )
        )
    return TopicStats(
        topic=topic,
        length=sum(lengths),
        lanes=dict(zip([0, *lanes], lengths, strict=True)),
        delayed=int(delayed),
        dlq_length=int(dlq_length),
        memory_bytes=sum(int(_ok(m) or 0) for m in more[len(names) * width :]),
        groups=groups,
        counts={k.decode(): int(v) for k, v in counts.items()},
    )

"""A consumer process for the chaos suites: handles `topic` in group "chaos", counting
each delivery of a message in the hash `<prefix>:handled` (inside the bus's prefix) -
on the bus's Redis, or on the one of an optional fifth argument, so a fault proxy in
front of the bus does not touch the bookkeeping; a payload with "poison" is rejected,
so it is dead-lettered."""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relaybus import Bus, BusUnavailableError, Message, Reject


async def main(url: str, prefix: str, topic: str, consumer: str, record_url: str = "") -> None:
    bus = Bus.from_url(
        url, prefix=prefix, consumer_name=consumer, claim_idle_ms=1000, socket_timeout=1, connect_timeout=1
    )
    while True:  # started while the suite has Redis down: try again, as a supervisor would
        try:
            await bus.connect()
            break
        except BusUnavailableError:
            await asyncio.sleep(0.2)
    async with bus:
        books = aioredis.Redis.from_url(record_url) if record_url else bus._engine.ctx.redis

        @bus.subscribe(topic, group="chaos", concurrency=8, prefetch=32)
        async def handle(msg: Message) -> None:
            if msg.payload.get("poison"):
                raise Reject("poison")
            while True:  # recording must not fail the message: idempotent, retried until Redis is back
                try:
                    await books.hincrby(f"{prefix}:handled", msg.id, 1)
                    return
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    await asyncio.sleep(0.1)

        await bus.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))

"""A consumer process for the chaos suites: handles `topic` in group "chaos", counting
each delivery of a message in the hash `<prefix>:handled` (inside the bus's prefix);
a payload with "poison" is rejected, so it is dead-lettered."""

from __future__ import annotations

import asyncio
import sys

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relaybus import Bus, Message, Reject


async def main(url: str, prefix: str, topic: str, consumer: str) -> None:
    async with Bus.from_url(url, prefix=prefix, consumer_name=consumer, claim_idle_ms=1000,
                            socket_timeout=1, connect_timeout=1) as bus:

        @bus.subscribe(topic, group="chaos", concurrency=8, prefetch=32)
        async def handle(msg: Message) -> None:
            if msg.payload.get("poison"):
                raise Reject("poison")
            while True:  # recording must not fail the message: idempotent, retried until Redis is back
                try:
                    await bus.redis.hincrby(f"{prefix}:handled", msg.id, 1)
                    return
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    await asyncio.sleep(0.1)

        await bus.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))

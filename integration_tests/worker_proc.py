"""A worker process for the crash test: handles `topic` in group "crash", recording each
handled message id in the set `<prefix>:handled` (inside the bus's own prefix)."""

from __future__ import annotations

import asyncio
import sys

from relaybus import Bus, Message


async def main(url: str, prefix: str, topic: str, consumer: str) -> None:
    async with Bus.from_url(url, prefix=prefix, consumer_name=consumer, claim_idle_ms=500) as bus:

        @bus.subscribe(topic, group="crash", concurrency=4, prefetch=20)
        async def handle(msg: Message) -> None:
            await asyncio.sleep(0.02)
            await bus._engine.ctx.redis.sadd(f"{prefix}:handled", msg.id)

        await bus.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))

"""One process of the system checker (test_system.py), in one of three roles:

- `push`: a subscriber of TOPIC in group "push";
- `pull`: a loop of `Bus.read` in group "pull", acking what it handled;
- `responder`: answers REQUESTS, failing for good those that ask it to.

Each delivery of a message is counted in the hash `<prefix>:sys:handled:<role>` on the
books server (never the one under test, so faults there do not touch the bookkeeping);
a payload with "poison" is rejected, so it is dead-lettered.

    python system_worker.py ROLE URL BOOKS_URL PREFIX CONSUMER
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis

from relaybus import Bus, BusUnavailableError, Message, RedisFullError, Reject

TOPIC, REQUESTS, CLAIM_IDLE_MS = "sys.jobs", "sys.requests", 2000


async def record(books: aioredis.Redis, key: str, message_id: str) -> None:
    """Counted whatever happens to the bus's Redis: the books live elsewhere."""
    await books.hincrby(key, message_id, 1)


async def push(bus: Bus, books: aioredis.Redis, key: str) -> None:
    @bus.subscribe(TOPIC, group="push", concurrency=8, prefetch=32)
    async def handle(msg: Message) -> None:
        if msg.payload.get("poison"):
            raise Reject("poison")
        await record(books, key, msg.id)

    await bus.run()


async def pull(bus: Bus, books: aioredis.Redis, key: str) -> None:
    while True:
        try:
            batch = await bus.read(TOPIC, group="pull", count=16, block_ms=500)
            for msg in batch:
                if msg.payload.get("poison"):
                    await bus.dead_letter(msg, "poison")
                    continue
                await record(books, key, msg.id)
                await bus.ack(msg)
        except (BusUnavailableError, RedisFullError):  # Redis away or full: what was read and
            await asyncio.sleep(0.2)  # not settled comes back to a read once idle past claim_idle_ms


async def responder(bus: Bus, books: aioredis.Redis, key: str) -> None:
    @bus.subscribe(REQUESTS, group="responders", concurrency=16)
    async def answer(msg: Message) -> None:
        await record(books, key, msg.id)
        if msg.payload.get("fail"):
            raise Reject("asked to fail")
        await bus.reply(msg, {"echo": msg.payload["n"]})

    await bus.run()


async def main(role: str, url: str, books_url: str, prefix: str, consumer: str) -> None:
    bus = Bus.from_url(
        url,
        prefix=prefix,
        consumer_name=consumer,
        claim_idle_ms=CLAIM_IDLE_MS,
        socket_timeout=1,
        connect_timeout=1,
    )
    while True:  # started while Redis is down: try again, as a supervisor would
        try:
            await bus.connect()
            break
        except BusUnavailableError:
            await asyncio.sleep(0.2)
    books = aioredis.Redis.from_url(books_url)
    roles = {"push": push, "pull": pull, "responder": responder}
    async with bus:
        await roles[role](bus, books, f"{prefix}:sys:handled:{role}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))

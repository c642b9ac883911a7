"""Ephemeral broadcast over Redis Pub/Sub: nothing stored, lossy by design."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..connection import UNAVAILABLE, unavailable
from ..errors import DecodeError
from ..message import Message, decode, encode
from .context import Context


async def send(ctx: Context, message: Message) -> int:
    """Publish a broadcast; returns how many listeners Redis handed it to."""
    data = encode(message, ctx.config.max_message_bytes)
    try:
        return int(await ctx.redis.publish(ctx.keys.channel(message.topic), data))
    except UNAVAILABLE as exc:
        raise unavailable(f"broadcast to {message.topic!r}", exc) from None


async def listen(ctx: Context, patterns: list[str]) -> AsyncIterator[Message]:
    """Broadcasts on channels matching the patterns, on a connection of its own (never
    one of the command pool) for as long as the caller iterates."""
    channels = [ctx.keys.channel(p) for p in patterns]
    client = ctx.dedicated()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        while True:
            try:
                if not pubsub.subscribed:
                    await pubsub.psubscribe(*channels)
                item = await pubsub.get_message(timeout=1.0)
            except UNAVAILABLE as exc:  # a broadcast sent meanwhile is lost: say so
                await ctx.health.failed(exc)
                raise unavailable("listen()", exc) from None
            if item is None or item["type"] != "pmessage":
                continue
            try:
                yield decode({b"v": b"1", b"m": item["data"]}, None)
            except DecodeError:
                ctx.counters["undecodable"] += 1
    finally:
        await pubsub.aclose()
        await client.aclose()

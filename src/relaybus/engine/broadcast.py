"""Ephemeral broadcast over Redis Pub/Sub: nothing stored, lossy by design.

On a Cluster a PUBLISH reaches every node's subscribers but counts only its own node's:
listeners subscribe on, and broadcasts go to, the node owning the key `home` names, so
the count stays exact."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from redis.asyncio.cluster import RedisCluster

from ..connection import UNAVAILABLE, open_pubsub, unavailable
from ..errors import DecodeError
from ..message import Message, decode, encode
from .context import Context


def home(ctx: Context) -> str:
    return ctx.keys.channel("")


async def send(ctx: Context, message: Message) -> int:
    """Publish a broadcast; returns how many listeners Redis handed it to."""
    data = encode(message, ctx.config.max_message_bytes)
    channel = ctx.keys.channel(message.topic)
    try:
        if isinstance(ctx.redis, RedisCluster):
            await ctx.redis.initialize()
            node = ctx.redis.get_node_from_key(home(ctx))
            return int(await ctx.redis.publish(channel, data, target_nodes=node))
        return int(await ctx.redis.publish(channel, data))
    except UNAVAILABLE as exc:
        raise unavailable(f"broadcast to {message.topic!r}", exc) from None


async def listen(ctx: Context, patterns: list[str]) -> AsyncGenerator[Message, None]:
    """Broadcasts on channels matching the patterns, on a connection of its own (never
    one of the command pool) for as long as the caller iterates."""
    channels = [ctx.keys.channel(p) for p in patterns]
    client = ctx.dedicated()
    pubsub = None
    try:
        while True:
            try:
                if pubsub is None:
                    pubsub = await open_pubsub(client, home(ctx), ignore_subscribe_messages=True)
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
        if pubsub is not None:
            await pubsub.aclose()
        await client.aclose()

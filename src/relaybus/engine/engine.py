"""The engine of one connected bus: its connections, its Context and every component,
built together at connect and closed together at close. The facade (bus.py) holds this
one object and calls nothing else of the engine (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Any

from redis.exceptions import InvalidResponse, ResponseError

import relaybus.hookspecs as hookspecs  # "from .. import" reads as the facade to test_layering

from ..config import BusConfig
from ..connection import UNAVAILABLE, Health, make_client
from ..delivery import Subscription
from ..errors import BusUnavailableError, RelayBusError
from ..keys import Keys, registered_topics
from ..message import Message
from ..options import PublishParams
from ..periodic import every
from ..plugins import PluginManager
from ..redact import redact_url
from . import broadcast, follow, replies, retained
from .consumer import Consumer
from .context import Context
from .doorbell import Doorbell
from .groups import Groups, group_lost
from .publisher import Publisher
from .pull import Puller
from .retained import Retention
from .scripts import Scripts
from .settlement import Settlement

log = logging.getLogger("relaybus")
OUTBOX_FLUSH_INTERVAL_S = 0.5


class Engine:
    """One connected bus as the engine runs it: made by `build`, then started. Every
    component gets what it needs at construction; nothing is wired up afterwards."""

    def __init__(self, ctx: Context, dedicated: weakref.WeakSet[Any]) -> None:
        self.ctx = ctx
        self.publisher = Publisher(ctx)
        self.groups = Groups(ctx.keys, ctx.scripts)
        self.settlement = Settlement(ctx, self.groups)
        self.puller = Puller(ctx, self.groups, self.settlement)
        self.consumer: Consumer | None = None  # while run() goes on
        self.inbox: replies.Inbox | None = None  # made by the first request()
        self._dedicated = dedicated  # clients of one connection outside the pool (pub/sub)
        self.closing = asyncio.Event()  # set at close: background tasks end
        self.background: list[asyncio.Task[None]] = []  # awaited at close, after `closing` is set

    @classmethod
    def build(
        cls,
        bus: Any,  # the facade, handed to hooks as `bus`; the engine calls nothing on it
        config: BusConfig,
        keys: Keys,
        plugins: PluginManager,
        health: Health,
        consumer: str,
        counters: Counter[str],
    ) -> Engine:
        """The clients (nothing connects yet), the Context and every component."""
        options = [o for _, o in plugins.call(hookspecs.redis_connection_options, config)]
        client = make_client(config, options)
        clients: weakref.WeakSet[Any] = weakref.WeakSet()

        def dedicated() -> Any:
            made = make_client(config, options, max_connections=1)
            clients.add(made)
            return made

        ctx = Context(
            bus=bus,
            config=config,
            keys=keys,
            redis=client,
            dedicated=dedicated,
            scripts=Scripts(client),
            health=health,
            plugins=plugins,
            doorbell=Doorbell(dedicated(), keys, health),
            consumer=consumer,
            counters=counters,
        )
        return cls(ctx, clients)

    async def start(self) -> None:
        """Check Redis answers, start the publisher (and flush what an earlier process
        left in the outbox) and the background jobs. A Redis that cannot be reached is a
        BusUnavailableError; after any failure every connection is closed."""
        ctx, config = self.ctx, self.ctx.config
        try:
            await asyncio.wait_for(ctx.redis.ping(), config.connect_timeout)  # keyless: redis-py routes it
            await self.publisher.start()
            if self.publisher.outbox is not None:
                await self.flush_outbox()  # what an earlier process left, before anything new
        except BaseException as exc:  # a half-connected bus would look connected: undo it all
            self.publisher.close()
            for client in [ctx.redis, *self._dedicated]:
                await client.aclose()
            self._dedicated.clear()
            if isinstance(exc, (TimeoutError, *UNAVAILABLE, InvalidResponse)):
                hint = " (is it a Redis server?)" if isinstance(exc, InvalidResponse) else ""
                raise BusUnavailableError(
                    f"cannot reach Redis at {redact_url(config.url)}: {type(exc).__name__}: {exc}{hint}"
                ) from None
            raise
        await ctx.health.succeeded()
        self._start_jobs(config)

    def _start_jobs(self, config: BusConfig) -> None:
        jobs = [(config.health_check_interval_s, self._check_health)]
        if config.periodic_cleanup:
            jobs.append((config.cleanup_interval_s, self._cleanup))
        if self.publisher.outbox is not None:
            jobs.append((OUTBOX_FLUSH_INTERVAL_S, self.flush_outbox))
        self.background = [asyncio.create_task(every(s, job, self.closing)) for s, job in jobs]

    async def drain(self) -> None:
        """Stop run() (draining) and the background jobs: what close does first, while
        the bus is still open to them (a handler may publish as it finishes)."""
        if self.consumer is not None:
            await self.consumer.stop()
        self.closing.set()
        for task in self.background:  # a job under way finishes (each command within socket_timeout)
            await task
        self.background = []

    async def close(self) -> None:
        """After `drain`: stop the publisher and close every connection, whatever the
        inbox or the doorbell ended with."""
        self.publisher.close()
        ctx = self.ctx
        try:
            if self.inbox is not None:
                await self.inbox.close()
                self.inbox = None
            await ctx.scripts.close()
            await ctx.doorbell.close()
        finally:
            for client in [*self._dedicated, ctx.redis]:  # listen()'s too: they end with an error
                await client.aclose()
            self._dedicated.clear()

    # -- background jobs -------------------------------------------------------------

    async def _check_health(self) -> None:
        """The pool's own check (a keyless PING, routed by redis-py): it is the pool whose
        health the connection state reports."""
        try:
            await self.ctx.redis.ping()
        except UNAVAILABLE as exc:
            await self.ctx.health.failed(exc, "disconnected")
            return
        await self.ctx.health.succeeded()

    async def flush_outbox(self) -> None:
        """Never raises for Redis being away or refusing an entry: the flush is retried
        every OUTBOX_FLUSH_INTERVAL_S, and the entry stays first in the outbox."""
        try:
            await self.publisher.flush()
        except BusUnavailableError as exc:
            await self.ctx.health.failed(exc)
        except (RelayBusError, ResponseError) as exc:
            log.warning("relaybus: outbox flush refused (%s: %s); retrying", type(exc).__name__, exc)

    async def _cleanup(self) -> None:
        """The periodic run: a failing plugin is logged by the hook caller, boundedly."""
        await self.cleanup()

    async def cleanup(self) -> list[Exception]:
        """Forget the registry names of closed topics that expired, then run every
        `on_cleanup` hook; the hooks' failures."""
        try:
            await follow.forget_expired(self.ctx)
        except Exception as exc:
            if not isinstance(exc, (RelayBusError, *UNAVAILABLE)):
                raise
            # the hooks still run; the next cleanup tries again
            log.warning("relaybus: forgetting expired closed topics failed: %s: %s", type(exc).__name__, exc)
        return await self.ctx.plugins.call(hookspecs.on_cleanup, self.ctx.bus)

    # -- publishing and request / reply ------------------------------------------------

    async def publish(self, topic: str, payloads: Sequence[Any], params: PublishParams) -> list[str]:
        return await self.publisher.publish(topic, payloads, params)

    async def request(
        self, topic: str, payload: Any, seconds: float, priority: int, headers: dict[str, str] | None
    ) -> Message:
        inbox = self.inbox
        if inbox is None:
            inbox = self.inbox = replies.Inbox(self.ctx)

        async def publish(correlation_id: str, token: str) -> None:
            params = PublishParams(
                priority=priority,
                ttl=seconds,
                reply_to=inbox.address,
                correlation_id=correlation_id,
                headers={**(headers or {}), replies.TOKEN: token},
            )
            await self.publisher.publish(topic, [payload], params)

        return await inbox.ask(publish, seconds, repr(topic))

    async def reply(self, message: Message, payload: Any, headers: dict[str, str] | None) -> str:
        inbox = replies.inbox_of(message.reply_to)
        if inbox is None:  # to a topic: an ordinary publish
            assert message.reply_to is not None
            params = PublishParams(headers=headers, correlation_id=message.correlation_id or message.id)
            [reply_id] = await self.publisher.publish(message.reply_to, [payload], params)
            return reply_id
        answer = replies.answer(message, payload, headers, self.ctx.consumer)
        return await replies.send(self.ctx, inbox, answer)

    # -- consuming ---------------------------------------------------------------------

    async def run(self, subscriptions: Sequence[Subscription]) -> None:
        if self.consumer is not None:
            raise RelayBusError("run() is already going on this bus")
        self.consumer = Consumer(self.ctx, self.groups, self.settlement, subscriptions)
        try:
            await self.consumer.run()
        finally:
            self.consumer = None

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def read(
        self, topic: str, group: str, consumer: str, count: int, block_ms: int, start: str
    ) -> list[Message]:
        args = (topic, group, consumer, count, block_ms, start)
        try:
            return await self.puller.read(*args)
        except ResponseError as exc:
            if not group_lost(exc):
                raise
            return await self.puller.read(*args)  # deleted under us: made again by this read, once

    async def ack(self, messages: Sequence[Message]) -> int:
        return await self.settlement.acked(messages)

    async def dead_letter(self, message: Message, reason: str, error: BaseException | None) -> bool:
        return await self.settlement.dead_lettered(message, reason, error)

    # -- what topics retain ------------------------------------------------------------

    async def topics(self) -> list[str]:
        return registered_topics(await self.ctx.scripts.call("SMEMBERS", [self.ctx.keys.registry], []))

    async def history(self, topic: str, limit: int) -> list[Message]:
        return await retained.history(self.ctx, topic, limit)

    async def dead_letters(self, topic: str, limit: int) -> list[Message]:
        return await retained.dead_letters(self.ctx, topic, limit)

    async def history_after(self, topic: str, after: str | None, limit: int) -> list[Message]:
        return await retained.history_after(self.ctx, topic, after, limit)

    async def dead_letter_count(self, topic: str) -> int:
        return int(await self.ctx.scripts.call("XLEN", [self.ctx.keys.dlq(topic)], []))

    async def consumer_groups(self, topic: str) -> list[str]:
        return await retained.consumer_groups(self.ctx, topic)

    async def replay_dead_letters(self, topic: str, ids: Iterable[str] | None) -> int:
        return await retained.replay_dead_letters(self.ctx, topic, ids)

    async def purge_dead_letters(self, topic: str) -> int:
        return await retained.purge_dead_letters(self.ctx, topic)

    async def set_retention(self, topic: str, wanted: Retention, at_least: bool) -> Retention:
        return await retained.set_retention(self.ctx, topic, wanted, at_least)

    async def retention(self, topic: str) -> Retention | None:
        return await retained.retention(self.ctx, topic)

    async def trim(self, topic: str, keep_s: float | None, keep_len: int | None) -> int:
        return await retained.trim(self.ctx, topic, keep_s, keep_len)

    async def trim_dead_letters(self, topic: str, keep_s: float | None, keep_len: int | None) -> int:
        return await retained.trim_dead_letters(self.ctx, topic, keep_s, keep_len)

    # -- streams and broadcast ---------------------------------------------------------

    def follow(self, topic: str, after: str) -> AsyncGenerator[Message, None]:
        return follow.follow(self.ctx, topic, after)

    async def close_topic(self, topic: str, keep_s: float) -> int:
        dropped = await follow.close(self.ctx, topic, keep_s)
        self.publisher.forget(topic)
        return dropped

    async def broadcast(self, message: Message) -> int:
        return await broadcast.send(self.ctx, message)

    def listen(self, patterns: list[str]) -> AsyncGenerator[Message, None]:
        return broadcast.listen(self.ctx, patterns)

"""A delivery's fate, decided in one place for the run loop and pull reads alike:
admit (decode, expiry), filter, handler, then ack / retry / dead-letter / drop - and
exactly one `on_settled` per delivery that became a Message."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import TypeAdapter, ValidationError
from redis.exceptions import RedisError

import relaybus.hookspecs as hookspecs  # "from .. import" reads as the facade to test_layering

from ..delivery import FailureDecision, Subscription
from ..errors import DecodeError, Reject, RelayBusError
from ..message import Message, encode
from . import replies
from .context import Context
from .groups import Entry, Groups, message_of
from .scripts import Call

if TYPE_CHECKING:
    from .reader import Acks

log = logging.getLogger("relaybus")
AckKey = tuple[str, str]  # (stream, group)


def delivery_of(message: Message) -> tuple[str, str, str]:
    """Stream, group and entry id of a delivered message: what ack and settle need."""
    if message.stream_key is None or message.group is None or message.entry_id is None:
        raise RelayBusError(f"message {message.id} was not delivered by read() or a handler")
    return message.stream_key, message.group, message.entry_id


class Settlement:
    """Decides and carries out what happens to each delivered entry."""

    def __init__(self, ctx: Context, groups: Groups) -> None:
        self.ctx = ctx
        self.groups = groups

    # -- admission: entries that never become a handler's Message ---------------------

    def admissible(self, source: str, entry: Entry, group: str, delivered: int | None) -> Message | None:
        """The hot path of admit(): the Message when the entry goes straight on to its
        handler, None when admit() has to settle it."""
        if entry[1] is None:
            return None
        try:
            message = message_of(self.ctx.keys, entry, group, source)
        except DecodeError:
            return None
        if delivered is not None:
            message.attempt += max(delivered - 1, 0)
        return None if message.expired() else message

    async def admit(self, source: str, entry: Entry, group: str, delivered: int | None) -> Message | None:
        """The Message for a fetched entry, or None when it was settled here: deleted
        while pending (acked), undecodable (dead-lettered raw), expired (acked and
        counted, or dead-lettered). `delivered` is the delivery count of a reclaimed entry."""
        entry_id, fields = entry
        if fields is None:  # deleted or trimmed while pending: nothing left to deliver
            await self.ctx.scripts.call("XACK", [source], [group, entry_id])
            return None
        try:
            message = message_of(self.ctx.keys, entry, group, source)
        except DecodeError as exc:
            raw = orjson.dumps(
                {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
            )
            await self.groups.dead_letter(
                source, entry_id, group, self.ctx.keys.topic_of(source), ["raw", raw], "undecodable", exc, 1
            )
            self.ctx.counters["undecodable"] += 1
            return None
        if delivered is not None:
            message.attempt += max(delivered - 1, 0)
        if message.expired():
            if self.ctx.config.dead_letter_expired:
                await self._dead_letter(message, "expired")
                await self.ctx.scripts.call(
                    "HINCRBY", [self.ctx.keys.counters(message.topic)], ["expired", 1]
                )
                self.ctx.counters["expired"] += 1
            else:
                await self._ack_counted(message, "expired")
            await self._settled(message, None, "expired", None)
            return None
        return message

    # -- the run loop: filter, handler, outcome ----------------------------------------

    async def handle(self, sub: Subscription, message: Message, acks: Acks) -> None:
        """Run one admitted message through the filters and the handler and settle it."""
        hooks, bus = self.ctx.plugins.call, self.ctx.bus
        if hooks.implemented(hookspecs.filter) and not await hooks(hookspecs.filter, bus, message, sub):
            await self._ack_counted(message, "filtered")
            await self._settled(message, sub, "filtered", None)
            return
        contexts = (
            [c for _, c in hooks(hookspecs.handler_context, bus, message, sub) if c is not None]
            if hooks.implemented(hookspecs.handler_context)
            else None
        )
        if not contexts:  # the usual case (a tracing plugin without a tracer answers None)
            await self._run(sub, message, acks)
            return
        with contextlib.ExitStack() as around:  # a plugin's (a tracing span): handler and settling
            for context in contexts:
                around.enter_context(context)
            await self._run(sub, message, acks)

    async def _run(self, sub: Subscription, message: Message, acks: Acks) -> None:
        payload = message.payload
        started = time.perf_counter()
        try:
            if sub.model is not None:
                message.payload = _adapter(sub.model).validate_python(payload)
            if is_async(sub.handler):
                await sub.handler(message)  # type: ignore[misc]  # a coroutine function
            else:  # a plain function must not block the loop other handlers share
                await asyncio.to_thread(sub.handler, message)
        except Exception as exc:
            message.payload = payload  # the wire form, for the retry or the DLQ
            outcome = await self._failed(sub, message, exc)
            await self._settled(message, sub, outcome, time.perf_counter() - started)
            return
        acks.add(message.stream_key, sub.group, message.entry_id)  # type: ignore[arg-type]
        if self.ctx.plugins.call.implemented(hookspecs.on_settled):
            await self._settled(message, sub, "handled", time.perf_counter() - started)

    async def _failed(self, sub: Subscription, message: Message, error: Exception) -> str:
        """Carry out the failure decision; returns the outcome for on_settled."""
        if isinstance(error, Reject | ValidationError):
            decision: FailureDecision | None = FailureDecision.dead_letter(
                "rejected" if isinstance(error, Reject) else "invalid payload"
            )
        else:
            try:
                decision = await self.ctx.plugins.call(
                    hookspecs.on_failure, self.ctx.bus, message, error, sub
                )
            except Exception:  # a plugin's error (its name in the text or a note)
                log.exception("on_failure failed for message %s; it stays pending", message.id)
                return "pending"
        # a retry is routine; a message given up on - or left to redeliver for ever - is not
        final = decision is None or decision.action != "retry"
        log.log(
            logging.WARNING if final and not isinstance(error, Reject) else logging.INFO,
            "handler %s failed on message %s of %r (attempt %d): %s: %s; %s",
            sub.name,
            message.id,
            message.topic,
            message.attempt,
            type(error).__name__,
            error,
            decision or "no on_failure plugin decided: it stays pending and is delivered again",
        )
        if decision is None:
            return "pending"  # redelivered after claim_idle_ms
        if decision.action == "retry":
            await self.groups.schedule_retry(message, sub.group, decision.delay)
            return "retried"
        if decision.action == "dead_letter":
            await self._dead_letter(message, decision.reason, error)
            return "dead_lettered"
        await self._ack_counted(
            message, "dropped", replies.failure(self.ctx, message, "dropped", decision.reason, error)
        )
        return "dropped"

    # -- pull reads: the caller is the handler -------------------------------------------

    async def acked(self, messages: Sequence[Message]) -> int:
        """Ack pulled messages in one round trip; returns how many were still pending."""
        by_source: dict[AckKey, list[str]] = {}
        for m in messages:
            stream, group, entry_id = delivery_of(m)
            by_source.setdefault((stream, group), []).append(entry_id)
        acked = await self._commands(
            [("XACK", [stream], [group, *ids]) for (stream, group), ids in by_source.items()]
        )
        for m in messages:
            await self._settled(m, None, "handled", None)
        return sum(int(r) for r in acked)

    async def dead_lettered(self, message: Message, reason: str, error: BaseException | None) -> bool:
        """A pulled message dead-lettered by its caller."""
        moved = await self._dead_letter(message, reason, error)
        if moved:
            await self._settled(message, None, "dead_lettered", None)
        return moved

    # -- the moves -------------------------------------------------------------------------

    async def _dead_letter(self, message: Message, reason: str, error: BaseException | None = None) -> bool:
        """Move a delivered message to its topic's DLQ (append + ack in one script); a
        request's requester is told in that script, or on a Cluster (its inbox is on
        another node) right after."""
        stream, group, entry_id = delivery_of(message)
        told = replies.failure(self.ctx, message, "dead_lettered", reason, error)
        together = None if self.ctx.scripts.cluster else told
        moved = await self.groups.dead_letter(
            stream,
            entry_id,
            group,
            message.topic,
            ["m", encode(message)],
            reason,
            error,
            message.attempt,
            together,
        )
        if moved:
            if told is not None and together is None:
                await self._tell(message, told)
            self.ctx.counters["dead_lettered"] += 1
            await self.ctx.plugins.call(hookspecs.on_dead_letter, self.ctx.bus, message, reason, error)
        return moved

    async def _tell(self, message: Message, told: tuple[str, bytes]) -> None:
        """The failure reply that could not go with the settlement: the message is settled
        already, so Redis failing now costs the requester its wait, never the message."""
        try:
            await replies.append(self.ctx, *told, message.id)
        except (RelayBusError, RedisError, OSError) as exc:  # Redis away, or a foreign key there
            log.warning(
                "relaybus: could not tell the requester of message %s that it failed "
                "(%s: %s); it times out instead",
                message.id,
                type(exc).__name__,
                exc,
            )

    async def _ack_counted(
        self, message: Message, counter: str, told: tuple[str, bytes] | None = None
    ) -> None:
        """Ack a message that will not reach a handler, and count why (per topic); with
        `told`, tell its requester in the same round trip."""
        stream, group, entry_id = delivery_of(message)
        calls: list[Call] = [
            ("XACK", [stream], [group, entry_id]),
            ("HINCRBY", [self.ctx.keys.counters(message.topic)], [counter, 1]),
        ]
        if told is not None:
            calls.append(("XADD", [told[0]], ["NOMKSTREAM", "*", "v", "1", "m", told[1]]))
        await self._commands(calls)
        self.ctx.counters[counter] += 1

    async def _commands(self, calls: list[Call]) -> list[Any]:
        """Commands in one round trip; the first error among their replies raised."""
        replies = await self.ctx.scripts.run(calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _settled(
        self, message: Message, sub: Subscription | None, outcome: str, duration_s: float | None
    ) -> None:
        await self.ctx.plugins.call(hookspecs.on_settled, self.ctx.bus, message, sub, outcome, duration_s)


_async: dict[Any, bool] = {}


def is_async(handler: Any) -> bool:
    """inspect.iscoroutinefunction, remembered per handler (it is asked per message)."""
    answer = _async.get(handler)
    if answer is None:
        answer = _async[handler] = inspect.iscoroutinefunction(handler)
    return answer


_adapters: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(model)
    if adapter is None:
        adapter = _adapters[model] = TypeAdapter(model)
    return adapter

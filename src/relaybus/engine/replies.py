"""Request/reply between agents. A request is an ordinary message on its topic whose
`reply_to` names the requesting bus's inbox, whose `correlation_id` the reply repeats
and whose TOKEN header - a one-time secret - the reply echoes. The inbox is one stream
per requesting bus, outside the topics (no pattern subscription sees it, nothing
registers it), read by that bus alone, which deletes each reply once read: nothing is
trimmed before it is read, however many are in flight. Only the requester makes the
inbox and sets when it expires (the latest deadline of its requests in flight); a
reply is appended only to an inbox that exists and never touches its expiry, so
replies to a requester that died or gave up expire with its inbox, or are not kept."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..connection import UNAVAILABLE, unavailable
from ..errors import DecodeError, RequestFailedError, RequestTimeoutError
from ..message import Message, decode, encode, new_id
from ..redact import redact_text
from .context import Context

log = logging.getLogger("relaybus")
MARK = "@"  # a reply_to starting with it names an inbox; no topic can
ADDRESS = re.compile(r"@([0-9A-Z]{26})")  # "@" + an inbox name (a message id, see Inbox)
TOKEN = "relaybus-reply-token"  # header: the request's one-time token, which its reply echoes
FAILED = "relaybus-failed"  # header of a failure reply: the outcome ("dead_lettered", "dropped")
MARGIN_MS = 1000  # the inbox outlives the last deadline by this: a reply just in time is still read
BLOCK_MS = 1000  # one XREAD's wait; well under socket_timeout
ERROR_CHARS = 500  # of a failure's error message and reason, at most, in its reply


def inbox_of(reply_to: str | None) -> str | None:
    """The inbox a reply_to names, or None for a topic (or nothing)."""
    match = ADDRESS.fullmatch(reply_to) if reply_to and reply_to.startswith(MARK) else None
    return match.group(1) if match else None


def answer(request: Message, payload: Any, headers: dict[str, str] | None, sender: str) -> Message:
    """The reply to a request: its correlation id (or id) repeated, its token echoed."""
    echoed = {TOKEN: request.headers[TOKEN]} if TOKEN in request.headers else {}
    return Message(
        topic=request.topic,
        payload=payload,
        headers={**(headers or {}), **echoed},
        correlation_id=request.correlation_id or request.id,
        sender=sender,
    )


def failure(
    ctx: Context, request: Message, outcome: str, reason: str, error: BaseException | None
) -> tuple[str, bytes] | None:
    """(inbox key, reply) telling a requester its request failed for good, or None when
    `request` does not come from `request()`. The error's type name and its message,
    bounded and with any URL password redacted: never a traceback."""
    inbox = inbox_of(request.reply_to)
    if inbox is None:
        return None
    told = {
        "error_type": type(error).__name__ if error else "",
        "error": redact_text(str(error))[:ERROR_CHARS] if error else "",
        "reason": redact_text(reason)[:ERROR_CHARS],
    }
    reply = answer(request, told, {FAILED: outcome}, ctx.consumer)
    return ctx.keys.inbox(inbox), encode(reply)


async def send(ctx: Context, inbox: str, reply: Message) -> str:
    """Append a reply to an inbox (made by `answer`); returns its id."""
    await append(ctx, ctx.keys.inbox(inbox), encode(reply, ctx.config.max_message_bytes), reply.id)
    return reply.id


async def append(ctx: Context, key: str, data: bytes, reply_id: str) -> None:
    """XADD NOMKSTREAM: an inbox that is gone (its requester closed, or gave up long
    ago) is not made again - the reply is not kept, and nothing outlives its reader."""
    try:
        [added] = await ctx.scripts.run([("XADD", [key], ["NOMKSTREAM", "*", "v", "1", "m", data])])
    except UNAVAILABLE as exc:
        raise unavailable(f"reply {reply_id}", exc) from None
    if isinstance(added, Exception):
        raise added
    if added is None:
        log.info(
            "relaybus: reply %s not kept: its requester's inbox is gone (it gave up or closed)", reply_id
        )


@dataclass(slots=True)
class Waiting:
    """One request waiting for its reply."""

    token: str
    deadline: float  # monotonic
    what: str
    future: asyncio.Future[Message]


class Inbox:
    """This bus's inbox: one reader task, started by the first request, resolving each
    waiting request by its correlation id on a connection of its own."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.name = new_id()  # unique, and only [0-9A-Z]: safe inside a key's hash tag
        self.address = MARK + self.name
        self.key = ctx.keys.inbox(self.name)
        self._waiting: dict[str, Waiting] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    async def ask(self, publish: Any, seconds: float, what: str) -> Message:
        """Register a new correlation id and token, `await publish(correlation_id, token)`,
        and wait for the reply; RequestTimeoutError after `seconds`, RequestFailedError
        when the responder failed for good."""
        loop = asyncio.get_running_loop()
        if self._reader is None or self._reader.done():
            self._reader = loop.create_task(self._read(), name="relaybus-inbox")
        correlation_id = new_id()
        waiting = self._waiting[correlation_id] = Waiting(
            secrets.token_urlsafe(16), time.monotonic() + seconds, what, loop.create_future()
        )
        try:
            await self._claim()
            await publish(correlation_id, waiting.token)
            try:
                return await asyncio.wait_for(waiting.future, seconds)
            except TimeoutError:  # (a RequestTimeoutError is a TimeoutError: raised past this)
                raise RequestTimeoutError(
                    f"no reply to the request on {what} within {seconds:g} s "
                    f"(correlation id {correlation_id})"
                ) from None
        finally:
            del self._waiting[correlation_id]

    async def _claim(self) -> None:
        """Make the inbox if it is missing and set it to expire MARGIN_MS after the latest
        deadline in flight: the requester alone decides (whatever a writer set before)."""
        latest = max(w.deadline for w in self._waiting.values())
        ttl_ms = int((latest - time.monotonic()) * 1000) + MARGIN_MS
        try:
            await self.ctx.scripts.call(self.ctx.scripts.inbox, [self.key], [ttl_ms])
        except UNAVAILABLE as exc:
            await self.ctx.health.failed(exc)
            raise unavailable("request()", exc) from None

    async def _read(self) -> None:
        client = self.ctx.dedicated()
        last, pause = "0", 0.1
        try:
            while not self._closing:
                try:
                    got = await client.xread({self.key: last}, count=100, block=BLOCK_MS)
                except UNAVAILABLE as exc:
                    await self.ctx.health.failed(exc)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                pause = 0.1
                if self._closing:  # woken by close(): nobody waits for what came with it
                    break
                entries = [entry for _, batch in got or () for entry in batch]
                for entry_id, fields in entries:
                    last = entry_id
                    self._deliver(entry_id, fields)
                if entries:  # read, so deleted: the inbox holds only replies not read yet
                    try:
                        await self.ctx.scripts.call("XDEL", [self.key], [entry_id for entry_id, _ in entries])
                    except UNAVAILABLE as exc:  # they are read: left to expire with the inbox
                        await self.ctx.health.failed(exc)
        finally:
            await client.aclose()

    def _deliver(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            reply = decode(fields, entry_id.decode())
        except DecodeError as exc:  # not written by reply(): nothing waits for it
            log.warning("relaybus: skipping an inbox entry: %s", exc)
            return
        waiting = self._waiting.get(reply.correlation_id or "")
        if waiting is None or waiting.future.done():
            log.debug("relaybus: reply %s came after its request gave up or was answered", reply.id)
            return
        if not hmac.compare_digest(reply.headers.get(TOKEN, "").encode(), waiting.token.encode()):
            log.warning(
                "relaybus: ignoring reply %s to request %s: it does not echo the request's "
                "token (not written by a responder that read the request)",
                reply.id,
                reply.correlation_id,
            )
            return
        outcome = reply.headers.get(FAILED)
        if outcome is None:
            waiting.future.set_result(reply)
            return
        told = reply.payload if isinstance(reply.payload, dict) else {}
        error_type, error, reason = (str(told.get(k, "")) for k in ("error_type", "error", "reason"))
        waiting.future.set_exception(
            RequestFailedError(
                f"the request on {waiting.what} failed for good ({outcome}: {reason})"
                + (f": {error_type}: {error}" if error_type else "")
                + f" (correlation id {reply.correlation_id})",
                error_type=error_type,
                error=error,
                outcome=outcome,
                reason=reason,
            )
        )

    async def close(self) -> None:
        """Wake the reader's XREAD under way with an entry of its own (a cancellation
        would not do: redis-py's cluster client can swallow one and go on reading), then
        end it; only when Redis cannot be reached, wait out that XREAD."""
        self._closing = True
        reader = self._reader
        if reader is None or reader.done():
            return
        with contextlib.suppress(*UNAVAILABLE):  # made if it expired, gone MARGIN_MS later
            await self.ctx.scripts.run(
                [("XADD", [self.key], ["*", "v", "0"]), ("PEXPIRE", [self.key], [MARGIN_MS])]
            )
        await asyncio.wait([reader], timeout=BLOCK_MS / 1000 + self.ctx.config.socket_timeout)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

"""Request/reply between agents. A request is an ordinary message on its topic whose
`reply_to` names the requesting bus's inbox and whose `correlation_id` the reply
repeats. The inbox is one stream per requesting bus, outside the topics (no pattern
subscription sees it, nothing registers it), read by that bus alone; every reply sets
the inbox to expire when the request it answers would have, so replies to a requester
that died expire instead of piling up."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from ..connection import UNAVAILABLE, unavailable
from ..errors import DecodeError, RequestTimeoutError
from ..message import Message, decode, encode, new_id
from .context import Context

log = logging.getLogger("relaybus")
MARK = "@"  # a reply_to starting with it names an inbox; no topic can
ADDRESS = re.compile(r"@([0-9A-Z]{26})")  # "@" + an inbox name (a message id, see Inbox)
INBOX_MAX_LEN = 1000  # replies kept per inbox at most: each is read at once by its requester
MIN_TTL_MS = 1000  # a reply to a request without expiry (or just expired) still lives this long
BLOCK_MS = 1000  # one XREAD's wait; well under socket_timeout


def inbox_of(reply_to: str | None) -> str | None:
    """The inbox a reply_to names, or None for a topic (or nothing)."""
    match = ADDRESS.fullmatch(reply_to) if reply_to and reply_to.startswith(MARK) else None
    return match.group(1) if match else None


async def send(ctx: Context, inbox: str, reply: Message, expires_at: float | None) -> str:
    """Append a reply to an inbox and let the inbox expire with the request."""
    ttl_ms = MIN_TTL_MS if expires_at is None else max(MIN_TTL_MS, int((expires_at - time.time()) * 1000))
    key = ctx.keys.inbox(inbox)
    data = encode(reply, ctx.config.max_message_bytes)
    try:
        replies = await ctx.scripts.run([
            ("XADD", [key], ["MAXLEN", "~", INBOX_MAX_LEN, "*", "v", "1", "m", data]),
            ("PEXPIRE", [key], [ttl_ms]),
        ])
    except UNAVAILABLE as exc:
        raise unavailable(f"reply to {reply.topic!r}", exc) from None
    for failed in replies:
        if isinstance(failed, Exception):
            raise failed
    return reply.id


class Inbox:
    """This bus's inbox: one reader task, started by the first request, resolving each
    waiting request by its correlation id on a connection of its own."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.name = new_id()  # unique, and only [0-9A-Z]: safe inside a key's hash tag
        self.address = MARK + self.name
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    async def ask(self, publish: Any, seconds: float, what: str) -> Message:
        """Register a new correlation id, `await publish(correlation_id)`, and wait for
        the reply; RequestTimeoutError after `seconds`."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read(), name="relaybus-inbox")
        correlation_id = new_id()
        waiter = self._waiting[correlation_id] = asyncio.get_running_loop().create_future()
        try:
            await publish(correlation_id)
            try:
                return await asyncio.wait_for(waiter, seconds)
            except TimeoutError:  # (a RequestTimeoutError is a TimeoutError: raised past this)
                raise RequestTimeoutError(f"no reply to the request on {what} within {seconds:g} s "
                                          f"(correlation id {correlation_id})") from None
        finally:
            del self._waiting[correlation_id]

    async def _read(self) -> None:
        client = self.ctx.dedicated()
        key, last, pause = self.ctx.keys.inbox(self.name), "0", 0.1
        try:
            while not self._closing:
                try:
                    got = await client.xread({key: last}, count=100, block=BLOCK_MS)
                except UNAVAILABLE as exc:
                    await self.ctx.health.failed(exc)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                pause = 0.1
                for _, entries in got or ():
                    for entry_id, fields in entries:
                        last = entry_id
                        self._deliver(entry_id, fields)
        finally:
            await client.aclose()

    def _deliver(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            reply = decode(fields, entry_id.decode())
        except DecodeError as exc:  # not written by reply(): nothing waits for it
            log.warning("relaybus: skipping an inbox entry: %s", exc)
            return
        waiter = self._waiting.get(reply.correlation_id or "")
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)
        else:
            log.debug("relaybus: reply %s came after its request gave up", reply.id)

    async def close(self) -> None:
        """Let the reader's XREAD under way return (not cancelled: redis-py's cluster
        client can swallow a cancellation and go on reading), then end it."""
        self._closing = True
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=BLOCK_MS / 1000 + self.ctx.config.socket_timeout)
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

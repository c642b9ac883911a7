"""Auto-pipelining: calls from many tasks share round trips. While one round trip is in
flight on the connection held for this, calls that arrive queue, and the next round
trip carries them all - so 64 tasks publishing at once cost a few round trips, not 64,
and a lone call goes straight out with no hand-over (and no pool checkout: profiled,
the blocking pool's get and release were 40% of an awaited publish)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

Send = Callable[[Connection, Sequence[Any], float | None], Awaitable[list[Any]]]  # socket_timeout
# calls of several callers -> the calls sent, and for each call given the index of the
# call that carries it (so that one call can carry several: merged appends)
Merge = Callable[[list[Any]], tuple[list[Any], list[int]]]


class AutoPipeline:
    """Each caller gets the replies of its own calls, in order, or the error that ended
    the round trip they went in. A caller cancelled while queued may still have its
    calls sent, as a command in flight would."""

    def __init__(self, connect: Callable[[], Awaitable[Connection]], send: Send, merge: Merge) -> None:
        self._connect, self._send, self._merge = connect, send, merge
        self._connection: Connection | None = None
        self._timeout: float | None = None  # the held connection's socket_timeout, applied by send
        self._queue: list[tuple[Sequence[Any], asyncio.Future[list[Any]]]] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, calls: Sequence[Any]) -> list[Any]:
        if self._busy:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._queue.append((calls, future))
            return await future
        self._busy = True
        try:
            return await self._exchange(calls)
        finally:
            if self._queue:
                self._drainer = asyncio.get_running_loop().create_task(self._drain())
            else:
                self._busy = False

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                sent, carrier = self._merge([call for calls, _ in batch for call in calls])
                try:
                    replies = await self._exchange(sent)
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:
                    for _, future in batch:
                        future.cancel()
                    raise
                start = 0
                for calls, future in batch:
                    if not future.done():
                        future.set_result([replies[i] for i in carrier[start : start + len(calls)]])
                    start += len(calls)
        finally:
            self._busy = False
            for _, future in self._queue:  # cancelled (the bus closing): nothing more is sent
                future.cancel()
            self._queue = []

    async def _exchange(self, calls: Sequence[Any]) -> list[Any]:
        if self._connection is None:
            connection = await self._connect()
            self._timeout, connection.socket_timeout = connection.socket_timeout, None
            self._connection = connection
        elif await _closed_by_server(self._connection):
            await self._connection.disconnect()  # the send connects again: nothing went on the old one
        return await self._send(self._connection, calls, self._timeout)

    async def close(self) -> None:
        """Stop sending; the held connection is closed with the client's pool."""
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)


async def _closed_by_server(connection: Connection) -> bool:
    """Whether the held connection, idle since its last round trip, was closed under it (a
    Redis restarted meanwhile) - what the pool checks at each checkout, which this
    connection skips: else the first round trip after a restart fails, Redis being back."""
    if not connection.is_connected:
        return False  # the send connects it
    # redis-py >= 8 names the probe can_read; before, can_read_destructive (deprecated since)
    probe = getattr(connection, "can_read", None) or connection.can_read_destructive
    try:
        return bool(await probe())  # data no reply is owed for: as unusable
    except (RedisConnectionError, OSError):  # end of stream, or a reset
        return True

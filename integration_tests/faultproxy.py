"""A fault-injecting TCP proxy for tests: put it between a client and Redis, then
switch its mode while the test runs.

    async with FaultProxy("127.0.0.1", server.port) as proxy:
        bus = Bus.from_url(proxy.url)
        proxy.set("forward_then_drop_reply")   # the write is applied, its reply lost

Modes (they apply to open connections at once, and to new ones):
- `pass`: bytes go both ways untouched.
- `delay`: every chunk, both ways, waits `delay` seconds before it is forwarded.
- `blackhole`: connections are accepted and held open; nothing is forwarded either way.
- `reset`: every connection is aborted (open ones when the mode is set, new ones on accept).
- `forward_then_drop_reply`: what the client sends reaches the server; the server's
  reply is dropped and the client's connection closed - "applied, but the reply was lost".

Late bytes, per connection and beside any mode: `late_open(seconds)` makes what the client
sends on the connections open now reach the server that much later, and `late_next(*seconds)`
does so for the next connections accepted, one delay each (0: none) - "the client gave up,
then its request arrived". `match`: only chunks holding those bytes are late (b"EVALSHA":
script calls, not a connection's handshake or PINGs). A late connection's bytes are
delivered even after the client has closed it; it is closed once the server answered
them (`late_links` counts those open).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Literal

Mode = Literal["pass", "delay", "blackhole", "reset", "forward_then_drop_reply"]
CHUNK = 65536
LATE_GRACE = 5.0  # how long a late connection whose client left waits for the server's answer


class FaultProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to `host:port`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._late_next: list[float] = []
        self._late_match = b""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def set(self, mode: Mode, delay: float = 0.0) -> None:
        self.mode, self.delay = mode, delay
        if mode == "reset":
            for link in list(self._links):
                link.abort()

    def late_open(self, seconds: float, match: bytes = b"") -> None:
        for link in self._links:
            link.late, link.match = seconds, match

    def late_next(self, *seconds: float, match: bytes = b"") -> None:
        self._late_next, self._late_match = list(seconds), match

    @property
    def late_links(self) -> int:
        return sum(1 for link in self._links if link.late)

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.abort()
        await asyncio.gather(*(link.task for link in list(self._links) if link.task), return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "reset":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(self, writer, up_writer)
        if self._late_next:
            link.late, link.match = self._late_next.pop(0), self._late_match
        self._links.add(link)
        link.task = asyncio.current_task()
        try:
            await asyncio.gather(
                link.pump(reader, up_writer, reply=False), link.pump(up_reader, writer, reply=True)
            )
        finally:
            link.abort()
            self._links.discard(link)


class _Link:
    """One client connection and its upstream connection."""

    def __init__(
        self, proxy: FaultProxy, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.client, self.upstream = client, upstream
        self.task: asyncio.Task[None] | None = None
        self.late = 0.0  # seconds each chunk from the client waits (late_open, late_next)
        self.match = b""  # only chunks holding these bytes wait
        self.answered = asyncio.Event()  # the server sent something since the last late chunk

    def abort(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()

    async def pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, reply: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(CHUNK):
                mode = self.proxy.mode
                if reply:
                    self.answered.set()
                elif self.late and self.match in data:
                    self.answered.clear()
                    await asyncio.sleep(self.late)
                    sink.write(data)
                    await sink.drain()
                    continue
                if mode == "delay":
                    await asyncio.sleep(self.proxy.delay)
                elif mode == "blackhole":
                    continue
                elif mode == "reset" or (mode == "forward_then_drop_reply" and reply):
                    break
                sink.write(data)
                await sink.drain()
            if not reply and self.late:  # the client left: its late bytes went, let them run
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.answered.wait(), LATE_GRACE)
        self.abort()

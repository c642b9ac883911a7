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
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Literal

Mode = Literal["pass", "delay", "blackhole", "reset", "forward_then_drop_reply"]
CHUNK = 65536


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

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def set(self, mode: Mode, delay: float = 0.0) -> None:
        self.mode, self.delay = mode, delay
        if mode == "reset":
            for link in list(self._links):
                link.abort()

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
        await asyncio.gather(*(link.task for link in list(self._links) if link.task),
                             return_exceptions=True)
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
        self._links.add(link)
        link.task = asyncio.current_task()
        try:
            await asyncio.gather(link.pump(reader, up_writer, reply=False),
                                 link.pump(up_reader, writer, reply=True))
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

    def abort(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()

    async def pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, reply: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(CHUNK):
                mode = self.proxy.mode
                if mode == "delay":
                    await asyncio.sleep(self.proxy.delay)
                elif mode == "blackhole":
                    continue
                elif mode == "reset" or (mode == "forward_then_drop_reply" and reply):
                    break
                sink.write(data)
                await sink.drain()
        self.abort()

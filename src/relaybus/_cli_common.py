"""What every `relaybus` command shares: options, one-line errors, an open bus, progress."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import orjson
import typer
from redis.exceptions import RedisError
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from .bus import Bus
from .errors import BusUnavailableError, RelayBusError
from .hookspecs import hookimpl

T = TypeVar("T")
DEFAULT_URL = "redis://localhost:6379/0"
UNWRAPPED = 100_000  # the width of output to a pipe or file: in effect, no wrapping


class _Console(Console):
    """Rich's console, except that output to a pipe or a file is not wrapped at 80 columns
    (rich's default there), so `relaybus stats | grep` finds whole lines. A terminal, or an
    explicit COLUMNS, sets the width as usual."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or os.environ.get("COLUMNS", "").isdigit():
            return size
        return ConsoleDimensions(UNWRAPPED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self.width, self.height = new_size


console = _Console()  # results, on stdout
err = _Console(stderr=True)  # errors and progress, on stderr: stdout stays machine-readable

URL = typer.Option(
    DEFAULT_URL,
    "--redis-url",
    envvar="RELAYBUS_URL",
    help="Redis URL; default: env RELAYBUS_URL, else redis://localhost:6379/0.",
)
PREFIX = typer.Option("relaybus", "--prefix", help="Key prefix; nothing outside it is touched.")


def tool_bus(url: str, prefix: str) -> Bus:
    """The bus of a command. It never runs cleanup on its own: what a topic keeps is the
    topic's retention, applied by the apps' buses and `relaybus cleanup`
    (docs/retention.md), and a tool that only looks must change nothing."""
    return Bus.from_url(url, prefix=prefix, periodic_cleanup=False)


def fail(message: str) -> typer.Exit:
    """Print `error: message` as one line on stderr; raise what this returns (exit 1)."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(1)


def require_extra(command: str, extra: str, module: str) -> None:
    """Exit with one line naming the extra to install when `module` does not import."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise fail(f"relaybus {command} needs the {extra!r} extra: pip install 'relaybus[{extra}]'") from None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """User mistakes and Redis trouble print one line on stderr and exit 1, no traceback."""
    try:
        yield
    except (RelayBusError, ValueError, RedisError, TimeoutError) as exc:
        raise fail(one_line(exc)) from None


def run(job: Coroutine[Any, Any, T], *, server: bool = False) -> T:
    """Run one command's coroutine with one-line errors. A Ctrl-C that `ctrl_c` did not
    turn into a clean stop interrupted the work: say so and exit 130, as shells do, so
    `relaybus dlq replay x && next` does not go on after a half-done replay. A `server`
    is meant to be stopped by Ctrl-C: exit 0 (docs/cli.md)."""
    with user_errors():
        try:
            return asyncio.run(job)
        except KeyboardInterrupt:
            if server:
                raise typer.Exit(0) from None
            err.print("[red]interrupted[/]", soft_wrap=True)
            raise typer.Exit(130) from None


def ctrl_c() -> asyncio.Event:
    """An event the first Ctrl-C sets, so a long-running command leaves its loop at a
    clean point (after an ack, say) instead of being cancelled mid-command; a second
    Ctrl-C interrupts at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def first() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # back to KeyboardInterrupt

    with contextlib.suppress(NotImplementedError):  # no loop signal handlers on Windows
        loop.add_signal_handler(signal.SIGINT, first)
    return stop


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


RETRY_S = (0.25, 2.0)  # seconds between tries while Redis is away: the first wait, the longest


class OutageNotice:
    """A plugin for the bus of a long-running command: it says on stderr, once per outage,
    that Redis is unreachable and the command retries, and again when Redis is back. It
    follows the bus's connection state, so a hundred failed tries are one line."""

    def __init__(self) -> None:
        self.since: float | None = None

    @hookimpl
    def on_connection_state(self, new: str, error: str | None) -> None:
        if new != "connected" and self.since is None:
            self.since = time.monotonic()
            err.print(
                f"[yellow]warning:[/] Redis unreachable ({escape(error or new)}); retrying until it "
                "is back (Ctrl-C stops)",
                soft_wrap=True,
            )
        elif new == "connected" and self.since is not None:
            err.print(
                f"Redis reachable again after {time.monotonic() - self.since:.1f}s; carrying on",
                soft_wrap=True,
            )
            self.since = None


def long_running(bus: Bus) -> Bus:
    """`bus`, saying on stderr when Redis goes away and comes back (OutageNotice)."""
    bus.plugins.register(OutageNotice(), "relaybus-cli-outage-notice")
    return bus


async def outlasting(bus: Bus, stop: asyncio.Event | None, attempt: Callable[[], Awaitable[T]]) -> T | None:
    """`attempt()`'s result. A long-running command (`stop`: its Ctrl-C) waits Redis being
    unreachable out: the bus's connection state is told (OutageNotice says so), and the
    attempt is made again, less and less often, until it succeeds - or `stop` is set
    (None). A one-shot command (no `stop`) fails at once, as it always does. Bus methods
    say Redis is unreachable as BusUnavailableError, and tell the connection state."""
    wait = RETRY_S[0]
    while True:
        try:
            result = await attempt()
        except BusUnavailableError:
            if stop is None:
                raise
        else:
            if stop is not None:
                await bus.health.succeeded()
            return result
        await pause(stop, wait)
        if stop.is_set():
            return None
        wait = min(wait * 2, RETRY_S[1])


def parse_json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def parse_headers(pairs: list[str] | None) -> dict[str, str]:
    headers = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"invalid --header {pair!r}: use key=value")
        headers[key] = value
    return headers


async def with_progress(
    label: str,
    job: Awaitable[T],
    total: int | None = None,
    done_so_far: Callable[[], Awaitable[int]] | None = None,
) -> T:
    """Run `job` under a progress display on stderr: a bar polling `done_so_far` against
    `total`, or a spinner with the elapsed time. The display is gone when the job ends;
    with stderr not a terminal there is none."""
    if not err.is_terminal:
        return await job
    columns = [SpinnerColumn(), TextColumn(label), TimeElapsedColumn()]
    if done_so_far is not None:
        columns[2:2] = [BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, console=err, transient=True) as progress:
        task_id = progress.add_task(label, total=total)
        work = asyncio.ensure_future(job)
        while not work.done():
            await asyncio.wait([work], timeout=0.2)
            if done_so_far is not None and not work.done():
                with contextlib.suppress(RelayBusError, RedisError):
                    progress.update(task_id, completed=await done_so_far())
        return work.result()

"""The `relaybus` command. Operator commands live in the private `_cli_*` modules."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from enum import StrEnum

import typer

from . import __version__, _cli_dashboard, _cli_dlq, _cli_ops
from ._cli_common import PREFIX, OutageNotice, console, err, require_extra, run, user_errors
from .redact import redact_url

app = typer.Typer(
    help="relaybus: a message bus for AI agents on Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for command in (
    _cli_ops.publish,
    _cli_ops.tail,
    _cli_ops.topics,
    _cli_ops.stats,
    _cli_ops.cleanup,
    _cli_ops.retention,
    _cli_ops.metrics,
):
    app.command()(command)
app.add_typer(_cli_dlq.app, name="dlq")
_cli_dashboard.register(app)

DEMO_URL = typer.Option(
    None,
    "--redis-url",
    envvar="RELAYBUS_URL",
    help="Redis URL; default: env RELAYBUS_URL, else an embedded Redis.",
)


@contextlib.contextmanager
def _redis_url(url: str | None) -> Iterator[str]:
    """The given URL, or a private embedded redis-server for the duration."""
    if url:
        yield url
        return
    from .embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        console.print(f"[dim]started an embedded redis-server ({server.executable})[/]")
        yield server.url


def _show_version(value: bool) -> None:
    if value:
        print(f"relaybus {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """relaybus: a message bus for AI agents on Redis."""


@app.command()
def demo(
    redis_url: str | None = DEMO_URL,
    prefix: str = typer.Option(None, "--prefix", help="Key prefix; default: a fresh one per run."),
) -> None:
    """A planner, two reviewers sharing a group and a monitor, on the bus."""
    from .demo import TASKS, run_demo

    prefix = prefix or f"relaybus-demo-{int(time.time())}"
    with user_errors(), _redis_url(redis_url) as url:
        console.print(f"[bold]relaybus demo[/] on {redact_url(url)} (prefix {prefix})")
        seen = asyncio.run(run_demo(url, prefix, console))
    if seen != len(TASKS):
        err.print(f"[red]error:[/] only {seen} of {len(TASKS)} reviews arrived")
        raise typer.Exit(1)


MCP_URL = typer.Option(
    None,
    "--redis-url",
    envvar="RELAYBUS_URL",
    help="Redis URL; default: env RELAYBUS_URL, else redis://localhost:6379/0.",
)
ALLOWED_TOPICS = typer.Option(
    None,
    "--allowed-topics",
    help="Glob patterns of the topics agents may use, comma-separated or repeated; default: every topic.",
)
NEW_GROUPS = typer.Option(
    None,
    "--new-groups",
    help="Glob patterns of the consumer groups relaybus_read "
    "may create, comma-separated or repeated; default none: agents read groups "
    "that exist (a group never read again would stop its topic's retention).",
)


def _listed(values: list[str] | None) -> list[str] | None:
    return None if not values else [p.strip() for arg in values for p in arg.split(",") if p.strip()]


class Transport(StrEnum):
    stdio = "stdio"
    http = "http"


TRANSPORT = typer.Option(
    Transport.stdio,
    "--transport",
    help="stdio (stdout carries only the protocol), or streamable HTTP at http://HOST:PORT/mcp.",
)

MCP_TOKEN = typer.Option(
    None,
    "--token",
    envvar="RELAYBUS_MCP_TOKEN",
    show_default=False,
    help="With --transport http: the bearer token every request must carry (env "
    "RELAYBUS_MCP_TOKEN keeps it out of `ps`); required beyond loopback.",
)
MCP_ALLOWED_HOST = typer.Option(
    None,
    "--allowed-host",
    help="With --transport http: a Host name also "
    "answered (repeat it); --host, localhost, 127.0.0.1 and [::1] always are, "
    "any other is refused (DNS rebinding).",
)
MCP_ALLOWED_ORIGIN = typer.Option(
    None,
    "--allowed-origin",
    help="With --transport http: a browser Origin also accepted, e.g. https://app.example.com (repeat it).",
)


@app.command()
def mcp(
    redis_url: str | None = MCP_URL,
    prefix: str = PREFIX,
    allowed_topics: list[str] | None = ALLOWED_TOPICS,
    new_groups: list[str] | None = NEW_GROUPS,
    transport: Transport = TRANSPORT,
    host: str = typer.Option("127.0.0.1", "--host", help="With --transport http: the address to listen on."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="With --transport http: the port."),
    token: str | None = MCP_TOKEN,
    allowed_host: list[str] | None = MCP_ALLOWED_HOST,
    allowed_origin: list[str] | None = MCP_ALLOWED_ORIGIN,
) -> None:
    """Serve the bus to MCP clients (Claude Desktop, IDEs, agents) over stdio or HTTP."""
    require_extra("mcp", "mcp", "mcp.server.mcpserver")
    from .adapters.mcp import serve

    run(
        serve(
            redis_url,
            prefix,
            _listed(allowed_topics),
            transport="http" if transport is Transport.http else "stdio",
            host=host,
            port=port,
            token=token,
            allowed_hosts=allowed_host or (),
            allowed_origins=allowed_origin or (),
            new_groups=_listed(new_groups),
            plugins=[OutageNotice()],
        ),
        server=True,
    )

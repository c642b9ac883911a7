"""`relaybus dashboard`: the web dashboard, served by this process (the 'dashboard' extra)."""

from __future__ import annotations

import typer
from rich.markup import escape

from ._cli_common import PREFIX, URL, ctrl_c, err, long_running, require_extra, run, tool_bus
from ._cli_common import console as out

HOST = typer.Option(
    "127.0.0.1",
    "--host",
    help="Address to listen on; the default, loopback, keeps "
    "it to this machine. Anyone who can reach it reads every message.",
)
PORT = typer.Option(9752, "--port", min=1, max=65535, help="Port to listen on.")
TOKEN = typer.Option(
    None,
    "--admin-token",
    envvar="RELAYBUS_DASHBOARD_TOKEN",
    show_default=False,
    help="Token the page must send to replay or purge dead letters (env "
    "RELAYBUS_DASHBOARD_TOKEN keeps it out of `ps`); without it, read-only.",
)
ALLOWED_HOST = typer.Option(
    None,
    "--allowed-host",
    help="A Host name the dashboard also answers "
    "(repeat it); it always answers the --host address, localhost, 127.0.0.1 "
    "and [::1], and refuses any other name (DNS rebinding).",
)


def _origin(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def dashboard(
    redis_url: str = URL,
    prefix: str = PREFIX,
    host: str = HOST,
    port: int = PORT,
    admin_token: str | None = TOKEN,
    allowed_host: list[str] | None = ALLOWED_HOST,
) -> None:
    """Serve a web dashboard: topics, live messages, groups, dead letters (Ctrl-C stops it)."""
    for module in ("starlette", "jinja2", "uvicorn", "sse_starlette"):
        require_extra("dashboard", "dashboard", module)
    from ._web import host_names, is_loopback
    from .dashboard import create_app, listen, serve
    from .dashboard.app import shown_url

    async def job() -> None:
        stop = ctrl_c()
        bus = tool_bus(redis_url, prefix)  # a bad URL or prefix: before anything else
        sock = listen(host, port)  # a port in use: one line, before connecting
        try:
            await bus.connect()  # Redis unreachable: one line here, not a traceback at startup
            long_running(bus)  # later: the sampler and the pages wait it out, this says so once
            app = create_app(
                bus,
                admin_token,
                host=host,  # its lifespan keeps the bus, then closes it
                allowed_hosts=allowed_host or (),
            )
            out.print(
                f"relaybus dashboard on [bold]{_origin(host, port)}/[/] - prefix {prefix!r} on "
                f"{shown_url(redis_url)}; replay and purge "
                f"{'need the admin token' if admin_token else 'are off (no --admin-token)'}",
                soft_wrap=True,
                markup=True,
                highlight=False,
            )
            if not is_loopback(host):
                err.print(
                    f"[yellow]warning:[/] listening on {escape(host)}, beyond this machine: anyone "
                    "who can reach it reads every message; it answers the Host names "
                    f"{escape(', '.join(host_names(host, allowed_host or ())))} (add others with "
                    "--allowed-host)",
                    soft_wrap=True,
                    markup=True,
                    highlight=False,
                )
            await serve(app, sock, stop)
        finally:
            sock.close()
            await bus.close()
        err.print("dashboard stopped")

    run(job())


def register(app: typer.Typer) -> None:
    """Add `relaybus dashboard` to the CLI."""
    app.command()(dashboard)

"""One replica of an MCP server whose streams resume on any replica (docs/protocol-backends.md).

Run it three times behind one load balancer, on the same Redis:

    RELAYBUS_URL=redis://localhost:6379/0 python mcp_replicas.py --port 8001
    RELAYBUS_URL=redis://localhost:6379/0 python mcp_replicas.py --port 8002
    RELAYBUS_URL=redis://localhost:6379/0 python mcp_replicas.py --port 8003

Its tool `countdown` reports progress once per step. A client that loses the replica
running its call resumes on another with `Last-Event-ID` and gets the rest of the
progress and the result from Redis, each event once.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from relaybus import Bus
from relaybus.adapters.mcp import RelayBusEventStore, RelayBusSubscriptionBus, Resumable


def build(bus: Bus, idle_s: float = 300) -> Resumable:
    """The replica's ASGI app: the SDK's streamable HTTP app, its events in Redis."""
    store = RelayBusEventStore(bus)
    server = MCPServer("countdown", subscriptions=RelayBusSubscriptionBus(bus))

    @server.tool()
    async def countdown(steps: int, ctx: Context, step_s: float = 0.1) -> str:
        """Count down from `steps`, reporting progress at each step."""
        for done in range(1, steps + 1):
            await asyncio.sleep(step_s)
            await ctx.report_progress(done, steps, f"step {done} of {steps}")
        return f"counted {steps}"

    security = TransportSecuritySettings(
        allowed_hosts=["127.0.0.1:*"], allowed_origins=["http://127.0.0.1:*"]
    )
    app = server.streamable_http_app(event_store=store, transport_security=security)
    return Resumable(app, store, security=security, idle_s=idle_s)


async def main(port: int, idle_s: float) -> None:
    url = os.environ.get("RELAYBUS_URL", "redis://localhost:6379/0")
    prefix = os.environ.get("RELAYBUS_PREFIX", "relaybus")
    async with Bus.from_url(url, prefix=prefix) as bus:  # one bus per replica, one Redis for all
        config = uvicorn.Config(build(bus, idle_s), host="127.0.0.1", port=port, log_config=None)
        await uvicorn.Server(config).serve()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--idle-s", type=float, default=300, help="end a resumed stream idle this long")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.port, arguments.idle_s))

"""The operator commands: publish, tail, topics, stats, cleanup, retention, metrics."""

from __future__ import annotations

import functools
import sys
import time
from typing import Any

import orjson
import typer
from rich.markup import escape

from ._cli_common import (
    PREFIX,
    URL,
    ctrl_c,
    err,
    long_running,
    outlasting,
    parse_headers,
    parse_json,
    pause,
    require_extra,
    run,
    tool_bus,
    with_progress,
)
from ._cli_common import console as out
from ._cli_render import message_line, stats_view
from ._cli_tail import consume, watch
from .errors import RelayBusError
from .keys import validate_group, validate_pattern, validate_topic
from .message import Message
from .stats import BusStats

HEADER = typer.Option(None, "--header", help="key=value; repeatable.")
TOPICS = typer.Argument(None, help="Topics to report; default: all.")


def publish(
    topic: str = typer.Argument(..., help="Topic to publish to."),
    payload: str = typer.Argument(..., help="The payload as JSON; '-' reads it from stdin."),
    priority: int = typer.Option(0, "--priority", min=0, max=9, help="0-9, larger is more urgent."),
    ttl: float | None = typer.Option(None, "--ttl", help="Seconds until the message expires."),
    delay: float | None = typer.Option(None, "--delay", help="Seconds before it is delivered."),
    dedup_key: str | None = typer.Option(None, "--dedup-key", help="Idempotency key (dedup window)."),
    header: list[str] | None = HEADER,
    redis_url: str = URL,
    prefix: str = PREFIX,
) -> None:
    """Publish one message and print its id (a duplicate prints the original's id)."""

    async def job() -> str:
        validate_topic(topic)  # user mistakes first, before any connection attempt
        body = parse_json(sys.stdin.read() if payload == "-" else payload, "the payload")
        headers = parse_headers(header)
        async with tool_bus(redis_url, prefix) as bus:
            return await bus.publish(
                topic,
                body,
                priority=priority,
                ttl=ttl,
                delay=delay,
                dedup_key=dedup_key,
                headers=headers or None,
            )

    print(run(job()))


def tail(
    pattern: str = typer.Argument(..., help="A topic, or a glob pattern of topics ('agents.*')."),
    group: str | None = typer.Option(
        None, "--group", "-g", help="Consume as this consumer group and ack what is shown."
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep going until Ctrl-C."),
    count: int = typer.Option(
        10, "--count", "-n", min=1, help="Messages to show (with --group and --follow: per read)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    redis_url: str = URL,
    prefix: str = PREFIX,
) -> None:
    """Show messages of the topics matching PATTERN.

    Without --group: the latest history, nothing consumed. With --group: read and
    acknowledge as that consumer group.
    """

    def show(message: Message) -> None:
        if as_json:
            print(message.model_dump_json(), flush=True)
        else:
            out.print(message_line(message), soft_wrap=True)

    async def job() -> None:
        validate_pattern(pattern)
        if group is not None:
            validate_group(group)
        stop = ctrl_c() if follow else None
        async with tool_bus(redis_url, prefix) as bus:
            if stop is not None:
                long_running(bus)
            if group is None:
                await watch(bus, pattern, count, stop, show)
            else:
                await consume(bus, pattern, group, count, stop, show)

    run(job())


def topics(
    as_json: bool = typer.Option(False, "--json", help="One JSON list of the names."),
    redis_url: str = URL,
    prefix: str = PREFIX,
) -> None:
    """List every topic published to under the prefix, one per line."""

    async def job() -> list[str]:
        async with tool_bus(redis_url, prefix) as bus:
            return await bus.topics()

    names = run(job())
    if as_json:
        print(orjson.dumps(names).decode())
    else:
        for name in names:
            print(name)


def stats(
    topic: list[str] | None = TOPICS,
    as_json: bool = typer.Option(False, "--json", help="Print BusStats as JSON, for machines."),
    redis_url: str = URL,
    prefix: str = PREFIX,
) -> None:
    """Per topic and group: length, pending, lag, delayed, dead letters, memory; the server."""

    async def job() -> BusStats:
        for name in topic or []:
            validate_topic(name)
        async with tool_bus(redis_url, prefix) as bus:
            if topic:
                known = set(await bus.topics())
                unknown = [t for t in topic if t not in known]
                if unknown:
                    raise ValueError(f"unknown topic {unknown[0]!r} under prefix {prefix!r}")
            return await bus.stats(topic or None)

    result = run(job())
    if as_json:
        print(result.model_dump_json())
    else:
        out.print(stats_view(result))


def cleanup(
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print each topic's length and dead letters before and after, as one JSON object.",
    ),
    redis_url: str = URL,
    prefix: str = PREFIX,
) -> None:
    """Run every on_cleanup hook once: trim consumed history, expiry, retention."""

    async def job() -> tuple[int, list[dict[str, Any]]]:
        async with tool_bus(redis_url, prefix) as bus:
            names = await bus.topics()
            before = (await bus.stats(names)).topics if as_json else []
            await with_progress(f"cleanup over {len(names)} topics", bus.cleanup())
            after = {t.topic: t for t in (await bus.stats(names)).topics} if as_json else {}
            # the hooks report nothing of what they did: the topics' lengths around them do
            return len(names), [
                {
                    "topic": t.topic,
                    "length_before": t.length,
                    "length_after": after[t.topic].length,
                    "dlq_length_before": t.dlq_length,
                    "dlq_length_after": after[t.topic].dlq_length,
                }
                for t in before
            ]

    started = time.perf_counter()
    n, report = run(job())
    seconds = time.perf_counter() - started
    if as_json:
        print(orjson.dumps({"ok": True, "seconds": round(seconds, 3), "topics": report}).decode())
    else:
        err.print(f"cleanup done over {n} topics in {seconds:.1f}s")


def retention(
    topic: str = typer.Argument(..., help="The topic."),
    set_: bool = typer.Option(
        False,
        "--set",
        help="Store the limits given (pinned: buses' settings no "
        "longer change them); a limit not given is none.",
    ),
    keep_s: float | None = typer.Option(None, "--keep-s", min=0, help="Consumed history kept this long."),
    keep_len: int | None = typer.Option(None, "--keep-len", min=0, help="Consumed entries kept per stream."),
    dlq_keep_s: float | None = typer.Option(None, "--dlq-keep-s", min=0, help="Dead letters kept this long."),
    dlq_keep_len: int | None = typer.Option(None, "--dlq-keep-len", min=0, help="Dead letters kept."),
    redis_url: str = URL,
    prefix: str = PREFIX,
) -> None:
    """Print TOPIC's stored retention, which every cleanup trims it by, as JSON (null:
    none stored, everything kept); with --set, store it first."""

    async def job() -> str:
        validate_topic(topic)
        if not set_ and (keep_s, keep_len, dlq_keep_s, dlq_keep_len) != (None,) * 4:
            raise ValueError("give --set to store a retention; without it the command only shows it")
        async with tool_bus(redis_url, prefix) as bus:
            stored = (
                await bus.set_retention(
                    topic, keep_s=keep_s, keep_len=keep_len, dlq_keep_s=dlq_keep_s, dlq_keep_len=dlq_keep_len
                )
                if set_
                else await bus.retention(topic)
            )
        return "null" if stored is None else stored.model_dump_json()

    print(run(job()))


def metrics(
    port: int = typer.Option(9751, "--port", help="Port of the /metrics endpoint."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every one)."),
    interval: float = typer.Option(
        15.0, "--interval", min=0.1, help="Seconds between queue-gauge refreshes from stats."
    ),
    redis_url: str = URL,
    prefix: str = PREFIX,
) -> None:
    """Serve Prometheus metrics on /metrics until Ctrl-C.

    Queue gauges of every topic and group, refreshed from stats every --interval
    seconds, and this process's own metrics.
    """
    require_extra("metrics", "metrics", "prometheus_client")
    import prometheus_client

    async def job() -> None:
        async with tool_bus(redis_url, prefix) as bus:
            long_running(bus)
            refresh = getattr(bus.plugins.pm.get_plugin("metrics"), "refresh", None)
            if refresh is None:
                raise RelayBusError("the metrics plugin is disabled (disabled_plugins)")
            await refresh(bus)  # before serving: the first scrape has the numbers
            try:
                server, _ = prometheus_client.start_http_server(port, addr=host)
            except OSError as exc:
                raise ValueError(f"cannot serve on {host}:{port}: {exc}") from None
            err.print(f"serving http://{host}:{port}/metrics (Ctrl-C to stop)")
            stop = ctrl_c()
            try:
                await pause(stop, interval)
                while not stop.is_set():
                    try:
                        await outlasting(bus, stop, functools.partial(refresh, bus))
                    except Exception as exc:  # keep serving the last numbers; their timestamp ages
                        err.print(
                            f"[yellow]warning:[/] stats refresh failed: {type(exc).__name__}: "
                            f"{escape(str(exc))}"
                        )
                    await pause(stop, interval)
            finally:
                server.shutdown()

    run(job())

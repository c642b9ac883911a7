"""How the CLI shows things to people: rich tables and one-line messages. Pure functions.

Every value read from Redis is another client's text: it is put in a `Text`, never in a
markup string, so `[/]` or `:smile:` in an id, a header or a group name is shown as it is."""

from __future__ import annotations

import time

import orjson
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .message import DEAD_UNDECODABLE, Message
from .stats import BusStats, TopicStats

PAYLOAD_WIDTH = 120  # characters of payload shown in tables; `--json` has it all
UNBOUNDED = 1 << 30  # the width to measure a table's natural width in


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, length in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.1f}{unit}"
    return f"{seconds:.1f}s"


def clock(timestamp: float) -> str:
    """Local time with milliseconds: messages are often seconds apart, or less. A time no
    calendar of this platform has (another client's 1e17, say) is shown as the number."""
    return _local(timestamp) or str(timestamp)


def _clock_text(text: str) -> str:
    """A time as a header carries it, shown as `clock` shows it, else as it is written."""
    try:
        return _local(float(text)) or text
    except ValueError:
        return text


def _local(timestamp: float) -> str | None:
    try:
        day = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return None
    return f"{day}.{int(timestamp % 1 * 1000):03d}"


def payload_text(payload: object, width: int | None = None) -> str:
    text = orjson.dumps(payload).decode()
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def message_line(message: Message) -> Text:
    """One line per message for `tail`: time, topic, id, what is unusual, then the payload."""
    extra = [f"priority={message.priority}"] if message.priority else []
    extra += [f"attempt={message.attempt}"] if message.attempt > 1 else []
    extra += [f"{k}={v}" for k, v in sorted(message.headers.items())]
    line = Text.assemble(
        (clock(message.created_at), "dim"), " ", (message.topic, "cyan"), " ", (message.id, "dim")
    )
    if extra:
        line.append(" " + " ".join(extra), style="yellow")
    line.append(" " + payload_text(message.payload))
    return line


class _Fitting:
    """The `wide` tables where every one fits the width whole, else the `narrow` rendering:
    squeezed, a table gives up its topic names first."""

    def __init__(self, wide: list[Table], narrow: RenderableType) -> None:
        self.wide, self.narrow = wide, narrow

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        unbounded = options.update(max_width=UNBOUNDED)  # measuring within the width clamps to it
        fits = all(Measurement.get(console, unbounded, t).maximum <= options.max_width for t in self.wide)
        yield Group(*self.wide) if fits else self.narrow


def _counts(t: TopicStats) -> str:
    dropped = t.counts.get("dropped", 0) + t.counts.get("dropped_overflow", 0)
    return f"{t.counts.get('expired', 0):,}/{t.counts.get('filtered', 0):,}/{dropped:,}"


def _topic_tables(stats: BusStats) -> list[Table]:
    """A table of topics and one of consumer groups (if any), a row each."""
    topics = Table(title=f"topics under prefix {stats.prefix!r}", title_justify="left")
    for column in ("topic", "length", "delayed", "dlq", "memory", "expired/filtered/dropped"):
        topics.add_column(
            column,
            justify="left" if column == "topic" else "right",
            overflow="fold" if column == "topic" else "ellipsis",
            no_wrap=column != "topic",
        )
    widest = min(30, max((len(t.topic) for t in stats.topics), default=5))
    topics.columns[0].min_width = widest
    groups = Table(title="consumer groups", title_justify="left")
    for column in ("topic", "group", "consumers", "pending", "lag", "oldest pending"):
        text = column in ("topic", "group")
        groups.add_column(
            column,
            justify="left" if text else "right",
            overflow="fold" if text else "ellipsis",
            no_wrap=not text,
            min_width=widest if column == "topic" else None,
        )
    for t in stats.topics:
        topics.add_row(
            Text(t.topic),
            f"{t.length:,}",
            f"{t.delayed:,}",
            f"[red]{t.dlq_length:,}[/]" if t.dlq_length else "0",
            size(t.memory_bytes),
            _counts(t),
        )
        for g in t.groups:
            groups.add_row(
                Text(t.topic),
                Text(g.name),
                str(g.consumers),
                f"{g.pending:,}",
                "?" if g.lag is None else f"{g.lag:,}",
                age(g.oldest_pending_age_s),
            )
    return [topics, groups] if groups.row_count else [topics]


def _topic_list(stats: BusStats) -> RenderableType:
    """The same as the tables, for a narrow terminal: each topic's name on a line of its own,
    its numbers and its groups indented below, wrapping between words."""
    parts: list[RenderableType] = [Text(f"topics under prefix {stats.prefix!r}", style="table.title")]
    for t in stats.topics:
        parts.append(Text(t.topic, style="bold cyan", overflow="fold"))
        dlq = Text(f"dlq {t.dlq_length:,}", style="red" if t.dlq_length else "")
        numbers = Text.assemble(
            f"length {t.length:,}, delayed {t.delayed:,}, ",
            dlq,
            f", memory {size(t.memory_bytes)}, expired/filtered/dropped {_counts(t)}",
        )
        parts.append(Padding(numbers, (0, 0, 0, 2), expand=False))
        for g in t.groups:
            lag = "?" if g.lag is None else f"{g.lag:,}"
            parts.append(
                Padding(
                    Text.assemble(
                        ("group ", "dim"),
                        (g.name, "bold"),
                        f": consumers {g.consumers}, pending {g.pending:,}, lag {lag}, "
                        f"oldest pending {age(g.oldest_pending_age_s)}",
                    ),
                    (0, 0, 0, 2),
                    expand=False,
                )
            )
    return Group(*parts)


def stats_view(stats: BusStats) -> RenderableType:
    """Topics, groups, the server and recommendations, as `relaybus stats` prints them: as
    tables where they fit, else as an indented list that keeps every name whole."""
    memory = stats.server.memory
    limit = f"of {size(memory.maxmemory)}" if memory.maxmemory else "(no maxmemory)"
    parts: list[RenderableType] = [
        _Fitting(_topic_tables(stats), _topic_list(stats))
        if stats.topics
        else Text("no topics under this prefix", style="dim"),
    ]
    server = stats.server
    name = "Valkey" if server.server_name == "valkey" else "Redis"
    parts.append(
        Text(
            f"{name} {server.server_version}, {server.connected_clients} clients, "
            f"{size(memory.used_memory)} used {limit}, maxmemory-policy "
            f"{memory.maxmemory_policy}",
            style="dim",
        )
    )
    parts += [Text(f"! {r}", style="yellow") for r in stats.recommendations]
    return Group(*parts)


def dead_letters_view(topic: str, dead: list[Message]) -> Table:
    """Three columns, so it reads in 80: which message (id, group, tries, when), why, payload."""
    table = Table(title=f"dead letters of {topic!r}", title_justify="left", show_lines=True)
    table.add_column("message", no_wrap=True)
    table.add_column("why", overflow="fold", ratio=1)
    table.add_column("payload", overflow="fold", ratio=1)
    for m in dead:
        h = m.headers
        why = [h.get("x-dead-reason"), h.get("x-dead-error-type"), h.get("x-dead-error")]
        if DEAD_UNDECODABLE in h:
            why.append(f"not replayable ({h[DEAD_UNDECODABLE]})")
        where = f"\ngroup {h.get('x-dead-group', '?')}, attempt {h.get('x-dead-attempts', '?')}"
        dead_at = h.get("x-dead-dead-at")
        where += f"\n{_clock_text(dead_at)}" if dead_at else ""
        table.add_row(
            Text.assemble(m.id, (where, "dim")),
            Text(": ".join(w for w in why if w)),
            Text(payload_text(m.payload, PAYLOAD_WIDTH)),
        )
    return table

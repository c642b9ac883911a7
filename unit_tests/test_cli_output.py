"""How wide the CLI's output is: unwrapped into a pipe, and `stats` readable in a narrow terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from relaybus._cli_common import _Console
from relaybus._cli_render import stats_view
from relaybus.stats import BusStats, GroupStats, MemoryStats, ServerStats, TopicStats

NAMES = ["orders.created.eu-west-1", "billing.invoices.sent", "agents.planner.requests"]


def stats() -> BusStats:
    memory = MemoryStats(used_memory=2048, maxmemory=0, maxmemory_policy="noeviction", pressure=None)
    group = GroupStats(
        name="invoice-senders-group", consumers=2, pending=3, lag=None, oldest_pending_age_s=75
    )
    topics = [
        TopicStats(
            topic=name,
            length=10,
            lanes={0: 10},
            delayed=1,
            dlq_length=2,
            memory_bytes=4096,
            groups=[group] if name.startswith("billing") else [],
            counts={"expired": 4},
        )
        for name in NAMES
    ]
    server = ServerStats(
        redis_version="7.2.4", server_name="redis", server_version="7.2.4", connected_clients=5, memory=memory
    )
    return BusStats.model_construct(prefix="p", topics=topics, server=server, recommendations=[])


def rendered(thing: object, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO())
    console.print(thing)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in text.splitlines()]


@pytest.mark.parametrize("width", [60, 50, 40])
def test_narrow_stats_keep_every_name_whole(width: int) -> None:
    lines = rendered(stats_view(stats()), width)
    assert max(map(len, lines)) <= width
    for name in [*NAMES, "invoice-senders-group"]:
        assert any(name in line for line in lines), (name, lines)
    assert "orders.created.eu-west-1" in lines  # a line of its own, numbers below
    assert not any("│" in line for line in lines)


def test_wide_stats_are_tables() -> None:
    lines = rendered(stats_view(stats()), 120)
    assert any(line.startswith("│ orders.created.eu-west-1 │") for line in lines)
    assert any(line.startswith("│ billing.invoices.sent    │ invoice-senders-group │") for line in lines)


def test_output_to_a_pipe_is_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    console = _Console(file=io.StringIO())
    line = "word " * 100
    console.print(line)
    assert console.file.getvalue() == line + "\n"  # type: ignore[attr-defined]
    monkeypatch.setenv("COLUMNS", "60")  # an explicit width is kept
    narrow = _Console(file=io.StringIO())
    narrow.print(line)
    assert max(map(len, narrow.file.getvalue().splitlines())) <= 60  # type: ignore[attr-defined]

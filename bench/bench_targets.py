"""The targets (docs/benchmarks.md) in one table, each judged from the figures the benchmarks wrote.

bench_core.py, bench_engine.py and bench_peers.py write their figures as JSON with
`--results FILE`; `nox -s bench` puts them in one directory under the same names as
FILES and runs this script last, so that the last thing it prints is every target and
whether this run met it. Nothing is measured here and no figure is written in: a figure
that is not in the files reads "not measured"; a target whose run was smaller than the
target asks (a backlog under 1M, a peer missing) can fail but not pass: "incomplete".

    python bench/bench_targets.py DIR              # DIR holds core.json, engine.json, peers.json
    python bench/bench_targets.py DIR --markdown   # the table as markdown too
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

FILES = {"core": "core.json", "engine": "engine.json", "peers": "peers.json"}
MET, NOT_MET, MISSING, INCOMPLETE, INFO = "met", "NOT MET", "not measured", "incomplete", "information"
STYLES = {MET: "green", NOT_MET: "bold red", MISSING: "yellow", INCOMPLETE: "yellow", INFO: "dim"}
PEERS = ("FastStream", "taskiq-redis", "streaq")  # the targets' peers, named as in peer_adapters.py (not SAQ)
RAW, OURS = "raw redis-py", "relaybus"
PUBLISH = (  # bench_core.py case, what it is, at least this ratio to raw
    ("publish", "1. awaited publish / raw awaited XADD", 0.85),
    ("publish x64 tasks", "2. 64 tasks publishing / raw pipelined XADD", 0.7),
    ("publish_many", "3. publish_many, 100 a batch / raw pipelined XADD", 0.8),
)
CONSUME_RAW, CONSUME_PEERS = 0.35, 8.0
LATENCY_RATE, LATENCY_P99_MS = 1_000, 2.0
FLAT, SMALL_BACKLOG, BIG_BACKLOG = 0.15, 10_000, 1_000_000
MEMORY = 1.3

Figures = dict[str, Any] | None  # one script's JSON; None when its file is missing


@dataclass
class Row:
    target: str
    where: str
    measured: str
    wanted: str
    verdict: str


def load(directory: Path) -> dict[str, Figures]:
    return {
        key: json.loads(path.read_text()) if (path := directory / name).exists() else None
        for key, name in FILES.items()
    }


def judged(met: bool) -> str:
    return MET if met else NOT_MET


def ratio(value: float) -> str:
    return f"{value:.3g}x"  # 0.349x, not a rounded 0.35x beside a ">= 0.35x" that is NOT MET


def core_rows(core: Figures) -> Iterator[Row]:
    loops = core["results"] if core else {}
    rows = loops.get("asyncio") or next(iter(loops.values()), [])  # --loop both: asyncio's counts
    cases = {row["case"]: row for row in rows}
    for case, target, floor in PUBLISH:
        row = cases.get(case)
        if row is None:
            yield Row(target, f"bench_core.py '{case}'", "", f">= {ratio(floor)}", MISSING)
        else:
            yield Row(
                target,
                f"bench_core.py '{case}', N={row['n']:,}",
                ratio(row["ratio"]),
                f">= {ratio(floor)}",
                judged(row["ratio"] >= floor),
            )


def consume_rows(engine: Figures) -> Iterator[Row]:
    """Judged on the defaults, what users get; prefetch=100 (the raw loop's batch) is shown."""
    consume = {row["case"].split(" (")[0]: row for row in engine["consume"]} if engine else {}
    for case, target, info in (
        ("relaybus defaults", "4a. consume+ack / raw XREADGROUP/XACK loop", False),
        ("relaybus prefetch=100", "    4a with prefetch=100", True),
    ):
        row = consume.get(case)
        if row is None:
            yield Row(target, f"bench_engine.py '{case}'", "", f">= {ratio(CONSUME_RAW)}", MISSING)
        else:
            yield Row(
                target,
                f"bench_engine.py '{row['case']}', N={row['n']:,}",
                ratio(row["ratio"]),
                f">= {ratio(CONSUME_RAW)}",
                INFO if info else judged(row["ratio"] >= CONSUME_RAW),
            )


def latency_rows(engine: Figures, peers: Figures) -> Iterator[Row]:
    """Judged on bench_engine's, the publisher in another process; bench_peers' is shown."""
    target, wanted = f"5. publish->handler p99 at {LATENCY_RATE:,} msg/s", f"< {LATENCY_P99_MS:g} ms"
    ours = next((row for row in engine["latency"] if row["case"].startswith(OURS)), None) if engine else None
    if ours is None:
        yield Row(target, "bench_engine.py, publisher in another process", "", wanted, MISSING)
    else:
        yield Row(
            target,
            f"bench_engine.py, publisher in another process (sent at "
            f"{ours['publish_rate']:,} msg/s, {ours['measured']:,} measured)",
            f"{ours['p99_ms']:.2f} ms",
            wanted,
            judged(ours["p99_ms"] < LATENCY_P99_MS),
        )
    local = results(peers, "latency").get(OURS)
    where = "bench_peers.py 5, publisher in the same process"
    if local is None:
        yield Row("    5 in-process", where, "", wanted, MISSING)
    else:
        yield Row(
            "    5 in-process",
            f"{where} (at {local['publish_rate']:,} msg/s)",
            f"{local['p99_ms']:.2f} ms",
            wanted,
            INFO,
        )


def results(peers: Figures, scenario: str) -> dict[str, Any]:
    return peers["results"].get(scenario, {}) if peers else {}


def fastest_peer_row(consume: dict[str, int]) -> Row:
    """At least CONSUME_PEERS x the fastest of PEERS; met only when all of them were measured."""
    target, wanted = "4b. consume+ack / the fastest Python peer", f">= {CONSUME_PEERS:g}x"
    measured = {name: consume[name] for name in PEERS if consume.get(name)}
    absent = (
        f"; not measured: {', '.join(name for name in PEERS if name not in measured)}"
        if len(measured) < len(PEERS)
        else ""
    )
    if not consume.get(OURS) or not measured:
        return Row(target, f"bench_peers.py 4{absent}", "", wanted, MISSING)
    fastest = max(measured, key=measured.__getitem__)
    value = consume[OURS] / measured[fastest]
    where = f"bench_peers.py 4: fastest peer {fastest} ({measured[fastest]:,} msgs/s){absent}"
    verdict = judged(value >= CONSUME_PEERS)
    return Row(target, where, ratio(value), wanted, INCOMPLETE if verdict == MET and absent else verdict)


def flatness_row(
    target: str, growth: float | None, small: int | None, big: int | None, info: bool = False
) -> Row:
    """Cost with the big backlog / with the small one within 1 +- FLAT; met only over 10k -> 1M."""
    wanted = f"{1 - FLAT:.2f}x to {1 + FLAT:.2f}x"
    if growth is None or not small or not big:
        return Row(target, "bench_peers.py 6c", "", wanted, MISSING)
    where = f"bench_peers.py 6c: backlog {small:,} -> {big:,}"
    judgement = judged(round(abs(growth - 1), 9) <= FLAT)  # 0.85 - 1 is 0.15000000000000002
    if small > SMALL_BACKLOG or big < BIG_BACKLOG:
        where += f" (the target: {SMALL_BACKLOG:,} -> {BIG_BACKLOG:,})"
        judgement = INCOMPLETE if judgement == MET else judgement
    return Row(target, where, f"{ratio(growth)} ({growth - 1:+.0%})", wanted, INFO if info else judgement)


def memory_row(memory: dict[str, int]) -> Row:
    target, wanted = "7. Redis bytes per stored message / raw XADD", f"<= {ratio(MEMORY)}"
    ours, raw = memory.get(OURS), memory.get(RAW)
    if not ours or not raw or raw <= 0:
        return Row(target, "bench_peers.py 7a", "", wanted, MISSING)
    value = ours / raw
    return Row(
        target, f"bench_peers.py 7a: {ours:,} vs {raw:,} bytes", ratio(value), wanted, judged(value <= MEMORY)
    )


def evaluate(figures: dict[str, Figures]) -> list[Row]:
    engine, peers = figures["engine"], figures["peers"]
    machine, growth = peers["machine"] if peers else {}, results(peers, "growth")
    backlogs = machine.get("n"), machine.get("backlog")  # raw redis-py's and relaybus's
    return [
        *core_rows(figures["core"]),
        *consume_rows(engine),
        fastest_peer_row(results(peers, "consume")),
        *latency_rows(engine, peers),
        flatness_row("6. cost per message, 10k -> 1M backlog", growth.get(OURS), *backlogs),
        flatness_row("    6 for raw redis-py", growth.get(RAW), *backlogs, info=True),
        memory_row(results(peers, "memory")),
    ]


def show(rows: list[Row], console: Console, directory: Path) -> None:
    judged_rows = [row for row in rows if row.verdict != INFO]
    met = sum(row.verdict == MET for row in judged_rows)
    table = Table(
        title=f"Targets (docs/benchmarks.md): {met} of {len(judged_rows)} met",
        caption=f"figures from {directory}",
    )
    for column in ("target", "where measured", "measured", "target value", "verdict"):
        table.add_column(column, justify="right" if column in ("measured", "target value") else "left")
    for row in rows:
        table.add_row(
            row.target, row.where, row.measured, row.wanted, f"[{STYLES[row.verdict]}]{row.verdict}[/]"
        )
    console.print(table)


def markdown(rows: list[Row]) -> str:
    lines = ["| target | where measured | measured | target value | verdict |", "|---|---|---|---|---|"]
    lines += [
        f"| {row.target.strip()} | {row.where} | {row.measured} | {row.wanted} | "
        f"{'**NOT MET**' if row.verdict == NOT_MET else row.verdict} |"
        for row in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help=f"where the scripts wrote {', '.join(FILES.values())}")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown as well")
    args = parser.parse_args(argv)
    rows = evaluate(load(args.directory))
    show(rows, Console(width=max(160, Console().width)), args.directory)  # nox pipes: not 80
    if args.markdown:
        print()
        print(markdown(rows))


if __name__ == "__main__":
    main()

"""The operator commands against a real Redis: what they print, what they change, and how
they fail (one line on stderr, exit 1, no traceback)."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import Result
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import relaybus
from relaybus import Bus, SyncBus
from relaybus.cli import app
from relaybus.embedded import free_port
from relaybus.keys import Keys

COMMAND = [sys.executable, "-c", "from relaybus.cli import app; app()"]


def cli(redis_url: str, prefix: str, *args: str, input: str | None = None, **env: str) -> Result:
    return CliRunner().invoke(
        app, [*args, "--redis-url", redis_url, "--prefix", prefix], input=input, env=env or None
    )


def assert_one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr
    assert "Traceback" not in result.output


def dead_letters(redis_url: str, prefix: str, topic: str, n: int) -> None:
    """n dead letters of `topic`, made the way the core makes them (read, then dead-letter)."""

    async def make() -> None:
        async with Bus.from_url(redis_url, prefix=prefix) as bus:
            await bus.publish_many(topic, [{"n": i} for i in range(n)])
            for message in await bus.read(topic, "workers", count=n):
                await bus.dead_letter(message, "broken on purpose", ValueError("boom"))

    asyncio.run(make())


# -- publish -------------------------------------------------------------------------


def test_publish_prints_the_id_and_passes_every_option(redis_url: str, prefix: str) -> None:
    result = cli(
        redis_url,
        prefix,
        "publish",
        "orders.new",
        '{"pr": 7}',
        "--priority",
        "3",
        "--ttl",
        "60",
        "--dedup-key",
        "k1",
        "--header",
        "source=cli",
        "--header",
        "team=ops",
    )
    assert result.exit_code == 0, result.output
    mid = result.stdout.strip()
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        [message] = bus.history("orders.new")
    assert message.id == mid and message.payload == {"pr": 7} and message.priority == 3
    assert message.headers == {"source": "cli", "team": "ops"} and message.dedup_key == "k1"
    assert message.expires_at is not None and 55 < message.expires_at - message.created_at <= 60
    again = cli(redis_url, prefix, "publish", "orders.new", '{"pr": 8}', "--dedup-key", "k1")
    assert again.stdout.strip() == mid  # a duplicate prints the original's id


def test_publish_with_delay_and_from_stdin(redis_url: str, prefix: str) -> None:
    result = cli(redis_url, prefix, "publish", "later", "-", "--delay", "60", input='["from", "stdin"]')
    assert result.exit_code == 0, result.output
    stats = json.loads(cli(redis_url, prefix, "stats", "--json").stdout)
    [topic] = stats["topics"]
    assert topic["topic"] == "later" and topic["delayed"] == 1 and topic["length"] == 0


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["publish", "t", "{not json"], "the payload is not valid JSON"),
        (["publish", "bad topic!", "1"], "invalid topic 'bad topic!'"),
        (["publish", "t", "1", "--header", "novalue"], "invalid --header 'novalue'"),
        (["tail", "bad pattern!"], "invalid topic pattern"),
        (["tail", "t", "--group", "bad group"], "invalid group"),
        (["stats", "x y"], "invalid topic"),
        (["stats", "never.published"], "unknown topic 'never.published'"),
        (["dlq", "list", "never.published"], "unknown topic 'never.published'"),
        (["tail", "nothing.*"], "matches 'nothing.*'"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_1(
    redis_url: str, prefix: str, args: list[str], text: str
) -> None:
    assert_one_line_error(cli(redis_url, prefix, *args), text)


@pytest.mark.parametrize(
    "args",
    [
        ["publish", "t", "1"],
        ["tail", "t"],
        ["topics"],
        ["stats"],
        ["stats", "--json"],
        ["cleanup"],
        ["dlq", "list", "t"],
        ["dlq", "replay", "t"],
        ["dlq", "purge", "t", "--yes"],
    ],
)
def test_unreachable_redis_is_one_line_and_exit_1(args: list[str]) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert_one_line_error(cli(closed, "p", *args), "cannot reach Redis")


def test_an_unusable_outbox_path_is_one_line_naming_it_and_why(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Not SQLite's "unable to open database file" in a 59-line traceback."""
    path = tmp_path / "no such dir" / "outbox.db"
    result = cli(redis_url, prefix, "publish", "t", "1", RELAYBUS_OUTBOX_PATH=str(path))
    assert_one_line_error(result, f"outbox_path {path}: cannot open it: No such file or directory")


def test_default_url_comes_from_the_environment(redis_url: str, prefix: str) -> None:
    result = CliRunner().invoke(
        app, ["publish", "envy", "1", "--prefix", prefix], env={"RELAYBUS_URL": redis_url}
    )
    assert result.exit_code == 0, result.output
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        assert bus.topics() == ["envy"]


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"relaybus {relaybus.__version__}\n"


def without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process where `module` cannot be imported, as when its extra is missing."""
    blocked = f"import sys; sys.modules[{module!r}] = None; from relaybus.cli import app; app()"
    return subprocess.run([sys.executable, "-c", blocked, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("command", "module", "extra"),
    [
        (["mcp"], "mcp", "mcp"),
        (["mcp", "--transport", "http"], "mcp", "mcp"),
        (["metrics"], "prometheus_client", "metrics"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(command: list[str], module: str, extra: str) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # never reached: the extra is checked first
    result = without(module, *command, "--redis-url", closed)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: relaybus {command[0]} needs the {extra!r} extra: pip install 'relaybus[{extra}]'"
    ]


class QuietHTTP(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    """A port where an HTTP server, not Redis, answers."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietHTTP)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("args", [["stats"], ["topics"], ["dlq", "list", "t"]])
def test_a_port_where_something_else_answers_is_unreachable_redis(http_server: int, args: list[str]) -> None:
    url = f"redis://127.0.0.1:{http_server}/0"
    assert_one_line_error(cli(url, "p", *args), f"cannot reach Redis at {url}")


def test_mcp_serves_over_http_on_the_given_host_and_port(redis_url: str, prefix: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            *COMMAND,
            "mcp",
            "--transport",
            "http",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/mcp", timeout=5)
            except urllib.error.HTTPError as exc:  # a GET without an MCP session: refused, but served
                assert exc.code in (400, 405, 406)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "never served"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)


# -- topics, tail ----------------------------------------------------------------------


def test_topics_one_per_line(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        for topic in ("b.two", "a.one"):
            bus.publish(topic, 1)
    result = cli(redis_url, prefix, "topics")
    assert result.exit_code == 0 and result.stdout.splitlines() == ["a.one", "b.two"]


def test_topics_json(redis_url: str, prefix: str) -> None:
    empty = cli(redis_url, prefix, "topics", "--json")
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        for topic in ("b.two", "a.one"):
            bus.publish(topic, 1)
    result = cli(redis_url, prefix, "topics", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    assert json.loads(result.stdout) == ["a.one", "b.two"] and len(result.stdout.splitlines()) == 1


LONG_TOPIC = "agents." + "planner-requests-" * 8 + "eu-west-1"  # 152 characters


def piped(redis_url: str, prefix: str, *args: str) -> str:
    """The CLI's stdout through a pipe, as `relaybus ... | grep` gets it (no COLUMNS)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    result = subprocess.run(
        [*COMMAND, *args, "--redis-url", redis_url, "--prefix", prefix],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_piped_output_is_not_wrapped(redis_url: str, prefix: str) -> None:
    dead_letters(redis_url, prefix, LONG_TOPIC, 2)
    assert LONG_TOPIC in piped(redis_url, prefix, "topics").splitlines()
    lines = piped(redis_url, prefix, "stats").splitlines()
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in lines
        if line.startswith(f"│ {LONG_TOPIC} │")
    ]  # each row on one line, the name whole
    assert [row[:4] for row in rows] == [
        [LONG_TOPIC, "2", "0", "2"],  # topics: length, delayed, dlq
        [LONG_TOPIC, "workers", "1", "0"],  # groups: consumers, pending
    ], lines
    assert f"! topic {LONG_TOPIC!r} has 2 dead letters: inspect, replay or purge" in lines
    shown = piped(redis_url, prefix, "tail", LONG_TOPIC).splitlines()
    assert len(shown) == 2 and all(
        LONG_TOPIC in line and line.endswith('{"n":1}' if i else '{"n":0}') for i, line in enumerate(shown)
    )


def test_tail_without_group_shows_history_and_consumes_nothing(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        bus.publish("agents.a", {"n": 1})
        bus.publish("other", {"n": 2})
        bus.publish("agents.b", {"n": 3}, priority=5)
        bus.publish("agents.a", {"n": 4})
    result = cli(redis_url, prefix, "tail", "agents.*", "--json")
    assert result.exit_code == 0, result.output
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert [m["payload"]["n"] for m in shown] == [1, 3, 4]  # merged across topics, oldest first
    last_two = cli(redis_url, prefix, "tail", "agents.*", "--count", "2", "--json")
    assert [json.loads(line)["payload"]["n"] for line in last_two.stdout.splitlines()] == [3, 4]
    human = cli(redis_url, prefix, "tail", "agents.b")
    assert "agents.b" in human.stdout and "priority=5" in human.stdout and '{"n":3}' in human.stdout
    stats = json.loads(cli(redis_url, prefix, "stats", "--json").stdout)
    assert all(t["groups"] == [] for t in stats["topics"])  # no group was made, nothing consumed


def test_tail_with_group_consumes_and_acks(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        bus.publish_many("jobs", [{"n": i} for i in range(3)])
    first = cli(redis_url, prefix, "tail", "jobs", "--group", "g", "--count", "2", "--json")
    second = cli(redis_url, prefix, "tail", "jobs", "--group", "g", "--json")
    third = cli(redis_url, prefix, "tail", "jobs", "--group", "g", "--json")
    assert [json.loads(x)["payload"]["n"] for x in first.stdout.splitlines()] == [0, 1]
    assert [json.loads(x)["payload"]["n"] for x in second.stdout.splitlines()] == [2]
    assert third.exit_code == 0 and third.stdout == ""
    [topic] = json.loads(cli(redis_url, prefix, "stats", "--json").stdout)["topics"]
    [group] = topic["groups"]
    assert group["name"] == "g" and group["pending"] == 0 and group["lag"] == 0  # all acked


class Follower:
    """`relaybus tail --follow` as a subprocess, read line by line, stopped with Ctrl-C."""

    def __init__(self, redis_url: str, prefix: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*COMMAND, "tail", *args, "--follow", "--json", "--redis-url", redis_url, "--prefix", prefix],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a terminal's Ctrl-C
        )
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line)

    def lines(self, n: int, seconds: float = 10.0) -> list[dict[str, object]]:
        out, deadline = [], time.monotonic() + seconds
        while len(out) < n:
            try:
                out.append(json.loads(self.queue.get(timeout=max(0.0, deadline - time.monotonic()))))
            except queue.Empty:
                raise AssertionError(f"only {len(out)} of {n} lines: {self.stop()}") from None
        return out

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read()


def test_tail_follow_sees_new_messages_new_topics_and_lanes(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        bus.publish("feed.old", "before")
        follower = Follower(redis_url, prefix, "feed.*", "--count", "1")
        assert [m["payload"] for m in follower.lines(1)] == ["before"]
        bus.publish("feed.old", "after")
        assert [m["payload"] for m in follower.lines(1)] == ["after"]
        bus.publish("feed.new", "new topic")
        bus.publish("feed.old", "urgent", priority=7)
        assert sorted(str(m["payload"]) for m in follower.lines(2)) == ["new topic", "urgent"]
        assert follower.stop() == (0, "")  # Ctrl-C ends a follow quietly
        assert [m.payload for m in bus.read("feed.old", "late")] == ["urgent", "before", "after"]


async def test_tail_follow_misses_no_lane_entry_stored_later_in_the_same_millisecond(
    bus: Bus, raw: redis.Redis, prefix: str
) -> None:
    """Lanes number their entries each on their own: lane 5 may get 5-0 after lane 0's 5-1
    was shown. A follow reads that millisecond again and shows what it had not."""
    from relaybus._cli_tail import watch

    await bus.publish("same-ms", "a")
    await bus.publish("same-ms", "c", priority=5)
    lane0, lane5 = f"{prefix}:{{same-ms}}:stream", f"{prefix}:{{same-ms}}:lane:5"
    [(_, a)], [(_, c)] = raw.xrange(lane0), raw.xrange(lane5)
    raw.delete(lane0, lane5)
    raw.xadd(lane0, a, id="5-0")
    raw.xadd(lane0, a, id="5-1")  # shown first: the newest entry of the topic, 5-1
    shown: list[tuple[str | None, object]] = []
    stop = asyncio.Event()

    def show(message: relaybus.Message) -> None:
        shown.append((message.entry_id, message.payload))
        if len(shown) == 2:
            raw.xadd(lane5, c, id="5-0")  # stored after 5-1 was shown, with a lower id
        if len(shown) == 3:
            stop.set()

    await asyncio.wait_for(watch(bus, "same-ms", 10, stop, show), 10)
    assert sorted(shown[:2]) == [("5-0", "a"), ("5-1", "a")] and shown[2:] == [("5-0", "c")]


def test_tail_follow_with_group_acks_as_it_goes(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        bus.publish("work", 1)
        follower = Follower(redis_url, prefix, "work", "--group", "g")
        bus.publish("work", 2)
        assert [m["payload"] for m in follower.lines(2)] == [1, 2]
        assert follower.stop()[0] == 0
    [topic] = json.loads(cli(redis_url, prefix, "stats", "--json").stdout)["topics"]
    assert topic["groups"][0]["pending"] == 0


# -- stats -------------------------------------------------------------------------------


def test_stats_json_is_valid_json_with_every_field(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        bus.publish_many("s.one", [1, 2, 3])
        bus.publish("s.two", 1)
        bus.read("s.one", "readers", count=1)  # one pending, two ahead
    result = cli(redis_url, prefix, "stats", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    stats = json.loads(result.stdout)
    assert {"prefix", "topics", "server", "counters", "recommendations"} <= set(stats)
    assert stats["prefix"] == prefix and stats["server"]["redis_version"]
    one = next(t for t in stats["topics"] if t["topic"] == "s.one")
    assert {"length", "lanes", "delayed", "dlq_length", "memory_bytes", "groups", "counts"} <= set(one)
    assert one["length"] == 3
    [group] = one["groups"]
    assert group["name"] == "readers" and group["pending"] == 1 and group["lag"] == 2
    only = json.loads(cli(redis_url, prefix, "stats", "--json", "s.two").stdout)
    assert [t["topic"] for t in only["topics"]] == ["s.two"]


def test_stats_tables(redis_url: str, prefix: str) -> None:
    dead_letters(redis_url, prefix, "tables.topic", 2)
    result = cli(redis_url, prefix, "stats")
    assert result.exit_code == 0, result.output
    assert "tables.topic" in result.stdout and "workers" in result.stdout
    assert "has 2 dead letters" in result.stdout  # the recommendation


NAMES_AT_60 = ["orders.created.eu-west-1", "billing.invoices.sent", "agents.planner.requests", "a"]


def test_stats_at_60_columns_keeps_every_name_whole(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        for topic in NAMES_AT_60:
            bus.publish(topic, {"x": 1})
        bus.read("billing.invoices.sent", "invoice-senders-group")
    result = cli(redis_url, prefix, "stats", COLUMNS="60")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 60, result.stdout
    for name in [*NAMES_AT_60, "invoice-senders-group"]:
        assert any(name in line for line in lines), (name, result.stdout)
    assert "length 1, delayed 0, dlq 0" in result.stdout  # the numbers, labelled
    wide = cli(redis_url, prefix, "stats", COLUMNS="120").stdout  # where the tables fit: tables
    assert any(line.startswith("│ orders.created.eu-west-1 │") for line in wide.splitlines()), wide


# -- dead letters --------------------------------------------------------------------------


def test_dlq_list(redis_url: str, prefix: str) -> None:
    dead_letters(redis_url, prefix, "jobs", 3)
    table = cli(redis_url, prefix, "dlq", "list", "jobs")
    assert table.exit_code == 0, table.output
    assert "broken on purpose: ValueError: boom" in " ".join(table.stdout.split()).replace("│", "")
    lines = cli(redis_url, prefix, "dlq", "list", "jobs", "--json", "--limit", "2").stdout.splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["payload"] == {"n": 0} and first["headers"]["x-dead-reason"] == "broken on purpose"


def test_dlq_replay_one_then_all(redis_url: str, prefix: str) -> None:
    dead_letters(redis_url, prefix, "jobs", 3)
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        chosen = bus.dead_letters("jobs")[1].id
        one = cli(redis_url, prefix, "dlq", "replay", "jobs", "--id", chosen)
        assert one.exit_code == 0 and "replayed 1 dead letters" in one.stderr
        assert [m.id for m in bus.read("jobs", "workers")] == [chosen]
        rest = cli(redis_url, prefix, "dlq", "replay", "jobs")
        assert "replayed 2 dead letters" in rest.stderr
        assert bus.dead_letters("jobs") == []
        assert sorted(m.payload["n"] for m in bus.read("jobs", "workers")) == [0, 2]


def test_dlq_replay_of_an_unknown_id_is_an_error_and_replays_nothing(redis_url: str, prefix: str) -> None:
    dead_letters(redis_url, prefix, "jobs", 2)
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        real = bus.dead_letters("jobs")[0].id
        assert_one_line_error(
            cli(redis_url, prefix, "dlq", "replay", "jobs", "--id", "nope"),
            "no dead letter of 'jobs' has the id 'nope'; nothing was replayed",
        )
        mixed = cli(redis_url, prefix, "dlq", "replay", "jobs", "--id", real, "--id", "nope", "--id", "gone")
        assert_one_line_error(mixed, "has the ids 'nope', 'gone'; nothing was replayed")
        assert real not in mixed.stderr
        assert len(bus.dead_letters("jobs")) == 2 and bus.read("jobs", "workers") == []
        entry = cli(redis_url, prefix, "dlq", "replay", "jobs", "--id", bus.dead_letters("jobs")[1].entry_id)
        assert entry.exit_code == 0 and "replayed 1 dead letters" in entry.stderr  # a DLQ entry id
        assert [m.id for m in bus.dead_letters("jobs")] == [real]


def test_dlq_list_and_replay_step_over_an_undecodable_dead_letter(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """A dead letter another client wrote, nested too deep to decode: listed as undecodable,
    reported and kept by a replay of the others; naming it to replay is a one-line error."""
    dead_letters(redis_url, prefix, "jobs", 2)
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    envelope = json.dumps({"id": "x", "topic": "jobs", "created_at": 1.5, "payload": deep})
    entry = raw.xadd(Keys(prefix).dlq("jobs"), {"v": "1", "m": envelope, "group": "workers"}).decode()
    table = cli(redis_url, prefix, "dlq", "list", "jobs")
    assert table.exit_code == 0, table.output
    assert entry in table.stdout and "does not decode" in table.stdout
    listed = cli(redis_url, prefix, "dlq", "list", "jobs", "--json")
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert lines[2]["id"] == entry and "x-dead-undecodable" in lines[2]["headers"]  # its entry id as id
    assert_one_line_error(
        cli(redis_url, prefix, "dlq", "replay", "jobs", "--id", entry),
        f"dead letter {entry!r} of 'jobs' does not decode",
    )
    replay = subprocess.run(
        [*COMMAND, "dlq", "replay", "jobs", "--redis-url", redis_url, "--prefix", prefix],
        capture_output=True,
        text=True,
        timeout=60,
    )  # a process: the bus's warning shows
    assert replay.returncode == 0, replay.stderr
    assert "replayed 2 dead letters" in replay.stderr and "Traceback" not in replay.stderr
    said = "do not decode: not replayed, they stay in the DLQ (listing the dead letters shows why)"
    assert f"{said}: {entry}" in replay.stderr
    assert [e.decode() for e, _ in raw.xrange(Keys(prefix).dlq("jobs"))] == [entry]


def test_values_from_redis_are_shown_as_written_never_read_as_markup(
    redis_url: str, prefix: str, raw: redis.Redis
) -> None:
    """Ids, headers, group names and reasons another client wrote are text: markup, emoji
    codes and a time no calendar has are shown as they are, by tail, dlq list and stats."""
    keys = Keys(prefix)
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        bus.publish("jobs", {"n": 1})
    for fields in ({"id": "[/]", "headers": {"[bold]": "[/red]"}}, {"id": ":smile:", "created_at": 1e17}):
        raw.xadd(
            keys.stream("jobs"),
            {"v": "1", "m": json.dumps({"topic": "jobs", "created_at": 1.5, "payload": "[/]", **fields})},
        )
    raw.xgroup_create(keys.stream("jobs"), "[/]:smile:", id="$")
    raw.xadd(
        keys.dlq("jobs"),
        {
            "v": "1",
            "m": json.dumps({"id": "[/b]", "topic": "jobs", "created_at": 1}),
            "reason": "[/]",
            "group": "[red]",
            "dead_at": "1e17",
        },
    )
    raw.xadd(
        keys.dlq("jobs"),
        {
            "v": "1",
            "m": json.dumps({"id": "[/i]", "topic": "jobs", "created_at": 1}),
            "reason": ":smile:",
            "group": "workers",
            "dead_at": "nan",
        },
    )
    for args in (["tail", "jobs"], ["tail", "jobs", "--group", "g"]):
        shown = cli(redis_url, prefix, *args)
        assert shown.exit_code == 0, shown.output
        assert "[/]" in shown.stdout and "[bold]=[/red]" in shown.stdout and ":smile:" in shown.stdout
        assert "1e+17" in shown.stdout
    dlq = cli(redis_url, prefix, "dlq", "list", "jobs")
    assert dlq.exit_code == 0, dlq.output
    for text in ("[/b]", "[/i]", "group [red]", "[/]", ":smile:", "1e17", "nan"):
        assert text in dlq.stdout, text
    for columns in ("200", "60"):  # tables, and the narrow list
        stats = cli(redis_url, prefix, "stats", COLUMNS=columns)
        assert stats.exit_code == 0 and "[/]:smile:" in stats.stdout, stats.output


def test_dlq_purge_asks_first(redis_url: str, prefix: str) -> None:
    dead_letters(redis_url, prefix, "jobs", 2)
    declined = cli(redis_url, prefix, "dlq", "purge", "jobs", input="n\n")
    assert declined.exit_code == 1 and "Delete all 2 dead letters of 'jobs'?" in declined.stderr
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        assert len(bus.dead_letters("jobs")) == 2
        accepted = cli(redis_url, prefix, "dlq", "purge", "jobs", input="y\n")
        assert accepted.exit_code == 0 and "purged 2 dead letters" in accepted.stderr
        assert bus.dead_letters("jobs") == []
        dead_letters(redis_url, prefix, "jobs", 1)
        forced = cli(redis_url, prefix, "dlq", "purge", "jobs", "--yes")
        assert forced.exit_code == 0 and "purged 1 dead letters" in forced.stderr
        assert bus.dead_letters("jobs") == []


# -- cleanup ---------------------------------------------------------------------------------


def test_cleanup_runs_the_cleanup_hooks(redis_url: str, prefix: str) -> None:
    # retention (a built-in on_cleanup plugin): the app's setting is stored on the topic
    with SyncBus.from_url(redis_url, prefix=prefix, retention_max_len=0) as bus:
        bus.publish_many("done", list(range(5)))
        bus.ack(*bus.read("done", "g", count=5))
        bus.publish("done", "unread")
    result = cli(redis_url, prefix, "cleanup")
    assert result.exit_code == 0, result.output
    assert "cleanup done over 1 topics" in result.stderr
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        assert [m.payload for m in bus.history("done")] == ["unread"]


def test_cleanup_json_reports_each_topic_before_and_after(redis_url: str, prefix: str) -> None:
    nothing = cli(redis_url, prefix, "cleanup", "--json")
    assert nothing.exit_code == 0 and nothing.stderr == ""
    assert json.loads(nothing.stdout) == {
        "ok": True,
        "seconds": json.loads(nothing.stdout)["seconds"],
        "topics": [],
    }
    dead_letters(redis_url, prefix, "failing", 1)
    with SyncBus.from_url(redis_url, prefix=prefix, retention_max_len=0) as bus:
        bus.publish_many("done", list(range(5)))
        bus.ack(*bus.read("done", "g", count=5))
        bus.publish("done", "unread")
        bus.set_retention("failing", keep_len=0)
    result = cli(redis_url, prefix, "cleanup", "--json")
    assert result.exit_code == 0 and result.stderr == "", result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["seconds"] >= 0
    assert report["topics"] == [
        {
            "topic": "done",
            "length_before": 6,
            "length_after": 1,
            "dlq_length_before": 0,
            "dlq_length_after": 0,
        },
        {
            "topic": "failing",
            "length_before": 1,
            "length_after": 0,
            "dlq_length_before": 1,
            "dlq_length_after": 1,
        },
    ]


def test_ctrl_c_during_a_command_exits_130() -> None:
    """An interrupted one-shot command must not look finished: here `topics` waits on a
    server that accepted the connection and never answers."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        proc = subprocess.Popen(
            [sys.executable, "-c", "from relaybus.cli import app; app()", "topics", "--redis-url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)  # connected, waiting for the PING's answer
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and "interrupted" in err and out == ""


INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_ctrl_c_stops_the_mcp_server_with_exit_0(redis_url: str, prefix: str, transport: str) -> None:
    """A server is meant to be stopped by Ctrl-C (docs/cli.md): exit 0, no `interrupted`,
    over either transport, once it is serving."""
    port = free_port()
    proc = subprocess.Popen(
        [
            *COMMAND,
            "mcp",
            "--transport",
            transport,
            "--port",
            str(port),
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # a terminal's Ctrl-C
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if transport == "stdio":
            proc.stdin.write(INITIALIZE + "\n")
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["id"] == 1  # serving
        else:
            deadline = time.monotonic() + 30
            while not listening(port):
                assert proc.poll() is None and time.monotonic() < deadline, "never served"
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "interrupted" not in err and "Traceback" not in err


def listening(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/mcp", timeout=5)
    except urllib.error.HTTPError:  # a GET without an MCP session: refused, but served
        return True
    except OSError:
        return False
    return True


# -- fuzzed invocations ----------------------------------------------------------------------

WEIRD = st.sampled_from(
    [
        "nan",
        "inf",
        "-inf",
        "-1",
        "0",
        "1e309",
        "1e-9",
        "10",
        "",
        " ",
        "abc",
        "{}",
        "[1]",
        '{"a": NaN}',
        "9" * 30,
        "-",
        "a=b",
        "=",
        "x" * 300,
        "\x00",
        "é",
    ]
)
NAMES = st.one_of(
    st.just("jobs"),
    st.just("a.b"),  # valid names half the time
    st.sampled_from(["*", "jobs.>", "", "bad topic", "x" * 300]),
    st.text(max_size=12),
)
VALUES = st.one_of(
    st.sampled_from(['{"n": 1}', '"text"', "1", "2.5", "null"]),
    WEIRD,
    st.text(max_size=20),
    st.integers().map(str),
    st.floats().map(str),
)


def _option(name: str) -> st.SearchStrategy[list[str]]:
    return st.lists(VALUES, max_size=2).map(lambda values: [a for v in values for a in (name, v)])


def _options(*names: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.one_of(*[_option(n) for n in names]), max_size=3).map(
        lambda parts: [a for part in parts for a in part]
    )


INVOCATIONS = st.one_of(
    st.tuples(
        st.just(["publish"]),
        NAMES.map(lambda t: [t]),
        VALUES.map(lambda p: [p]),
        _options("--priority", "--ttl", "--delay", "--dedup-key", "--header"),
    ),
    st.tuples(
        st.just(["dlq", "list"]),
        NAMES.map(lambda t: [t]),
        _options("--limit"),
        st.sampled_from([[], ["--json"]]),
    ),
    st.tuples(st.just(["dlq", "replay"]), NAMES.map(lambda t: [t]), _options("--id")),
    st.tuples(st.just(["tail"]), NAMES.map(lambda t: [t]), _options("--count", "--group")),
    st.tuples(st.just(["stats"]), st.lists(NAMES, max_size=1), st.sampled_from([[], ["--json"]])),
).map(lambda parts: [a for part in parts for a in part])


def _stored(raw: redis.Redis, prefix: str) -> int:
    """Messages under the prefix: stream entries and delayed members."""
    return sum(raw.xlen(k) for k in raw.scan_iter(f"{prefix}:*", _type="STREAM")) + sum(
        raw.zcard(k) for k in raw.scan_iter(f"{prefix}:*", _type="ZSET")
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=INVOCATIONS)
def test_fuzzed_invocations_end_cleanly_and_write_nothing_when_they_fail(
    redis_url: str, prefix: str, raw: redis.Redis, argv: list[str]
) -> None:
    """Any arguments: a result, a usage error (exit 2) or one error line (exit 1) - never a
    traceback - and a failed publish writes nothing."""
    before = _stored(raw, prefix)
    result = cli(redis_url, prefix, *argv)
    event(f"{argv[0]} exit {result.exit_code}")
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    if argv[0] == "publish":  # a success appends one, or none for a duplicate of a dedup key
        assert _stored(raw, prefix) in ((before, before + 1) if result.exit_code == 0 else (before,))

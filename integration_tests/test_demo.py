"""`relaybus demo`, the README's main job, finishes by itself with every task reviewed."""

from __future__ import annotations

from typer.testing import CliRunner

from relaybus.cli import app
from relaybus.demo import TASKS, closing


def test_demo_against_a_given_redis(redis_url: str, prefix: str) -> None:
    result = CliRunner().invoke(app, ["demo", "--redis-url", redis_url, "--prefix", prefix])
    assert result.exit_code == 0, result.output
    assert "all 6 tasks reviewed" in result.output
    assert "attempt 2" in result.output  # the crashed review came back


def test_the_last_line_tells_only_what_the_demo_showed(redis_url: str, prefix: str) -> None:
    result = CliRunner().invoke(app, ["demo", "--redis-url", redis_url, "--prefix", prefix])
    assert result.exit_code == 0, result.output
    *lines, last = result.output.strip().splitlines()
    crashes = [line for line in lines if "crashed" in line]
    assert last.startswith(f"all {len(TASKS)} tasks reviewed in ")
    if "crash" in last:  # a crash the closing line speaks of was shown when it happened
        assert crashes, result.output
    for line in crashes:  # and one that was shown is accounted for: retried, on which attempt
        module = line.split("reviewing ", 1)[1].split()[0]
        retried = [n for n, seen in enumerate(lines) if f"reviews {module} (attempt 2)" in seen]
        assert retried and retried[0] > lines.index(line), result.output
        assert (
            f"the review of {module} that crashed was retried after a backoff and finished on "
            "attempt 2" in last
        )


def test_the_closing_line_mentions_a_crash_only_when_there_was_one() -> None:
    assert "crash" not in closing(len(TASKS), 1.5, set(), {"billing": 1})
    assert closing(len(TASKS), 1.5, set(), {}) == f"[bold]all {len(TASKS)} tasks reviewed in 1.5s[/]"
    assert (
        "the review of billing that crashed was retried after a backoff and finished on attempt 3"
        in closing(len(TASKS), 2.0, {"billing"}, {"billing": 3})
    )
    assert "the review of billing that crashed did not finish" in closing(5, 45.0, {"billing"}, {})
    assert closing(5, 45.0, set(), {}).startswith("[bold]5 of 6 tasks reviewed")


def test_demo_on_the_embedded_redis() -> None:
    result = CliRunner().invoke(app, ["demo"], env={"RELAYBUS_URL": ""})
    assert result.exit_code == 0, result.output
    assert "embedded redis-server" in result.output


def test_unreachable_redis_is_one_clear_line() -> None:
    result = CliRunner().invoke(app, ["demo", "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.output and "Traceback" not in result.output

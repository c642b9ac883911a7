"""`relaybus demo`, the README's main job, finishes by itself with every task reviewed."""

from __future__ import annotations

from typer.testing import CliRunner

from relaybus.cli import app


def test_demo_against_a_given_redis(redis_url: str, prefix: str) -> None:
    result = CliRunner().invoke(app, ["demo", "--redis-url", redis_url, "--prefix", prefix])
    assert result.exit_code == 0, result.output
    assert "all 6 tasks reviewed" in result.output
    assert "attempt 2" in result.output  # the crashed review came back


def test_demo_on_the_embedded_redis() -> None:
    result = CliRunner().invoke(app, ["demo"], env={"RELAYBUS_URL": ""})
    assert result.exit_code == 0, result.output
    assert "embedded redis-server" in result.output


def test_unreachable_redis_is_one_clear_line() -> None:
    result = CliRunner().invoke(app, ["demo", "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.output and "Traceback" not in result.output

"""The README's program (docs/examples/quickstart.py, shown there verbatim) runs as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from relaybus import SyncBus

QUICKSTART = Path(__file__).resolve().parents[1] / "docs" / "examples" / "quickstart.py"


def test_the_quickstart_program_runs_and_stops_by_itself(redis_url: str, prefix: str) -> None:
    env = {**os.environ, "RELAYBUS_URL": redis_url, "RELAYBUS_PREFIX": prefix}  # Bus() reads both
    result = subprocess.run(
        [sys.executable, str(QUICKSTART)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "reviewing tasks.review {'pr': 42}\n" and result.stderr == ""
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        [topic] = bus.stats().topics
        [group] = topic.groups
        assert topic.topic == "tasks.review" and group.name == "reviewers"
        assert group.pending == 0 and group.lag == 0  # reviewed and acknowledged before it stopped

"""docs/examples/agent_handoff.py works: run in-process (checking the transcript) and as a script."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from langchain_core.messages import AIMessage, ToolMessage

from relaybus import Bus

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "agent_handoff.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agent_handoff", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_planner_hands_a_task_to_the_reviewer_and_gets_the_verdict(
    redis_url: str, prefix: str, bus: Bus
) -> None:
    transcript = await load_example().main(redis_url, prefix)
    tools = [m for m in transcript if isinstance(m, ToolMessage)]
    refused, handed_off, verdict = tools
    assert refused.status == "error" and "'payments.refund' is not allowed" in refused.content
    assert handed_off.status == "success" and verdict.status == "success"
    task_id = json.loads(handed_off.content)["id"]  # type: ignore[arg-type]
    [review] = json.loads(verdict.content)["messages"]  # type: ignore[arg-type]
    assert review["correlation_id"] == task_id and review["payload"]["verdict"] == "approve"
    assert isinstance(transcript[-1], AIMessage) and not transcript[-1].tool_calls

    task = (await bus.history("tasks.review"))[0]
    assert task.id == task_id and task.payload["reply_to"] == "reviews.done"
    assert "payments.refund" not in await bus.topics()
    kinds = [m.payload["event"] for m in await bus.history("agents.events", limit=200)]
    assert kinds.count("tool_start") == kinds.count("tool_end") == 3


def test_the_example_runs_as_a_script(redis_url: str, prefix: str) -> None:
    env = {**os.environ, "RELAYBUS_URL": redis_url, "RELAYBUS_PREFIX": prefix}
    done = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "[error] relaybus_publish failed: topic 'payments.refund' is not allowed" in done.stdout
    assert '"verdict":"approve"' in done.stdout

"""docs/examples/a2a_replicas.py works: its three replicas share a task (in-process and as a
script), and one replica serves A2A over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx

from relaybus.embedded import free_port

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "a2a_replicas.py"
CHAPTERS = [f"chapter-{n}" for n in range(1, 7)]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("a2a_replicas", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_a_task_started_on_a_is_finished_on_b_and_read_on_c(redis_url: str, prefix: str) -> None:
    seen = await asyncio.wait_for(load_example().three_replicas(redis_url, prefix), 30)
    assert seen["on A"] == ["chapter-1"]
    assert seen["on B, snapshot"] + seen["on B, live"] == CHAPTERS  # each chapter once, in order
    assert seen["on C"] == CHAPTERS


def test_the_example_runs_as_a_script(redis_url: str, prefix: str) -> None:
    env = {**os.environ, "RELAYBUS_URL": redis_url, "RELAYBUS_PREFIX": prefix}
    done = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"on C: {', '.join(CHAPTERS)}" in done.stdout


@contextlib.contextmanager
def served(redis_url: str, prefix: str) -> Iterator[int]:
    env = {**os.environ, "RELAYBUS_URL": redis_url, "RELAYBUS_PREFIX": prefix}
    port = free_port()
    process = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", str(port)], env=env)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def test_a_replica_serves_its_card_and_json_rpc_over_http(redis_url: str, prefix: str) -> None:
    with served(redis_url, prefix) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    card = await client.get("/.well-known/agent-card.json")
                    break
                await asyncio.sleep(0.05)
            assert card.status_code == 200 and card.json()["name"] == "chapters"
            unknown = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "no-such-task"}}
            answer = await client.post("/", json=unknown, headers={"A2A-Version": "1.0"})
            assert answer.json()["error"]["code"] == -32001, answer.text  # task not found, by the store

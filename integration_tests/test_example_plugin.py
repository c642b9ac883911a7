"""The example third-party plugin (docs/examples/relaybus-example-plugin) installed with pip and
found through its entry point, against a real Redis.

pip installs the package into a directory of its own (`--target`); a child Python with that
directory on PYTHONPATH sees the package's .dist-info, hence its `relaybus` entry point, and
the relaybus this test process runs (the environment's, or a checkout on its PYTHONPATH).
Nothing is installed into the test environment itself, so no other test's Bus ever loads
the example plugin.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "relaybus-example-plugin"

CHILD = r"""
import asyncio, json, logging, os, socket, sys

from relaybus import Bus, Reject

url, prefix, topic, mode = sys.argv[1:5]
options = {"disabled_plugins": ["team_policy"]} if mode == "keyword" else {}


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


async def main():
    out = {}
    warnings = Warnings()
    logging.getLogger("relaybus_team_policy").addHandler(warnings)
    async with Bus.from_url(url, prefix=prefix, claim_idle_ms=1000, **options) as bus:
        out["plugins"] = bus.plugins.names()
        out["origin"] = f"{socket.gethostname()}:{os.getpid()}"
        await bus.publish(topic, {"n": 1})
        await bus.publish(topic, {"n": 2}, headers={"origin": "caller"})
        out["history_headers"] = [m.headers for m in await bus.history(topic)]

        def handler(msg):
            raise AssertionError("never called")

        try:
            bus.subscribe(topic, group="reviewers")(handler)
        except Exception as exc:
            out["refused"] = f"{type(exc).__name__}: {exc}"
        else:
            out["refused"] = None

        seen = []

        async def team_handler(msg):
            seen.append(msg.payload["n"])
            if msg.payload["n"] == 2:
                raise Reject("not wanted")  # dead-lettered at once

        bus.subscribe(topic, group="team-reviewers")(team_handler)
        own = []
        enabled = "team_policy" in out["plugins"]
        if enabled:  # a typed subscription option of the plugin: skip this process's messages
            bus.subscribe(topic, group="team-others", skip_own=True)(lambda msg: own.append(msg.payload["n"]))
        runner = asyncio.create_task(bus.run())
        for _ in range(200):
            alerted = not enabled or await bus.history("team.alerts")
            if len(seen) >= 2 and await bus.dead_letters(topic) and alerted and (own or not enabled):
                break
            await asyncio.sleep(0.05)
        await bus.stop()
        await asyncio.wait_for(runner, 10)
        out["handled"] = sorted(seen)
        out["dead_letters"] = len(await bus.dead_letters(topic))
        out["own_skipped"] = sorted(own)
        out["alerts"] = [m.payload for m in await bus.history("team.alerts")]
        out["filtered"] = bus.counters["filtered"]
        await bus.cleanup()
        out["warnings"] = warnings.messages
    print(json.dumps(out))


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install` of the example package (a copy: a build leaves files in its source)."""
    root = tmp_path_factory.mktemp("example-plugin")
    source = root / "src"
    shutil.copytree(EXAMPLE, source)
    target = root / "site"
    # offline: built with the setuptools of the test group (>= 70.1 makes wheels by itself),
    # never one fetched from the package index into an isolated build environment
    assert importlib.util.find_spec("setuptools") is not None, "setuptools: in the test dependency group"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(target),
    ]
    done = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(target.glob("relaybus_team_policy-*.dist-info")), list(target.iterdir())
    return target


SETTINGS_CHILD = r"""
import json, sys

from relaybus import Bus

url, prefix, topic, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
out = {}
try:
    bus = Bus.from_url(url, prefix=prefix, **options)
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
else:
    out["setting"] = bus.config.team_group_prefix
    for group in ("team-a", "crew-a"):
        try:
            bus.subscribe(topic, group=group)(lambda msg: None)
            out[group] = "accepted"
        except Exception as exc:
            out[group] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def run_child(
    site: Path,
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    topic: str,
    mode: str,
    env: dict[str, str] | None = None,
    script_text: str = CHILD,
) -> dict[str, Any]:
    script = tmp_path / "child.py"
    script.write_text(script_text)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBUS_")}
    # the site, then whatever gave this process its relaybus (a checkout's src/ and plugins/)
    paths = [str(site), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    environ.update(PYTHONPATH=os.pathsep.join(p for p in paths if p), **(env or {}))
    done = subprocess.run(
        [sys.executable, str(script), redis_url, prefix, topic, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_entry_point_is_discovered_and_the_plugin_acts(
    site: Path, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    out = run_child(site, tmp_path, redis_url, prefix, "tasks.enabled", "default")
    assert "team_policy" in out["plugins"]
    assert {"priority", "dedup", "dlq"} <= set(out["plugins"])  # the built-ins are still there
    # on_publish: stamped with the publisher's host:pid, unless the caller set the header
    assert out["history_headers"] == [{"origin": out["origin"]}, {"origin": "caller"}]
    # on_subscribe: a group outside team-* is refused at subscribe, as a ConfigError
    assert out["refused"] == (
        "ConfigError: team_policy: group 'reviewers' refused; consumer groups must be named team-<name>"
    )
    assert out["handled"] == [1, 2]
    assert out["dead_letters"] == 1
    # subscription_options + filter: skip_own=True kept message 1 (stamped here) from team-others
    assert out["own_skipped"] == [2] and out["filtered"] == 1
    # on_dead_letter(bus, ...): the dead letter announced on the bus's team_alerts_topic
    assert [(a["topic"], a["reason"]) for a in out["alerts"]] == [("tasks.enabled", "rejected")]
    # on_cleanup is async: its coroutine was awaited by bus.cleanup()
    assert out["warnings"] == ["topic 'tasks.enabled' holds 1 dead letter(s)"]


@pytest.mark.parametrize("how", ["keyword", "environment"])
def test_disabling_the_plugin_by_name(
    site: Path, tmp_path: Path, redis_url: str, prefix: str, how: str
) -> None:
    env = {"RELAYBUS_DISABLED_PLUGINS": "team_policy"} if how == "environment" else None
    mode = "keyword" if how == "keyword" else "default"
    out = run_child(site, tmp_path, redis_url, prefix, f"tasks.{how}", mode, env=env)
    assert "team_policy" not in out["plugins"]
    assert {"priority", "dedup", "dlq"} <= set(out["plugins"])
    assert out["history_headers"] == [{}, {"origin": "caller"}]
    assert out["refused"] is None
    assert out["warnings"] == []
    assert out["alerts"] == [] and out["filtered"] == 0


@pytest.mark.parametrize(
    ("options", "env", "expected"),
    [
        ({}, {}, "team-"),
        ({"team_group_prefix": "crew-"}, {}, "crew-"),
        ({}, {"RELAYBUS_TEAM_GROUP_PREFIX": "crew-"}, "crew-"),
        ({"team_group_prefix": "crew-"}, {"RELAYBUS_TEAM_GROUP_PREFIX": "band-"}, "crew-"),  # keyword wins
    ],
    ids=["default", "keyword", "environment", "keyword-over-environment"],
)
def test_the_plugin_owns_a_setting_from_a_keyword_or_the_environment(
    site: Path,
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    options: dict[str, str],
    env: dict[str, str],
    expected: str,
) -> None:
    """Declared by the installed plugin's plugin_settings hook, found through its entry point."""
    out = run_child(
        site,
        tmp_path,
        redis_url,
        prefix,
        "tasks.settings",
        json.dumps(options),
        env=env,
        script_text=SETTINGS_CHILD,
    )
    assert out["setting"] == expected
    refused = "crew-a" if expected == "team-" else "team-a"
    assert out[refused] == (
        f"ConfigError: team_policy: group {refused!r} refused; consumer groups must be named {expected}<name>"
    )
    assert out[({"team-a", "crew-a"} - {refused}).pop()] == "accepted"


@pytest.mark.parametrize(
    ("options", "env", "error"),
    [
        (
            {"team_group_prefx": "crew-"},
            {},
            "unknown setting 'team_group_prefx' (did you mean 'team_group_prefix'?)",
        ),
        ({"team_group_prefix": "Crew"}, {}, "team_group_prefix: String should match pattern"),
        ({}, {"RELAYBUS_TEAM_GROUP_PREFIX": "Crew"}, "team_group_prefix: String should match pattern"),
        (
            {"team_group_prefix": "crew-", "disabled_plugins": ["team_policy"]},
            {},
            "unknown setting 'team_group_prefix'",
        ),
    ],
    ids=["typo", "invalid-keyword", "invalid-environment", "plugin-disabled"],
)
def test_a_typo_or_an_invalid_plugin_setting_is_refused(
    site: Path,
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    options: dict[str, Any],
    env: dict[str, str],
    error: str,
) -> None:
    out = run_child(
        site,
        tmp_path,
        redis_url,
        prefix,
        "tasks.settings",
        json.dumps(options),
        env=env,
        script_text=SETTINGS_CHILD,
    )
    assert out["error"].startswith("ConfigError: invalid relaybus configuration: ")
    assert error in out["error"]

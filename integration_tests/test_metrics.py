"""The metrics plugin on a real bus: counters after a run with a failing handler, queue
gauges from stats, the default registry and replacing it, a bus without prometheus-client,
and `relaybus metrics` served over HTTP."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from relaybus import Bus, Message, SyncBus
from relaybus.embedded import free_port
from relaybus_plugins.metrics import MetricsPlugin

from .helpers import running


def private_bus(redis_url: str, prefix: str, registry: CollectorRegistry, **fields: object) -> Bus:
    """A bus whose metrics go to `registry`: registered under the built-in's name, the
    plugin object takes its place."""
    bus = Bus.from_url(redis_url, prefix=prefix, claim_idle_ms=1000, **fields)
    bus.plugins.register(MetricsPlugin(registry), "metrics")
    return bus


async def test_counters_and_histograms_after_a_run_with_a_failing_handler(
    redis_url: str, prefix: str
) -> None:
    registry, topic = CollectorRegistry(), f"jobs-{prefix}"  # a topic no other test counts
    async with private_bus(redis_url, prefix, registry, max_attempts=2, retry_backoff_s=0.05) as bus:
        await bus.publish(topic, {"n": 0}, ttl=0.01)  # expires before it is read
        await asyncio.sleep(0.05)
        for n in range(1, 4):
            await bus.publish(topic, {"n": n})
        await bus.publish(topic, {"n": 3}, dedup_key="once")
        await bus.publish(topic, {"n": 3}, dedup_key="once")  # suppressed
        await bus.publish(topic, {"n": 4, "skip": True})
        await bus.publish(topic, {"n": 5, "fail": True})
        handled: list[int] = []

        @bus.subscribe(topic, group="workers", filter={"payload.skip": {"$ne": True}}, concurrency=4)
        async def handle(message: Message) -> None:
            if message.payload.get("fail"):
                raise RuntimeError("always fails")
            handled.append(message.payload["n"])

        async with running(bus):
            for _ in range(200):  # 10 s at most
                if len(handled) == 4 and len(await bus.dead_letters(topic)) == 1:
                    break
                await asyncio.sleep(0.05)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"topic": topic, **labels})

    group = {"group": "workers"}
    assert value("relaybus_published_total") == 7
    assert value("relaybus_duplicates_suppressed_total") == 1
    assert value("relaybus_acked_total", **group) == 4
    assert value("relaybus_failed_total", **group) == 2  # attempt 1 retried, attempt 2 dead-lettered
    assert value("relaybus_retried_total", **group) == 1
    assert value("relaybus_dead_lettered_total", **group) == 1
    assert value("relaybus_filtered_total", **group) == 1
    assert value("relaybus_expired_total", **group) == 1
    assert value("relaybus_delivered_total", **group) == 4 + 2 + 1 + 1
    assert value("relaybus_handler_duration_seconds_count", **group) == 4 + 2  # where a handler ran
    assert value("relaybus_publish_to_handle_seconds_count", **group) == 4
    latency = value("relaybus_publish_to_handle_seconds_sum", **group)
    assert latency is not None and 0 < latency < 40
    text = generate_latest(registry).decode()  # what a scrape returns
    assert f'relaybus_acked_total{{group="workers",topic="{topic}"}} 4.0' in text
    # the plugin object took the built-in's place: nothing went to the default registry
    assert REGISTRY.get_sample_value("relaybus_published_total", {"topic": topic}) is None


async def test_the_built_in_counts_into_the_default_registry_unless_disabled(
    redis_url: str, prefix: str
) -> None:
    counted, off = f"counted-{prefix}", f"off-{prefix}"
    async with Bus.from_url(redis_url, prefix=prefix) as bus:
        assert "metrics" in bus.plugins.names()
        await bus.publish_many(counted, [1, 2, 3])
    async with Bus.from_url(redis_url, prefix=prefix, disabled_plugins=["metrics"]) as bus:
        await bus.publish(off, 1)
    assert REGISTRY.get_sample_value("relaybus_published_total", {"topic": counted}) == 3
    assert REGISTRY.get_sample_value("relaybus_published_total", {"topic": off}) is None


async def test_queue_gauges_follow_stats(redis_url: str, prefix: str) -> None:
    registry = CollectorRegistry()
    plugin = MetricsPlugin(registry)
    async with Bus.from_url(redis_url, prefix=prefix) as bus:
        assert registry.get_sample_value("relaybus_queue_length", {"topic": "q"}) is None  # not refreshed
        await bus.publish_many("q", list(range(5)))
        await bus.publish("q", "later", delay=60)
        await bus.read("q", "g", count=2)
        await plugin.refresh(bus)
        assert registry.get_sample_value("relaybus_queue_length", {"topic": "q"}) == 5
        assert registry.get_sample_value("relaybus_queue_delayed", {"topic": "q"}) == 1
        assert registry.get_sample_value("relaybus_queue_dlq_length", {"topic": "q"}) == 0
        assert registry.get_sample_value("relaybus_group_pending", {"topic": "q", "group": "g"}) == 2
        assert registry.get_sample_value("relaybus_group_lag", {"topic": "q", "group": "g"}) == 3
        stamp = registry.get_sample_value("relaybus_queue_stats_timestamp_seconds")
        assert stamp is not None and abs(stamp - time.time()) < 60


async def test_topic_label_folds_topics(redis_url: str, prefix: str) -> None:
    registry = CollectorRegistry()
    bus = Bus.from_url(redis_url, prefix=prefix)
    bus.plugins.register(MetricsPlugin(registry, topic_label=lambda t: t.split(".")[0]), "metrics")
    async with bus:
        for user in ("u1", "u2", "u3"):
            await bus.publish(f"sessions.{user}", 1)
    assert registry.get_sample_value("relaybus_published_total", {"topic": "sessions"}) == 3
    assert registry.get_sample_value("relaybus_published_total", {"topic": "sessions.u1"}) is None


def test_a_bus_without_prometheus_client_still_works(redis_url: str, prefix: str) -> None:
    """The built-in loads (a built-in failing to import would stop every bus) and does nothing."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["prometheus_client"] = None  # as if the `metrics` extra were not installed
        from relaybus import SyncBus
        with SyncBus.from_url({redis_url!r}, prefix={prefix!r}) as bus:
            assert "metrics" in bus.plugins.names()
            mid = bus.publish("plain", {{"ok": True}})
            [message] = bus.read("plain", "g")
            bus.ack(message)
            assert message.id == mid
        print("worked")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "worked", done.stderr


def test_relaybus_metrics_serves_queue_gauges_over_http(redis_url: str, prefix: str) -> None:
    with SyncBus.from_url(redis_url, prefix=prefix) as bus:
        bus.publish_many("served", [1, 2, 3])
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from relaybus.cli import app; app()",
            "metrics",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--interval",
            "0.2",
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a terminal's Ctrl-C
    )
    try:
        body, deadline = "", time.monotonic() + 20
        while 'relaybus_queue_length{topic="served"} 3.0' not in body:
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, body
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                    body = reply.read().decode()
            except OSError:
                time.sleep(0.1)
        with SyncBus.from_url(redis_url, prefix=prefix) as bus:
            bus.publish("served", 4)  # the next refresh shows it
        while 'relaybus_queue_length{topic="served"} 4.0' not in body:
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                body = reply.read().decode()
        assert "python_info" in body  # the process's own metrics come with it
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) == 0  # Ctrl-C is how it stops
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

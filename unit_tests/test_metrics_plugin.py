"""The metrics plugin's bookkeeping, fed hook calls directly (no Redis), and its import
without prometheus-client."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from prometheus_client import CollectorRegistry

from relaybus import Message, Subscription
from relaybus_plugins.metrics import MetricsPlugin


def handler(message: Message) -> None: ...


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_published_counts_appended_and_suppressed(registry: CollectorRegistry) -> None:
    plugin = MetricsPlugin(registry)
    messages = [Message(topic="t", payload=i) for i in range(3)]
    plugin.on_published("t", messages, [messages[0].id, "original", messages[2].id])
    assert registry.get_sample_value("relaybus_published_total", {"topic": "t"}) == 2
    assert registry.get_sample_value("relaybus_duplicates_suppressed_total", {"topic": "t"}) == 1


@pytest.mark.parametrize(
    ("outcome", "counters"),
    [
        ("handled", {"acked"}),
        ("retried", {"failed", "retried"}),
        ("dropped", {"failed", "dropped"}),
        ("pending", {"failed"}),
        ("dead_lettered", {"failed"}),
        ("filtered", {"filtered"}),
        ("expired", {"expired"}),
    ],
)
def test_each_outcome_counts_where_it_says(
    registry: CollectorRegistry, outcome: str, counters: set[str]
) -> None:
    plugin = MetricsPlugin(registry)
    sub = Subscription(topics=("t",), group="g", handler=handler)
    plugin.on_settled(Message(topic="t"), sub, outcome, 0.5 if outcome != "filtered" else None)
    labels = {"topic": "t", "group": "g"}
    for name in ("acked", "failed", "retried", "dropped", "filtered", "expired"):
        expected = 1.0 if name in counters else 0.0
        assert registry.get_sample_value(f"relaybus_{name}_total", labels) == expected, name
    assert registry.get_sample_value("relaybus_delivered_total", labels) == 1
    latency = registry.get_sample_value("relaybus_publish_to_handle_seconds_count", labels)
    assert latency == (1 if outcome == "handled" else 0)


def test_pull_reads_take_the_group_from_the_message(registry: CollectorRegistry) -> None:
    plugin = MetricsPlugin(registry)
    plugin.on_settled(Message(topic="t", group="pullers"), None, "expired", None)
    plugin.on_dead_letter(Message(topic="t", group="pullers"))
    labels = {"topic": "t", "group": "pullers"}
    assert registry.get_sample_value("relaybus_expired_total", labels) == 1
    assert registry.get_sample_value("relaybus_dead_lettered_total", labels) == 1
    assert registry.get_sample_value("relaybus_handler_duration_seconds_count", labels) == 0


def test_connection_state_changes_count_by_state(registry: CollectorRegistry) -> None:
    plugin = MetricsPlugin(registry)
    for state in ("degraded", "disconnected", "connected", "degraded"):
        plugin.on_connection_state(state)
    value = registry.get_sample_value
    assert value("relaybus_connection_state_changes_total", {"state": "degraded"}) == 2
    assert value("relaybus_connection_state_changes_total", {"state": "connected"}) == 1


def test_two_plugins_on_two_registries_do_not_clash() -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    MetricsPlugin(one).on_published("t", [m := Message(topic="t")], [m.id])
    MetricsPlugin(two)
    assert one.get_sample_value("relaybus_published_total", {"topic": "t"}) == 1
    assert two.get_sample_value("relaybus_published_total", {"topic": "t"}) is None


def test_without_prometheus_client_the_module_imports_and_does_nothing() -> None:
    script = textwrap.dedent("""
        import logging, sys
        sys.modules["prometheus_client"] = None  # as if the `metrics` extra were not installed
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(message)s")
        from relaybus import Message
        from relaybus_plugins import metrics
        m = Message(topic="t")
        for _ in range(3):
            metrics.on_published("t", [m], [m.id])
            metrics.on_settled(m, None, "handled", 0.1)
            metrics.on_dead_letter(m)
            metrics.on_connection_state("degraded")
        assert metrics.default() is None
        try:
            metrics.MetricsPlugin()
        except ImportError as exc:
            print("refused:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: the metrics plugin needs prometheus-client" in done.stdout
    assert done.stderr.count("relaybus.metrics prometheus-client is not installed") == 1  # logged once

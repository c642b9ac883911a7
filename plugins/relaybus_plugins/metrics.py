"""Prometheus metrics: counters and histograms per topic and group from the observer hooks,
and queue gauges from `bus.stats()`.

Loaded as the built-in plugin "metrics", it counts into prometheus_client's default
REGISTRY. For a registry of your own, register `MetricsPlugin(registry)` under the name
"metrics" before the bus connects: it takes the built-in's place. Without the `metrics`
extra (prometheus-client) this module still imports and every hook does nothing, so a
bus never fails for want of an optional dependency.

Label values are topic names, which come from users: every distinct topic is a new time
series. Pass `topic_label` to fold dynamic topics (per-user, per-session) into a bounded
set, or disable the plugin on such buses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from relaybus import Bus, Message, Subscription, hookimpl

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily, Metric
except ImportError:  # the `metrics` extra is not installed: the module-level hooks do nothing
    AVAILABLE = False
else:
    AVAILABLE = True

log = logging.getLogger("relaybus.metrics")

# Handler run times and publish-to-handle latencies span sub-millisecond to minutes.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           300.0)
FAILED = frozenset({"retried", "dead_lettered", "dropped", "pending"})
# outcome -> the counter that on_settled increments besides "delivered"; dead letters are
# counted in on_dead_letter, which also sees expired messages and pull reads' dead letters
SETTLED = {"handled": "acked", "retried": "retried", "dropped": "dropped", "expired": "expired",
           "filtered": "filtered"}


class _Series:
    """The label children of one (topic, group), resolved once: the hot path only calls inc()."""

    __slots__ = ("acked", "dead_lettered", "delivered", "dropped", "duration", "expired", "failed",
                 "filtered", "latency", "retried")

    def __init__(self, plugin: MetricsPlugin, topic: str, group: str) -> None:
        child = {name: counter.labels(topic, group) for name, counter in plugin.counters.items()}
        self.delivered: Counter = child["delivered"]
        self.acked: Counter = child["acked"]
        self.failed: Counter = child["failed"]
        self.retried: Counter = child["retried"]
        self.dead_lettered: Counter = child["dead_lettered"]
        self.dropped: Counter = child["dropped"]
        self.expired: Counter = child["expired"]
        self.filtered: Counter = child["filtered"]
        self.duration: Histogram = plugin.handler_duration.labels(topic, group)
        self.latency: Histogram = plugin.latency.labels(topic, group)


class MetricsPlugin:
    """Prometheus metrics for the buses it is registered with, in `registry`.

    `topic_label` maps a topic to the label value used for it (default: the topic).
    Queue gauges are only as fresh as the last `await plugin.refresh(bus)`: the
    `relaybus metrics` exporter calls it periodically, so workers need not each poll
    Redis for the same numbers.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 topic_label: Callable[[str], str] | None = None) -> None:
        if not AVAILABLE:
            raise ImportError("the metrics plugin needs prometheus-client: pip install 'relaybus[metrics]'")
        self.registry = REGISTRY if registry is None else registry
        self.topic_label = topic_label or (lambda topic: topic)
        labels = ("topic", "group")
        help_text = {
            "delivered": "Messages delivered to a group and settled here, whatever the outcome.",
            "acked": "Messages whose handler returned (acknowledged).",
            "failed": "Handler failures (retried, dead-lettered, dropped or left pending).",
            "retried": "Failed messages scheduled for another attempt.",
            "dead_lettered": "Messages moved to the topic's dead-letter stream.",
            "dropped": "Failed messages dropped by an on_failure decision.",
            "expired": "Messages past their TTL, never handed to a handler.",
            "filtered": "Messages a filter kept from the handler (acknowledged).",
        }
        self.counters = {name: Counter(f"relaybus_{name}", text, labels, registry=self.registry)
                         for name, text in help_text.items()}
        self.published = Counter("relaybus_published", "Messages appended by publish.", ("topic",),
                                 registry=self.registry)
        self.duplicates = Counter("relaybus_duplicates_suppressed",
                                  "Publishes inside a dedup window: nothing appended.", ("topic",),
                                  registry=self.registry)
        self.handler_duration = Histogram("relaybus_handler_duration_seconds", "Handler run time.",
                                          labels, registry=self.registry, buckets=BUCKETS)
        self.latency = Histogram("relaybus_publish_to_handle_seconds",
                                 "From publish (created_at) until the handler returned.", labels,
                                 registry=self.registry, buckets=BUCKETS)
        self.connection_changes = Counter("relaybus_connection_state_changes",
                                          "Connection state changes, by the state entered.", ("state",),
                                          registry=self.registry)
        self.queues = _QueueCollector()
        self.registry.register(self.queues)
        self._series: dict[tuple[str, str | None], _Series] = {}

    def series(self, topic: str, group: str | None) -> _Series:
        found = self._series.get((topic, group))
        if found is None:
            found = self._series[(topic, group)] = _Series(self, self.topic_label(topic), group or "")
        return found

    @hookimpl
    def on_published(self, topic: str, messages: list[Message], ids: list[str]) -> None:
        label = self.topic_label(topic)
        duplicates = sum(1 for m, i in zip(messages, ids, strict=True) if m.id != i)
        if duplicates:
            self.duplicates.labels(label).inc(duplicates)
        if len(messages) > duplicates:
            self.published.labels(label).inc(len(messages) - duplicates)

    @hookimpl
    def on_settled(self, message: Message, subscription: Subscription | None, outcome: str,
                   duration_s: float | None) -> None:
        series = self.series(message.topic, subscription.group if subscription else message.group)
        series.delivered.inc()
        counter = SETTLED.get(outcome)
        if counter is not None:
            getattr(series, counter).inc()
        if outcome in FAILED:
            series.failed.inc()
        if duration_s is not None:
            series.duration.observe(duration_s)
        if outcome == "handled":
            series.latency.observe(max(0.0, time.time() - message.created_at))

    @hookimpl
    def on_dead_letter(self, message: Message) -> None:
        self.series(message.topic, message.group).dead_lettered.inc()

    @hookimpl
    def on_connection_state(self, new: str) -> None:
        self.connection_changes.labels(new).inc()

    async def refresh(self, bus: Bus) -> None:
        """Update the queue gauges from one `bus.stats()` snapshot."""
        stats = await bus.stats()
        topics: _Rows = [((t.topic,), {"length": t.length, "delayed": t.delayed, "dlq_length": t.dlq_length,
                             "memory_bytes": t.memory_bytes}) for t in stats.topics]
        groups: _Rows = [((t.topic, g.name), {"pending": g.pending, "lag": g.lag, "consumers": g.consumers,
                                       "oldest_pending_age_seconds": g.oldest_pending_age_s})
                  for t in stats.topics for g in t.groups]
        families: list[Metric] = []
        for kind, rows, labels in (("queue", topics, ["topic"]), ("group", groups, ["topic", "group"])):
            for name, text in GAUGES[kind].items():
                family = GaugeMetricFamily(f"relaybus_{kind}_{name}", text, labels=labels)
                for key, values in rows:
                    value = values[name]
                    if value is not None:  # a lag Redis cannot tell is absent, not 0
                        family.add_metric(list(key), value)
                families.append(family)
        families.append(GaugeMetricFamily("relaybus_queue_stats_timestamp_seconds",
                                          "When the queue gauges were last refreshed.", value=time.time()))
        self.queues.families = families


_Rows = list[tuple[tuple[str, ...], dict[str, float | None]]]
GAUGES = {
    "queue": {
        "length": "Entries retained in the topic's streams.",
        "delayed": "Delayed messages and scheduled retries not yet due.",
        "dlq_length": "Dead letters waiting.",
        "memory_bytes": "Memory used by the topic's keys.",
    },
    "group": {
        "pending": "Delivered, not yet acknowledged.",
        "lag": "Not yet delivered (absent where Redis cannot tell).",
        "consumers": "Consumers in the group.",
        "oldest_pending_age_seconds": "Age of the oldest pending entry.",
    },
}


class _QueueCollector:
    """Serves the gauges of the last refresh, so a topic or group that is gone disappears."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> list[Metric]:
        return self.families


_default: MetricsPlugin | None = None
_missing_logged = False


def default() -> MetricsPlugin | None:
    """The instance the module-level hooks use (default REGISTRY), made on first use;
    None without prometheus-client."""
    global _default, _missing_logged
    if _default is None:
        if not AVAILABLE:
            if not _missing_logged:
                _missing_logged = True
                log.debug("prometheus-client is not installed: the metrics plugin does nothing "
                          "(pip install 'relaybus[metrics]')")
            return None
        _default = MetricsPlugin()
    return _default


@hookimpl
def on_published(topic: str, messages: list[Message], ids: list[str]) -> None:
    plugin = default()
    if plugin is not None:
        plugin.on_published(topic, messages, ids)


@hookimpl
def on_settled(message: Message, subscription: Subscription | None, outcome: str,
               duration_s: float | None) -> None:
    plugin = default()
    if plugin is not None:
        plugin.on_settled(message, subscription, outcome, duration_s)


@hookimpl
def on_dead_letter(message: Message) -> None:
    plugin = default()
    if plugin is not None:
        plugin.on_dead_letter(message)


@hookimpl
def on_connection_state(new: str) -> None:
    plugin = default()
    if plugin is not None:
        plugin.on_connection_state(new)


async def refresh(bus: Bus) -> None:
    """Update the default instance's queue gauges (what `relaybus metrics` calls)."""
    plugin = default()
    if plugin is not None:
        await plugin.refresh(bus)

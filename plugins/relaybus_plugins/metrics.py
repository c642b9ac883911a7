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

import bisect
import logging
import time
from collections.abc import Callable, Iterator

from relaybus import Bus, Message, Subscription, hookimpl

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError:  # the `metrics` extra is not installed: the module-level hooks do nothing
    AVAILABLE = False
else:
    AVAILABLE = True

log = logging.getLogger("relaybus.metrics")

# Handler run times and publish-to-handle latencies span sub-millisecond to minutes.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
COUNTERS = {  # per topic and group, in the order of _Series.counts
    "delivered": "Messages delivered to a group and settled here, whatever the outcome.",
    "acked": "Messages whose handler returned (acknowledged).",
    "failed": "Handler failures (retried, dead-lettered, dropped or left pending).",
    "retried": "Failed messages scheduled for another attempt.",
    "dead_lettered": "Messages moved to the topic's dead-letter stream.",
    "dropped": "Failed messages dropped by an on_failure decision.",
    "expired": "Messages past their TTL, never handed to a handler.",
    "filtered": "Messages a filter kept from the handler (acknowledged).",
}
_I = {name: i for i, name in enumerate(COUNTERS)}
# which counts an on_settled outcome adds to; dead letters are counted in on_dead_letter,
# which also sees expired messages dead-lettered and pull reads' dead letters
OUTCOMES = {
    "handled": (_I["delivered"], _I["acked"]),
    "retried": (_I["delivered"], _I["failed"], _I["retried"]),
    "dead_lettered": (_I["delivered"], _I["failed"]),
    "dropped": (_I["delivered"], _I["failed"], _I["dropped"]),
    "pending": (_I["delivered"], _I["failed"]),
    "filtered": (_I["delivered"], _I["filtered"]),
    "expired": (_I["delivered"], _I["expired"]),
}
HISTOGRAMS = {
    "handler_duration_seconds": "Handler run time.",
    "publish_to_handle_seconds": "From publish (created_at) until the handler returned.",
}


SERIES_CACHE = 10_000  # (topic, group) pairs remembered before topic_label is asked again


class _Histogram:
    """Bucket counts and a sum: plain numbers, made cumulative only when scraped."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(BUCKETS, value)] += 1  # first bound >= value: "le"
        self.total += value


class _Series:
    """Everything counted for one (topic label, group)."""

    __slots__ = ("counts", "duration", "latency")

    def __init__(self) -> None:
        self.counts = [0] * len(COUNTERS)
        self.duration = _Histogram()
        self.latency = _Histogram()


class MetricsPlugin:
    """Prometheus metrics for the buses it is registered with, in `registry`.

    The hooks only add to plain integers (one dict lookup, no locks: they all run on
    the bus's event loop); prometheus_client sees them when it scrapes, through
    `collect`. `topic_label` maps a topic to the label value used for it (default: the
    topic). Queue gauges are only as fresh as the last `await plugin.refresh(bus)`: the
    `relaybus metrics` exporter calls it periodically, so workers need not each poll
    Redis for the same numbers.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, topic_label: Callable[[str], str] | None = None
    ) -> None:
        if not AVAILABLE:
            raise ImportError("the metrics plugin needs prometheus-client: pip install 'relaybus[metrics]'")
        self.topic_label = topic_label or (lambda topic: topic)
        self._series: dict[tuple[str, str | None], _Series] = {}  # (topic, group) -> its series
        self._labelled: dict[tuple[str, str], _Series] = {}  # (topic label, group) -> series
        self._published: dict[str, list[int]] = {}  # topic label -> [appended, suppressed]
        self._states: dict[str, int] = {}
        self._queues: list[Metric] = []
        self.registry = REGISTRY if registry is None else registry
        self.registry.register(self)

    def series(self, topic: str, group: str | None) -> _Series:
        found = self._series.get((topic, group))
        if found is None:
            if len(self._series) >= SERIES_CACHE:  # many raw topics folded by topic_label
                self._series.clear()
            labels = (self.topic_label(topic), group or "")
            found = self._series[(topic, group)] = self._labelled.setdefault(labels, _Series())
        return found

    @hookimpl
    def on_published(self, topic: str, messages: list[Message], ids: list[str]) -> None:
        label = self.topic_label(topic)
        counts = self._published.get(label) or self._published.setdefault(label, [0, 0])
        duplicates = sum(1 for m, i in zip(messages, ids, strict=True) if m.id != i)
        counts[0] += len(messages) - duplicates
        counts[1] += duplicates

    @hookimpl
    def on_settled(
        self, message: Message, subscription: Subscription | None, outcome: str, duration_s: float | None
    ) -> None:
        series = self.series(message.topic, subscription.group if subscription else message.group)
        counts = series.counts
        for i in OUTCOMES.get(outcome, (0,)):
            counts[i] += 1
        if duration_s is not None:
            series.duration.observe(duration_s)
        if outcome == "handled":
            series.latency.observe(max(0.0, time.time() - message.created_at))

    @hookimpl
    def on_dead_letter(self, message: Message) -> None:
        self.series(message.topic, message.group).counts[_I["dead_lettered"]] += 1

    @hookimpl
    def on_connection_state(self, new: str) -> None:
        self._states[new] = self._states.get(new, 0) + 1

    async def refresh(self, bus: Bus) -> None:
        """Update the queue gauges from one `bus.stats()` snapshot."""
        stats = await bus.stats()
        topics: _Rows = [
            (
                (t.topic,),
                {
                    "length": t.length,
                    "delayed": t.delayed,
                    "dlq_length": t.dlq_length,
                    "memory_bytes": t.memory_bytes,
                },
            )
            for t in stats.topics
        ]
        groups: _Rows = [
            (
                (t.topic, g.name),
                {
                    "pending": g.pending,
                    "lag": g.lag,
                    "consumers": g.consumers,
                    "oldest_pending_age_seconds": g.oldest_pending_age_s,
                },
            )
            for t in stats.topics
            for g in t.groups
        ]
        families: list[Metric] = []
        for kind, rows, labels in (("queue", topics, ["topic"]), ("group", groups, ["topic", "group"])):
            for name, text in GAUGES[kind].items():
                family = GaugeMetricFamily(f"relaybus_{kind}_{name}", text, labels=labels)
                for key, values in rows:
                    value = values[name]
                    if value is not None:  # a lag Redis cannot tell is absent, not 0
                        family.add_metric(list(key), value)
                families.append(family)
        families.append(
            GaugeMetricFamily(
                "relaybus_queue_stats_timestamp_seconds",
                "When the queue gauges were last refreshed.",
                value=time.time(),
            )
        )
        self._queues = families

    def describe(self) -> Iterator[Metric]:
        """The metric names, without samples: registering two plugins on one registry fails."""
        yield from self._families(series=[], published=[], states=[])

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus_client on a scrape, perhaps from its HTTP thread: each dict is
        copied in one step (list() holds the GIL), so a hook adding a key cannot break it."""
        yield from self._families(
            list(self._labelled.items()), list(self._published.items()), list(self._states.items())
        )
        yield from self._queues

    def _families(
        self,
        series: list[tuple[tuple[str, str], _Series]],
        published: list[tuple[str, list[int]]],
        states: list[tuple[str, int]],
    ) -> Iterator[Metric]:
        for i, (name, text) in enumerate(COUNTERS.items()):
            counter = CounterMetricFamily(f"relaybus_{name}", text, labels=["topic", "group"])
            for labels, s in series:
                counter.add_metric(list(labels), s.counts[i])
            yield counter
        for name, text in HISTOGRAMS.items():
            histogram = HistogramMetricFamily(f"relaybus_{name}", text, labels=["topic", "group"])
            for labels, s in series:
                h = s.duration if name == "handler_duration_seconds" else s.latency
                cumulative, running = [], 0
                for bound, n in zip([*map(str, BUCKETS), "+Inf"], list(h.buckets), strict=True):
                    running += n
                    cumulative.append((bound, float(running)))
                histogram.add_metric(list(labels), cumulative, h.total)
            yield histogram
        for i, (name, text) in enumerate(
            [
                ("published", "Messages appended by publish."),
                ("duplicates_suppressed", "Publishes inside a dedup window: nothing appended."),
            ]
        ):
            counter = CounterMetricFamily(f"relaybus_{name}", text, labels=["topic"])
            for label, counts in published:
                counter.add_metric([label], counts[i])
            yield counter
        changes = CounterMetricFamily(
            "relaybus_connection_state_changes",
            "Connection state changes, by the state entered.",
            labels=["state"],
        )
        for state, n in states:
            changes.add_metric([state], n)
        yield changes


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
                log.debug(
                    "prometheus-client is not installed: the metrics plugin does nothing "
                    "(pip install 'relaybus[metrics]')"
                )
            return None
        _default = MetricsPlugin()
    return _default


@hookimpl
def on_published(topic: str, messages: list[Message], ids: list[str]) -> None:
    plugin = default()
    if plugin is not None:
        plugin.on_published(topic, messages, ids)


@hookimpl
def on_settled(
    message: Message, subscription: Subscription | None, outcome: str, duration_s: float | None
) -> None:
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

"""The otel plugin: W3C trace context from producer to consumer, read back from the
OpenTelemetry SDK's in-memory exporter, against a real Redis. The tests register a
TracingPlugin over a provider of their own (the global provider can be set once per
process; the built-in plugin's use of it is tested in a child process)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from relaybus import Bus, Message
from relaybus_plugins.otel import TracingPlugin

from .helpers import run_until


@pytest.fixture
def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    sdk, spans = TracerProvider(), InMemorySpanExporter()
    sdk.add_span_processor(SimpleSpanProcessor(spans))
    return sdk, spans


@pytest.fixture
async def bus(
    redis_url: str, prefix: str, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> AsyncIterator[Bus]:
    traced = Bus.from_url(redis_url, prefix=prefix, claim_idle_ms=1000)
    traced.plugins.register(TracingPlugin(provider[0]), "otel")  # in the built-in's place
    async with traced:
        yield traced


@pytest.fixture
def spans(provider: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    return provider[1]


async def test_a_consumer_span_is_parented_to_the_publishers_trace(
    bus: Bus, spans: InMemorySpanExporter, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer = provider[0].get_tracer("agent")
    seen: list[str] = []
    with tracer.start_as_current_span("plan the review") as root:
        mid = await bus.publish("tasks.review", {"pr": 42})
    [sent] = await bus.history("tasks.review")
    assert sent.headers["traceparent"].split("-")[1] == format(root.get_span_context().trace_id, "032x")

    @bus.subscribe("tasks.review", group="reviewers")
    async def review(msg: Message) -> None:
        seen.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))

    await run_until(bus, lambda: len(seen) == 1)
    by_name = {s.name: s for s in spans.get_finished_spans()}
    create, process = by_name["create tasks.review"], by_name["process tasks.review"]
    assert create.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert create.parent is not None and create.parent.span_id == root.get_span_context().span_id
    assert process.parent is not None and process.parent.span_id == create.context.span_id
    assert process.context.trace_id == root.get_span_context().trace_id
    assert int(seen[0], 16) == root.get_span_context().trace_id  # the handler ran inside it
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == "relaybus"
    assert process.attributes["messaging.destination.name"] == "tasks.review"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.message.id"] == mid
    assert process.attributes["messaging.consumer.group.name"] == "reviewers"


async def test_a_failing_handler_is_recorded_on_its_span(bus: Bus, spans: InMemorySpanExporter) -> None:
    await bus.publish("tasks.flaky", 1)
    failed: list[int] = []

    @bus.subscribe("tasks.flaky", group="g")
    def flaky(msg: Message) -> None:  # a plain function: runs in a worker thread, in the span
        failed.append(1)
        raise RuntimeError("model timed out")

    await run_until(
        bus,
        lambda: len(failed) == 1 and any(s.name == "process tasks.flaky" for s in spans.get_finished_spans()),
    )
    [process] = [s for s in spans.get_finished_spans() if s.name == "process tasks.flaky"][:1]
    assert process.status.status_code is StatusCode.ERROR
    assert "RuntimeError: model timed out" in (process.status.description or "")
    assert [e.name for e in process.events] == ["exception"]


async def test_a_context_already_in_the_headers_is_kept(bus: Bus) -> None:
    """A message forwarded on keeps the trace it came with."""
    carried = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await bus.publish("tasks.forward", 1, headers={"traceparent": carried})
    [kept] = await bus.history("tasks.forward")
    assert kept.headers["traceparent"] == carried


BUILT_IN = r"""
import asyncio, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from relaybus import Bus
from relaybus_plugins.otel import NO_PROVIDER_RECHECK_S

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))

async def main(url, prefix):
    async with Bus.from_url(url, prefix=prefix) as bus:
        await bus.publish("untraced", 1)  # no provider yet: nothing added
        trace.set_tracer_provider(provider)
        await asyncio.sleep(NO_PROVIDER_RECHECK_S)  # looked for again once this has passed
        await bus.publish("traced", 1)
        done = asyncio.Event()

        @bus.subscribe("traced", group="g")
        async def handle(msg):
            done.set()

        running = asyncio.create_task(bus.run())
        await asyncio.wait_for(done.wait(), 10)
        await bus.stop()
        await running
        names = sorted(s.name for s in spans.get_finished_spans())
        print([m.headers for m in await bus.history("untraced")], names)

asyncio.run(main(*sys.argv[1:3]))
"""


def test_the_built_in_plugin_uses_the_global_provider_once_there_is_one(redis_url: str, prefix: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BUILT_IN, redis_url, prefix], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[{}] ['create traced', 'process traced']"

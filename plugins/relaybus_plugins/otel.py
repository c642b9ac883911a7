"""OpenTelemetry tracing: an agent run can be followed from producer to consumer.

On publish, a `create` span (kind PRODUCER) is started and ended for each message, and
its W3C trace context (`traceparent`, and `tracestate` when set) goes into the
message's headers. On delivery, the handler - and the settling of its message - runs
inside a `process` span (kind CONSUMER) whose parent is that context, so a tracing
backend shows the consumer's work under the producer's trace. A failing handler is
recorded on its span. Names and attributes follow OpenTelemetry's messaging semantic
conventions (`messaging.system`, `messaging.destination.name`,
`messaging.operation.type`, `messaging.message.id`, `messaging.consumer.group.name`).

Loaded as the built-in plugin "otel", it uses the global tracer provider
(`opentelemetry.trace.set_tracer_provider`); while none is set it adds nothing, not
even a header. For a provider of your own, register `TracingPlugin(provider)` under
the name "otel" before the bus connects: it takes the built-in's place. Without the
`otel` extra (opentelemetry-api) every hook does nothing, so a bus never fails for
want of an optional dependency.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

from relaybus import Message, Subscription, hookimpl

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the `otel` extra is not installed: the hooks do nothing
    AVAILABLE = False
else:
    AVAILABLE = True

SYSTEM = "relaybus"
CONTEXT_HEADERS = ("traceparent", "tracestate")
NO_PROVIDER_RECHECK_S = 1.0


def _attributes(message: Message, operation: str) -> dict[str, str | int]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": message.topic,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.message.id": message.id,
    }


class TracingPlugin:
    """The hooks, over `tracer_provider` (None: the global one, looked up at each call)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        if not AVAILABLE:
            raise ImportError("the otel plugin needs opentelemetry-api: pip install 'relaybus[otel]'")
        self.tracer_provider = tracer_provider
        self._found: tuple[Any, Any] | None = None  # (provider, its tracer), once there is one
        self._none_until = 0.0  # no provider: looked for again after this (time.monotonic())

    def _tracer(self) -> Any | None:
        """The tracer, or None while no provider is configured (spans would be no-ops:
        not worth their cost on every publish). The global provider is set once, so a
        tracer found is kept; while there is none it is looked for again at most every
        NO_PROVIDER_RECHECK_S (the lookup reads the environment: profiled, 5% of a publish)."""
        provider = self.tracer_provider
        if provider is None:
            if self._found is not None:
                return self._found[1]
            if time.monotonic() < self._none_until:
                return None
            provider = trace.get_tracer_provider()
        elif self._found is not None and self._found[0] is provider:
            return self._found[1]
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            self._none_until = time.monotonic() + NO_PROVIDER_RECHECK_S
            return None
        from relaybus import __version__

        self._found = (provider, provider.get_tracer("relaybus", __version__))
        return self._found[1]

    @hookimpl
    def on_publish(self, message: Message) -> Message | None:
        """A `create` span per message; its context rides in the headers. A context the
        caller set in the headers is kept (a message forwarded on keeps its trace)."""
        if "traceparent" in message.headers or (tracer := self._tracer()) is None:
            return None
        with tracer.start_as_current_span(
            f"create {message.topic}", kind=SpanKind.PRODUCER, attributes=_attributes(message, "create")
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        context = {k: v for k, v in carrier.items() if k in CONTEXT_HEADERS}
        return message.model_copy(update={"headers": {**message.headers, **context}}) if context else None

    @hookimpl
    def handler_context(
        self, message: Message, subscription: Subscription
    ) -> AbstractContextManager[Any] | None:
        """A `process` span around the handler, its parent the producer's context."""
        if (tracer := self._tracer()) is None:
            return None
        parent = propagate.extract({k: v for k, v in message.headers.items() if k in CONTEXT_HEADERS})
        attributes = {
            **_attributes(message, "process"),
            "messaging.consumer.group.name": subscription.group,
            "relaybus.attempt": message.attempt,
        }
        if message.correlation_id:
            attributes["messaging.message.conversation_id"] = message.correlation_id
        span: AbstractContextManager[Any] = tracer.start_as_current_span(
            f"process {message.topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        return span

    @hookimpl(tryfirst=True)  # before the plugin that decides: the first answer ends the call
    def on_failure(self, error: BaseException) -> None:
        """Record the handler's error on its span; the decision is left to other plugins."""
        span = trace.get_current_span()
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


# The built-in: the global provider, when opentelemetry-api is there.
_default = TracingPlugin() if AVAILABLE else None


@hookimpl
def on_publish(message: Message) -> Message | None:
    return _default.on_publish(message) if _default is not None else None


@hookimpl
def handler_context(message: Message, subscription: Subscription) -> AbstractContextManager[Any] | None:
    return _default.handler_context(message, subscription) if _default is not None else None


@hookimpl(tryfirst=True)
def on_failure(error: BaseException) -> None:
    if _default is not None:
        _default.on_failure(error)

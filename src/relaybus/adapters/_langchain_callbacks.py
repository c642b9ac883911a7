"""LangChain callback handlers that publish run events onto a topic.

Every start, end and error of a chat model, LLM, chain, tool or retriever, and every
custom event, becomes one message carrying `run_id`, `parent_run_id`, name, tags,
metadata and (for ends and errors) `duration_s`, so monitors and other agents can
follow a run from another process. Publishing never breaks the observed run: a bus
error is logged unless the handler was built with `raise_errors=True`.

Which events (`events`), how large one may be (`max_event_bytes`) and whether inputs
and outputs go with them (`include_io`) are options. The defaults suit a LangGraph
agent: a graph's nodes are nested chains each given the whole state, so only the
root chain's start and end are published (every chain error is).

Each handler publishes its events in order, one task on the bus's own loop sending
them, whatever thread or loop LangChain calls it from (sync steps run in worker
threads, with loops of their own). A callback waits for its event only where waiting
cannot deadlock; elsewhere it hands the event to that task and returns (_Handoff).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ..bus import Bus
from ..errors import BusUnavailableError, RelayBusError
from ..keys import validate_topic
from ..sync import SyncBus

log = logging.getLogger("relaybus.adapters.langchain")


@dataclass(slots=True)
class _Run:
    kind: str  # chat_model, llm, chain, tool, retriever
    name: str | None
    tags: list[str]
    metadata: dict[str, Any]
    started: float


def _jsonable(value: Any) -> Any:
    """Run inputs and outputs as compact JSON: messages and documents by their content."""
    if isinstance(value, BaseMessage):
        out: dict[str, Any] = {"type": value.type, "content": value.content}
        for name in ("name", "tool_calls", "tool_call_id", "status", "usage_metadata"):
            if getattr(value, name, None):
                out[name] = getattr(value, name)
        return _jsonable(out)
    if isinstance(value, Document):
        return {"page_content": value.page_content, "metadata": _jsonable(value.metadata)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return to_jsonable_python(value, fallback=repr)


def _error(error: BaseException) -> dict[str, str]:
    return {"error_type": type(error).__name__, "error": str(error)}


def _llm_output(response: LLMResult) -> dict[str, Any]:
    """The text (one per generation), tool calls and token usage of a model run."""
    texts = [g.text for gens in response.generations for g in gens]
    out: dict[str, Any] = {"text": texts[0] if len(texts) == 1 else texts}
    usage = (response.llm_output or {}).get("token_usage")
    for gens in response.generations:
        for g in gens:
            if isinstance(g, ChatGeneration):
                usage = getattr(g.message, "usage_metadata", None) or usage
                if tool_calls := getattr(g.message, "tool_calls", None):
                    out.setdefault("tool_calls", []).extend(tool_calls)
    if usage:
        out["usage"] = usage
    jsonable: dict[str, Any] = _jsonable(out)
    return jsonable


class _RunEvents:
    """Turns callbacks into event payloads; remembers each run's start for its end."""

    def __init__(self) -> None:
        self.runs: dict[UUID, _Run] = {}

    def start(
        self,
        kind: str,
        serialized: dict[str, Any] | None,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        name: str | None,
        **fields: Any,
    ) -> dict[str, Any]:
        ids = (serialized or {}).get("id") or [None]
        name = name or (serialized or {}).get("name") or ids[-1]
        run = self.runs[run_id] = _Run(kind, name, tags or [], _jsonable(metadata or {}), time.monotonic())
        return self._event(f"{kind}_start", run, run_id, parent_run_id, fields)

    def finish(
        self, outcome: str, run_id: UUID, parent_run_id: UUID | None, kind: str, **fields: Any
    ) -> dict[str, Any]:
        """An end or error: named after the run's start (a chat model's end is `chat_model_end`)."""
        run = self.runs.pop(run_id, None)
        if run is not None:
            fields["duration_s"] = round(time.monotonic() - run.started, 6)
        return self._event(f"{run.kind if run else kind}_{outcome}", run, run_id, parent_run_id, fields)

    def during(self, event: str, run_id: UUID, parent_run_id: UUID | None, **fields: Any) -> dict[str, Any]:
        return self._event(event, self.runs.get(run_id), run_id, parent_run_id, fields)

    @staticmethod
    def _event(
        event: str, run: _Run | None, run_id: UUID, parent_run_id: UUID | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "event": event,
            "run_id": str(run_id),
            "parent_run_id": str(parent_run_id) if parent_run_id else None,
            "ts": time.time(),
        }
        if run is not None:
            payload.update(name=run.name, tags=run.tags, metadata=run.metadata)
        payload.update(fields)
        return payload

    # One method per LangChain callback, with LangChain's signature, returning the event.

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        return self.start(
            "chat_model",
            serialized,
            run_id,
            parent_run_id,
            tags,
            metadata,
            kw.get("name"),
            messages=_jsonable(messages),
        )

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        return self.start(
            "llm", serialized, run_id, parent_run_id, tags, metadata, kw.get("name"), prompts=prompts
        )

    def on_llm_new_token(
        self, token: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.during("llm_new_token", run_id, parent_run_id, token=_jsonable(token))

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.finish("end", run_id, parent_run_id, "llm", **_llm_output(response))

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.finish("error", run_id, parent_run_id, "llm", **_error(error))

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        return self.start(
            "chain",
            serialized,
            run_id,
            parent_run_id,
            tags,
            metadata,
            kw.get("name"),
            inputs=_jsonable(inputs),
        )

    def on_chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.finish("end", run_id, parent_run_id, "chain", outputs=_jsonable(outputs))

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.finish("error", run_id, parent_run_id, "chain", **_error(error))

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        return self.start(
            "tool",
            serialized,
            run_id,
            parent_run_id,
            tags,
            metadata,
            kw.get("name"),
            input=_jsonable(inputs) if inputs is not None else input_str,
        )

    def on_tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.finish("end", run_id, parent_run_id, "tool", output=_jsonable(output))

    def on_tool_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.finish("error", run_id, parent_run_id, "tool", **_error(error))

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        return self.start(
            "retriever", serialized, run_id, parent_run_id, tags, metadata, kw.get("name"), query=query
        )

    def on_retriever_end(
        self, documents: Sequence[Document], *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.finish("end", run_id, parent_run_id, "retriever", documents=_jsonable(list(documents)))

    def on_retriever_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.finish("error", run_id, parent_run_id, "retriever", **_error(error))

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        return self.during(
            "custom_event",
            run_id,
            None,
            custom_name=name,
            data=_jsonable(data),
            tags=tags or [],
            metadata=_jsonable(metadata or {}),
        )


CALLBACKS = [name for name in vars(_RunEvents) if name.startswith("on_")]


def _async_callback(name: str) -> Any:
    async def callback(self: RelayBusCallbackHandler, *args: Any, **kwargs: Any) -> None:
        await self._publish(name, args, kwargs)

    callback.__name__ = name
    return callback


def _sync_callback(name: str) -> Any:
    def callback(self: SyncRelayBusCallbackHandler, *args: Any, **kwargs: Any) -> None:
        self._publish(name, args, kwargs)

    callback.__name__ = name
    return callback


KINDS = ("chat_model", "llm", "chain", "tool", "retriever")
EVENTS = frozenset(
    [*(f"{k}_{e}" for k in KINDS for e in ("start", "end", "error")), "custom_event", "llm_new_token"]
)
IO_FIELDS = (
    "messages",
    "prompts",
    "inputs",
    "outputs",
    "input",
    "output",
    "query",
    "documents",
    "text",
    "tool_calls",
    "data",
    "token",
)  # what include_io=False leaves out
NESTED_CHAIN_CALLBACKS = frozenset({"on_chain_start", "on_chain_end"})
MAX_EVENT_BYTES = 16_384


def _chosen(events: Iterable[str] | None) -> frozenset[str] | None:
    """Event names, a kind ("tool") standing for its start, end and error; None: every one."""
    if events is None:
        return None
    if isinstance(events, str):
        raise TypeError(f"events must be a collection of names, not one string: use [{events!r}]")
    chosen = {f"{e}_{x}" for e in events if e in KINDS for x in ("start", "end", "error")}
    chosen |= {e for e in events if e not in KINDS}
    unknown = sorted(chosen - EVENTS)
    if unknown:
        raise ValueError(f"unknown event(s) {unknown}: use {', '.join(KINDS)} or any of {sorted(EVENTS)}")
    return frozenset(chosen)


class _Options:
    """What both handlers are configured with."""

    def __init__(
        self,
        topic: str,
        *,
        publish_tokens: bool,
        raise_errors: bool,
        events: Iterable[str] | None = None,
        nested_chains: bool = False,
        include_io: bool = True,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.topic = validate_topic(topic)
        self.publish_tokens = publish_tokens
        self.raise_errors = raise_errors
        self.chosen = _chosen(events)
        self.nested_chains = nested_chains
        self.include_io = include_io
        if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int) or max_event_bytes < 512:
            raise ValueError(f"max_event_bytes must be an int >= 512, got {max_event_bytes!r}")
        self.max_event_bytes = max_event_bytes
        self.events = _RunEvents()
        self.dropped = 0

    def event(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        if name == "on_llm_new_token" and not self.publish_tokens:
            return None
        if name in NESTED_CHAIN_CALLBACKS and not self.nested_chains and kwargs.get("parent_run_id"):
            return None  # a graph node: skipped before its state is even turned into JSON
        method: Callable[..., dict[str, Any]] = getattr(self.events, name)
        payload = method(*args, **kwargs)
        if self.chosen is not None and payload["event"] not in self.chosen:
            return None
        if not self.include_io:
            for field in IO_FIELDS:
                payload.pop(field, None)
        return self._capped(payload)

    def _capped(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Within max_event_bytes: inputs and outputs cut to a preview, then left out."""
        size = len(orjson.dumps(payload, default=repr))
        if size <= self.max_event_bytes:
            return payload
        fields = [f for f in IO_FIELDS if f in payload]
        room = max(64, (self.max_event_bytes - 512) // max(1, len(fields)))
        for field in fields:
            text = orjson.dumps(payload[field], default=repr).decode()
            if len(text) > room:
                payload[field] = text[:room] + "…"
        payload["truncated"] = size
        if len(orjson.dumps(payload, default=repr)) > self.max_event_bytes:  # metadata alone is too big
            for field in fields:
                payload.pop(field)
            payload["metadata"] = {}
        return payload

    def failed(self, name: str, exc: Exception, *, quiet: bool = False) -> None:
        """Raise (raise_errors, and someone to raise to) or log a failed publish."""
        if self.raise_errors and not quiet:
            raise exc
        log.warning(
            "relaybus callback %s: event not published to %r: %s: %s",
            name,
            self.topic,
            type(exc).__name__,
            exc,
        )

    def unreachable(self, bus: Bus, name: str) -> bool:
        """True while the bus's health check finds Redis down and there is no outbox: the
        event is dropped (and counted in `dropped`) rather than stalling the observed run
        for publish_timeout_s per event. The first event of an outage still tries, and
        waits, once."""
        if bus.health.state != "disconnected" or bus.health.connected_since is None:
            return False  # up, or never connected (publish says so clearly)
        if bus.config.outbox_path is not None:
            return False  # kept in the outbox, which answers at once once it holds a backlog
        self.dropped += 1
        if self.raise_errors:
            raise BusUnavailableError(f"event {name} not published to {self.topic!r}: Redis is unreachable")
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning(
                "relaybus callbacks: Redis unreachable, %d event(s) for %r dropped so far",
                self.dropped,
                self.topic,
            )
        return True


def running_on(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether the calling thread is the one running `loop`."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _Handoff:
    """The callback handlers' events of one bus, published in order by one task on the
    bus's loop (one per bus, however many handlers: `_Handoff.of(bus)`).

    A callback running on that loop's thread but outside it - LangChain's sync path
    blocks the thread while the callback runs - must not wait for the loop: it hands
    the event over (`put(wait=False)`) and the run goes on; the task publishes it as
    soon as the loop is free. A callback that may wait gets a future. Both go through
    the same queue, so events are published in the order they were handed over, and a
    waited-for event is in Redis only after every event before it. The task ends once
    the queue is empty and the bus is closing: `Bus.on_close` has the bus's close wait
    for it, so closing the bus publishes what is still queued.
    """

    _of: weakref.WeakKeyDictionary[Bus, _Handoff] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    @classmethod
    def of(cls, bus: Bus) -> _Handoff:
        with cls._lock:
            handoff = cls._of.get(bus)
            if handoff is None:
                handoff = cls._of[bus] = cls(bus)
            return handoff

    def __init__(self, bus: Bus) -> None:
        self._bus = weakref.ref(bus)  # weak: the bus is this one's key in _of
        self.queue: deque[tuple[_Options, str, dict[str, Any] | None, Future[None] | None]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.wake: asyncio.Event | None = None
        self.closing: asyncio.Event | None = None  # set by the bus's close: the task ends when idle
        bus.on_close(self._closed)

    def put(
        self, options: _Options, name: str, payload: dict[str, Any] | None, *, wait: bool
    ) -> Future[None] | None:
        """Queue an event (None: a flush marker); its future if `wait`."""
        bus = self._bus()
        loop = bus.loop if bus is not None else None
        if loop is None or not loop.is_running():
            raise RelayBusError(
                f"event {name} not published to {options.topic!r}: the bus is not "
                "connected (or its loop has ended)"
            )
        done: Future[None] | None = Future() if wait else None
        self.queue.append((options, name, payload, done))  # deque.append is atomic: any thread
        loop.call_soon_threadsafe(self._kick)
        return done

    def _kick(self) -> None:
        bus = self._bus()
        if bus is None:
            return
        if self.task is None or self.task.done():
            self.wake, self.closing = asyncio.Event(), asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._send(bus, self.wake, self.closing))
        assert self.wake is not None
        self.wake.set()

    async def _closed(self) -> None:
        """The bus is closing (Bus.on_close): publish what is queued, then end the task.
        Events handed over by a callback that blocked this loop wait for a `_kick` that
        has not run yet: start the task for them here."""
        if self.queue and (self.task is None or self.task.done()):
            self._kick()
        if self.task is not None and not self.task.done():
            assert self.closing is not None
            self.closing.set()
            await self.task

    async def _send(self, bus: Bus, wake: asyncio.Event, closing: asyncio.Event) -> None:
        while True:
            while self.queue:
                options, name, payload, done = self.queue[0]
                # a waiter cancelled (its run was) has cancelled `done`: nobody to tell
                told = done if done is not None and done.set_running_or_notify_cancel() else None
                try:
                    if payload is not None:
                        await bus.publish(options.topic, payload)
                except Exception as exc:
                    if told is not None:
                        told.set_exception(exc)
                    else:  # nobody waits to be told: logged, whatever raise_errors says
                        options.failed(name, exc, quiet=True)
                else:
                    if told is not None:
                        told.set_result(None)
                self.queue.popleft()
            if closing.is_set():
                return
            wake.clear()
            woken = asyncio.ensure_future(wake.wait())
            ended = asyncio.ensure_future(closing.wait())
            await asyncio.wait([woken, ended], return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            ended.cancel()


class RelayBusCallbackHandler(AsyncCallbackHandler):
    """Publishes run events to `topic` on an async `Bus`; use it with `ainvoke`/`astream`.

    - `events`: the event names to publish, a kind ("chat_model", "llm", "chain",
      "tool", "retriever") standing for its start, end and error; None: all.
    - `nested_chains=False`: chain starts and ends of nested runs (a LangGraph node
      each) are not published; the root chain's are, and every chain error.
    - `include_io=False` leaves inputs and outputs out (names, ids, timings, usage stay).
    - `max_event_bytes`: an event larger than this has its inputs and outputs cut to a
      preview (and `truncated` set to its full size).
    - `publish_tokens=True` adds one `llm_new_token` event per streamed token.
    - `raise_errors=True` lets a failed publish end the run instead of being logged.
    """

    def __init__(
        self,
        bus: Bus,
        topic: str = "langchain.events",
        *,
        publish_tokens: bool = False,
        raise_errors: bool = False,
        events: Iterable[str] | None = None,
        nested_chains: bool = False,
        include_io: bool = True,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        if not isinstance(bus, Bus):
            raise TypeError(
                "RelayBusCallbackHandler takes an async Bus; for a SyncBus use SyncRelayBusCallbackHandler"
            )
        self.bus = bus
        self.options = _Options(
            topic,
            publish_tokens=publish_tokens,
            raise_errors=raise_errors,
            events=events,
            nested_chains=nested_chains,
            include_io=include_io,
            max_event_bytes=max_event_bytes,
        )
        self.raise_error = raise_errors  # LangChain's own flag: let our re-raised error reach the run
        self._handoff = _Handoff.of(bus)

    async def _publish(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """On the bus's loop: wait for the event (and those before it) to be in Redis. On
        any other loop - LangChain's sync path, whose thread may be the bus loop's own,
        blocked until we return - hand it over without waiting."""
        try:
            payload = self.options.event(name, args, kwargs)
            if payload is not None and not self.options.unreachable(self.bus, name):
                done = self._handoff.put(self.options, name, payload, wait=running_on(self.bus.loop))
                if done is not None:
                    await asyncio.wrap_future(done)
        except Exception as exc:
            self.options.failed(name, exc)

    async def flush(self) -> None:
        """Wait until every event handed over so far is published (or its failure logged):
        after a sync `invoke` on the bus's loop thread, say. Call it from any loop but
        not from a sync run on the bus's loop thread."""
        done = self._handoff.put(self.options, "flush", None, wait=True)
        assert done is not None
        await asyncio.wrap_future(done)


class SyncRelayBusCallbackHandler(BaseCallbackHandler):
    """Publishes run events to `topic` on a `SyncBus`; works with `invoke` and `ainvoke`.
    Takes the options of RelayBusCallbackHandler."""

    def __init__(
        self,
        bus: SyncBus,
        topic: str = "langchain.events",
        *,
        publish_tokens: bool = False,
        raise_errors: bool = False,
        events: Iterable[str] | None = None,
        nested_chains: bool = False,
        include_io: bool = True,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        if not isinstance(bus, SyncBus):
            raise TypeError(
                "SyncRelayBusCallbackHandler takes a SyncBus; for a Bus use RelayBusCallbackHandler"
            )
        self.bus = bus
        self.options = _Options(
            topic,
            publish_tokens=publish_tokens,
            raise_errors=raise_errors,
            events=events,
            nested_chains=nested_chains,
            include_io=include_io,
            max_event_bytes=max_event_bytes,
        )
        self.raise_error = raise_errors  # LangChain's own flag: let our re-raised error reach the run
        self._handoff = _Handoff.of(bus.bus)
        self._on_loop_runs: set[Any] = set()  # runs started on the bus's loop thread, not yet ended

    def _publish(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Wait for the event to be in Redis, except on the bus's loop thread (a sync run
        in a coroutine there) and while such a run is open: its parallel steps call us
        from worker threads it waits for, so the loop cannot publish before it ends."""
        run_id = kwargs.get("run_id")
        on_loop = running_on(self.bus.bus.loop)
        if on_loop and name.endswith("_start"):
            self._on_loop_runs.add(run_id)
        try:
            payload = self.options.event(name, args, kwargs)
            if payload is not None and not self.options.unreachable(self.bus.bus, name):
                wait = not on_loop and not self._on_loop_runs
                done = self._handoff.put(self.options, name, payload, wait=wait)
                if done is not None:
                    done.result()
        except Exception as exc:
            self.options.failed(name, exc)
        finally:
            if name.endswith(("_end", "_error")):
                self._on_loop_runs.discard(run_id)

    def flush(self) -> None:
        """Wait until every event handed over so far is published (or its failure logged).
        Not from the bus's loop thread: that thread publishes them."""
        if running_on(self.bus.bus.loop):
            raise RuntimeError("flush() waits for the bus's loop: call it from another thread")
        done = self._handoff.put(self.options, "flush", None, wait=True)
        assert done is not None
        done.result()


# Each handler forwards every callback to the one event builder, then publishes.
for _name in CALLBACKS:
    setattr(RelayBusCallbackHandler, _name, _async_callback(_name))
    setattr(SyncRelayBusCallbackHandler, _name, _sync_callback(_name))

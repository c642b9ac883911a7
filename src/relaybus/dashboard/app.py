"""The dashboard's web app: pages, a JSON API, a live message stream, admin actions.

Everything it knows comes through one `Bus` (stats, topics, history, dead letters, replay,
purge): the same API the CLI uses, no second way to read Redis. Pages are Jinja2 templates
with autoescaping on; the live parts are filled in by static/dashboard.js, which only ever
sets `textContent`. Replay and purge need the admin token, compared in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import jinja2
import orjson
import uvicorn
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from .. import __version__
from .._web import QuietServer, bearer_ok, host_names
from ..bus import Bus
from ..errors import RelayBusError
from ..keys import validate_topic
from ..message import DEAD_UNDECODABLE, Message
from ..redact import redact_text, redact_url
from ..stats import BusStats, TopicStats

HERE = Path(__file__).parent
SAMPLE_S = 1.0  # how often the server samples Bus.stats() for the topic list and its sparklines
SPARK_POINTS = 60  # samples kept per topic: about a minute at SAMPLE_S
POLL_S = 0.5  # how often a topic page's message stream looks at the topic's history
STREAM_LIMIT = 50  # messages a stream sends on connect, and looks at per poll
DLQ_LIMIT = 100  # dead letters a topic page shows
SEARCH_ONE = 1_000  # find by id, topic given: that topic's latest messages, and as many dead letters
SEARCH_ALL = 100  # find by id, no topic: each topic's latest messages and dead letters...
SEARCH_BUDGET = 2_000  # ...until this many entries are read: what one search may load, at most
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; "
        b"img-src 'self'; connect-src 'self'; form-action 'self'; "
        b"base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
TROUBLE = (RelayBusError, RedisError, OSError, TimeoutError)  # Redis gone or refusing: a 503


def shown_url(url: str) -> str:
    """The Redis URL as the page shows it: password redacted, and no query string (redis-py
    takes `?password=` there too)."""
    parts = urlsplit(redact_url(url))
    return urlunsplit(parts._replace(query="")) if parts.query else redact_url(url)


class Sampler:
    """Bus.stats() every `every_s` seconds, shared by every open page (so ten browsers cost
    Redis what one does), and each topic's recent retained length for its sparkline."""

    def __init__(self, bus: Bus, every_s: float = SAMPLE_S) -> None:
        self.bus, self.every_s = bus, every_s
        self.latest: BusStats | None = None
        self.sampled_at: float | None = None
        self.error: str | None = None
        self.lengths: dict[str, deque[tuple[float, int]]] = {}
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.sample()
            self.ready.set()
            await asyncio.sleep(max(self.every_s, time.monotonic() - started))  # a slow Redis: less often

    async def sample(self) -> None:
        try:
            stats = await self.bus.stats()
        except Exception as exc:  # whatever it is, the page says so and the sampler goes on
            self.error = redact_text(" ".join(str(exc).split()) or type(exc).__name__)
            return
        now = time.monotonic()
        self.latest, self.sampled_at, self.error = stats, time.time(), None
        for t in stats.topics:
            self.lengths.setdefault(t.topic, deque(maxlen=SPARK_POINTS + 1)).append((now, t.length))
        for gone in set(self.lengths) - {t.topic for t in stats.topics}:
            del self.lengths[gone]

    def rates(self, topic: str) -> list[float]:
        """Entries per second the topic's retained length grew by between samples. Honest
        about what it is: a trim in the same interval hides publishes (never below 0)."""
        points = list(self.lengths.get(topic, ()))
        return [max(0, b - a) / max(tb - ta, 1e-6) for (ta, a), (tb, b) in itertools.pairwise(points)]


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


def _problem(status_code: int, message: str) -> Response:
    return _json({"error": message}, status_code)


def _message(m: Message) -> dict[str, Any]:
    """A message for the page: its payload as JSON text, shown with textContent."""
    return {
        "id": m.id,
        "entry_id": m.entry_id,
        "topic": m.topic,
        "payload": orjson.dumps(m.payload).decode(),
        "headers": m.headers,
        "priority": m.priority,
        "attempt": m.attempt,
        "created_at": m.created_at,
        "sender": m.sender,
        "correlation_id": m.correlation_id,
    }


def _dead_letter(m: Message) -> dict[str, Any]:
    """A dead letter with why it died, as `relaybus dlq list` shows it (x-dead-* headers)."""
    h = m.headers
    why = [h.get("x-dead-reason"), h.get("x-dead-error-type"), h.get("x-dead-error")]
    dead_at = h.get("x-dead-dead-at")
    return {
        **_message(m),
        "group": h.get("x-dead-group"),
        "attempts": h.get("x-dead-attempts"),
        "dead_at": float(dead_at) if dead_at and dead_at.replace(".", "", 1).isdigit() else None,
        "reason": ": ".join(w for w in why if w),
        "replayable": DEAD_UNDECODABLE not in h,
    }


def _topic_row(t: TopicStats, rates: list[float]) -> dict[str, Any]:
    lags = [g.lag for g in t.groups]
    return {
        "topic": t.topic,
        "length": t.length,
        "delayed": t.delayed,
        "dead_letters": t.dlq_length,
        "groups": len(t.groups),
        "pending": sum(g.pending for g in t.groups),
        "lag": None if None in lags else sum(g.lag or 0 for g in t.groups),
        "memory_bytes": t.memory_bytes,
        "rates": [round(r, 2) for r in rates],
    }


def _bus(request: Request) -> Bus:
    bus: Bus = request.app.state.bus
    return bus


def _topic(request: Request) -> str:
    return validate_topic(str(request.path_params["topic"]))


async def _known(request: Request, topic: str) -> bool:
    return topic in await _bus(request).topics()


def _authorized(request: Request) -> bool:
    """The admin token as `Authorization: Bearer TOKEN`, compared in constant time; with
    no token configured, nobody is."""
    token: str | None = request.app.state.admin_token
    return bool(token) and bearer_ok(request.headers.get("authorization"), str(token))


# -- pages ------------------------------------------------------------------------


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    bus = _bus(request)
    base = {
        "prefix": bus.config.prefix,
        "redis_url": shown_url(bus.config.url),
        "version": __version__,
        "admin": bool(request.app.state.admin_token),
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


async def overview(request: Request) -> Response:
    return _page(request, "overview.html")


async def topic_page(request: Request) -> Response:
    topic = _topic(request)
    if not await _known(request, topic):
        return _page(request, "missing.html", 404, what=f"no topic {topic!r} under this prefix")
    return _page(request, "topic.html", topic=topic, dlq_limit=DLQ_LIMIT)


async def find(request: Request) -> Response:
    """A message by id (message id or stream entry id): the topic given, or every topic.
    The Bus has no lookup by id, so this reads recent entries - a bounded number: at most
    SEARCH_BUDGET per search, one search at a time, so no request (nor a page of another
    site, which SameOrigin refuses anyway) can make the dashboard load a topic's history."""
    wanted = request.query_params.get("id", "").strip()
    topic = request.query_params.get("topic", "").strip() or None
    context: dict[str, Any] = {"wanted": wanted, "topic": topic, "found": [], "searched": ""}
    if not wanted:
        return _page(request, "find.html", **context)
    bus = _bus(request)
    if topic is not None:
        validate_topic(topic)
        topics, limit = [topic], SEARCH_ONE
    else:
        topics, limit = await bus.topics(), SEARCH_ALL
    every = len(topics)
    topics = topics[: SEARCH_BUDGET // (2 * limit)]
    found: list[tuple[str, Message]] = []
    async with request.app.state.searching:
        for name in topics:
            for where, messages in (
                ("history", await bus.history(name, limit)),
                ("dead letters", await bus.dead_letters(name, limit)),
            ):
                found += [(where, m) for m in messages if wanted in (m.id, m.entry_id)]
    context["found"] = [
        {
            "where": where,
            "topic": m.topic,
            "id": m.id,
            "entry_id": m.entry_id,
            "created_at": m.created_at,
            "headers": sorted(m.headers.items()),
            "payload": orjson.dumps(m.payload, option=orjson.OPT_INDENT_2).decode(),
        }
        for where, m in found
    ]
    where = (
        f"topic {topic!r}"
        if topic
        else f"each of the {every} topics"
        if len(topics) == every
        else f"each of the first {len(topics)} of {every} topics (give a topic to search the others)"
    )
    context["searched"] = f"the latest {limit:,} messages and dead letters of {where}"
    return _page(request, "find.html", **context)


# -- JSON and the live stream -------------------------------------------------------


async def api_overview(request: Request) -> Response:
    sampler: Sampler = request.app.state.sampler
    stats = sampler.latest
    body: dict[str, Any] = {
        "sampled_at": sampler.sampled_at,
        "every_s": sampler.every_s,
        "error": sampler.error,
        "topics": [],
        "server": None,
        "connection": None,
    }
    if stats is not None:
        body["topics"] = [_topic_row(t, sampler.rates(t.topic)) for t in stats.topics]
        body["server"] = stats.server.model_dump(mode="json")
        body["connection"] = stats.connection.model_dump(mode="json")
        body["recommendations"] = stats.recommendations
    return _json(body)


async def api_topic(request: Request) -> Response:
    topic = _topic(request)
    bus = _bus(request)
    if not await _known(request, topic):
        return _problem(404, f"no topic {topic!r} under this prefix")
    stats = (await bus.stats([topic])).topics[0]
    dead = await bus.dead_letters(topic, DLQ_LIMIT)
    return _json(
        {
            "topic": _topic_row(stats, request.app.state.sampler.rates(topic)),
            "groups": [g.model_dump(mode="json") for g in stats.groups],
            "dead_letters": [_dead_letter(m) for m in dead],
            "dead_letter_count": stats.dlq_length,
        }
    )


async def api_messages(request: Request) -> Response:
    """Server-sent events: the latest messages on connect, then each new one as it is
    retained (history polled every POLL_S; a topic faster than STREAM_LIMIT per poll
    shows the newest of each poll)."""
    topic = _topic(request)
    if not await _known(request, topic):
        return _problem(404, f"no topic {topic!r} under this prefix")
    bus = _bus(request)
    stopping: anyio.Event = request.app.state.stopping

    async def events() -> AsyncIterator[dict[str, str]]:
        seen: set[str] = set()
        troubled = False
        while not stopping.is_set():
            try:
                batch = await bus.history(topic, STREAM_LIMIT)
            except TROUBLE as exc:
                troubled = True
                yield {"event": "trouble", "data": redact_text(" ".join(str(exc).split()))}
                with anyio.move_on_after(2):
                    await stopping.wait()
                continue
            if troubled:
                troubled = False
                yield {"event": "recovered", "data": ""}
            for m in batch:  # the window only moves forward: anything not in the last one is new
                if m.id not in seen:
                    yield {"event": "message", "data": orjson.dumps(_message(m)).decode()}
            seen = {m.id for m in batch}
            with anyio.move_on_after(POLL_S):
                await stopping.wait()

    return EventSourceResponse(events(), ping=15, shutdown_event=stopping)


async def _admin(request: Request) -> tuple[str, Response | None]:
    """The topic of an admin action, or why it is refused: the token is checked first."""
    if not request.app.state.admin_token:
        return "", _problem(403, "admin actions are off: start the dashboard with --admin-token")
    if not _authorized(request):
        return "", _problem(403, "wrong or missing admin token")
    topic = _topic(request)
    if not await _known(request, topic):
        return topic, _problem(404, f"no topic {topic!r} under this prefix")
    return topic, None


async def api_replay(request: Request) -> Response:
    """Replay dead letters (JSON body {"ids": [...]}, or none: all) for the group each died in."""
    topic, refused = await _admin(request)
    if refused is not None:
        return refused
    body = await request.body()
    try:
        ids = orjson.loads(body).get("ids") if body.strip() else None
    except (orjson.JSONDecodeError, AttributeError):
        return _problem(400, 'the body must be JSON: {"ids": ["..."]} or {}')
    if ids is not None and (not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids)):
        return _problem(400, '"ids" must be a non-empty list of message or entry ids (none: all)')
    replayed = await _bus(request).replay_dead_letters(topic, ids)
    if ids and not replayed:
        return _problem(404, "no dead letter has that id (replayed or purged already?)")
    return _json({"replayed": replayed})


async def api_purge(request: Request) -> Response:
    topic, refused = await _admin(request)
    if refused is not None:
        return refused
    return _json({"purged": await _bus(request).purge_dead_letters(topic)})


# -- errors, headers, the app ---------------------------------------------------------


async def _bad_request(request: Request, exc: Exception) -> Response:
    message = redact_text(" ".join(str(exc).split()))
    if request.url.path.startswith("/api/"):
        return _problem(400, message)
    return _page(request, "missing.html", 400, what=message)


async def _unavailable(request: Request, exc: Exception) -> Response:
    message = redact_text(" ".join(str(exc).split()) or type(exc).__name__)
    if request.url.path.startswith("/api/"):
        return _problem(503, message)
    return _page(request, "missing.html", 503, what=f"Redis trouble: {message}")


class SameOrigin:
    """Refuse what a page of another site makes the browser send: `Sec-Fetch-Site`
    cross-site or same-site (another port of this host), or an `Origin` that is not this
    dashboard's own. A link from elsewhere is refused too; the address bar, a bookmark
    and the dashboard's own pages are not (and clients without these headers, curl)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
            if headers.get("sec-fetch-site") in ("cross-site", "same-site") or (origin and origin != own):
                refused = PlainTextResponse(
                    "refused: a request sent by another site's page; open the dashboard from the address bar",
                    status_code=403,
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """CSP (scripts only from /static, no inline ones), no framing, no sniffing, no referrer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def create_app(
    bus: Bus,
    admin_token: str | None = None,
    *,
    host: str = "127.0.0.1",
    sample_s: float = SAMPLE_S,
    allowed_hosts: Iterable[str] = (),
) -> Starlette:
    """The dashboard for `bus`, which its lifespan connects (if it is not yet) and closes.
    `host` is where it listens. Only requests whose Host is one of `host`, `localhost`,
    `127.0.0.1`, `[::1]` and `allowed_hosts` are served (a page elsewhere cannot reach it
    by DNS rebinding), and none that another site's page sent (`SameOrigin`)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    sampler = Sampler(bus, sample_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.stopping = anyio.Event()
        try:
            await bus.connect()
        except BaseException as exc:
            app.state.startup_error = exc  # serve() raises it, rather than uvicorn's traceback
            raise
        task = asyncio.create_task(sampler.run())
        try:
            with contextlib.suppress(TimeoutError):  # the first page has numbers at once
                await asyncio.wait_for(sampler.ready.wait(), 5)
            yield
        finally:
            app.state.stopping.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await bus.close()

    routes = [
        Route("/", overview),
        Route("/topics/{topic}", topic_page),
        Route("/find", find),
        Route("/api/overview", api_overview),
        Route("/api/topics/{topic}", api_topic),
        Route("/api/topics/{topic}/messages", api_messages),
        Route("/api/topics/{topic}/dead-letters/replay", api_replay, methods=["POST"]),
        Route("/api/topics/{topic}/dead-letters/purge", api_purge, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(TrustedHostMiddleware, allowed_hosts=host_names(host, allowed_hosts)),
            Middleware(SameOrigin),
        ],
        exception_handlers={ValueError: _bad_request, **dict.fromkeys(TROUBLE, _unavailable)},
    )
    app.state.bus, app.state.sampler = bus, sampler
    app.state.admin_token = admin_token or None
    app.state.templates = Jinja2Templates(env=environment)
    app.state.startup_error = None
    app.state.searching = asyncio.Semaphore(1)
    return app


# -- serving ------------------------------------------------------------------------


async def serve(app: Starlette, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve `app` on `sock` until `stop` is set; live streams end first, then the lifespan
    closes the bus. An error connecting at startup is raised as itself."""
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    server = QuietServer(config)

    async def stopper() -> None:
        await stop.wait()
        stopping: anyio.Event | None = getattr(app.state, "stopping", None)
        if stopping is not None:
            stopping.set()
        server.should_exit = True

    watcher = asyncio.create_task(stopper())
    try:
        await server.serve(sockets=[sock])
    except SystemExit:  # uvicorn's answer to a failed startup
        if app.state.startup_error is not None:
            raise app.state.startup_error from None
        raise
    finally:
        watcher.cancel()
        sock.close()

"""A topic as Server-Sent Events (extra `dashboard`): `bus.follow` over HTTP. Each event's
id is the message's entry id, so a browser's EventSource, reconnecting, sends it back as
`Last-Event-ID` and the stream resumes right after it - no gap, no duplicate.

    app = Starlette(routes=[Route("/runs/{topic}", topic_events(bus))])
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .bus import Bus
from .keys import validate_topic
from .message import Message

PING_S = 15  # a comment line this often keeps proxies from closing an idle stream


def topic_events(bus: Bus, param: str = "topic") -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving the topic named by path parameter `param`: events
    `message` (data: the message as JSON) from after `Last-Event-ID` (none: from the
    oldest retained), then live; once the topic is closed and read, one `closed` event
    and the response ends. A malformed topic or Last-Event-ID is a 400."""

    async def endpoint(request: Request) -> Response:
        try:
            topic = validate_topic(request.path_params[param])
            # follow() checks its arguments when called: a 400 here rather than a failed stream
            followed = bus.follow(topic, request.headers.get("last-event-id") or None)
        except ValueError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        return EventSourceResponse(_events(followed), ping=PING_S)

    return endpoint


async def _events(followed: AsyncGenerator[Message, None]) -> AsyncIterator[dict[str, str]]:
    async with contextlib.aclosing(followed):  # a client gone: the follower ends at once
        async for message in followed:
            assert message.entry_id is not None  # a followed message always has one
            yield {"id": message.entry_id, "event": "message", "data": message.model_dump_json()}
    yield {"event": "closed", "data": ""}

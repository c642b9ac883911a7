"""`relaybus dlq list|replay|purge TOPIC`: inspect and act on a topic's dead letters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import typer

from ._cli_common import PREFIX, URL, err, run, tool_bus, with_progress
from ._cli_common import console as out
from ._cli_render import dead_letters_view
from .bus import Bus
from .keys import validate_topic
from .message import DEAD_UNDECODABLE, Message

app = typer.Typer(help="Dead letters of a topic: list, replay, purge.", no_args_is_help=True)
TOPIC = typer.Argument(..., help="The topic whose dead letters to act on.")
IDS = typer.Option(
    None,
    "--id",
    help="Only this message (or DLQ entry) id; repeatable. Default: all. "
    "An id that names no dead letter is an error, and nothing is replayed.",
)


@contextlib.asynccontextmanager
async def _bus_for(url: str, prefix: str, topic: str) -> AsyncIterator[Bus]:
    """A connected bus, once the topic is known to exist under the prefix."""
    validate_topic(topic)
    async with tool_bus(url, prefix) as bus:
        if topic not in await bus.topics():
            raise ValueError(f"unknown topic {topic!r} under prefix {prefix!r}")
        yield bus


@app.command("list")
def list_(
    topic: str = TOPIC,
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="At most this many, oldest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, headers included."),
    redis_url: str = URL,
    prefix: str = PREFIX,
) -> None:
    """Show dead letters with why each one died (x-dead-* headers)."""

    async def job() -> list[Message]:
        async with _bus_for(redis_url, prefix, topic) as bus:
            return await bus.dead_letters(topic, limit=limit)

    dead = run(job())
    if as_json:
        for message in dead:
            print(message.model_dump_json())
    elif dead:
        out.print(dead_letters_view(topic, dead))
    else:
        err.print(f"no dead letters in {topic!r}")


@app.command()
def replay(
    topic: str = TOPIC,
    ids: list[str] | None = IDS,
    redis_url: str = URL,
    prefix: str = PREFIX,
) -> None:
    """Put dead letters back for the group they died in, with a fresh attempt count."""

    async def job() -> int:
        async with _bus_for(redis_url, prefix, topic) as bus:
            before = await bus.dead_letter_count(topic)
            if ids:  # an id naming no dead letter is a mistake, not "replayed 0": say so, replay nothing
                dead = await bus.dead_letters(topic, limit=max(before, 1))
                kept = list(
                    dict.fromkeys(m.id for m in dead if DEAD_UNDECODABLE in m.headers and m.id in ids)
                )
                if kept:  # listed with their entry ids as ids
                    named, many = ", ".join(repr(i) for i in kept), len(kept) > 1
                    raise ValueError(
                        f"dead letter{'s' * many} {named} of {topic!r} "
                        f"{'do' if many else 'does'} not decode and cannot be replayed "
                        f"(`relaybus dlq list {topic}` shows why); nothing was replayed"
                    )
                known = {i for m in dead if DEAD_UNDECODABLE not in m.headers for i in (m.id, m.entry_id)}
                missing = list(dict.fromkeys(i for i in ids if i not in known))
                if missing:
                    named = ", ".join(repr(i) for i in missing)
                    raise ValueError(
                        f"no dead letter of {topic!r} has the id{'s' * (len(missing) > 1)} "
                        f"{named}; nothing was replayed"
                    )
            total = min(before, len(ids)) if ids else before

            async def done() -> int:  # replay deletes each entry from the DLQ as it goes
                return min(total, before - await bus.dead_letter_count(topic))

            return await with_progress(f"replaying {topic}", bus.replay_dead_letters(topic, ids), total, done)

    err.print(f"replayed {run(job())} dead letters of {topic!r}")


@app.command()
def purge(
    topic: str = TOPIC,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    redis_url: str = URL,
    prefix: str = PREFIX,
) -> None:
    """Delete every dead letter of a topic (asks first unless --yes)."""

    async def job() -> int:
        async with _bus_for(redis_url, prefix, topic) as bus:
            count = await bus.dead_letter_count(topic)
            if not count:
                return 0
            if not yes:  # blocks the loop while asking: nothing else runs in this command
                typer.confirm(f"Delete all {count} dead letters of {topic!r}?", abort=True, err=True)
            return await bus.purge_dead_letters(topic)

    err.print(f"purged {run(job())} dead letters of {topic!r}")

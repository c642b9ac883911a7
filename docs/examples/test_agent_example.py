"""Testing an agent and a plugin with relaybus's pytest fixtures (docs/testing.md).

The agent and the plugin are defined here to keep the example in one file; in your
project they live in your package and the test imports them.
"""

from __future__ import annotations

import asyncio

import pytest

from relaybus import Bus, Message, SyncBus, hookimpl

# -- the code under test -------------------------------------------------------


def add_reviewer(bus: Bus) -> None:
    """A reviewer agent: approves each review task, answering on the task's reply_to topic."""

    @bus.subscribe("tasks.review", group="reviewers")
    async def review(task: Message) -> None:
        verdict = "approve" if task.payload.get("tests_pass") else "reject"
        await bus.publish(
            task.reply_to or "reviews.done", {"verdict": verdict}, correlation_id=task.id, sender="reviewer"
        )


class TeamHeader:
    """A plugin: every published message gets a `team` header."""

    def __init__(self, team: str) -> None:
        self.team = team

    @hookimpl
    def on_publish(self, message: Message) -> Message:
        return message.model_copy(update={"headers": {**message.headers, "team": self.team}})


# -- the tests -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_reviewer_answers_a_task(relaybus_bus: Bus) -> None:
    add_reviewer(relaybus_bus)
    task_id = await relaybus_bus.publish(
        "tasks.review", {"module": "parser", "tests_pass": True}, reply_to="reviews.parser"
    )

    # run the bus's subscriptions until the answer arrives, then stop it (draining)
    runner = asyncio.create_task(relaybus_bus.run())
    try:
        async with asyncio.timeout(10):
            while not (answers := await relaybus_bus.read("reviews.parser", group="test", block_ms=200)):
                pass
    finally:
        await relaybus_bus.stop()
        await runner

    assert [a.payload for a in answers] == [{"verdict": "approve"}]
    assert answers[0].correlation_id == task_id


@pytest.mark.asyncio
async def test_plugin_stamps_the_header(relaybus_bus: Bus) -> None:
    relaybus_bus.plugins.register(TeamHeader("search"), name="team_header")

    await relaybus_bus.publish("notes", {"text": "hello"})

    [note] = await relaybus_bus.history("notes")
    assert note.headers["team"] == "search"


def test_without_asyncio(relaybus_sync_bus: SyncBus) -> None:
    relaybus_sync_bus.publish("notes", {"text": "hello"})

    [note] = relaybus_sync_bus.read("notes", group="test")
    assert note.payload == {"text": "hello"}
    relaybus_sync_bus.ack(note)

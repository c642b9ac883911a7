"""The protocol backends' pure parts (docs/protocol-backends.md): the server-event codec, event
ids, task topics, and the checks versioned records make before they touch Redis."""

from __future__ import annotations

import pytest
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)

from relaybus import Bus
from relaybus.adapters import _mcp_backend
from relaybus.adapters.a2a import RelayBusEventStream
from relaybus.adapters.mcp import RelayBusEventStore
from relaybus.keys import validate_topic
from relaybus.records import Records


@pytest.mark.parametrize(
    "event",
    [ToolsListChanged(), PromptsListChanged(), ResourcesListChanged(), ResourceUpdated(uri="file:///x")],
)
def test_every_server_event_round_trips(event: object) -> None:
    assert _mcp_backend._event(_mcp_backend._event_payload(event)) == event  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [None, "tools", {}, {"kind": "nope"}, {"kind": "resource_updated"}])
def test_a_payload_that_is_no_server_event_is_none(payload: object) -> None:
    assert _mcp_backend._event(payload) is None


def test_event_ids_name_their_stream() -> None:
    store = RelayBusEventStore(Bus(prefix="t"))
    assert store.knows("0123456789abcdef01234567.01M98XPK5F3XKP4WWYY8DDHPW8")
    for bad in [
        "",
        "x.y",
        "0123456789abcdef01234567",
        "0123456789ABCDEF01234567.01M9",
        "0123456789abcdef01234567.",
    ]:
        assert not store.knows(bad), bad
    assert validate_topic(store.topic("0123456789abcdef01234567"))


def test_every_task_id_has_a_valid_topic_of_its_own() -> None:
    stream = RelayBusEventStream(Bus(prefix="t"))
    ids = ["abc-1", "abc_1", "a b", "a/b", "ü", "x" * 128, "x" * 129, "a.b", "h.abc"]
    topics = [stream.topic(i) for i in ids]
    assert len(set(topics)) == len(ids)
    assert all(validate_topic(t) for t in topics)
    assert stream.topic("abc-1") == "a2a.events.abc-1"


async def test_records_check_their_arguments_before_redis() -> None:
    records = Records(Bus(prefix="t"), "tasks")  # never connected: nothing here may reach Redis
    with pytest.raises(ValueError, match="tag"):
        await records.put("k", 1, tag="a|b")
    with pytest.raises(ValueError, match="tag"):
        await records.put("k", 1, when_tag_in={"ok", ""})
    with pytest.raises(ValueError, match="at least one"):
        await records.put("k", 1, when_tag_in=set())
    with pytest.raises(ValueError, match="version"):
        await records.put("k", 1, version=-1)
    with pytest.raises(ValueError, match="invalid topic"):
        Records(Bus(prefix="t"), "no spaces")
    assert records.key == "t:{#records/tasks}:records"

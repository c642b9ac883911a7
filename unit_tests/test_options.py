"""The publish keywords are defined once (relaybus/options.py): the methods that spell
them out cannot drift from it, and an unknown one is refused."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest

from relaybus import Bus, SyncBus
from relaybus.options import PublishOptions, PublishParams


def keywords(function: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(function)
    return {
        name: hints[name]
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


@pytest.mark.parametrize(
    "function", [Bus.publish, SyncBus.publish, PublishParams], ids=["Bus", "SyncBus", "PublishParams"]
)
def test_spelt_out_publish_keywords_are_the_publish_options(function: Any) -> None:
    assert keywords(function) == typing.get_type_hints(PublishOptions)


def test_the_params_the_engine_gets_default_as_bus_publish_does() -> None:
    def defaults(function: Any) -> dict[str, Any]:
        parameters = inspect.signature(function).parameters.values()
        return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}

    assert defaults(PublishParams) == defaults(Bus.publish)


def test_publish_params_are_checked_once_made() -> None:
    with pytest.raises(ValueError, match="ttl"):
        PublishParams(ttl=-1)
    with pytest.raises(ValueError, match="dedup_key"):
        PublishParams(dedup_key="")
    with pytest.raises(TypeError, match="priorty"):
        PublishParams(**{"priorty": 3})


@pytest.mark.parametrize("function", [Bus.publish_many, SyncBus.publish_many])
def test_the_other_publish_methods_take_the_publish_options(function: Any) -> None:
    options = inspect.signature(function).parameters["options"]
    assert options.kind is inspect.Parameter.VAR_KEYWORD
    assert typing.get_type_hints(function)["options"] == typing.Unpack[PublishOptions]


async def test_an_unknown_publish_keyword_is_refused_before_anything_is_sent() -> None:
    bus = Bus.from_url("redis://127.0.0.1:1/0")  # never connected: refused before that matters
    with pytest.raises(TypeError, match="priorty"):
        await bus.publish("t", 1, priorty=3)  # type: ignore[call-arg]

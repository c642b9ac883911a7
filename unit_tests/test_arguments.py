"""Numbers and choices of public calls: a clear error naming the argument, up front."""

from __future__ import annotations

import math

import pytest

from relaybus.arguments import choice, count, ids, seconds
from relaybus.delivery import Subscription


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, -1, 1e12])
def test_seconds_refuses_what_is_no_finite_duration(value: float) -> None:
    with pytest.raises(ValueError, match="delay must be a finite number of seconds"):
        seconds("delay", value)


@pytest.mark.parametrize("value", ["5", None, True, [1]])
def test_seconds_refuses_what_is_no_number(value: object) -> None:
    with pytest.raises(TypeError, match="ttl must be a number of seconds"):
        seconds("ttl", value)


def test_seconds_takes_durations_and_positive_refuses_zero() -> None:
    assert seconds("delay", 0) == 0.0 and seconds("ttl", 2.5, positive=True) == 2.5
    with pytest.raises(ValueError, match="> 0"):
        seconds("ttl", 0, positive=True)


def test_count_and_choice_and_ids() -> None:
    assert count("limit", 3) == 3 and count("keep_len", 0, least=0) == 0
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        count("limit", 0)
    with pytest.raises(TypeError, match="limit must be an int"):
        count("limit", 2.0)
    with pytest.raises(ValueError, match="start must be one of 'earliest', 'latest', got 'middle'"):
        choice("start", "middle", ("earliest", "latest"))
    assert ids("ids", None) is None and ids("ids", ("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError, match="ids must be a list of id strings"):
        ids("ids", "abc")


def test_subscribe_refuses_a_model_pydantic_cannot_validate() -> None:
    with pytest.raises(TypeError, match="model must be a type pydantic validates"):
        Subscription(topics=("t",), group="g", handler=print, model=42)
    assert Subscription(topics=("t",), group="g", handler=print, model=list[int]).model == list[int]

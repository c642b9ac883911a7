"""Checks of the numbers and choices public calls take: a clear ValueError or TypeError
naming the argument, before anything reaches Redis (inf, nan, a string for a number
would otherwise fail deep inside, or silently mean "never")."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

TEN_YEARS_S = 10 * 365 * 86_400


def seconds(name: str, value: Any, *, positive: bool = False, at_most: float = TEN_YEARS_S) -> float:
    """A duration in seconds: a finite number, >= 0 (> 0 if `positive`), at most ten years."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if isinstance(value, int) and abs(value) > at_most:  # also ints beyond a float's range
        value = math.inf
    if not math.isfinite(value) or value < 0 or (positive and value == 0) or value > at_most:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound} and <= {at_most:g}, got {value}")
    return float(value)


def count(name: str, value: Any, *, least: int = 1) -> int:
    """A whole number >= `least`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < least:
        raise ValueError(f"{name} must be >= {least}, got {value}")
    return value


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    options = tuple(allowed)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return str(value)


def ids(name: str, value: Any) -> list[str] | None:
    """None, or an iterable of id strings - not one string, which would be its characters."""
    if value is None:
        return None
    items = [] if isinstance(value, (str, bytes)) else list(value)
    if isinstance(value, (str, bytes)) or not all(isinstance(v, str) for v in items):
        raise TypeError(f"{name} must be a list of id strings (or None for all)")
    return items

"""Filters: `subscribe(..., filter={...})` with MongoDB-style operators (docs/filters.md).

A spec is compiled into nested closures once, when `subscribe` is called - an unknown
operator or a malformed spec raises FilterError there, not on the first message.
`$regex` runs on RE2 (linear time, no backreferences), so no pattern can stall a consumer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import re2
from pydantic import BaseModel, PrivateAttr

from relaybus import Bus, FilterError, Message, Subscription, hookimpl

Test = Callable[[Message], bool]
ValueTest = Callable[[bool, Any], bool]  # (found, value) -> matched

ROOTS = frozenset(
    {
        "id",
        "topic",
        "payload",
        "headers",
        "priority",
        "created_at",
        "expires_at",
        "dedup_key",
        "attempt",
        "sender",
        "correlation_id",
        "reply_to",
    }
)
# optional envelope fields left out of the wire envelope when unset: absent, not null
UNSET_IS_MISSING = frozenset({"expires_at", "dedup_key", "sender", "correlation_id", "reply_to"})
MAX_REGEX_CHARS = 1000
MAX_DEPTH = 32
_MISSING = object()


class Filtering(BaseModel):
    """This plugin's part of a subscription, kept by it (`subscription.option(Filtering)`):
    no keyword of its own - `filter=` is subscribe's - only the spec compiled once."""

    _test: Test | None = PrivateAttr(None)

    def prepare(self, spec: Any) -> Test:
        self._test = compile_filter(spec)
        return self._test

    def matches(self, message: Message, spec: Any) -> bool:
        test = (self.__pydantic_private__ or {})["_test"]  # not via __getattr__: per message
        return (test or self.prepare(spec))(message)  # prepared by on_subscribe, unless made by hand


@hookimpl
def on_subscribe(subscription: Subscription) -> None:
    """Compile the filter when `subscribe` is called: a bad spec is a FilterError there."""
    if subscription.filter is not None:
        subscription.option(Filtering).prepare(subscription.filter)


@hookimpl(specname="filter")  # every argument, in the spec's order: called as it is, per message
def filter_message(bus: Bus, message: Message, subscription: Subscription) -> bool:
    if subscription.filter is None:
        return True
    return subscription.option(Filtering).matches(message, subscription.filter)


# -- values ---------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0; lists and objects compared deeply."""
    if _kind(a) != _kind(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _elements(value: Any) -> list[Any]:
    """A value and, for an array, its elements: `{"tags": "x"}` matches tags ["x", "y"]."""
    return [value, *value] if isinstance(value, list) else [value]


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


# -- compiling ------------------------------------------------------------------------


def compile_filter(spec: Any) -> Test:
    """A spec into a test of a Message; raises FilterError naming what is wrong - also for
    what only Python notices (a number it cannot convert, recursion, an unencodable
    pattern), so a subscription never fails with anything else."""
    try:
        return _document(spec, "filter", 0)
    except FilterError:
        raise
    except (ValueError, OverflowError, RecursionError, UnicodeError) as exc:
        raise _fail("filter", f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _fail(where: str, problem: str) -> FilterError:
    return FilterError(f"invalid filter at {where}: {problem}")


def _document(spec: Any, where: str, depth: int) -> Test:
    if depth > MAX_DEPTH:
        raise _fail(where, f"nested deeper than {MAX_DEPTH}")
    if not isinstance(spec, dict):
        raise _fail(where, f"expected an object of field paths and conditions, got {_kind(spec)}")
    tests = [_clause(key, value, where, depth) for key, value in spec.items()]
    if len(tests) == 1:
        return tests[0]
    return lambda m: all(t(m) for t in tests)


def _clause(key: Any, value: Any, where: str, depth: int) -> Test:
    if not isinstance(key, str):
        raise _fail(where, f"keys must be strings, got {key!r}")
    if key in ("$and", "$or", "$nor"):
        if not isinstance(value, list) or not value:
            raise _fail(f"{where}.{key}", "expected a non-empty list of filters")
        parts = [_document(v, f"{where}.{key}[{n}]", depth + 1) for n, v in enumerate(value)]
        if key == "$and":
            return lambda m: all(p(m) for p in parts)
        if key == "$or":
            return lambda m: any(p(m) for p in parts)
        return lambda m: not any(p(m) for p in parts)
    if key == "$not":
        inner = _document(value, f"{where}.$not", depth + 1)
        return lambda m: not inner(m)
    if key.startswith("$"):
        raise _fail(where, f"unknown operator {key!r} (top level: $and $or $nor $not, or a field path)")
    get = _path(key, where)
    test = _condition(value, key, depth)
    return lambda m: test(*get(m))


def _path(path: str, where: str) -> Callable[[Message], tuple[bool, Any]]:
    parts = path.split(".")
    if any(not p for p in parts):
        raise _fail(where, f"empty segment in field path {path!r}")
    if parts[0] not in ROOTS:
        raise _fail(where, f"unknown field {parts[0]!r} in {path!r} (one of {', '.join(sorted(ROOTS))})")
    root, rest = parts[0], [(p, int(p) if p.isascii() and p.isdigit() else None) for p in parts[1:]]

    def get(message: Message) -> tuple[bool, Any]:
        value = getattr(message, root)
        if value is None and root in UNSET_IS_MISSING:
            return False, None
        for name, index in rest:
            if isinstance(value, dict):
                value = value.get(name, _MISSING)
            elif isinstance(value, list) and index is not None and index < len(value):
                value = value[index]
            else:
                return False, None
            if value is _MISSING:
                return False, None
        return True, value

    return get


def _condition(spec: Any, path: str, depth: int) -> ValueTest:
    """A field's condition: an object of operators, or a value meaning `$eq` that value."""
    if depth > MAX_DEPTH:
        raise _fail(path, f"nested deeper than {MAX_DEPTH}")
    if not (isinstance(spec, dict) and spec and all(isinstance(k, str) and k.startswith("$") for k in spec)):
        if isinstance(spec, dict) and any(isinstance(k, str) and k.startswith("$") for k in spec):
            raise _fail(path, "mixes operators and plain keys in one condition")
        return _operator("$eq", spec, path, {}, depth)
    tests = [_operator(op, arg, path, spec, depth) for op, arg in spec.items() if op != "$options"]
    if "$options" in spec and "$regex" not in spec:
        raise _fail(path, "'$options' is only valid next to '$regex'")
    if len(tests) == 1:
        return tests[0]
    return lambda found, value: all(t(found, value) for t in tests)


def _operator(op: str, arg: Any, path: str, siblings: dict[str, Any], depth: int) -> ValueTest:
    where = f"{path}.{op}"
    if op in ("$eq", "$ne"):
        _json(arg, where)

        def eq(found: bool, value: Any) -> bool:
            return found and any(equal(e, arg) for e in _elements(value))

        return eq if op == "$eq" else lambda found, value: not eq(found, value)
    if op in _ORDER:
        if _kind(arg) not in ("number", "str"):
            raise _fail(where, f"compares numbers or strings, got {_kind(arg)}")
        kind, order = _kind(arg), _ORDER[op]
        return lambda found, value: (
            found and any(_kind(e) == kind and order(e, arg) for e in _elements(value))
        )
    if op in ("$in", "$nin", "$all"):
        if not isinstance(arg, list):
            raise _fail(where, f"expected a list, got {_kind(arg)}")
        _json(arg, where)
        if op == "$all":  # as in MongoDB, an empty $all matches nothing
            return lambda found, value: (
                found
                and isinstance(value, list)
                and bool(arg)
                and all(any(equal(e, x) for e in value) for x in arg)
            )

        def within(found: bool, value: Any) -> bool:
            return found and any(equal(e, x) for e in _elements(value) for x in arg)

        return within if op == "$in" else lambda found, value: not within(found, value)
    if op == "$exists":
        if not isinstance(arg, bool):
            raise _fail(where, f"expected true or false, got {_kind(arg)}")
        return lambda found, value: found is arg
    if op == "$size":
        if _kind(arg) != "number" or arg != int(arg) or arg < 0:
            raise _fail(where, f"expected a whole number >= 0, got {arg!r}")
        return lambda found, value: found and isinstance(value, list) and len(value) == arg
    if op == "$regex":
        search = _regex(arg, siblings.get("$options", ""), where)
        return lambda found, value: found and any(isinstance(e, str) and search(e) for e in _elements(value))
    if op == "$not":
        if not (isinstance(arg, dict) and arg):
            raise _fail(where, "expected an object of operators")
        inner = _condition(arg, path, depth + 1)
        return lambda found, value: not inner(found, value)
    raise _fail(
        where,
        f"unknown operator {op!r} (one of $eq $ne $gt $gte $lt $lte $in $nin $all "
        "$exists $size $regex $options $not)",
    )


def _regex(pattern: Any, flags: Any, where: str) -> Callable[[str], bool]:
    if not isinstance(pattern, str):
        raise _fail(where, f"expected a string pattern, got {_kind(pattern)}")
    if len(pattern) > MAX_REGEX_CHARS:
        raise _fail(where, f"pattern is {len(pattern)} characters; the limit is {MAX_REGEX_CHARS}")
    if not isinstance(flags, str) or set(flags) - set("ims"):
        raise _fail(where, f"$options takes letters from 'ims', got {flags!r}")
    options = re2.Options()
    options.log_errors = False
    try:
        compiled = re2.compile(f"(?{flags})" + pattern if flags else pattern, options)
    except re2.error as exc:
        raise _fail(
            where, f"not a valid RE2 pattern ({exc}); backreferences and lookaround are not supported"
        ) from None
    return lambda text: compiled.search(text) is not None


def _json(value: Any, where: str) -> None:
    if value is None or isinstance(value, str | int | float | bool):
        return
    if isinstance(value, list):
        for item in value:
            _json(item, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _fail(where, f"object keys must be strings, got {key!r}")
            _json(item, where)
    else:
        raise _fail(where, f"{type(value).__name__} is not a JSON value")

"""The filter language: each operator, combinations, refused specs, regex safety, and the
compiled matcher checked against a plain interpreter on generated documents."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaybus import FilterError, Message
from relaybus_plugins.filters import compile_filter

DOC = {
    "n": 5,
    "f": 2.5,
    "s": "review",
    "b": True,
    "none": None,
    "tags": ["urgent", "ml"],
    "nums": [1, 7],
    "obj": {"k": "v", "deep": {"x": 1}},
    "items": [{"name": "a"}, {"name": "b"}],
}


def matches(spec: dict[str, Any], payload: Any = None, **fields: Any) -> bool:
    message = Message(topic="tasks.review", payload=DOC if payload is None else payload, **fields)
    return compile_filter(spec)(message)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"payload.n": 5}, True),
        ({"payload.n": 5.0}, True),
        ({"payload.n": 6}, False),
        ({"payload.b": 1}, False),  # true is not 1
        ({"payload.n": {"$eq": 5}}, True),
        ({"payload.tags": "ml"}, True),  # an element of an array
        ({"payload.tags": ["urgent", "ml"]}, True),  # the whole array
        ({"payload.obj": {"k": "v", "deep": {"x": 1}}}, True),
        ({"payload.missing": None}, False),  # missing is not null: use $exists
        ({"payload.none": None}, True),
        ({"payload.n": {"$ne": 5}}, False),
        ({"payload.n": {"$ne": 4}}, True),
        ({"payload.missing": {"$ne": 4}}, True),
        ({"payload.tags": {"$ne": "ml"}}, False),
        ({"payload.n": {"$gt": 4}}, True),
        ({"payload.n": {"$gt": 5}}, False),
        ({"payload.n": {"$gte": 5}}, True),
        ({"payload.n": {"$lt": 5}}, False),
        ({"payload.f": {"$lte": 2.5}}, True),
        ({"payload.s": {"$gt": "a"}}, True),  # strings order as strings
        ({"payload.s": {"$gt": 1}}, False),  # no order across kinds
        ({"payload.b": {"$gte": 0}}, False),  # booleans are not numbers
        ({"payload.nums": {"$gt": 6}}, True),  # some element
        ({"payload.missing": {"$lt": 100}}, False),
        ({"payload.n": {"$in": [1, 5]}}, True),
        ({"payload.n": {"$in": [1, 2]}}, False),
        ({"payload.tags": {"$in": ["x", "ml"]}}, True),
        ({"payload.n": {"$nin": [1, 2]}}, True),
        ({"payload.n": {"$nin": [5]}}, False),
        ({"payload.missing": {"$nin": [5]}}, True),
        ({"payload.tags": {"$all": ["ml", "urgent"]}}, True),
        ({"payload.tags": {"$all": ["ml", "x"]}}, False),
        ({"payload.n": {"$all": [5]}}, False),  # not an array
        ({"payload.tags": {"$all": []}}, False),  # empty $all matches nothing, as in MongoDB
        ({"payload.items.²": 1}, False),  # not an index: a missing key
        ({"payload.tags": {"$size": 2}}, True),
        ({"payload.tags": {"$size": 3}}, False),
        ({"payload.none": {"$exists": True}}, True),
        ({"payload.missing": {"$exists": False}}, True),
        ({"payload.obj.deep.x": {"$exists": True}}, True),
        ({"payload.s": {"$regex": "^rev"}}, True),
        ({"payload.s": {"$regex": "^REV"}}, False),
        ({"payload.s": {"$regex": "^REV", "$options": "i"}}, True),
        ({"payload.tags": {"$regex": "^ur"}}, True),
        ({"payload.n": {"$regex": "5"}}, False),  # only strings match a regex
        ({"payload.n": {"$not": {"$gt": 10}}}, True),
        ({"payload.n": {"$not": {"$lt": 10}}}, False),
        ({"payload.n": {"$gt": 1, "$lt": 10}}, True),
        ({"payload.n": {"$gt": 1, "$lt": 3}}, False),
        ({"payload.obj.deep.x": 1}, True),
        ({"payload.items.1.name": "b"}, True),
        ({"payload.items.5.name": "b"}, False),
        ({"payload.s.x": 1}, False),  # descending into a string finds nothing
        ({"$and": [{"payload.n": 5}, {"payload.s": "review"}]}, True),
        ({"$and": [{"payload.n": 5}, {"payload.s": "other"}]}, False),
        ({"$or": [{"payload.n": 1}, {"payload.s": "review"}]}, True),
        ({"$or": [{"payload.n": 1}, {"payload.s": "other"}]}, False),
        ({"$nor": [{"payload.n": 1}, {"payload.s": "other"}]}, True),
        ({"$not": {"payload.n": 5}}, False),
        ({"payload.n": 5, "payload.s": "review"}, True),  # several fields: all must hold
        (
            {"$or": [{"$and": [{"payload.n": {"$gte": 5}}, {"payload.tags": "ml"}]}, {"payload.b": False}]},
            True,
        ),
        ({}, True),  # the empty filter lets everything through
    ],
)
def test_operator(spec: dict[str, Any], expected: bool) -> None:
    assert matches(spec) is expected


def test_message_fields_and_headers() -> None:
    assert matches({"topic": "tasks.review", "priority": {"$gte": 3}}, priority=5)
    assert not matches({"priority": {"$gte": 3}}, priority=1)
    assert matches({"headers.tenant": "acme"}, headers={"tenant": "acme"})
    assert not matches({"headers.tenant": "acme"}, headers={"tenant": "other"})
    assert matches({"sender": {"$regex": "^planner"}}, sender="planner-1")
    assert matches({"reply_to": {"$exists": False}})


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"payload.n": {"$foo": 1}}, "unknown operator '$foo'"),
        ({"$where": "1"}, "unknown operator '$where'"),
        ({"payload.n": {"$in": 5}}, "expected a list"),
        ({"payload.n": {"$nin": "ab"}}, "expected a list"),
        ({"payload.n": {"$all": {}}}, "expected a list"),
        ({"payload.n": {"$gt": [1]}}, "compares numbers or strings"),
        ({"payload.n": {"$gt": None}}, "compares numbers or strings"),
        ({"payload.n": {"$exists": 1}}, "expected true or false"),
        ({"payload.n": {"$size": -1}}, "whole number"),
        ({"payload.n": {"$size": 1.5}}, "whole number"),
        ({"payload.s": {"$regex": 5}}, "string pattern"),
        ({"payload.s": {"$regex": "(a"}}, "not a valid RE2 pattern"),
        ({"payload.s": {"$regex": r"(a)\1"}}, "backreferences"),
        ({"payload.s": {"$regex": "a" * 1001}}, "limit is 1000"),
        ({"payload.s": {"$regex": "a", "$options": "x"}}, "$options takes letters from 'ims'"),
        ({"payload.s": {"$options": "i"}}, "only valid next to '$regex'"),
        ({"payload.n": {"$not": 5}}, "expected an object of operators"),
        ({"$and": []}, "non-empty list"),
        ({"$or": {"payload.n": 1}}, "non-empty list"),
        ({"body.n": 1}, "unknown field 'body'"),
        ({"payload..n": 1}, "empty segment"),
        ({"payload.n": {"$gt": 1, "plain": 2}}, "mixes operators and plain keys"),
        ({"payload.n": {"$eq": {1, 2}}}, "not a JSON value"),
        ("payload.n = 1", "expected an object"),
        ({"$and": [{"$and": [{"$and": [{"payload.n": 1}]}]}] * 1}, None),  # nesting is fine
    ],
)
def test_bad_specs_are_refused_with_the_problem_named(spec: Any, problem: str | None) -> None:
    if problem is None:
        compile_filter(spec)
        return
    with pytest.raises(FilterError, match=problem.replace("$", r"\$").replace("(", r"\(")):
        compile_filter(spec)


def test_nesting_is_bounded() -> None:
    spec: dict[str, Any] = {"payload.n": 1}
    for _ in range(40):
        spec = {"$and": [spec]}
    with pytest.raises(FilterError, match="nested deeper than 32"):
        compile_filter(spec)


def test_catastrophic_regex_finishes_promptly() -> None:
    """(a+)+$ against 'aaaa...b' takes exponential time in a backtracking engine; RE2
    is linear. Run in a thread so a regression fails the test instead of hanging it."""
    test = compile_filter({"payload.s": {"$regex": "(a+)+$"}})
    message = Message(topic="t", payload={"s": "a" * 100_000 + "b"})
    outcome: list[bool] = []
    worker = threading.Thread(target=lambda: outcome.append(test(message)), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout=10)
    assert outcome == [False], f"regex still running after {time.monotonic() - started:.1f}s"


# -- property test: compiled matcher == a plain interpreter ----------------------------

KEYS = ["a", "b", "c"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 2.0]),
    st.sampled_from(["", "x", "ab", "b"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=3)
paths = st.lists(st.sampled_from([*KEYS, "0", "1"]), min_size=1, max_size=3).map(
    lambda parts: "payload." + ".".join(parts)
)
comparable = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 2.0, "", "x", "ab"]))
conditions = st.one_of(
    values,
    st.builds(lambda v: {"$eq": v}, values),
    st.builds(lambda v: {"$ne": v}, values),
    st.builds(lambda op, v: {op: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), comparable),
    st.builds(lambda op, v: {op: v}, st.sampled_from(["$in", "$nin", "$all"]), st.lists(values, max_size=3)),
    st.builds(lambda v: {"$exists": v}, st.booleans()),
    st.builds(lambda v: {"$size": v}, st.integers(0, 3)),
    st.builds(lambda v: {"$regex": v}, st.sampled_from(["^a", "b$", "x", "^$"])),
)
conditions = st.one_of(
    conditions,
    st.builds(
        lambda c: {"$not": c},
        conditions.filter(lambda c: isinstance(c, dict) and c and all(str(k).startswith("$") for k in c)),
    ),
)
fields = st.dictionaries(paths, conditions, min_size=1, max_size=2)
specs = st.recursive(
    fields,
    lambda inner: st.one_of(
        st.builds(
            lambda op, parts: {op: parts},
            st.sampled_from(["$and", "$or", "$nor"]),
            st.lists(inner, min_size=1, max_size=3),
        ),
        st.builds(lambda s: {"$not": s}, inner),
    ),
    max_leaves=5,
)


def ref_kind(v: Any) -> str:
    return "bool" if isinstance(v, bool) else "number" if isinstance(v, int | float) else type(v).__name__


def ref_equal(a: Any, b: Any) -> bool:
    if ref_kind(a) != ref_kind(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(ref_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return set(a) == set(b) and all(ref_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def ref_lookup(doc: Any, path: str) -> tuple[bool, Any]:
    current = {"payload": doc}
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return False, None
    return True, current


def ref_candidates(value: Any) -> list[Any]:
    return [value] + (list(value) if isinstance(value, list) else [])


def ref_operator(op: str, arg: Any, found: bool, value: Any, cond: dict[str, Any]) -> bool:
    import re

    if op == "$eq":
        return found and any(ref_equal(c, arg) for c in ref_candidates(value))
    if op == "$ne":
        return not ref_operator("$eq", arg, found, value, cond)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if not found:
            return False
        for c in ref_candidates(value):
            if ref_kind(c) != ref_kind(arg):
                continue
            if (
                (op == "$gt" and c > arg)
                or (op == "$gte" and c >= arg)
                or (op == "$lt" and c < arg)
                or (op == "$lte" and c <= arg)
            ):
                return True
        return False
    if op == "$in":
        return any(ref_operator("$eq", x, found, value, cond) for x in arg)
    if op == "$nin":
        return not ref_operator("$in", arg, found, value, cond)
    if op == "$all":
        return (
            found
            and isinstance(value, list)
            and len(arg) > 0
            and all(any(ref_equal(e, x) for e in value) for x in arg)
        )
    if op == "$exists":
        return found == arg
    if op == "$size":
        return found and isinstance(value, list) and len(value) == arg
    if op == "$regex":
        return found and any(isinstance(c, str) and re.search(arg, c) for c in ref_candidates(value))
    if op == "$not":
        return not ref_condition(arg, found, value)
    raise AssertionError(op)


def ref_condition(cond: Any, found: bool, value: Any) -> bool:
    if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
        return all(ref_operator(op, arg, found, value, cond) for op, arg in cond.items())
    return ref_operator("$eq", cond, found, value, {})


def ref_match(spec: dict[str, Any], doc: Any) -> bool:
    for key, cond in spec.items():
        if key == "$and":
            ok = all(ref_match(s, doc) for s in cond)
        elif key == "$or":
            ok = any(ref_match(s, doc) for s in cond)
        elif key == "$nor":
            ok = not any(ref_match(s, doc) for s in cond)
        elif key == "$not":
            ok = not ref_match(cond, doc)
        else:
            ok = ref_condition(cond, *ref_lookup(doc, key))
        if not ok:
            return False
    return True


@settings(max_examples=1500, deadline=None)
@given(spec=specs, doc=documents)
def test_compiled_matcher_agrees_with_reference(spec: dict[str, Any], doc: dict[str, Any]) -> None:
    message = Message(topic="t", payload=doc)
    assert compile_filter(spec)(message) is ref_match(spec, doc)

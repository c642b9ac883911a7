"""SyncBus held to Bus member by member: the README and docs/index.md promise "the same
methods, without `await`", so each public member of Bus has a SyncBus twin with the same
parameters (names, kinds, defaults) and the same annotations, the awaitable unwrapped:
`async def f(...) -> T` becomes `def f(...) -> T`, and a method returning an async
iterator returns an iterator of the same items. `Bus` in an annotation reads `SyncBus`
on the other side (`connect() -> Bus` / `connect() -> SyncBus`)."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from relaybus import Bus, SyncBus

# Deliberate differences, each with its reason. Nothing else may differ.
ONLY_ON_BUS = {
    # The loop the async bus was connected on; a SyncBus owns a private loop thread instead.
    "loop",
}
# The async context manager and its sync counterpart: same parameters, unwrapped returns.
COUNTERPARTS = {"__aenter__": "__enter__", "__aexit__": "__exit__"}
# Dunders compared like public methods (the rest are Python's or the class's own business).
DUNDERS = ("__init__", "__aenter__", "__aexit__")
ASYNC_ITERATORS = (collections.abc.AsyncGenerator, collections.abc.AsyncIterator)
SYNC_ITERATORS = (collections.abc.Generator, collections.abc.Iterator)


def public_members(cls: type) -> dict[str, Any]:
    """Name -> the raw class attribute (function, classmethod or property), own and inherited."""
    return {
        name: inspect.getattr_static(cls, name)
        for name in dir(cls)
        if not name.startswith("_") and not isinstance(inspect.getattr_static(cls, name), type)
    }


def function_of(member: Any) -> Callable[..., Any]:
    """The plain function behind a method, classmethod or property, undecorated."""
    if isinstance(member, property):
        assert member.fget is not None
        member = member.fget
    if isinstance(member, (classmethod, staticmethod)):
        member = member.__func__
    return typing.cast(Callable[..., Any], inspect.unwrap(member))


def kind_of(member: Any) -> str:
    if isinstance(member, property):
        return "property"
    if isinstance(member, classmethod):
        return "classmethod"
    if isinstance(member, staticmethod):
        return "staticmethod"
    return "method"


def hints(function: Callable[..., Any]) -> dict[str, Any]:
    """Annotations evaluated in the function's own module (they are strings there)."""
    return typing.get_type_hints(function, include_extras=True)


def as_sync(annotation: Any) -> Any:
    """`Bus` -> `SyncBus`, inside unions and generics too."""
    if annotation is Bus:
        return SyncBus
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (collections.abc.Callable, typing.Callable):
        params, result = args
        return collections.abc.Callable[[as_sync(p) for p in params], as_sync(result)]
    changed = tuple(as_sync(a) for a in args)
    if changed == args:  # nothing of Bus inside: as it is
        return annotation
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return typing.Union[changed]  # noqa: UP007 - built from a tuple
    return origin[changed]


def yielded(annotation: Any, iterators: tuple[type, ...]) -> Any | None:
    """What an (async) iterator annotation yields; None if it is not one."""
    if typing.get_origin(annotation) in iterators:
        return typing.get_args(annotation)[0]
    return None


def differences(name: str, bus_member: Any, sync_member: Any) -> list[str]:
    """What differs between a Bus member and its SyncBus twin; [] when they agree."""
    found = []
    if kind_of(bus_member) != kind_of(sync_member):
        return [f"{name}: a {kind_of(sync_member)} on SyncBus, a {kind_of(bus_member)} on Bus"]
    bus_fn, sync_fn = function_of(bus_member), function_of(sync_member)
    if inspect.iscoroutinefunction(sync_fn) or inspect.isasyncgenfunction(sync_fn):
        found.append(f"{name}: async on SyncBus")
    bus_params = list(inspect.signature(bus_fn).parameters.values())[1:]  # without self / cls
    sync_params = list(inspect.signature(sync_fn).parameters.values())[1:]
    bus_hints, sync_hints = hints(bus_fn), hints(sync_fn)
    shape = [(p.name, p.kind, p.default) for p in bus_params]
    if shape != [(p.name, p.kind, p.default) for p in sync_params]:
        found.append(
            f"{name}: parameters ({', '.join(map(str, sync_params))}) on SyncBus, "
            f"({', '.join(map(str, bus_params))}) on Bus"
        )
    for param in bus_params:
        want = as_sync(bus_hints.get(param.name))
        if param.name in {p.name for p in sync_params} and sync_hints.get(param.name) != want:
            found.append(f"{name}({param.name}): {sync_hints.get(param.name)} on SyncBus, {want} wanted")
    result = bus_hints.get("return")
    item = yielded(result, ASYNC_ITERATORS)
    got = sync_hints.get("return")
    if item is not None:  # an async iterator of X: an iterator of X
        if yielded(got, SYNC_ITERATORS) != as_sync(item):
            found.append(f"{name}: returns {got} on SyncBus, an Iterator[{item}] wanted")
    elif as_sync(result) != got:  # async def -> T (the coroutine's T) or def -> T alike
        found.append(f"{name}: returns {got} on SyncBus, {as_sync(result)} wanted")
    return found


def parity() -> list[str]:
    bus, sync = public_members(Bus), public_members(SyncBus)
    problems = []
    for name, member in sorted(bus.items()):
        if name in ONLY_ON_BUS:
            continue
        if name not in sync:
            problems.append(f"{name}: on Bus, missing on SyncBus")
            continue
        problems += differences(name, member, sync[name])
    for name in DUNDERS:
        twin = COUNTERPARTS.get(name, name)
        problems += differences(
            twin, inspect.getattr_static(Bus, name), inspect.getattr_static(SyncBus, twin)
        )
    extra = {n for n, m in sync.items() if n not in bus and not isinstance(m, property)}
    problems += [f"{name}: on SyncBus only" for name in sorted(extra)]
    return problems


def test_syncbus_has_every_bus_member_with_the_same_signature_and_types() -> None:
    assert parity() == []


def test_the_allow_list_names_only_what_bus_has() -> None:
    """A stale entry would let a future member slip through unchecked."""
    assert set(public_members(Bus)) >= ONLY_ON_BUS
    assert not ONLY_ON_BUS & set(public_members(SyncBus))


def test_the_check_sees_what_it_compares() -> None:
    """The comparison is not vacuous: the members it must know are there, and a SyncBus
    that drifted in each way it checks is reported."""
    names = set(public_members(Bus))
    assert {"publish", "read", "listen", "follow", "subscribe", "from_url", "connect"} <= names

    class Drifted:
        def publish(self, topic: str, payload: Any, **options: Any) -> str: ...  # keywords lost

        def history(self, topic: str, limit: int = 10) -> list[str]: ...  # default and type

        def listen(self, *patterns: str) -> list[Any]: ...  # not an iterator

        def read(self, topic: str, group: str) -> Iterator[Any]: ...  # an iterator of nothing async

    bus = public_members(Bus)
    drifted = public_members(Drifted)
    found = {name: differences(name, bus[name], drifted[name]) for name in drifted}
    assert all(found.values()), found
    assert any("parameters" in text for text in found["publish"])
    assert any("parameters" in text for text in found["history"])
    assert any("returns" in text for text in found["history"])
    assert any("returns" in text for text in found["listen"])


def test_syncbus_methods_do_not_await() -> None:
    """Every one returns its result (or an iterator), never a coroutine to await."""
    for name, member in inspect.getmembers(SyncBus, inspect.isfunction):
        assert not inspect.iscoroutinefunction(member) and not inspect.isasyncgenfunction(member), name


@pytest.mark.parametrize("name", ["follow", "listen"])
def test_async_iterators_become_iterators(name: str) -> None:
    returned = hints(function_of(inspect.getattr_static(SyncBus, name)))["return"]
    assert typing.get_origin(returned) in SYNC_ITERATORS

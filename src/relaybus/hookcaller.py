"""One caller for every hook: `plugins.call(hookspecs.NAME, *args)` calls a hook the way
its spec declares (hookspecs.py: chain, all_true, first, observer, each, sync), awaits
what an implementation hands back, and names the plugin in every error. Nothing here is
written per hook but the few rules a hook genuinely adds to its shape (CHAIN_CHECKS)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

from . import hookspecs
from .errors import PluginError, RelayBusError

if TYPE_CHECKING:
    from .plugins import PluginManager

log = logging.getLogger("relaybus")
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
Runner = Callable[[tuple[Any, ...]], Any]


async def await_me_maybe(value: T | Awaitable[T]) -> T:
    """Hooks are sync; an implementation may hand back an awaitable instead of a value."""
    if inspect.isawaitable(value):
        return await value
    return value


def same_topic(plugin: str, before: Any, after: Any) -> None:
    """on_publish: a message's keys, and what readers check, are its topic's."""
    if after.topic != before.topic:
        raise PluginError(
            f"plugin {plugin!r} changed the topic of a message in on_publish "
            f"({before.topic!r} to {after.topic!r}); publish to the other topic instead"
        )


# the rules a chain adds to its shape: called with (plugin, old value, new value)
CHAIN_CHECKS: dict[str, Callable[[str, Any, Any], None]] = {"on_publish": same_topic}


class HookCaller:
    """`plugins.call(hookspecs.on_settled, bus, message, ...)`: the arguments are checked
    against the spec by the type checker, and the answer is typed by its shape."""

    def __init__(self, plugins: PluginManager) -> None:
        self._impls = plugins.impls
        self._failures: dict[tuple[str, str], int] = {}  # (hook, plugin) -> `each` failures in a row
        self._signatures: dict[Callable[..., Any], inspect.Signature] = {}
        self._runners: dict[Callable[..., Any], Runner] = {}
        for name, shape in hookspecs.SHAPES.items():
            spec = getattr(hookspecs, name)
            self._runners[spec] = getattr(self, f"_{shape}")(spec, name)

    def __call__(self, hook: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        if kwargs:  # the usual call is positional: keywords are bound to the spec's order
            signature = self._signatures.get(hook) or self._signatures.setdefault(
                hook, inspect.signature(hook)
            )
            args = signature.bind(*args, **kwargs).args  # type: ignore[assignment]
        return self._runners[hook](args)  # type: ignore[no-any-return]

    def implemented(self, hook: Callable[..., Any]) -> bool:
        """Whether any plugin implements the hook (else a call site can skip making its
        arguments)."""
        return bool(self._impls(hook))

    # -- the shapes: each builds the runner of one hook --------------------------------

    def _chain(self, spec: Callable[..., Any], hook: str) -> Runner:
        impls, check = self._impls, CHAIN_CHECKS.get(hook)

        async def run(args: tuple[Any, ...]) -> Any:
            value = args[-1]
            for name, function in impls(spec):
                try:
                    changed = function(*args)
                    if changed is not None and inspect.isawaitable(changed):
                        changed = await changed
                except Exception as exc:
                    _raise_for(hook, name, exc)
                if changed is not None:
                    if check is not None:
                        check(name, value, changed)
                    value = changed
                    args = (*args[:-1], value)
            return value

        return run

    def _all_true(self, spec: Callable[..., Any], hook: str) -> Runner:
        impls = self._impls

        async def run(args: tuple[Any, ...]) -> bool:
            for name, function in impls(spec):
                try:
                    keep = function(*args)
                    if keep is not True and keep is not False:  # an async one, or a truthy value
                        keep = await await_me_maybe(keep)
                except Exception as exc:
                    _raise_for(hook, name, exc)
                if not keep:
                    return False
            return True

        return run

    def _first(self, spec: Callable[..., Any], hook: str) -> Runner:
        impls = self._impls

        async def run(args: tuple[Any, ...]) -> Any:
            for name, function in impls(spec):
                answer = await _answer(hook, name, function, args)
                if answer is not None:
                    return answer
            return None

        return run

    def _observer(self, spec: Callable[..., Any], hook: str) -> Runner:
        impls = self._impls

        async def run(args: tuple[Any, ...]) -> None:
            for name, function in impls(spec):
                try:
                    result = function(*args)
                    if result is not None and inspect.isawaitable(result):  # only an async observer
                        await result
                except Exception:
                    log.exception("relaybus observer hook %s of plugin %r failed", hook, name)

        return run

    def _each(self, spec: Callable[..., Any], hook: str) -> Runner:
        impls, failures = self._impls, self._failures

        async def run(args: tuple[Any, ...]) -> list[Exception]:
            failed: list[Exception] = []
            for name, function in impls(spec):
                try:
                    await _answer(hook, name, function, args)
                except Exception as exc:
                    failed.append(exc)
                    count = failures[hook, name] = failures.get((hook, name), 0) + 1
                    _log_failure(hook, name, exc, count)
                    continue
                before = failures.pop((hook, name), 0)
                if before:
                    log.info("relaybus %s of plugin %r works again after %d failures", hook, name, before)
            return failed

        return run

    def _sync(self, spec: Callable[..., Any], hook: str) -> Runner:
        impls = self._impls

        def run(args: tuple[Any, ...]) -> list[tuple[str, Any]]:
            answers = []
            for name, function in impls(spec):
                try:
                    answer = function(*args)
                except Exception as exc:
                    _raise_for(hook, name, exc)
                if inspect.isawaitable(answer):
                    getattr(answer, "close", lambda: None)()
                    raise PluginError(
                        f"plugin {name!r} returned an awaitable from {hook}, which must answer synchronously"
                    )
                answers.append((name, answer))
            return answers

        return run


async def _answer(hook: str, name: str, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        answer = function(*args)
        return answer if answer is None else await await_me_maybe(answer)  # None: most answers
    except Exception as exc:
        _raise_for(hook, name, exc)


def _log_failure(hook: str, name: str, exc: Exception, count: int) -> None:
    """An `each` hook failing call after call: logged at its 1st, 2nd, 4th, 8th... failure."""
    if count == 1:
        log.error("relaybus %s of plugin %r failed; the others' still run", hook, name, exc_info=exc)
    elif count & (count - 1) == 0:  # a power of two
        log.error(
            "relaybus %s of plugin %r failed %d times in a row (%s); logged again at %d",
            hook,
            name,
            count,
            exc,
            2 * count,
        )


def _raise_for(hook: str, name: str, exc: Exception) -> NoReturn:
    """Deliberate RelayBusErrors (QueueFullError, ...) pass as they are, with a note
    naming the plugin; anything else becomes a PluginError naming the plugin."""
    if isinstance(exc, RelayBusError):
        note = f"raised by plugin {name!r} in {hook}"
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
        raise exc
    raise PluginError(f"plugin {name!r} failed in {hook}: {type(exc).__name__}: {exc}") from exc

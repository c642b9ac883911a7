"""The plugin manager: registration, entry points, broken plugins, awaitable hooks."""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import pluggy
import pytest
from pydantic import BaseModel, Field

from relaybus import ConfigError, FailureDecision, Message, PluginError, hookimpl, hookspecs
from relaybus import plugins as plugins_module
from relaybus.delivery import Subscription
from relaybus.hookcaller import HookCaller
from relaybus.plugins import PluginManager


def _fake_distribution(tmp_path: Path, name: str, entry_points: str) -> None:
    info = tmp_path / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[relaybus]\n{entry_points}\n")


class Throwaway:
    @hookimpl
    def on_failure(self, message: Message) -> FailureDecision:
        return FailureDecision.drop("throwaway")


async def test_register_and_unregister_a_throwaway_plugin() -> None:
    pm = PluginManager()
    name = pm.register(Throwaway(), "throwaway")
    assert "throwaway" in pm.names()
    decision = await pm.call(hookspecs.on_failure, None, Message(topic="t"), ValueError(), None)  # type: ignore[arg-type]
    assert decision == FailureDecision.drop("throwaway")
    pm.unregister(name)
    assert "throwaway" not in pm.names()
    assert await pm.call(hookspecs.on_failure, None, Message(topic="t"), ValueError(), None) is None  # type: ignore[arg-type]


async def test_awaitable_results_are_awaited_in_call_order() -> None:
    class Late:
        @hookimpl
        def on_failure(self) -> object:
            async def answer() -> FailureDecision:
                return FailureDecision.retry(2)

            return answer()

    class Silent:
        @hookimpl
        def on_failure(self) -> None:
            return None

    pm = PluginManager()
    pm.register(Late(), "late")
    pm.register(Silent(), "silent")  # registered last, called first, answers None
    assert await pm.call(hookspecs.on_failure, None, None, None, None) == FailureDecision.retry(2)  # type: ignore[arg-type]


async def test_a_raising_plugin_is_named_in_the_error() -> None:
    class Broken:
        @hookimpl
        def on_cleanup(self) -> None:
            raise RuntimeError("boom")

    pm = PluginManager()
    pm.register(Broken(), "broken-cleaner")
    [failure] = await pm.call(hookspecs.on_cleanup, None)  # type: ignore[arg-type]  # handed back, not raised
    assert isinstance(failure, PluginError)
    assert "'broken-cleaner' failed in on_cleanup: RuntimeError: boom" in str(failure)


def test_unknown_hook_is_refused_at_registration() -> None:
    class Typo:
        @hookimpl
        def on_publsh(self) -> None: ...

    pm = PluginManager()
    with pytest.raises(pluggy.PluginValidationError):
        pm.register(Typo(), "typo")
    assert "typo" not in pm.names()


def test_broken_third_party_entry_point_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_distribution(tmp_path, "broken_plugin", "broken = no_such_module_for_relaybus_tests")
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = PluginManager()
    with caplog.at_level(logging.WARNING, logger="relaybus.plugins"):
        pm.load()
    assert "broken" not in pm.names()
    assert "skipping relaybus plugin 'broken'" in caplog.text


def test_broken_builtin_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        plugins_module,
        "DEFAULT_PLUGINS",
        (*plugins_module.DEFAULT_PLUGINS, "no_such_module_for_relaybus_tests"),
    )
    with pytest.raises(
        PluginError, match="built-in plugin 'no_such_module_for_relaybus_tests' failed to load"
    ):
        PluginManager().load()


def test_builtins_come_from_the_tuple_without_any_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built-ins need no installed metadata: with no entry point at all, every one loads."""
    monkeypatch.setattr(plugins_module.metadata, "entry_points", lambda group: metadata.EntryPoints(()))
    pm = PluginManager()
    pm.load()
    assert set(pm.names()) == {path.rpartition(".")[2] for path in plugins_module.DEFAULT_PLUGINS}


def test_a_new_builtin_needs_no_reinstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a module path to DEFAULT_PLUGINS is all it takes; it is disabled by its name."""
    (tmp_path / "relaybus_new_builtin.py").write_text(
        "from relaybus import hookimpl\n\n@hookimpl\ndef on_cleanup(bus):\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        plugins_module, "DEFAULT_PLUGINS", (*plugins_module.DEFAULT_PLUGINS, "relaybus_new_builtin")
    )
    loaded = PluginManager()
    loaded.load()
    assert "relaybus_new_builtin" in loaded.names()
    disabled = PluginManager(disabled=["relaybus_new_builtin", "dlq"])
    disabled.load()
    assert not {"relaybus_new_builtin", "dlq"} & set(disabled.names())
    assert "priority" in disabled.names()


def test_a_disabled_name_no_plugin_has_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"disabled_plugins names no installed plugin: 'dql' \(did you mean 'dlq'\?\)"
    ):
        PluginManager(disabled=["dql"]).load()


def test_entry_point_plugin_loads_and_can_be_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tiny_relaybus_plugin.py").write_text(
        "from relaybus import hookimpl\n\n@hookimpl\ndef on_cleanup(bus):\n    return None\n"
    )
    _fake_distribution(tmp_path, "tiny_plugin", "tiny = tiny_relaybus_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = PluginManager()
    loaded.load()
    assert "tiny" in loaded.names()
    disabled = PluginManager(disabled=["tiny"])
    disabled.load()
    assert "tiny" not in disabled.names()


def test_hooks_are_called_only_through_the_hook_caller() -> None:
    """One place calls hooks (hookcaller.py): no other module looks up a hook's
    implementations or reaches pluggy's hook relay."""
    source = Path(plugins_module.__file__).parent
    for path in [*source.rglob("*.py"), *(source.parent.parent / "plugins").rglob("*.py")]:
        if path.name in ("hookcaller.py", "plugins.py"):
            continue
        text = path.read_text()
        assert ".impls(" not in text and ".hook." not in text, path


def test_every_hook_declares_a_shape_the_caller_knows() -> None:
    """The shape is on the spec (hookspecs.py); the caller has a runner for each shape and
    none per hook."""
    names = [n for n, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, "relaybus_spec")]
    assert sorted(hookspecs.SHAPES) == sorted(names)
    assert set(hookspecs.SHAPES.values()) <= set(hookspecs.SHAPE_NAMES)
    assert all(callable(getattr(HookCaller, f"_{shape}", None)) for shape in hookspecs.SHAPE_NAMES)
    assert not [n for n in names if hasattr(HookCaller, n)]  # no method per hook
    assert hookspecs.on_failure.relaybus_spec["firstresult"] is True  # type: ignore[attr-defined]
    assert hookspecs.SHAPES["on_dead_letter"] == "observer"


class Both:
    """A filter of before `bus` was passed, and one of after."""

    class Old:
        @hookimpl
        def filter(self, message: Message, subscription: Subscription) -> bool:
            Both.seen.append(("old", message.topic, subscription.group))
            return True

    class New:
        @hookimpl
        def filter(self, subscription: Subscription, bus: object, message: Message) -> bool:
            Both.seen.append(("new", bus, message.topic, subscription.group))
            return True

    seen: list[tuple[object, ...]] = []


async def test_an_implementation_gets_only_the_arguments_it_names() -> None:
    """filter gained `bus`: an implementation without it still works, one with it gets it,
    in whatever order it names them."""
    Both.seen.clear()
    pm = PluginManager()
    pm.register(Both.Old(), "old")
    pm.register(Both.New(), "new")
    sub = Subscription(topics=("t",), group="g", handler=lambda m: None)
    assert pm.call.implemented(hookspecs.filter) and not pm.call.implemented(hookspecs.on_settled)
    assert await pm.call(hookspecs.filter, "the bus", Message(topic="t"), sub) is True  # type: ignore[arg-type]
    assert Both.seen == [("new", "the bus", "t", "g"), ("old", "t", "g")]
    Both.seen.clear()  # keywords bind to the spec's order
    assert await pm.call(hookspecs.filter, message=Message(topic="t"), subscription=sub, bus="kw") is True  # type: ignore[arg-type]
    assert Both.seen == [("new", "kw", "t", "g"), ("old", "t", "g")]


async def test_a_chain_checks_and_threads_its_last_argument() -> None:
    class Up:
        @hookimpl
        def on_publish(self, message: Message) -> Message:
            return message.model_copy(update={"priority": message.priority + 1})

    class Moves:
        @hookimpl
        def on_publish(self, message: Message) -> Message:
            return message.model_copy(update={"topic": "elsewhere"})

    pm = PluginManager()
    pm.register(Up(), "up1")
    pm.register(Up(), "up2")
    out = await pm.call(hookspecs.on_publish, None, Message(topic="t"))  # type: ignore[arg-type]
    assert out.priority == 2
    pm.register(Moves(), "moves")
    with pytest.raises(PluginError, match="plugin 'moves' changed the topic"):
        await pm.call(hookspecs.on_publish, None, Message(topic="t"))  # type: ignore[arg-type]


def test_a_sync_hook_refuses_an_awaitable() -> None:
    class Late:
        @hookimpl
        async def on_subscribe(self) -> None:
            return None

    pm = PluginManager()
    pm.register(Late(), "late")
    with pytest.raises(PluginError, match="'late' returned an awaitable from on_subscribe"):
        pm.call(hookspecs.on_subscribe, None, None)  # type: ignore[arg-type]


def test_subscription_option_is_typed_validated_once_and_kept() -> None:
    class Budget(BaseModel):
        max_cost: int = Field(10, ge=0)

    class Other(BaseModel):
        label: str = "none"

    given = Subscription(
        topics=("t",), group="g", handler=lambda m: None, options={"max_cost": 3, "label": "x"}
    )
    budget = given.option(Budget)
    assert budget == Budget(max_cost=3) and given.option(Budget) is budget  # kept with the subscription
    assert given.option(Other).label == "x"  # each model takes its own fields from the options
    made = Subscription(topics=("t",), group="g", handler=lambda m: None)  # made by hand: defaults
    assert made.option(Budget).max_cost == 10

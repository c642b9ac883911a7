"""The plugin manager: registration, entry points, broken plugins, awaitable hooks."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pluggy
import pytest

from relaybus import FailureDecision, Message, PluginError, hookimpl, hookspecs
from relaybus import plugins as plugins_module
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
    decision = await pm.call.on_failure(None, Message(topic="t"), ValueError(), None)  # type: ignore[arg-type]
    assert decision == FailureDecision.drop("throwaway")
    pm.unregister(name)
    assert "throwaway" not in pm.names()
    assert await pm.call.on_failure(None, Message(topic="t"), ValueError(), None) is None  # type: ignore[arg-type]


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
    assert await pm.call.on_failure(None, None, None, None) == FailureDecision.retry(2)  # type: ignore[arg-type]


async def test_a_raising_plugin_is_named_in_the_error() -> None:
    class Broken:
        @hookimpl
        def on_cleanup(self) -> None:
            raise RuntimeError("boom")

    pm = PluginManager()
    pm.register(Broken(), "broken-cleaner")
    [failure] = await pm.call.on_cleanup(None)  # the others still run: handed back, not raised
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
        pm.load_entry_points()
    assert "broken" not in pm.names()
    assert "skipping relaybus plugin 'broken'" in caplog.text


def test_broken_builtin_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_distribution(tmp_path, "pretend_builtin", "broken = no_such_module_for_relaybus_tests")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins_module, "BUILTIN_DISTRIBUTION", "pretend_builtin")
    with pytest.raises(PluginError, match="built-in plugin 'broken' failed to load"):
        PluginManager().load_entry_points()


def test_entry_point_plugin_loads_and_can_be_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tiny_relaybus_plugin.py").write_text(
        "from relaybus import hookimpl\n\n@hookimpl\ndef on_cleanup(bus):\n    return None\n"
    )
    _fake_distribution(tmp_path, "tiny_plugin", "tiny = tiny_relaybus_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = PluginManager()
    loaded.load_entry_points()
    assert "tiny" in loaded.names()
    disabled = PluginManager(disabled=["tiny"])
    disabled.load_entry_points()
    assert "tiny" not in disabled.names()


def test_hooks_are_called_only_through_the_hook_caller() -> None:
    """One place knows each hook's shape (hookcaller.py): no other module looks up a
    hook's implementations or spells a hook name to call it."""
    names = [n for n, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, "relaybus_spec")]
    source = Path(plugins_module.__file__).parent
    for path in [*source.rglob("*.py"), *(source.parent.parent / "plugins").rglob("*.py")]:
        if path.name in ("hookcaller.py", "hookspecs.py"):
            continue
        text = path.read_text()
        assert ".impls(" not in text and ".hook." not in text, path
        # a hook named in a call on the plugin manager or the engine's context
        called = re.findall(rf'(?:plugins|ctx|call)\.\w+\(\s*"({"|".join(names)})"', text)
        assert not called, f"{path} calls hook(s) {called} by name"


def test_every_hook_has_a_typed_method_on_the_caller() -> None:
    names = [n for n, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, "relaybus_spec")]
    assert all(callable(getattr(HookCaller, name, None)) for name in names)

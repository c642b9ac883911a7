"""The documentation site: quick start, generated configuration reference, nav, example plugin."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

import relaybus
from relaybus import BusConfig

from .test_hook_docs import load_docs_hooks

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
EXAMPLE = DOCS / "examples" / "relaybus-example-plugin"
docs_hooks = load_docs_hooks()


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_readme_quick_start_commands_are_on_the_home_page_verbatim() -> None:
    commands = fenced_blocks((ROOT / "README.md").read_text(), "bash")
    assert len(commands) >= 2  # the demo, and running every test
    home = fenced_blocks((DOCS / "index.md").read_text(), "bash")
    for command in commands:
        assert command in home


# -- configuration reference ----------------------------------------------------------


@pytest.fixture(scope="module")
def configuration() -> str:
    text: str = docs_hooks.render_configuration((DOCS / "configuration.md").read_text())
    return text


def test_every_config_field_is_in_exactly_one_section() -> None:
    docs_hooks.check_sections()
    listed = [name for names in docs_hooks.SECTIONS.values() for name in names]
    assert sorted(listed) == sorted(BusConfig.model_fields)


@pytest.mark.parametrize("name", sorted(BusConfig.model_fields))
def test_config_field_row(name: str, configuration: str) -> None:
    field = BusConfig.model_fields[name]
    [row] = [line for line in configuration.splitlines() if line.startswith(f"| `{name}` |")]
    assert f"`RELAYBUS_{name.upper()}`" in row
    assert (field.description or "no description") in row.replace("\\|", "|")


PLUGIN_SETTINGS = sorted(
    (plugin, name) for plugin, model in docs_hooks.plugin_settings().items() for name in model.model_fields
)


def test_the_built_in_plugins_own_their_settings() -> None:
    assert {plugin for plugin, _ in PLUGIN_SETTINGS} == {"dlq", "dedup", "retention", "tls_auth"}
    assert not {name for _, name in PLUGIN_SETTINGS} & set(BusConfig.model_fields)


@pytest.mark.parametrize(("plugin", "name"), PLUGIN_SETTINGS)
def test_plugin_setting_row(plugin: str, name: str, configuration: str) -> None:
    """Each built-in plugin's settings are listed under its marker, generated from its model."""
    field = docs_hooks.plugin_settings()[plugin].model_fields[name]
    [row] = [line for line in configuration.splitlines() if line.startswith(f"| `{name}` |")]
    assert f"`RELAYBUS_{name.upper()}`" in row
    assert (field.description or "no description") in row.replace("\\|", "|")


def test_a_plugin_without_its_settings_marker_fails_the_build() -> None:
    text = (DOCS / "configuration.md").read_text().replace("<!-- plugin-settings: dlq -->", "")
    with pytest.raises(docs_hooks.DocsError, match=r"lacks <!-- plugin-settings: ... --> for: dlq"):
        docs_hooks.render_configuration(text)


def test_config_rows_show_type_default_and_bounds(configuration: str) -> None:
    assert "| `claim_idle_ms` | `int` | `30000` (≥ 100) | `RELAYBUS_CLAIM_IDLE_MS` |" in configuration
    assert "| `max_queue_size` | `int` \\| `None` | `None` (≥ 1 when set) |" in configuration
    assert '| `overflow` | `"reject"` \\| `"drop_oldest"` | `"reject"` |' in configuration
    assert "| `max_message_bytes` | `int` | `1048576` (1 MiB; ≥ 64) |" in configuration
    assert "| `disabled_plugins` | `list[str]` | `[]` |" in configuration
    assert "<!-- config-fields" not in configuration


def test_a_field_in_no_section_fails_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    sections = dict(docs_hooks.SECTIONS, plugins=())
    monkeypatch.setattr(docs_hooks, "SECTIONS", sections)
    with pytest.raises(docs_hooks.DocsError, match=r"in no section.*disabled_plugins"):
        docs_hooks.render_configuration((DOCS / "configuration.md").read_text())


def test_a_section_without_its_marker_fails_the_build() -> None:
    text = (DOCS / "configuration.md").read_text().replace("<!-- config-fields: dedup -->", "")
    with pytest.raises(docs_hooks.DocsError, match=r"lacks .* for: dedup"):
        docs_hooks.render_configuration(text)


# -- site -----------------------------------------------------------------------------


def test_every_page_is_in_the_nav() -> None:
    nav = set(re.findall(r"^\s*- (?:[^:\n]+: )?([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - nav == set()
    assert nav - pages == set()


# -- the example plugin ---------------------------------------------------------------


def test_example_plugin_imports_only_relaybus_public_api() -> None:
    tree = ast.parse((EXAMPLE / "relaybus_team_policy.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("relaybus"):
            assert node.module == "relaybus", f"private module {node.module}"
            assert {a.name for a in node.names} <= set(relaybus.__all__)
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("relaybus") for a in node.names)


def test_example_plugin_registers_an_entry_point_in_the_relaybus_group() -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["relaybus"] == {"team_policy": "relaybus_team_policy"}
    assert "relaybus_team_policy" in (DOCS / "plugins.md").read_text()
